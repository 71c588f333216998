import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// Sampling settings a draw may carry: the sampler's filters alone and together, hot and cold.
private let samplingGrid: [SamplingParameters] = {
    var grid: [SamplingParameters] = []
    for temperature in [0.3, 0.8, 1.5] {
        for (topK, topP, minP) in [(0, 1.0, 0.0), (0, 0.95, 0.0), (0, 0.5, 0.0), (5, 1.0, 0.0), (0, 1.0, 0.1), (40, 0.9, 0.05)] {
            var parameters = SamplingParameters()
            parameters.temperature = temperature
            parameters.topK = topK
            parameters.topP = topP
            parameters.minP = minP
            grid.append(parameters)
        }
    }
    return grid
}()

/// Uniform draws, the ends of [0, 1) among them.
private func uniforms(_ count: Int, seed: UInt64) -> [Double] {
    var generator = SplitMix64(seed: seed)
    return [0, 0x1.fffffffffffffp-1] + (0..<(count - 2)).map { _ in Double.random(in: 0..<1, using: &generator) }
}

@Suite(.ownThread, .enabled(if: MatmulPrecision.int8Available, "the integer kernels need the avx2 variant or better"))
struct SamplingHeadTests {
    /// Every token the head draws is the one `Sampler.sample` draws from the full `int16` product,
    /// over every filter, temperatures from sharp to flat, activations from small (flat rows: the
    /// head leaves them to the sampler) to large (peaked rows: it decides most), an all-zero token
    /// (every logit equal) and rows past the usable vocabulary; and the head does decide many.
    @Test(arguments: [TensorType.q8_0, .q4_K, .q6_K])
    func drawsEqualTheSamplersOnTheFullProduct(type: TensorType) throws {
        let w = RandomWeights(type, rows: 3000, columns: 256, seed: 51, precision: .int16).matrix
        let pool = ComputePool(threads: 3)
        let head = ArgmaxHead(try #require(w.int8), pool: pool)
        let tokens = 24, columns = w.columns, usable = w.rows - 7
        var x = randomActivations(tokens * columns, seed: 52)
        // Scales from 0.25 to about 250: the logits' spread grows with them.
        var scale: Float = 0.25
        for t in 0..<tokens {
            for k in 0..<columns { x[t * columns + k] *= t == tokens - 1 ? 0 : scale }
            scale *= 1.35
        }
        let full = product(x, tokens: tokens, w, pool: pool)
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: w.rows)
        defer { scratch.deallocate() }
        let workspace = SamplerWorkspace()
        var decided = 0, mismatches: [String] = []
        let draws = uniforms(8, seed: 53)
        for parameters in samplingGrid {
            for (d, uniform) in draws.enumerated() {
                // Each token its own draw, so the rows see different uniforms.
                let rowDraws = (0..<tokens).map { HeadDraw(parameters: parameters, uniform: draws[(d + $0) % draws.count]) }
                let picks = x.withUnsafeBufferPointer {
                    head.choose($0.baseAddress!, tokens: tokens, usable: usable, draws: rowDraws, scratch: scratch, pool: pool)
                }
                for t in 0..<tokens {
                    guard let token = picks[t] else { continue }
                    decided += 1
                    let expected = full.withUnsafeBufferPointer {
                        Sampler.sample($0.baseAddress! + t * w.rows, count: usable, parameters: parameters,
                                       uniform: rowDraws[t].uniform, workspace: workspace)
                    }
                    if token != expected { mismatches.append("token \(t), \(parameters), u \(uniform): \(token) vs \(expected)") }
                }
            }
        }
        #expect(mismatches.isEmpty, "\(type.name): \(mismatches.count) draws differ: \(mismatches.prefix(5))")
        let total = samplingGrid.count * draws.count * tokens
        #expect(decided * 6 >= total, "\(type.name): the head decided only \(decided) of \(total) draws")
        #expect(decided < total, "\(type.name): flat rows should be left to the sampler")
    }

