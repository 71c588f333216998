import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// GGUF decoder models as sentence encoders (`DecoderEncoder`): vectors independent of the batch,
/// the forward passes and the threads; last and mean pooling equal to the pooling of the final
/// hidden states the generation path projects to logits; and agreement with llama.cpp's
/// `llama-embedding` (Fixtures/decoder-embeddings, written by scripts/check-decoder-embeddings).
@Suite(.serialized, .ownThread)
struct DecoderEmbeddingTests {
    /// The tiny random models (scripts/make-tiny-models): every architecture, a sliding window of 8
    /// (gemma3), models with and without BOS (qwen2 and qwen3 have none), F32, F16, BF16 and quants.
    static let tinyModels = ["gemma3-swa-f16", "llama-spm-f32", "llama3-bpe-f16", "qwen2-bf16", "qwen3-f16", "llama-spm-quant"]

    static func path(_ model: String) throws -> String {
        model == "default" ? try ModelCache().resolve(nil) : Fixtures.url("tiny/\(model).gguf").path
    }

    static let sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "Hello",
        "Embeddings from a decoder: the last token has seen every other one.",
        "Zürich, 東京 and Москва are cities; ¿qué tal? — fine.",
        String(repeating: "A long passage that spans several forward passes. ", count: 6),
        "<bos> control tokens written in the text are recognised, as on the generation path",
    ]

    static func bits(_ vectors: [[Float]]) -> [[UInt32]] { vectors.map { $0.map(\.bitPattern) } }

    @Test(arguments: tinyModels + ["default"])
    func vectorsDoNotDependOnBatchPassesOrThreads(_ model: String) throws {
        let path = try Self.path(model)
        // The default model on every precision's kernels; the tiny ones' weights take the float path anyway.
        let precisions = model == "default" ? Self.precisions : [.engineDefault]
        for (pooling, precision) in [EmbeddingPooling.last, .mean].flatMap({ pooling in precisions.map { (pooling, $0) } }) {
            let one = try DecoderEncoder(path: path, pooling: pooling, precision: precision, pool: ComputePool(threads: 1))
            // Three threads on passes of 7 tokens: every input but the shortest spans several passes.
            let three = try DecoderEncoder(path: path, pooling: pooling, precision: precision, pool: ComputePool(threads: 3),
                                           tokensPerPass: 7)
            let inputs = Self.sentences.map(one.tokenize)
            #expect(inputs.contains { $0.count > 20 })
            let together = Self.bits(three.embed(inputs, pool: three.computePool!))
            let reversed = Self.bits(one.embed(inputs.reversed(), pool: one.computePool!).reversed())
            #expect(reversed == together, "\(model) \(pooling) \(precision): batch order or passes changed a vector")
            for (i, input) in inputs.enumerated() {
                let alone = Self.bits(one.embed([input], pool: one.computePool!))[0]
                #expect(alone == together[i], "\(model) \(pooling) \(precision): input \(i) alone differs from packed")
            }
            for vector in one.embed(inputs, pool: one.computePool!) {
                #expect(vector.count == one.dimensions)
                #expect(abs(vector.reduce(0.0) { $0 + Double($1) * Double($1) } - 1) < 1e-5)
            }
        }
    }

    /// The final hidden states of one prefill: `hiddenStates` for every row, and the logits of the last.
    static func prefill(_ model: any LanguageModel, _ ids: [Int32]) -> (states: [[Float]], lastLogits: [Float]) {
        let width = model.shape.embeddingWidth
        let cache = model.makeCache()
        cache.reserve(slot: 0, positions: ids.count)
        var flat = [Float](repeating: 0, count: ids.count * width)
        let placements = ids.indices.map { TokenPlacement(slot: 0, position: $0) }
        flat.withUnsafeMutableBufferPointer { out in
            model.hiddenStates(tokens: ids, placements: placements, rows: Array(ids.indices), cache: cache, into: out.baseAddress!)
        }
        let other = model.makeCache()
        other.reserve(slot: 0, positions: ids.count)
        var logits = [Float](repeating: 0, count: model.shape.vocabularySize)
        logits.withUnsafeMutableBufferPointer { out in
            model.forward(tokens: ids, placements: placements, logitRows: [ids.count - 1], cache: other, logits: out.baseAddress!)
        }
        return (stride(from: 0, to: flat.count, by: width).map { Array(flat[$0..<($0 + width)]) }, logits)
    }

    static func outputMatrix(_ model: any LanguageModel) throws -> WeightMatrix {
        if let llama = model as? Llama { return llama.head.matrix }
        if let gemma = model as? Gemma3 { return gemma.head.matrix }
        throw TestFailure("no output head for \(model.architecture)")
    }

    @Test(arguments: tinyModels)
    func lastAndMeanPoolTheFinalStatesTheLogitsComeFrom(_ model: String) throws {
        let path = try Self.path(model)
        let pool = ComputePool(threads: 2)
        let file = try GGUFFile(path: path)
        let network = try loadLanguageModel(file, pool: pool, precision: .float32)
        let last = try DecoderEncoder(path: path, pooling: .last, precision: .float32, pool: pool)
        let mean = try DecoderEncoder(path: path, pooling: .mean, precision: .float32, pool: pool)
        let head = try Self.outputMatrix(network)
        var row = [Float](repeating: 0, count: head.columns)
        for sentence in Self.sentences {
            let ids = last.tokenize(sentence)
            let (states, logits) = Self.prefill(network, ids)
            // The hidden state is what the output projection reads: W·h gives the generation path's logits.
            let h = try #require(states.last)
            var worst = 0.0
            for v in stride(from: 0, to: head.rows, by: max(1, head.rows / 97)) {
                row.withUnsafeMutableBufferPointer { head.dequantize(row: v, into: $0.baseAddress!) }
                let dot = zip(row, h).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                worst = max(worst, abs(dot - Double(logits[v])) / max(1, abs(dot)))
            }
            #expect(worst < 1e-4, "\(model): W·h is \(worst) from the logits")

            let expectedLast = unitLength(h.map(Double.init))
            var sum = [Double](repeating: 0, count: h.count)
            for state in states { for k in sum.indices { sum[k] += Double(state[k]) } }
            let expectedMean = unitLength(sum.map { $0 / Double(states.count) })
            let gotLast = last.embed([ids], pool: pool)[0], gotMean = mean.embed([ids], pool: pool)[0]
            #expect(gotLast.map(\.bitPattern) == expectedLast.map(\.bitPattern), "\(model): last pooling")
            #expect(gotMean.map(\.bitPattern) == expectedMean.map(\.bitPattern), "\(model): mean pooling")
            if ids.count > 1 { #expect(cosine(gotLast, gotMean) < 0.9999, "\(model): last and mean pooling agree") }
        }
    }

    @Test func poolingAndPrecisionAreInTheIdentityAndClsIsRefused() throws {
        let path = try Self.path("gemma3-swa-f16")
        let pool = ComputePool(threads: 1)
        var identities: Set<String> = []
        for pooling in [EmbeddingPooling.last, .mean] {
            for precision in [MatmulPrecision.float32] + (MatmulPrecision.int8Available ? [.int16, .int8] : []) {
                let encoder = try DecoderEncoder(path: path, pooling: pooling, precision: precision, pool: pool)
                let settings = EmbeddingModelSettings(pooling: pooling, precision: precision)
                #expect(try EmbeddingModel.outputIdentity(path: path, settings: settings) == encoder.outputIdentity)
                #expect(encoder.outputIdentity.contains(String(try GGUFFile(path: path).contentFingerprint, radix: 16)))
                identities.insert(encoder.outputIdentity)
            }
        }
        #expect(identities.count == (MatmulPrecision.int8Available ? 6 : 2))
        // A decoder's default is last pooling.
        #expect(try DecoderEncoder(path: path, pool: pool).pooling == .last)
        do {
            _ = try DecoderEncoder(path: path, pooling: .cls, pool: pool)
            Issue.record("cls pooling of a decoder was accepted")
        } catch {
            #expect("\(error)".contains("cls"))
        }
    }

    @Test func textsLongerThanTheContextAreTruncatedAtTheEnd() throws {
        let encoder = try DecoderEncoder(path: try Self.path("llama-spm-f32"), pool: ComputePool(threads: 1))
        #expect(encoder.maxSequenceLength == 256)
        let long = String(repeating: "many words make a long text ", count: 80)
        let full = encoder.tokenizer.encode(long, addSpecial: true, parseSpecial: true)
        #expect(full.count > 256)
        #expect(encoder.tokenize(long) == Array(full.prefix(256)))
    }

    // MARK: Agreement with llama.cpp and the float64 pass

    /// The fixture of `model`: for each sentence llama.cpp's token ids and unit vectors, and the
    /// vectors of scripts/reference-fp64 (float64 activations), for each pooling.
    struct PeerFixture {
        var sentences: [String] = []
        var ids: [[Int32]] = []
        var llamaCpp: [EmbeddingPooling: [[Float]]] = [:]
        var float64: [EmbeddingPooling: [[Float]]] = [:]
    }

    static func peerFixture(_ model: String) throws -> PeerFixture {
        let json = try Fixtures.json("decoder-embeddings/\(model).json")
        var fixture = PeerFixture()
        func floats(_ value: JSON?) -> [Float] { (value?.arrayValue ?? []).compactMap { $0.doubleValue.map(Float.init) } }
        for record in try #require(json["records"]?.arrayValue) {
            fixture.sentences.append(try #require(record["text"]?.stringValue))
            fixture.ids.append((record["ids"]?.arrayValue ?? []).compactMap { $0.intValue.map(Int32.init) })
            for pooling in [EmbeddingPooling.last, .mean] {
                fixture.llamaCpp[pooling, default: []].append(floats(record[pooling.rawValue]))
                fixture.float64[pooling, default: []].append(floats(record["fp64_" + pooling.rawValue]))
            }
        }
        return fixture
    }

    static let precisions: [MatmulPrecision] = [.float32] + (MatmulPrecision.int8Available ? [.int16, .int8] : [])

    /// Least cosines, below what scripts/check-decoder-embeddings measured (README, embeddings). To
    /// llama.cpp: 1 - 1e-6 or closer on the tiny models, 0.9961 on the default model, whose products
    /// llama.cpp runs on 8-bit activations with a half-float KV cache (its own cosine to the float64
    /// pass is the same 0.9961; Sluice's f32 is within 3e-13 of it). To the float64 pass: f32 and
    /// int16 within 5e-7, int8 (llama.cpp's rounding) 0.99915 on the default model.
    static func bound(_ model: String, llamaCpp: Bool, _ precision: MatmulPrecision) -> Double {
        if model != "default" { return 0.99999 }
        if llamaCpp { return 0.995 }
        return precision == .int8 ? 0.998 : 0.99999
    }

    @Test(arguments: ["gemma3-swa-f16", "llama-spm-f32", "qwen3-f16", "default"])
    func agreesWithLlamaCppAndTheFloat64Pass(_ model: String) throws {
        let fixture = try Self.peerFixture(model)
        #expect(fixture.sentences.count == 8)
        let path = try Self.path(model)
        let pool = ComputePool(threads: ComputePool.availableCores)
        for precision in Self.precisions {
            for pooling in [EmbeddingPooling.last, .mean] {
                let encoder = try DecoderEncoder(path: path, pooling: pooling, precision: precision, pool: pool)
                let inputs = fixture.sentences.map(encoder.tokenize)
                #expect(inputs == fixture.ids, "\(model): token ids differ from llama.cpp's")
                let vectors = encoder.embed(inputs, pool: pool)
                for (reference, isLlamaCpp) in [(fixture.llamaCpp[pooling]!, true), (fixture.float64[pooling]!, false)] {
                    let cosines = zip(vectors, reference).map { cosine($0, $1) }
                    let worst = cosines.min() ?? 0
                    let bound = Self.bound(model, llamaCpp: isLlamaCpp, precision)
                    let what = isLlamaCpp ? "llama-embedding" : "the float64 pass"
                    #expect(cosines.count == fixture.sentences.count && worst >= bound,
                            "\(model) \(pooling) \(precision): cosines to \(what) \(cosines)")
                    print("DecoderEmbeddingTests: \(model) \(pooling.rawValue) \(precision.rawValue): worst cosine to \(what) \(worst)")
                }
            }
        }
    }
}
