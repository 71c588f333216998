import CSluiceKernels
import Foundation
import SluiceTestSupport
import Testing

/// Whether both integer kernel variants run here, so that they can be compared.
private let bothVariantsRun = sluice_cpu_best_variant() >= SLUICE_CPU_AVX512_VNNI.rawValue
private let underCI = ProcessInfo.processInfo.environment["CI"] == "true"

/// The AVX2 integer kernels (and the AVX-512 matrix products without VNNI) against the AVX-512 VNNI
/// ones, side by side in one process through
/// their per-variant entry points (whatever `SLUICE_CPU` says): every byte and float they write
/// must be the same bits, so that a fleet's AVX2 machines compute the tokens its AVX-512 machines
/// do and continue their checkpoints. Inputs include the extremes: weights of 255 (which would
/// saturate AVX2's byte products), activations of ±127 and low bytes of −128, all-zero blocks,
/// ragged row counts (masked stores) and every tile width (1-13 tokens).
///
/// A CPU without AVX-512 VNNI cannot run the comparison; the CI machine has it, so there the
/// suite runs and fails instead of skipping.
@Suite(.ownThread, .enabled(if: bothVariantsRun || underCI, "the CPU has no AVX-512 VNNI to compare the AVX2 kernels with"))
struct IntegerKernelVariantTests {
    init() throws {
        try #require(bothVariantsRun, "this CPU (\(String(cString: sluice_cpu_variant_name(sluice_cpu_best_variant())))) has no AVX-512 VNNI")
    }

    /// Activations with the shapes that matter: ordinary values, a block with one large outlier
    /// (everything else rounds to few steps), blocks of all zeros, tiny values, negative maxima,
    /// and values at exactly half a step (round to nearest even).
    private static func activations(tokens: Int, columns: Int, block: Int, seed: UInt64) -> [Float] {
        var generator = SplitMix64(seed: seed)
        var x = (0..<(tokens * columns)).map { _ in Float.random(in: -3...3, using: &generator) }
        for t in 0..<tokens {
            for b in 0..<(columns / block) {
                let start = t * columns + b * block
                switch (t + b) % 6 {
                case 1: x[start + Int.random(in: 0..<block, using: &generator)] = Float.random(in: 50...500, using: &generator) * (b % 2 == 0 ? 1 : -1)
                case 2: for k in 0..<block { x[start + k] = 0 }
                case 3: for k in 0..<block { x[start + k] *= 1e-30 }
                case 4: x[start] = -10  // the maximum is negative: q = −127 there
                case 5:
                    // Multiples of half a step (127 / 127 = 1): ties between two integers.
                    x[start] = 127
                    for k in 1..<block { x[start + k] = Float(Int.random(in: -254...254, using: &generator)) / 2 }
                default: break
                }
            }
        }
        return x
    }

    @Test(arguments: [16, 32], [false, true])
    func quantizedRowsAreTheSameBytes(block: Int, twoBytes: Bool) {
        let columns = 320
        for tokens in 1...13 {
            let x = Self.activations(tokens: tokens, columns: columns, block: block, seed: UInt64(tokens * 100 + block))
            let vnni = QuantizedRows(tokens: tokens, columns: columns, block: block, twoBytes: twoBytes)
            let avx2 = QuantizedRows(tokens: tokens, columns: columns, block: block, twoBytes: twoBytes)
            vnni.quantize(x, with: sluice_quantize_rows_avx512_vnni)
            avx2.quantize(x, with: sluice_quantize_rows_avx2)
            #expect(avx2.bytes == vnni.bytes, "block \(block), \(tokens) tokens: the rounded bytes differ")
            #expect(avx2.lowBytes == vnni.lowBytes, "block \(block), \(tokens) tokens: the low bytes differ")
            #expect(avx2.scales.map(\.bitPattern) == vnni.scales.map(\.bitPattern), "block \(block), \(tokens) tokens: steps differ")
            #expect(avx2.scaledSums.map(\.bitPattern) == vnni.scaledSums.map(\.bitPattern), "block \(block), \(tokens) tokens: scaled sums differ")
            #expect(avx2.sums == vnni.sums, "block \(block), \(tokens) tokens: sums differ")
            if twoBytes {
                // The extremes the kernels below must multiply exactly do occur.
                #expect(vnni.bytes.contains(127) && vnni.bytes.contains(-127))
            }
        }
    }