    /// Rows that want every logit, given to the head beside its own, come out of its first pass bit
    /// for bit as the full product computes them, every row of the matrix included (also those past
    /// the usable vocabulary, which the pass itself does not reach); the head's own picks are those
    /// it makes without them. Small chunks make the pass's stretches and chunks many.
    @Test(arguments: [TensorType.q8_0, .q4_K, .q6_K])
    func fullRowsShareTheFirstPass(type: TensorType) throws {
        let w = RandomWeights(type, rows: 3000, columns: 256, seed: 57, precision: .int16).matrix
        let pool = ComputePool(threads: 3)
        let head = ArgmaxHead(try #require(w.int8), pool: pool, chunkBytes: 4096)
        let tokens = 6, fullCount = 5, columns = w.columns, usable = w.rows - 40
        let x = randomActivations(tokens * columns, seed: 58).map { $0 * 6 }
        let fullX = randomActivations(fullCount * columns, seed: 59).map { $0 * 3 }
        let expected = product(fullX, tokens: fullCount, w, pool: pool)
        var parameters = SamplingParameters()
        parameters.temperature = 0.8
        parameters.topP = 0.95
        let draws: [HeadDraw?] = (0..<tokens).map { $0 % 2 == 0 ? nil : HeadDraw(parameters: parameters, uniform: 0.37) }
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: w.rows)
        let output = UnsafeMutablePointer<Float>.allocate(capacity: fullCount * w.rows)
        defer { scratch.deallocate(); output.deallocate() }
        output.initialize(repeating: .nan, count: fullCount * w.rows)
        let (alone, shared) = x.withUnsafeBufferPointer { x in
            fullX.withUnsafeBufferPointer { fullX in
                (head.choose(x.baseAddress!, tokens: tokens, usable: usable, draws: draws, scratch: scratch, pool: pool),
                 head.choose(x.baseAddress!, tokens: tokens, usable: usable, draws: draws, scratch: scratch,
                             full: .init(x: fullX.baseAddress!, count: fullCount, output: output), pool: pool))
            }
        }
        #expect(alone == shared, "\(type.name): the head's picks changed with full rows beside them")
        let written = UnsafeBufferPointer(start: output, count: fullCount * w.rows).map(\.bitPattern)
        let mismatched = zip(written, expected.map(\.bitPattern)).filter { $0 != $1 }.count
        #expect(mismatched == 0, "\(type.name): \(mismatched) of the full rows' logits differ from the full product")
        // With no tokens of its own, the head still writes the full rows.
        output.initialize(repeating: .nan, count: fullCount * w.rows)
        let none = fullX.withUnsafeBufferPointer { fullX in
            head.choose(fullX.baseAddress!, tokens: 0, usable: usable, draws: [], scratch: scratch,
                        full: .init(x: fullX.baseAddress!, count: fullCount, output: output), pool: pool)
        }
        #expect(none.isEmpty)
        #expect(UnsafeBufferPointer(start: output, count: fullCount * w.rows).map(\.bitPattern) == expected.map(\.bitPattern),
                "\(type.name): full rows alone differ from the full product")
    }

    /// A model whose draws the bounds mostly leave open stops paying for the first pass on them,
    /// tries it again one step in `stepsBetweenTries`, and resumes once draws are decided again.
    @Test func drawsSkipTheFirstPassWhileItRarelyDecides() throws {
        let w = RandomWeights(.q8_0, rows: 64, columns: 64, seed: 56, precision: .int16).matrix
        let head = ArgmaxHead(try #require(w.int8), pool: ComputePool(threads: 1))
        #expect(head.drawsPay(), "a new head tries its draws")
        for _ in 0..<8 { head.recordDraws(drawn: 32, open: 30) }
        let tries = (0..<(2 * ArgmaxHead.stepsBetweenTries)).filter { _ in head.drawsPay() }.count
        #expect(tries == 2, "one try per \(ArgmaxHead.stepsBetweenTries) steps, not \(tries)")
        for _ in 0..<8 { head.recordDraws(drawn: 32, open: 2) }
        #expect(head.drawsPay() && head.drawsPay(), "decided draws go through the first pass again")
    }

    /// A row-for-row mix of greedy and drawn tokens in one call: each gets what its own path gives.
    @Test func greedyAndDrawnTokensShareAPass() throws {
        let w = RandomWeights(.q8_0, rows: 2000, columns: 128, seed: 54, precision: .int16).matrix
        let pool = ComputePool(threads: 2)
        let head = ArgmaxHead(try #require(w.int8), pool: pool)
        let tokens = 10, columns = w.columns
        var x = randomActivations(tokens * columns, seed: 55)
        for i in x.indices { x[i] *= 40 }
        let full = product(x, tokens: tokens, w, pool: pool)
        var parameters = SamplingParameters()
        parameters.temperature = 0.8
        parameters.topP = 0.95
        let draws = (0..<tokens).map { $0 % 2 == 0 ? nil : HeadDraw(parameters: parameters, uniform: Double($0) / 11) }
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: w.rows)
        defer { scratch.deallocate() }
        let picks = x.withUnsafeBufferPointer {
            head.choose($0.baseAddress!, tokens: tokens, usable: w.rows, draws: draws, scratch: scratch, pool: pool)
        }
        for t in 0..<tokens {
            let row = full.withUnsafeBufferPointer { $0.baseAddress! + t * w.rows }
            if let draw = draws[t] {
                if let token = picks[t] {
                    #expect(token == Sampler.sample(row, count: w.rows, parameters: draw.parameters, uniform: draw.uniform))
                }
            } else {
                #expect(picks[t] == Sampler.argmax(row, count: w.rows), "a greedy token always gets its argmax")
            }
        }
    }

    /// The default model, sampled as a synthetic-data job samples it: 24 sequences of real text,
    /// 24 decode steps, each with its own settings, in a batch that also holds greedy rows and rows
    /// whose logits are wanted. Every token the head draws in a `forward` equals `Sampler.sample`
    /// over the same step's full logits; rows left open and full rows get their logits, bit for
    /// bit, in their own places; greedy rows get their argmax; and the head draws most tokens. At
    /// `int8` (no first pass: every logit is already the cheap product) drawn rows get their logits.
    @Test(arguments: [MatmulPrecision.int16, .int8])
    func defaultModelDrawsEqualTheFullLogitsDraws(precision: MatmulPrecision) throws {
        let shared = try DefaultModel.require(precision)
        // Its own instance: the shared one's head keeps a history of other tests' draws (`drawsPay`).
        let model = try loadLanguageModel(shared.file, pool: shared.pool, precision: precision)
        let vocabulary = model.shape.vocabularySize, usable = shared.tokenizer.vocabularySize
        let text = shared.tokenizer.encode("""
            The river rose through the night, and by morning the lower town was under water. Boats moved \
            between the roofs; people called to each other from the windows, and somebody was playing a \
            violin on the church steps as if nothing had happened. Write a short story about the flood.
            """, addSpecial: false)
        // Per sequence: drawn (16 of them), greedy (s % 6 == 1) or wanting every logit (s % 6 == 4).
        let sequences = 24, steps = 24
        let greedy = { (s: Int) in s % 6 == 1 }, full = { (s: Int) in s % 6 == 4 }
        let cache = model.makeCache()
        var settings: [SamplingParameters] = []
        var last: [Int32] = []
        var positions: [Int] = []
        var logits = [Float](repeating: 0, count: sequences * vocabulary)
        for s in 0..<sequences {
            var parameters = SamplingParameters()
            parameters.temperature = [0.7, 0.8, 1.0, 1.3][s % 4]
            parameters.topP = [0.95, 0.9, 1.0, 0.95][(s / 4) % 4]
            parameters.topK = s % 5 == 0 ? 40 : 0
            parameters.minP = s % 7 == 3 ? 0.05 : 0
            parameters.seed = UInt64(s)
            settings.append(parameters)
            let prompt = Array(text[(s * 2)...])
            cache.reserve(slot: s, positions: prompt.count + steps)
            logits.withUnsafeMutableBufferPointer { out in
                model.forward(tokens: prompt, placements: prompt.indices.map { TokenPlacement(slot: s, position: $0) },
                              logitRows: [prompt.count - 1], cache: cache, logits: out.baseAddress!)
            }
            last.append(Sampler.argmax(logits, count: usable))
            positions.append(prompt.count)
        }
        var decided = 0, mismatches = 0, misplacedRows = 0, drawnCount = 0
        for step in 0..<steps {
            let placements = (0..<sequences).map { TokenPlacement(slot: $0, position: positions[$0]) }
            let draws = (0..<sequences).map { s -> HeadDraw? in
                greedy(s) || full(s) ? nil
                    : HeadDraw(parameters: settings[s], uniform: CounterRandom.uniform(seed: settings[s].seed, key: 7, index: UInt64(step)))
            }
            // The full logits first, then the same step again (its keys and values rewritten, the same bits) through the head.
            var expectedLogits = logits
            let expected: [Int32] = expectedLogits.withUnsafeMutableBufferPointer { out in
                model.forward(tokens: last, placements: placements, logitRows: Array(0..<sequences), cache: cache, logits: out.baseAddress!)
                return (0..<sequences).map { s in
                    let row = out.baseAddress! + s * vocabulary
                    guard let draw = draws[s] else { return Sampler.argmax(row, count: usable) }
                    return Sampler.sample(row, count: usable, parameters: draw.parameters, uniform: draw.uniform)
                }
            }
            let chosen = logits.withUnsafeMutableBufferPointer { out in
                model.forward(tokens: last, placements: placements, logitRows: Array(0..<sequences),
                              argmaxRows: ArgmaxRows(flags: (0..<sequences).map { !full($0) }, draws: draws, usableVocabulary: usable),
                              cache: cache, logits: out.baseAddress!)
            }
            for s in 0..<sequences {
                let rowWritten = full(s) || (draws[s] != nil && chosen[s] == nil)
                if rowWritten {
                    let range = (s * vocabulary)..<((s + 1) * vocabulary)
                    if !zip(logits[range], expectedLogits[range]).allSatisfy({ $0.bitPattern == $1.bitPattern }) { misplacedRows += 1 }
                }
                if full(s) {
                    if chosen[s] != nil { mismatches += 1 }
                    continue
                }
                // A drawn row the head left open has its logits written: the sampler draws from them.
                let token = chosen[s] ?? logits.withUnsafeBufferPointer {
                    Sampler.sample($0.baseAddress! + s * vocabulary, count: usable, parameters: settings[s], uniform: draws[s]!.uniform)
                }
                if draws[s] != nil {
                    drawnCount += 1
                    if chosen[s] != nil { decided += 1 }
                }
                if token != expected[s] { mismatches += 1 }
            }
            last = expected
            for s in 0..<sequences { positions[s] += 1 }
        }
        #expect(mismatches == 0, "\(mismatches) of \(sequences * steps) tokens differ from the full logits' picks")
        #expect(misplacedRows == 0, "\(misplacedRows) rows of logits are not the full product's row for their place")
        if precision == .int16 {
            #expect(decided * 2 >= drawnCount, "the head decided only \(decided) of \(drawnCount) draws")
            #expect(decided < drawnCount, "some draws of real text are flat enough to be left to the sampler")
        } else {
            #expect(decided == 0, "without the first pass every drawn row is left to the sampler")
        }
    }
}
