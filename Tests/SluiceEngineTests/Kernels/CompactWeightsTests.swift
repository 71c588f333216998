import CSluiceKernels
import SluiceTestSupport
import Testing

@testable import SluiceEngine

private let compactTypes: [TensorType] = [.q4_0, .q4_K, .q6_K]
private let integerPrecisions: [MatmulPrecision] = [.int16, .int8]

/// The same file rows in both integer layouts: one byte per weight and the type's compact one.
private final class BothLayouts {
    let source: RandomWeights
    let bytes: Int8Weights
    let compact: Int8Weights

    init(_ type: TensorType, rows: Int, columns: Int, seed: UInt64, edit: ((UnsafeMutableRawPointer, Int) -> Void)? = nil) {
        source = RandomWeights(type, rows: rows, columns: columns, seed: seed)
        let rowBytes = source.matrix.rowBytes
        edit?(source.bytes, rows * rowBytes)
        bytes = Int8Weights(type: type, rows: rows, columns: columns, data: source.bytes, rowBytes: rowBytes,
                            releasingSource: false, compact: false)
        compact = Int8Weights(type: type, rows: rows, columns: columns, data: source.bytes, rowBytes: rowBytes,
                              releasingSource: false, compact: true)
    }
}

/// Activations with a few large outliers (as hidden states have) and one token of zeros.
private func outlierActivations(tokens: Int, columns: Int, seed: UInt64) -> [Float] {
    var generator = SplitMix64(seed: seed)
    var x = randomActivations(tokens * columns, seed: seed)
    for t in 0..<tokens where t % 3 == 1 {
        for _ in 0..<3 { x[t * columns + Int.random(in: 0..<columns, using: &generator)] *= 50 }
    }
    if tokens > 4 { for k in 0..<columns { x[4 * columns + k] = 0 } }
    return x
}

/// `weights.multiply` over `panels` and `tokens` of `a`, into a fresh array of all rows and tokens.
private func multiply(_ weights: Int8Weights, _ a: RoundedActivations, tokenCount: Int, panels: Range<Int>,
                      tokens: Range<Int>) -> [Float] {
    var y = [Float](repeating: .nan, count: tokenCount * weights.rows)
    y.withUnsafeMutableBufferPointer { y in
        weights.multiply(panels: panels, a, tokens: tokens,
                         into: y.baseAddress! + tokens.lowerBound * weights.rows + 16 * panels.lowerBound,
                         yStride: weights.rows)
    }
    return y
}

@Suite(.ownThread, .enabled(if: sluice_int4_available() != 0, "the CPU does not run the compact kernels"))
struct CompactWeightsTests {
    /// The compact kernels (4 and 6 bits) give bit for bit the byte kernel's outputs, for every
    /// tile shape (1 to 13 tokens: full and partial six-token tiles, one and two panels), partial
    /// panels (odd row counts), both activation widths, several 256-column super-blocks, and
    /// panel and token ranges that do not start at zero.
    @Test(arguments: compactTypes, integerPrecisions)
    func compactProductsEqualByteProductsBitForBit(type: TensorType, precision: MatmulPrecision) {
        let pool = ComputePool(threads: 1)
        for (rows, columns) in [(37, 768), (19, 256), (80, 512)] {
            let layouts = BothLayouts(type, rows: rows, columns: columns, seed: UInt64(40 + rows))
            #expect(layouts.compact.bits == Int8Weights.compactBits(type) && layouts.bytes.bits == 8)
            let panels = layouts.bytes.panels
            for tokens in 1...13 {
                let x = outlierActivations(tokens: tokens, columns: columns, seed: UInt64(500 + tokens))
                let a = x.withUnsafeBufferPointer {
                    RoundedActivations($0.baseAddress!, tokens: tokens, columns: columns, block: layouts.bytes.block,
                                       lowBytes: precision == .int16, pool: pool)
                }
                let ranges = [(0..<panels, 0..<tokens), (1..<panels, (tokens / 2)..<tokens), (0..<1, 0..<tokens)]
                for (panelRange, tokenRange) in ranges {
                    let expected = multiply(layouts.bytes, a, tokenCount: tokens, panels: panelRange, tokens: tokenRange)
                    let actual = multiply(layouts.compact, a, tokenCount: tokens, panels: panelRange, tokens: tokenRange)
                    let differing = zip(expected, actual).filter { $0.bitPattern != $1.bitPattern }.count
                    #expect(differing == 0, "\(type.name) \(precision.rawValue) \(rows)x\(columns), \(tokens) tokens, panels \(panelRange), tokens \(tokenRange): \(differing) outputs differ")
                    let written = expected.filter { !$0.isNaN }.count
                    #expect(written == min(16 * panelRange.count, rows - 16 * panelRange.lowerBound) * tokenRange.count)
                }
            }
        }
    }

