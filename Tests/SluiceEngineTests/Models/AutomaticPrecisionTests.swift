import Testing

@testable import SluiceEngine

/// `--precision auto`: int16 for small models (the default model among them), int8 where a
/// batch is bound by the blocks' arithmetic, decided from the file alone.
struct AutomaticPrecisionTests {
    /// The tensors of a Llama-style model with `layers` blocks (GGUF dimensions: inputs first),
    /// with the embedding, the head and the norms a real file has.
    static func shape(layers: Int, width: Int, queryWidth: Int, kvWidth: Int, feedForward: Int,
                      vocabulary: Int) -> [(name: String, dimensions: [Int])] {
        var tensors: [(name: String, dimensions: [Int])] = [("token_embd.weight", [width, vocabulary]),
                                                             ("output.weight", [width, vocabulary]),
                                                             ("output_norm.weight", [width])]
        for layer in 0..<layers {
            let p = "blk.\(layer)."
            tensors += [(p + "attn_norm.weight", [width]), (p + "attn_q.weight", [width, queryWidth]),
                        (p + "attn_k.weight", [width, kvWidth]), (p + "attn_v.weight", [width, kvWidth]),
                        (p + "attn_output.weight", [queryWidth, width]), (p + "ffn_norm.weight", [width]),
                        (p + "ffn_gate.weight", [width, feedForward]), (p + "ffn_up.weight", [width, feedForward]),
                        (p + "ffn_down.weight", [feedForward, width])]
        }
        return tensors
    }

    static let gemma3_270M = shape(layers: 18, width: 640, queryWidth: 1024, kvWidth: 256, feedForward: 2048, vocabulary: 262_144)
    static let qwen3_0_6B = shape(layers: 28, width: 1024, queryWidth: 2048, kvWidth: 1024, feedForward: 3072, vocabulary: 151_936)
    static let gemma3_1B = shape(layers: 26, width: 1152, queryWidth: 1024, kvWidth: 256, feedForward: 6912, vocabulary: 262_144)
    static let llama32_1B = shape(layers: 16, width: 2048, queryWidth: 2048, kvWidth: 512, feedForward: 8192, vocabulary: 128_256)

    @Test func blockWeightsCountTheBlocksMatricesOnly() {
        // Per block: attention 640·(1024 + 256 + 256) + 1024·640, feed-forward 3 · 640 · 2048; no norms, embedding or head.
        #expect(MatmulPrecision.blockWeights(Self.gemma3_270M) == 18 * (640 * 1536 + 1024 * 640 + 3 * 640 * 2048))
        #expect(MatmulPrecision.blockWeights(Self.llama32_1B) == 16 * (2048 * 3072 + 2048 * 2048 + 3 * 2048 * 8192))
        #expect(MatmulPrecision.blockWeights([("token_embd.weight", [2048, 128_256]), ("blk.0.attn_norm.weight", [2048])]) == 0)
    }

    @Test func absurdDimensionsSaturateInsteadOfTrapping() {
        let hostile: [(name: String, dimensions: [Int])] = [("blk.0.ffn_up.weight", [Int.max, 3]),
                                                            ("blk.0.ffn_down.weight", [Int.max / 2, 2]),
                                                            ("blk.1.ffn_up.weight", [-5, 7])]
        #expect(MatmulPrecision.blockWeights(hostile) == Int.max)
        #expect(MatmulPrecision.blockWeights([("blk.1.ffn_up.weight", [-5, 7])]) == 0)
    }

    @Test(.enabled(if: MatmulPrecision.int8Available, "the integer precisions need the avx2 kernels or better"))
    func smallModelsKeepInt16AndTheOneBillionClassGetsInt8() {
        func automatic(_ shape: [(name: String, dimensions: [Int])]) -> MatmulPrecision {
            .automatic(blockWeights: MatmulPrecision.blockWeights(shape))
        }
        #expect(automatic(Self.gemma3_270M) == .int16)
        #expect(automatic(Self.qwen3_0_6B) == .int16)
        #expect(automatic(Self.gemma3_1B) == .int8)
        #expect(automatic(Self.llama32_1B) == .int8)
        #expect(MatmulPrecision.automatic(blockWeights: MatmulPrecision.int8FromBlockWeights - 1) == .int16)
        #expect(MatmulPrecision.automatic(blockWeights: MatmulPrecision.int8FromBlockWeights) == .int8)
        #expect(MatmulPrecision.automatic(blockWeights: Int.max) == .int8)
    }

    @Test(.enabled(if: !MatmulPrecision.int8Available, "only without the integer kernels"))
    func withoutTheIntegerKernelsEveryModelRunsInFloat32() {
        #expect(MatmulPrecision.automatic(blockWeights: 0) == .float32)
        #expect(MatmulPrecision.automatic(blockWeights: Int.max) == .float32)
    }

    /// The default model keeps the precision (and so the outputs, checkpoints and cached results)
    /// it had before the automatic choice existed.
    @Test func theDefaultModelKeepsTheEngineDefault() throws {
        let model = try DefaultModel.require()
        #expect(MatmulPrecision.blockWeights(model.file.tensors.map { ($0.name, $0.dimensions) }) < MatmulPrecision.int8FromBlockWeights)
        #expect(MatmulPrecision.automatic(for: model.file) == .engineDefault)
    }
}
