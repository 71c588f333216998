import SluiceTestSupport
import Testing

@testable import SluiceEngine

private let quantizedTypes: [TensorType] = [.q8_0, .q4_0, .q5_0, .q4_K, .q5_K, .q6_K]

/// Activations like a model's final hidden state: mostly moderate, some tokens with a few
/// dimensions far larger (Gemma's hidden states have such outliers), one all zeros.
private func hiddenStates(tokens: Int, columns: Int, seed: UInt64) -> [Float] {
    var generator = SplitMix64(seed: seed)
    var x = randomActivations(tokens * columns, seed: seed)
    for t in 0..<tokens where t % 3 == 1 {
        for _ in 0..<3 { x[t * columns + Int.random(in: 0..<columns, using: &generator)] *= 40 }
    }
    for k in 0..<columns { x[(tokens - 1) * columns + k] = 0 }
    return x
}

/// The head's tokens for `x`, and `Sampler.argmax` of the full `int16` product's rows.
private func headAndFullArgmax(_ head: ArgmaxHead, _ w: WeightMatrix, _ x: [Float], tokens: Int, usable: Int,
                               pool: ComputePool) -> (chosen: [Int32], expected: [Int32]) {
    let full = product(x, tokens: tokens, w, pool: pool)
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: w.rows)
    defer { scratch.deallocate() }
    let chosen = x.withUnsafeBufferPointer { head.argmax($0.baseAddress!, tokens: tokens, usable: usable, scratch: scratch, pool: pool) }
    let expected = (0..<tokens).map { t in full.withUnsafeBufferPointer { Sampler.argmax($0.baseAddress! + t * w.rows, count: usable) } }
    return (chosen, expected)
}

@Suite(.ownThread, .enabled(if: MatmulPrecision.int8Available, "the integer kernels need the avx2 variant or better"))
struct ArgmaxHeadTests {
    /// The exact second pass computes one row alone with the kernel's own arithmetic.
    @Test(arguments: quantizedTypes, [MatmulPrecision.int16, .int8])
    func oneRowEqualsTheKernelsOutputBitForBit(type: TensorType, precision: MatmulPrecision) throws {
        let w = RandomWeights(type, rows: 37, columns: 512, seed: 31, precision: precision).matrix
        let weights = try #require(w.int8)
        let pool = ComputePool(threads: 2)
        let tokens = 7
        let x = hiddenStates(tokens: tokens, columns: w.columns, seed: 32)
        let y = product(x, tokens: tokens, w, pool: pool)
        let lowBytes = precision == .int16
        let rounded = x.withUnsafeBufferPointer {
            RoundedActivations($0.baseAddress!, tokens: tokens, columns: w.columns, block: weights.block, lowBytes: lowBytes, pool: pool)
        }
        var mismatches = 0
        for t in 0..<tokens {
            for r in 0..<w.rows {
                let value = weights.rowProduct(row: r, rounded, token: t)
                if value.bitPattern != y[t * w.rows + r].bitPattern { mismatches += 1 }
            }
        }
        #expect(mismatches == 0, "\(type.name) \(precision.rawValue): \(mismatches) rows differ from the kernel's")
    }