    /// Through `matmul` (which picks the compact layout for these types here, and splits the work
    /// over threads and token blocks): the byte kernel's outputs, bit for bit.
    @Test(arguments: compactTypes, integerPrecisions)
    func matmulUsesTheCompactLayoutWithTheByteKernelsOutputs(type: TensorType, precision: MatmulPrecision) throws {
        let rows = 45, columns = 512
        let source = RandomWeights(type, rows: rows, columns: columns, seed: 41, precision: precision)
        let matrix = source.matrix
        let compact = try #require(matrix.int8)
        #expect(compact.bits == Int8Weights.compactBits(type))
        let bytes = Int8Weights(type: type, rows: rows, columns: columns, data: matrix.data, rowBytes: matrix.rowBytes,
                                releasingSource: false, compact: false)
        let pool = ComputePool(threads: 2)
        for tokens in [1, 2, 7, 32, 70] {
            let x = outlierActivations(tokens: tokens, columns: columns, seed: UInt64(600 + tokens))
            let y = product(x, tokens: tokens, matrix, pool: pool)
            let a = x.withUnsafeBufferPointer {
                RoundedActivations($0.baseAddress!, tokens: tokens, columns: columns, block: bytes.block,
                                   lowBytes: precision == .int16, pool: pool)
            }
            let expected = multiply(bytes, a, tokenCount: tokens, panels: 0..<bytes.panels, tokens: 0..<tokens)
            #expect(y.map(\.bitPattern) == expected.map(\.bitPattern), "\(type.name) \(precision.rawValue), \(tokens) tokens")
        }
        withExtendedLifetime(source) {}
    }

    /// The argmax head's exact second pass computes a row alone from the compact layout: the kernel's bits.
    @Test(arguments: compactTypes, integerPrecisions)
    func rowProductsEqualTheCompactKernelBitForBit(type: TensorType, precision: MatmulPrecision) {
        let layouts = BothLayouts(type, rows: 37, columns: 768, seed: 42)
        let pool = ComputePool(threads: 1)
        let tokens = 8
        let x = outlierActivations(tokens: tokens, columns: 768, seed: 43)
        let a = x.withUnsafeBufferPointer {
            RoundedActivations($0.baseAddress!, tokens: tokens, columns: 768, block: layouts.bytes.block, lowBytes: precision == .int16, pool: pool)
        }
        let y = multiply(layouts.compact, a, tokenCount: tokens, panels: 0..<layouts.compact.panels, tokens: 0..<tokens)
        var mismatches = 0
        for t in 0..<tokens {
            for r in 0..<37 {
                let alone = layouts.compact.rowProduct(row: r, a, token: t)
                if alone.bitPattern != y[t * 37 + r].bitPattern { mismatches += 1 }
                if alone.bitPattern != layouts.bytes.rowProduct(row: r, a, token: t).bitPattern { mismatches += 1 }
            }
        }
        #expect(mismatches == 0, "\(type.name) \(precision.rawValue): \(mismatches) row products differ")
    }

