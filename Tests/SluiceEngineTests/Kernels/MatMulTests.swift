import CSluiceKernels
import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// Random weights of one type, with valid (finite, realistic) f16 scales.
final class RandomWeights: @unchecked Sendable {
    let bytes: UnsafeMutableRawPointer
    let matrix: WeightMatrix

    init(_ type: TensorType, rows: Int, columns: Int, seed: UInt64, precision: MatmulPrecision = .float32) {
        var generator = SplitMix64(seed: seed)
        let rowBytes = columns / type.blockSize * type.bytesPerBlock
        bytes = .allocate(byteCount: rows * rowBytes, alignment: 64)
        for i in 0..<(rows * rowBytes) { bytes.storeBytes(of: UInt8.random(in: 0...255, using: &generator), toByteOffset: i, as: UInt8.self) }
        func half(_ range: ClosedRange<Float>) -> UInt16 { Float16(Float.random(in: range, using: &generator)).bitPattern }
        let blocks = rows * columns / type.blockSize
        for b in 0..<blocks {
            let block = bytes + b * type.bytesPerBlock
            switch type {
            case .q8_0, .q4_0, .q5_0: block.storeBytes(of: half(-0.05...0.05), as: UInt16.self)
            case .q4_K, .q5_K:
                block.storeBytes(of: half(0...0.01), as: UInt16.self)
                block.storeBytes(of: half(0...0.01), toByteOffset: 2, as: UInt16.self)
            case .q6_K: block.storeBytes(of: half(-0.002...0.002), toByteOffset: 208, as: UInt16.self)
            case .f16: block.storeBytes(of: half(-1...1), as: UInt16.self)
            case .f32: block.storeBytes(of: Float.random(in: -1...1, using: &generator), as: Float.self)
            default: fatalError("no generator for \(type)")
            }
        }
        matrix = WeightMatrix(name: "random \(type.name)", type: type, rows: rows, columns: columns, data: bytes, precision: precision)
    }

    deinit { bytes.deallocate() }
}

/// Weights whose `dequantize(row:)` disagrees with `dequantizeRow` on the file's blocks, per `equal`.
func decodeMismatches(_ w: WeightMatrix, equal: (Float, Float) -> Bool) -> Int {
    let expected = UnsafeMutablePointer<Float>.allocate(capacity: w.columns)
    let actual = UnsafeMutablePointer<Float>.allocate(capacity: w.columns)
    defer { expected.deallocate(); actual.deallocate() }
    var mismatches = 0
    for row in 0..<w.rows {
        dequantizeRow(w.type, w.data + row * w.rowBytes, count: w.columns, into: expected)
        w.dequantize(row: row, into: actual)
        for i in 0..<w.columns where !equal(expected[i], actual[i]) { mismatches += 1 }
    }
    return mismatches
}

func randomActivations(_ count: Int, seed: UInt64) -> [Float] {
    var generator = SplitMix64(seed: seed)
    return (0..<count).map { _ in Float.random(in: -2...2, using: &generator) }
}

private let allTypes: [TensorType] = [.q8_0, .q4_0, .q5_0, .q4_K, .q5_K, .q6_K, .f16, .f32]

@Suite(.ownThread) struct MatMulTests {
    @Test(arguments: [TensorType.q8_0, .q4_0, .q5_0, .q4_K, .q5_K, .q6_K])
    func packedRowsDecodeToTheDequantizersFloats(type: TensorType) {
        let weights = RandomWeights(type, rows: 13, columns: 512, seed: 1)
        let w = weights.matrix
        #expect(w.packed?.scalesPerRow == w.columns / (type == .q6_K ? 16 : 32))
        let mismatches = decodeMismatches(w) { $0.bitPattern == $1.bitPattern }
        #expect(mismatches == 0, "\(mismatches) weights of \(type.name) decode differently from dequantizeRow")
    }