    /// Blocks holding a NaN (at each position of a vector, beside infinities, numbers and other
    /// NaNs) round to nothing on both variants: which operand a max of NaN returns depends on
    /// the order of the reduction, which the two variants do not share. Infinities round alike.
    @Test(arguments: [16, 32], [false, true])
    func nonFiniteBlocksRoundTheSameWay(block: Int, twoBytes: Bool) {
        let columns = 256, tokens = 3
        var generator = SplitMix64(seed: UInt64(block) &* 31 &+ (twoBytes ? 1 : 0))
        var x = (0..<(tokens * columns)).map { _ in Float.random(in: -3...3, using: &generator) }
        let blocks = tokens * columns / block
        for b in 0..<blocks {
            let start = b * block, position = b % block
            switch b % 4 {
            case 0: x[start + position] = .nan
            case 1: x[start + position] = .nan; x[start + (position + 7) % block] = -.infinity
            case 2: x[start + position] = .infinity
            default: x[start + (block - 1 - position)] = -.nan
            }
        }
        let vnni = QuantizedRows(tokens: tokens, columns: columns, block: block, twoBytes: twoBytes)
        let avx2 = QuantizedRows(tokens: tokens, columns: columns, block: block, twoBytes: twoBytes)
        vnni.quantize(x, with: sluice_quantize_rows_avx512_vnni)
        avx2.quantize(x, with: sluice_quantize_rows_avx2)
        #expect(avx2.bytes == vnni.bytes && avx2.lowBytes == vnni.lowBytes && avx2.sums == vnni.sums)
        #expect(avx2.scales.map(\.bitPattern) == vnni.scales.map(\.bitPattern))
        #expect(avx2.scaledSums.map(\.bitPattern) == vnni.scaledSums.map(\.bitPattern))
        for b in 0..<blocks where b % 4 != 2 {
            #expect(vnni.scales[b] == 0 && vnni.bytes[(b * block)..<((b + 1) * block)].allSatisfy { $0 == 0 },
                    "block \(b) holds a NaN and was not rounded to nothing")
        }
    }

    @Test(arguments: [SLUICE_WEIGHTS_HALF_SCALED32, SLUICE_WEIGHTS_SCALED16, SLUICE_WEIGHTS_AFFINE32], [false, true])
    func productsAreTheSameBits(kind: sluice_weight_kind, twoBytes: Bool) {
        let block = kind == SLUICE_WEIGHTS_SCALED16 ? 16 : 32
        let columns = 256
        for (index, rows) in [53, 7, 32, 16 * 3 + 15].enumerated() {
            let weights = PackedTestWeights(kind: kind, rows: rows, columns: columns, seed: UInt64(1000 + index))
            for tokens in 1...13 {
                let x = Self.activations(tokens: tokens, columns: columns, block: block, seed: UInt64(7 * tokens + index))
                let a = QuantizedRows(tokens: tokens, columns: columns, block: block, twoBytes: twoBytes)
                a.quantize(x, with: sluice_quantize_rows_avx512_vnni)
                if index == 1 { a.makeExtreme(seed: UInt64(tokens)) }
                let vnni = weights.multiply(a, panels: 0..<weights.panels, with: sluice_int8_matmul_avx512_vnni)
                let avx2 = weights.multiply(a, panels: 0..<weights.panels, with: sluice_int8_matmul_avx2)
                let avx512 = weights.multiply(a, panels: 0..<weights.panels, with: sluice_int8_matmul_avx512)
                let differing = zip(vnni, avx2).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differing == 0, "kind \(kind.rawValue), \(rows) rows, \(tokens) tokens: \(differing) outputs differ")
                let differingAVX512 = zip(vnni, avx512).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differingAVX512 == 0, "AVX-512 without VNNI, kind \(kind.rawValue), \(rows) rows, \(tokens) tokens: \(differingAVX512) outputs differ")
                // Untouched outside the rows (the sentinel stays), written inside.
                #expect(avx2.enumerated().allSatisfy { ($0.offset % weights.yStride < rows) != ($0.element.bitPattern == PackedTestWeights.sentinel.bitPattern) })
                // A panel range on its own gives the same bits as within the whole.
                if weights.panels > 1 {
                    for kernel in [sluice_int8_matmul_avx2, sluice_int8_matmul_avx512] as [PackedTestWeights.Kernel] {
                        let tail = weights.multiply(a, panels: 1..<weights.panels, with: kernel)
                        for t in 0..<tokens {
                            for r in 16..<rows where tail[t * weights.yStride + r].bitPattern != vnni[t * weights.yStride + r].bitPattern {
                                Issue.record("kind \(kind.rawValue), \(tokens) tokens: row \(r) of token \(t) differs from panel 1 on")
                            }
                        }
                    }
                }
                // One row alone, as the argmax head's exact pass computes it, on either variant.
                for r in 0..<rows {
                    let expected = vnni[r].bitPattern
                    #expect(weights.rowProduct(r, a, with: sluice_int8_row_product_avx2).bitPattern == expected)
                    #expect(weights.rowProduct(r, a, with: sluice_int8_row_product_avx512_vnni).bitPattern == expected)
                }
            }
        }
    }

    @Test func nearMaximumScansKeepTheSameRows() {
        var generator = SplitMix64(seed: 5)
        for count in [1, 5, 15, 16, 17, 31, 32, 33, 100, 257] {
            for margin in [Float(0), 0.5, 3, .infinity] {
                let values = (0..<count).map { i in i % 7 == 3 ? 2.5 : Float.random(in: -4...4, using: &generator) }
                for start in [-Float.infinity, 1, 10] {
                    let vnni = Self.scan(values, margin: margin, start: start, with: sluice_collect_near_maximum_avx512)
                    let avx2 = Self.scan(values, margin: margin, start: start, with: sluice_collect_near_maximum_avx2)
                    #expect(avx2.rows == vnni.rows && avx2.kept.map(\.bitPattern) == vnni.kept.map(\.bitPattern),
                            "\(count) values, margin \(margin), from \(start)")
                    #expect(avx2.maximum.bitPattern == vnni.maximum.bitPattern)
                }
            }
        }
    }

    typealias Scan = @convention(c) (UnsafePointer<Float>?, Int32, Float, UnsafeMutablePointer<Float>?, Int32,
                                     UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Float>?) -> Int32

    private static func scan(_ values: [Float], margin: Float, start: Float, with function: Scan)
        -> (rows: [Int32], kept: [Float], maximum: Float) {
        var rows = [Int32](repeating: -1, count: values.count), kept = [Float](repeating: .nan, count: values.count)
        var maximum = start
        let found = Int(function(values, Int32(values.count), margin, &maximum, 100, &rows, &kept))
        return (Array(rows[..<found]), Array(kept[..<found]), maximum)
    }
}