    /// Decoded rows (embedding lookups of tied heads) and the argmax head's row bounds read the
    /// compact layout as the same numbers as the byte layout.
    @Test(arguments: compactTypes)
    func decodedRowsAndBoundsEqualTheByteLayouts(type: TensorType) {
        let layouts = BothLayouts(type, rows: 37, columns: 768, seed: 44)
        let expected = UnsafeMutablePointer<Float>.allocate(capacity: 768)
        let actual = UnsafeMutablePointer<Float>.allocate(capacity: 768)
        defer { expected.deallocate(); actual.deallocate() }
        var mismatches = 0
        for row in 0..<37 {
            layouts.bytes.decode(row: row, into: expected)
            layouts.compact.decode(row: row, into: actual)
            for k in 0..<768 where expected[k].bitPattern != actual[k].bitPattern { mismatches += 1 }
            let (norm, term) = layouts.bytes.normAndLargestTerm(row: row)
            let (compactNorm, compactTerm) = layouts.compact.normAndLargestTerm(row: row)
            #expect(norm.bitPattern == compactNorm.bitPattern && term.bitPattern == compactTerm.bitPattern, "row \(row)")
        }
        #expect(mismatches == 0, "\(type.name): \(mismatches) decoded weights differ")
    }

    /// Super-block scales at the ends of the half-float range (subnormal, the largest finite,
    /// negative, zero) still give products that are exact in float32 and the byte kernel's bits.
    @Test(arguments: [TensorType.q4_K, .q6_K])
    func extremeSuperBlockScalesEqualTheByteKernel(type: TensorType) {
        let extremes: [UInt16] = [0x0001, 0x03FF, 0x7BFF, 0xFBFF, 0x8000, 0x0000, 0x3C00, 0xB555]
        let layouts = BothLayouts(type, rows: 21, columns: 512, seed: 45) { bytes, count in
            for (i, block) in stride(from: 0, to: count, by: type.bytesPerBlock).enumerated() {
                let d = extremes[i % extremes.count], dmin = extremes[(i * 5 + 3) % extremes.count]
                if type == .q6_K {
                    bytes.storeBytes(of: d, toByteOffset: block + 208, as: UInt16.self)
                } else {
                    bytes.storeBytes(of: d, toByteOffset: block, as: UInt16.self)
                    bytes.storeBytes(of: dmin, toByteOffset: block + 2, as: UInt16.self)
                }
            }
        }
        let pool = ComputePool(threads: 1)
        for lowBytes in [false, true] {
            for tokens in [1, 5, 6] {
                // Small activations, so that the largest weights' products stay finite.
                let x = randomActivations(tokens * 512, seed: UInt64(46 + tokens)).map { $0 * 1e-3 }
                let a = x.withUnsafeBufferPointer {
                    RoundedActivations($0.baseAddress!, tokens: tokens, columns: 512, block: layouts.bytes.block,
                                       lowBytes: lowBytes, pool: pool)
                }
                let expected = multiply(layouts.bytes, a, tokenCount: tokens, panels: 0..<2, tokens: 0..<tokens)
                let actual = multiply(layouts.compact, a, tokenCount: tokens, panels: 0..<2, tokens: 0..<tokens)
                #expect(expected.map(\.bitPattern) == actual.map(\.bitPattern), "\(type.name) lowBytes \(lowBytes), \(tokens) tokens")
            }
        }
    }

    /// The compact layouts are what they are for: Q4_K at 0.58 bytes per weight against 1.25,
    /// Q4_0 at 0.5625 against 1.0625, Q6_K at 0.82 against 1.25.
    @Test(arguments: compactTypes)
    func compactLayoutsTakeTheFilesWidth(type: TensorType) {
        let layouts = BothLayouts(type, rows: 64, columns: 1024, seed: 47)
        let weights = 64.0 * 1024
        let bytesPerWeight = Double(layouts.compact.allocatedBytes) / weights
        let fileBytesPerWeight = Double(type.bytesPerBlock) / Double(type.blockSize)
        #expect(bytesPerWeight <= fileBytesPerWeight + 0.016, "\(type.name): \(bytesPerWeight) bytes per weight")
        #expect(Double(layouts.bytes.allocatedBytes) / weights >= 1.06)
    }
}