    /// Each output equals the fixed-order dot product of the dequantized row, to the bit: Swift's
    /// `dotProduct`, so that on the `avx2` variant and above (the C kernels) this compares them with
    /// the portable code. Float matrices also with a row length past the last 16 (the scalar tail).
    @Test(arguments: allTypes.flatMap { type in (type == .f32 || type == .f16 ? [512, 520] : [512]).map { (type, $0) } })
    func outputsEqualTheReferenceDotProduct(type: TensorType, columns: Int) {
        let weights = RandomWeights(type, rows: 37, columns: columns, seed: 2)
        let w = weights.matrix
        let pool = ComputePool(threads: 2)
        let row = UnsafeMutablePointer<Float>.allocate(capacity: w.columns)
        defer { row.deallocate() }
        for tokens in [1, 2, 3, 4, 5, 9, 40, 200] {
            let x = randomActivations(tokens * w.columns, seed: UInt64(tokens))
            var y = [Float](repeating: .nan, count: tokens * w.rows)
            x.withUnsafeBufferPointer { x in
                y.withUnsafeMutableBufferPointer { y in
                    matmul(x.baseAddress!, tokens: tokens, w, into: y.baseAddress!, pool: pool)
                }
            }
            var mismatches = 0
            for r in 0..<w.rows {
                dequantizeRow(type, w.data + r * w.rowBytes, count: w.columns, into: row)
                for t in 0..<tokens {
                    let expected = x.withUnsafeBufferPointer { dotProduct(row, $0.baseAddress! + t * w.columns, count: w.columns) }
                    if expected.bitPattern != y[t * w.rows + r].bitPattern { mismatches += 1 }
                }
            }
            #expect(mismatches == 0, "\(type.name), \(tokens) tokens: \(mismatches) outputs differ from the reference")
        }
    }

    /// The float kernels compiled for the baseline (the `portable` variant's: software fused
    /// multiply-adds on x86-64-v2), called directly whatever this CPU runs: the packed rows' tiles
    /// of 4, 2 and 1 tokens, the decoded rows' tiles and `dot`, each output the reference
    /// `dotProduct` of the dequantized row, to the bit.
    @Test(arguments: [TensorType.q8_0, .q4_0, .q5_0, .q4_K, .q5_K, .q6_K])
    func theBaselineFloatKernelsEqualTheReferenceDotProduct(type: TensorType) throws {
        let weights = RandomWeights(type, rows: 37, columns: 512, seed: 5)
        let w = weights.matrix, rows = w.rows, columns = w.columns
        let packed = try #require(w.packed)
        let decoded = UnsafeMutablePointer<Float>.allocate(capacity: rows * columns)
        defer { decoded.deallocate() }
        for r in 0..<rows { dequantizeRow(type, w.data + r * w.rowBytes, count: columns, into: decoded + r * columns) }
        for tokens in [1, 2, 3, 4, 7] {
            let x = randomActivations(tokens * columns, seed: UInt64(100 + tokens))
            var fused = [Float](repeating: .nan, count: tokens * rows), tiled = fused
            x.withUnsafeBufferPointer { x in
                fused.withUnsafeMutableBufferPointer { y in
                    sluice_f32_packed_rows_baseline(packed.quants.assumingMemoryBound(to: Int8.self), packed.scales,
                                                    packed.mins.map { UnsafePointer($0) }, columns, packed.scalesPerRow,
                                                    Int32(packed.scaleShift), 0, rows, x.baseAddress!, 0, tokens, y.baseAddress!, rows)
                }
                tiled.withUnsafeMutableBufferPointer { y in
                    var r = 0
                    while r + 4 <= rows {
                        sluice_f32_row_tiles_baseline(decoded + r * columns, 4, x.baseAddress!, tokens, columns, y.baseAddress! + r, rows)
                        r += 4
                    }
                    sluice_f32_row_tiles_baseline(decoded + r * columns, rows - r, x.baseAddress!, tokens, columns, y.baseAddress! + r, rows)
                }
            }
            var mismatches = 0
            for r in 0..<rows {
                for t in 0..<tokens {
                    let expected = x.withUnsafeBufferPointer { dotProduct(decoded + r * columns, $0.baseAddress! + t * columns, count: columns) }
                    let viaDot = x.withUnsafeBufferPointer { sluice_dot_baseline(decoded + r * columns, $0.baseAddress! + t * columns, columns) }
                    for got in [fused[t * rows + r], tiled[t * rows + r], viaDot] where got.bitPattern != expected.bitPattern { mismatches += 1 }
                }
            }
            #expect(mismatches == 0, "\(type.name), \(tokens) tokens: \(mismatches) outputs differ from the reference")
        }
        let row = UnsafeMutablePointer<Float>.allocate(capacity: columns)
        defer { row.deallocate() }
        for r in [0, 5, 36] {
            sluice_f32_decode_packed_row_baseline(packed.quants.assumingMemoryBound(to: Int8.self), packed.scales,
                                                  packed.mins.map { UnsafePointer($0) }, columns, packed.scalesPerRow,
                                                  Int32(packed.scaleShift), r, row)
            #expect((0..<columns).allSatisfy { row[$0].bitPattern == decoded[r * columns + $0].bitPattern }, "\(type.name) row \(r)")
        }
    }