/// Rounded activation rows as `sluice_quantize_rows` writes them.
private final class QuantizedRows {
    let tokens: Int, columns: Int, block: Int
    var bytes: [Int8], lowBytes: [Int8]?, scales: [Float], scaledSums: [Float], sums: [Int32]
    var blocks: Int { columns / block }

    init(tokens: Int, columns: Int, block: Int, twoBytes: Bool) {
        (self.tokens, self.columns, self.block) = (tokens, columns, block)
        bytes = [Int8](repeating: 99, count: tokens * columns)
        lowBytes = twoBytes ? [Int8](repeating: 99, count: tokens * columns) : nil
        scales = [Float](repeating: .nan, count: tokens * columns / block)
        scaledSums = scales
        sums = [Int32](repeating: 99, count: scales.count)
    }

    typealias Quantizer = @convention(c) (UnsafePointer<Float>?, Int32, Int32, Int32, UnsafeMutablePointer<Int8>?,
                                          UnsafeMutablePointer<Int8>?, UnsafeMutablePointer<Float>?,
                                          UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Int32>?) -> Void

    func quantize(_ x: [Float], with quantizer: Quantizer) {
        if lowBytes != nil {
            quantizer(x, Int32(tokens), Int32(columns), Int32(block), &bytes, &lowBytes!, &scales, &scaledSums, &sums)
        } else {
            quantizer(x, Int32(tokens), Int32(columns), Int32(block), &bytes, nil, &scales, &scaledSums, &sums)
        }
    }

    /// The largest magnitudes the kernels can be given: bytes of ±127 (and −128 low bytes), with
    /// sums to match, so that every product and partial sum is at its extreme.
    func makeExtreme(seed: UInt64) {
        var generator = SplitMix64(seed: seed)
        // One byte alone may be −128 too; with a low byte |q| <= 127, as quantizing writes it.
        let smallest: Int8 = lowBytes == nil ? -128 : -127
        for i in bytes.indices { bytes[i] = i % 5 == 0 ? smallest : Bool.random(using: &generator) ? 127 : -127 }
        if lowBytes != nil { for i in bytes.indices { lowBytes![i] = i % 3 == 0 ? -128 : Bool.random(using: &generator) ? 127 : -128 } }
        for t in 0..<tokens {
            for b in 0..<blocks {
                var sum: Int32 = 0
                for k in (t * columns + b * block)..<(t * columns + (b + 1) * block) {
                    sum &+= lowBytes.map { 256 * Int32(bytes[k]) + Int32($0[k]) } ?? Int32(bytes[k])
                }
                sums[t * blocks + b] = sum
                scaledSums[t * blocks + b] = scales[t * blocks + b] * Float(sum)
            }
        }
    }
}

