import SluiceTestSupport
import Testing

@testable import SluiceEngine

private let quantizedTypes: [TensorType] = [.q8_0, .q4_0, .q5_0, .q4_K, .q5_K, .q6_K]
private let integerPrecisions: [MatmulPrecision] = [.int16, .int8]

/// `matmul` at one precision into a fresh array.
func product(_ x: [Float], tokens: Int, _ w: WeightMatrix, pool: ComputePool) -> [Float] {
    var y = [Float](repeating: .nan, count: tokens * w.rows)
    x.withUnsafeBufferPointer { x in
        y.withUnsafeMutableBufferPointer { matmul(x.baseAddress!, tokens: tokens, w, into: $0.baseAddress!, pool: pool) }
    }
    return y
}

@Suite(.ownThread, .enabled(if: MatmulPrecision.int8Available, "the integer kernels need the avx2 variant or better"))
struct IntegerMatMulTests {
    @Test(arguments: quantizedTypes)
    func integerRowsDecodeToTheDequantizersFloats(type: TensorType) {
        let weights = RandomWeights(type, rows: 19, columns: 512, seed: 11, precision: .int16)
        let w = weights.matrix
        #expect(w.precision == .int16 && w.int8 != nil)
        // Equal as numbers: a zero weight with a negative scale is -0 from the file's
        // blocks and +0 from `s * u - m` (bias minus bias), which no product can tell apart.
        let mismatches = decodeMismatches(w) { $0 == $1 }
        #expect(mismatches == 0, "\(mismatches) weights of \(type.name) decode differently from dequantizeRow")
    }

    /// Each output is the float product up to what rounding the activations can change:
    /// at most half a step per element (max|x| / 127 per block for int8, 256 times finer
    /// for int16) times the weight's magnitude, summed, plus float rounding. A kernel that
    /// mixed up rows, blocks, scales or offsets would land far outside.
    @Test(arguments: quantizedTypes, integerPrecisions)
    func outputsStayWithinTheRoundingBound(type: TensorType, precision: MatmulPrecision) {
        let columns = 512, rows = 37
        let integer = RandomWeights(type, rows: rows, columns: columns, seed: 12, precision: precision).matrix
        let float = RandomWeights(type, rows: rows, columns: columns, seed: 12).matrix
        let pool = ComputePool(threads: 2)
        let block = type == .q6_K ? 16 : 32
        let stepsPerUnit = precision == .int16 ? 127.0 * 256 : 127.0
        let row = UnsafeMutablePointer<Float>.allocate(capacity: columns)
        defer { row.deallocate() }
        for tokens in [1, 3, 8, 45] {
            let x = randomActivations(tokens * columns, seed: UInt64(100 + tokens))
            let y = product(x, tokens: tokens, integer, pool: pool)
            let reference = product(x, tokens: tokens, float, pool: pool)
            var outside = 0, worstShare = 0.0
            for r in 0..<rows {
                float.dequantize(row: r, into: row)
                for t in 0..<tokens {
                    var bound = 0.0, magnitude = 0.0
                    for b in 0..<(columns / block) {
                        var amax = 0.0, weightSum = 0.0
                        for k in (b * block)..<((b + 1) * block) {
                            amax = max(amax, Double(abs(x[t * columns + k])))
                            weightSum += Double(abs(row[k]))
                            magnitude += Double(abs(row[k] * x[t * columns + k]))
                        }
                        bound += amax / stepsPerUnit / 2 * 1.01 * weightSum
                    }
                    bound += 1e-5 * magnitude
                    let error = abs(Double(y[t * rows + r]) - Double(reference[t * rows + r]))
                    if !(error <= bound) { outside += 1 }
                    worstShare = max(worstShare, error / bound)
                }
            }
            #expect(outside == 0, "\(type.name) \(precision.rawValue), \(tokens) tokens: \(outside) outputs outside the rounding bound")
            // Rounding errors mostly cancel: outputs stay well inside the worst case.
            #expect(worstShare < 0.5, "\(type.name) \(precision.rawValue), \(tokens) tokens: an error reached \(worstShare) of its bound")
        }
    }

    /// Every row of a T-token product is bit for bit the product of that token alone,
    /// whatever T, the tile it falls in and the number of threads.
    @Test(arguments: quantizedTypes, integerPrecisions)
    func resultsAreBatchInvariant(type: TensorType, precision: MatmulPrecision) {
        let w = RandomWeights(type, rows: 37, columns: 512, seed: 13, precision: precision).matrix
        let maxTokens = 40
        let x = randomActivations(maxTokens * w.columns, seed: 14)
        let single = ComputePool(threads: 1)
        var alone: [Float] = []
        for t in 0..<maxTokens {
            alone += product(Array(x[(t * w.columns)..<((t + 1) * w.columns)]), tokens: 1, w, pool: single)
        }
        for threads in [1, 2, 3] {
            let pool = ComputePool(threads: threads)
            for tokens in 1...maxTokens {
                let y = product(Array(x[0..<(tokens * w.columns)]), tokens: tokens, w, pool: pool)
                let differing = (0..<(tokens * w.rows)).filter { y[$0].bitPattern != alone[$0].bitPattern }.count
                #expect(differing == 0, "\(type.name) \(precision.rawValue), \(tokens) tokens, \(threads) threads: \(differing) outputs differ from T=1")
            }
        }
    }