    /// Every row of a T-token product is bit for bit the product of that token alone,
    /// whatever T, the tile it falls in and the number of threads.
    @Test(arguments: allTypes)
    func resultsAreBatchInvariant(type: TensorType) {
        let weights = RandomWeights(type, rows: 37, columns: 512, seed: 3)
        let w = weights.matrix
        let maxTokens = 40
        let x = randomActivations(maxTokens * w.columns, seed: 4)
        let single = ComputePool(threads: 1)
        var alone = [Float](repeating: .nan, count: maxTokens * w.rows)
        x.withUnsafeBufferPointer { x in
            alone.withUnsafeMutableBufferPointer { alone in
                for t in 0..<maxTokens {
                    matmul(x.baseAddress! + t * w.columns, tokens: 1, w, into: alone.baseAddress! + t * w.rows, pool: single)
                }
            }
        }
        for threads in [1, 2, 3] {
            let pool = ComputePool(threads: threads)
            for tokens in 1...maxTokens {
                var y = [Float](repeating: .nan, count: tokens * w.rows)
                x.withUnsafeBufferPointer { x in
                    y.withUnsafeMutableBufferPointer { y in
                        matmul(x.baseAddress!, tokens: tokens, w, into: y.baseAddress!, pool: pool)
                    }
                }
                let differing = (0..<(tokens * w.rows)).filter { y[$0].bitPattern != alone[$0].bitPattern }.count
                #expect(differing == 0, "\(type.name), \(tokens) tokens, \(threads) threads: \(differing) outputs differ from T=1")
            }
        }
    }

    /// Prompts longer than one block of tokens (work items split tokens too) stay batch-invariant.
    @Test func longBatchesSplitIntoTokenBlocksAreBatchInvariant() {
        let weights = RandomWeights(.q5_0, rows: 20, columns: 2048, seed: 5)
        let w = weights.matrix
        let tokens = 61  // 2048 columns: 20 tokens per block, so four blocks, the last partial
        let x = randomActivations(tokens * w.columns, seed: 6)
        let pool = ComputePool(threads: 3)
        var batch = [Float](repeating: .nan, count: tokens * w.rows)
        var alone = [Float](repeating: .nan, count: tokens * w.rows)
        x.withUnsafeBufferPointer { x in
            batch.withUnsafeMutableBufferPointer { matmul(x.baseAddress!, tokens: tokens, w, into: $0.baseAddress!, pool: pool) }
            alone.withUnsafeMutableBufferPointer { alone in
                for t in 0..<tokens {
                    matmul(x.baseAddress! + t * w.columns, tokens: 1, w, into: alone.baseAddress! + t * w.rows, pool: pool)
                }
            }
        }
        #expect(batch.map(\.bitPattern) == alone.map(\.bitPattern))
    }
}