    /// The proven bound holds for every row: the one-byte logit is within it of the two-byte one.
    @Test(arguments: quantizedTypes)
    func firstPassStaysWithinItsBound(type: TensorType) throws {
        let coarseMatrix = RandomWeights(type, rows: 301, columns: 256, seed: 33, precision: .int8).matrix
        let fineMatrix = RandomWeights(type, rows: 301, columns: 256, seed: 33, precision: .int16).matrix
        let pool = ComputePool(threads: 2)
        let head = ArgmaxHead(try #require(fineMatrix.int8), pool: pool)
        let tokens = 12, columns = fineMatrix.columns, rows = fineMatrix.rows
        let x = hiddenStates(tokens: tokens, columns: columns, seed: 34)
        let coarse = product(x, tokens: tokens, coarseMatrix, pool: pool)
        let fine = product(x, tokens: tokens, fineMatrix, pool: pool)
        let block = head.weights.block
        let (one, two) = x.withUnsafeBufferPointer {
            (RoundedActivations($0.baseAddress!, tokens: tokens, columns: columns, block: block, lowBytes: false, pool: pool),
             RoundedActivations($0.baseAddress!, tokens: tokens, columns: columns, block: block, lowBytes: true, pool: pool))
        }
        var outside = 0, tightest = Float.infinity
        for t in 0..<tokens {
            let bound = try #require(x.withUnsafeBufferPointer { head.tokenBound($0.baseAddress! + t * columns, token: t, one, two) })
            for r in 0..<rows {
                let limit = bound.bound(rowNorm: head.rowNorms[r])
                let error = abs(coarse[t * rows + r] - fine[t * rows + r])
                if !(error <= limit) { outside += 1 }
                if error > 0 { tightest = min(tightest, limit / error) }
            }
        }
        #expect(outside == 0, "\(type.name): \(outside) logits outside the bound")
        // A bound that ignored the weights or the rounding would be far looser (or zero).
        #expect(tightest < 1000, "\(type.name): the bound is never within 1000x of an error")
    }

    /// The token equals `Sampler.argmax` of the full `int16` product, for every type, with
    /// outlier activations, an all-zero token (every logit equal: the lowest id wins) and
    /// rows past the usable vocabulary left out.
    @Test(arguments: quantizedTypes)
    func tokensEqualTheFullProductsArgmax(type: TensorType) throws {
        let w = RandomWeights(type, rows: 1000, columns: 256, seed: 35, precision: .int16).matrix
        let pool = ComputePool(threads: 3)
        let tokens = 40
        let x = hiddenStates(tokens: tokens, columns: w.columns, seed: 36)
        // Stretches of one chunk each, and chunks of 2 panels: scans that continue across chunks.
        for chunkBytes in [128 * 1024, 2 * 16 * 4 * tokens] {
            let head = ArgmaxHead(try #require(w.int8), pool: pool, chunkBytes: chunkBytes)
            for usable in [w.rows, w.rows - 9] {
                let (chosen, expected) = headAndFullArgmax(head, w, x, tokens: tokens, usable: usable, pool: pool)
                #expect(chosen == expected, "\(type.name), usable \(usable), chunks of \(chunkBytes) bytes")
                #expect(chosen.last == 0, "an all-zero token ties every row: the lowest id wins")
            }
        }
    }

    /// Flat distributions: an all-zero token ties every row, 5,000 of them (all kept, by every
    /// stretch of the first pass) or more than the candidate list holds (the token falls back to
    /// the full product); either way the lowest id wins, and the other tokens are unaffected.
    @Test(arguments: [5000, ArgmaxHead.candidateCapacity + 3000])
    func flatDistributionsFindTheSameToken(rows: Int) throws {
        let w = RandomWeights(.q8_0, rows: rows, columns: 64, seed: 39, precision: .int16).matrix
        let pool = ComputePool(threads: 2)
        let head = ArgmaxHead(try #require(w.int8), pool: pool)
        let tokens = 3
        let x = hiddenStates(tokens: tokens, columns: w.columns, seed: 40)
        let (chosen, expected) = headAndFullArgmax(head, w, x, tokens: tokens, usable: rows, pool: pool)
        #expect(chosen == expected)
    }

    /// Rows that tie exactly (duplicated weights) resolve to the lowest id, as a full argmax does.
    @Test func exactTiesGoToTheLowestRow() throws {
        let type = TensorType.q8_0, rows = 64, columns = 128
        let rowBytes = columns / type.blockSize * type.bytesPerBlock
        let source = RandomWeights(type, rows: 4, columns: columns, seed: 37)
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: rows * rowBytes, alignment: 64)
        defer { bytes.deallocate() }
        for r in 0..<rows { (bytes + r * rowBytes).copyMemory(from: source.bytes + (r % 4) * rowBytes, byteCount: rowBytes) }
        let w = WeightMatrix(name: "duplicated rows", type: type, rows: rows, columns: columns, data: bytes, precision: .int16)
        let pool = ComputePool(threads: 2)
        let head = ArgmaxHead(try #require(w.int8), pool: pool)
        let tokens = 9
        let x = randomActivations(tokens * columns, seed: 38)
        let (chosen, expected) = headAndFullArgmax(head, w, x, tokens: tokens, usable: rows, pool: pool)
        #expect(chosen == expected)
        #expect(chosen.allSatisfy { $0 < 4 }, "each maximum's first copy is among rows 0-3")
    }
}