    /// Long prompts, whose work items split the tokens into blocks, stay batch-invariant.
    @Test(arguments: integerPrecisions)
    func longBatchesSplitIntoTokenBlocksAreBatchInvariant(precision: MatmulPrecision) {
        let w = RandomWeights(.q5_0, rows: 20, columns: 2048, seed: 15, precision: precision).matrix
        let tokens = 301  // 2048 columns: 128 tokens per block, so three blocks, the last partial
        let x = randomActivations(tokens * w.columns, seed: 16)
        let pool = ComputePool(threads: 3)
        let batch = product(x, tokens: tokens, w, pool: pool)
        var alone: [Float] = []
        for t in 0..<tokens {
            alone += product(Array(x[(t * w.columns)..<((t + 1) * w.columns)]), tokens: 1, w, pool: pool)
        }
        #expect(batch.map(\.bitPattern) == alone.map(\.bitPattern))
    }

    /// Several products of the same activations in one call (Q/K/V, gate/up), rounded once even
    /// where their blocks differ (Q6_K rounds per 16), give bit for bit what separate calls give.
    @Test(arguments: integerPrecisions)
    func productsSharingActivationsEqualSeparateCalls(precision: MatmulPrecision) {
        let columns = 512
        let matrices = [RandomWeights(.q5_0, rows: 37, columns: columns, seed: 18, precision: precision),
                        RandomWeights(.q6_K, rows: 16, columns: columns, seed: 19, precision: precision),
                        RandomWeights(.q4_K, rows: 45, columns: columns, seed: 20, precision: precision)]
        let pool = ComputePool(threads: 2)
        for tokens in [1, 7, 70] {
            let x = randomActivations(tokens * columns, seed: UInt64(200 + tokens))
            let separate = matrices.map { product(x, tokens: tokens, $0.matrix, pool: pool) }
            let outputs = matrices.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: tokens * $0.matrix.rows) }
            defer { for output in outputs { output.deallocate() } }
            for output in outputs { output.initialize(repeating: .nan) }
            x.withUnsafeBufferPointer { x in
                matmul(x.baseAddress!, tokens: tokens, zip(matrices, outputs).map { ($0.matrix, $1.baseAddress!) }, pool: pool)
            }
            for i in matrices.indices {
                #expect(outputs[i].map(\.bitPattern) == separate[i].map(\.bitPattern),
                        "\(precision.rawValue), \(tokens) tokens: product \(i) differs from its own call")
            }
        }
    }

    /// Signed types take each block's offset (scale × bias) off its integer sum exactly, so
    /// weights that are all zero, whatever their scales, give exact zeros for any activations;
    /// an offset subtracted in floats would leave rounding residue.
    @Test(arguments: [TensorType.q8_0, .q4_0], integerPrecisions)
    func zeroWeightsGiveExactZeros(type: TensorType, precision: MatmulPrecision) {
        let rows = 32, columns = 256
        let rowBytes = columns / type.blockSize * type.bytesPerBlock
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: rows * rowBytes, alignment: 64)
        defer { bytes.deallocate() }
        var generator = SplitMix64(seed: 19)
        for b in 0..<(rows * columns / type.blockSize) {
            let block = bytes + b * type.bytesPerBlock
            block.storeBytes(of: Float16(Float.random(in: -0.05...0.05, using: &generator)).bitPattern, as: UInt16.self)
            // Quant 0: the byte 0 for Q8_0, the nibble 8 (0 after its bias) for Q4_0.
            (block + 2).initializeMemory(as: UInt8.self, repeating: type == .q8_0 ? 0 : 0x88, count: type.bytesPerBlock - 2)
        }
        let w = WeightMatrix(name: "zeros", type: type, rows: rows, columns: columns, data: bytes, precision: precision)
        #expect(w.int8 != nil)
        let x = randomActivations(7 * columns, seed: 20)
        let y = product(x, tokens: 7, w, pool: ComputePool(threads: 1))
        #expect(y.allSatisfy { $0 == 0 }, "\(type.name) \(precision.rawValue): \(y.filter { $0 != 0 }.count) nonzero outputs")
    }

    /// Rows of zeros (padding, masked positions) give exact zeros, not NaN.
    @Test func zeroActivationsGiveZeros() {
        let w = RandomWeights(.q8_0, rows: 16, columns: 256, seed: 17, precision: .int16).matrix
        let y = product([Float](repeating: 0, count: 2 * 256), tokens: 2, w, pool: ComputePool(threads: 1))
        #expect(y.allSatisfy { $0 == 0 })
    }
}