/// A weight matrix in the kernels' packed layout, with random bytes (a quarter of them 255, some
/// 0), random scales (half or float, as the kind stores them) and random offsets.
private struct PackedTestWeights {
    static let sentinel = Float(bitPattern: 0x7FC0_1234)
    let kind: sluice_weight_kind, rows: Int, columns: Int, bias: Int32
    var bytes: [UInt8], scales: [UInt8], offsets: [Float]?
    var panels: Int { (rows + 15) / 16 }
    var block: Int { kind == SLUICE_WEIGHTS_SCALED16 ? 16 : 32 }
    var yStride: Int { rows + 3 }

    init(kind: sluice_weight_kind, rows: Int, columns: Int, seed: UInt64) {
        var generator = SplitMix64(seed: seed)
        (self.kind, self.rows, self.columns) = (kind, rows, columns)
        bias = kind == SLUICE_WEIGHTS_HALF_SCALED32 ? 128 : kind == SLUICE_WEIGHTS_SCALED16 ? 32 : 0
        let panels = (rows + 15) / 16, blocks = columns / (kind == SLUICE_WEIGHTS_SCALED16 ? 16 : 32)
        bytes = (0..<(panels * 16 * columns)).map { i in
            switch i % 8 { case 0, 5: 255; case 3: 0; default: UInt8.random(in: 0...255, using: &generator) }
        }
        let scaleCount = panels * 16 * blocks
        if kind == SLUICE_WEIGHTS_HALF_SCALED32 {
            let halves = (0..<scaleCount).map { _ in Float16(Float.random(in: -0.02...0.02, using: &generator)).bitPattern }
            scales = halves.withUnsafeBytes { Array($0) }
        } else {
            let floats = (0..<scaleCount).map { _ in Float.random(in: -0.02...0.02, using: &generator) }
            scales = floats.withUnsafeBytes { Array($0) }
        }
        offsets = kind == SLUICE_WEIGHTS_AFFINE32 ? (0..<scaleCount).map { _ in Float.random(in: -1...1, using: &generator) } : nil
    }

    typealias Kernel = @convention(c) (UnsafePointer<UInt8>?, Int32, UnsafeRawPointer?, UnsafePointer<Float>?, Int32,
                                       Int32, Int32, Int32, Int32, UnsafePointer<Int8>?, UnsafePointer<Int8>?,
                                       UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Int32>?, Int32,
                                       UnsafeMutablePointer<Float>?, Int32) -> Void

    func multiply(_ a: QuantizedRows, panels range: Range<Int>, with kernel: Kernel) -> [Float] {
        var y = [Float](repeating: Self.sentinel, count: a.tokens * yStride)
        bytes.withUnsafeBufferPointer { w in
            scales.withUnsafeBytes { s in
                y.withUnsafeMutableBufferPointer { y in
                    withOptionalPointer(offsets) { m in
                        withOptionalPointer(a.lowBytes) { low in
                            kernel(w.baseAddress, Int32(kind.rawValue), s.baseAddress, m, bias, Int32(columns), Int32(rows),
                                   Int32(range.lowerBound), Int32(range.upperBound), a.bytes, low, a.scales, a.scaledSums,
                                   a.sums, Int32(a.tokens), y.baseAddress, Int32(yStride))
                        }
                    }
                }
            }
        }
        return y
    }

    typealias RowKernel = @convention(c) (UnsafePointer<UInt8>?, Int32, UnsafeRawPointer?, UnsafePointer<Float>?, Int32,
                                          Int32, Int32, UnsafePointer<Int8>?, UnsafePointer<Int8>?,
                                          UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Int32>?) -> Float

    /// Row `row` for the first token of `a`.
    func rowProduct(_ row: Int, _ a: QuantizedRows, with kernel: RowKernel) -> Float {
        bytes.withUnsafeBufferPointer { w in
            scales.withUnsafeBytes { s in
                withOptionalPointer(offsets) { m in
                    withOptionalPointer(a.lowBytes) { low in
                        kernel(w.baseAddress, Int32(kind.rawValue), s.baseAddress, m, bias, Int32(columns), Int32(row),
                               a.bytes, low, a.scales, a.scaledSums, a.sums)
                    }
                }
            }
        }
    }
}

private func withOptionalPointer<T, R>(_ array: [T]?, _ body: (UnsafePointer<T>?) -> R) -> R {
    guard let array else { return body(nil) }
    return array.withUnsafeBufferPointer { body($0.baseAddress) }
}
