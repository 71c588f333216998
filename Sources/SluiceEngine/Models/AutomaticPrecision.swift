/// The precision a model runs at when none is asked for (`--precision auto`, the default).
///
/// `int16` costs two VNNI passes per weight where `int8` costs one. On a small model that
/// hardly shows: most of a step is the output head, whose greedy rows are bounded at one byte
/// and computed exactly only where they could win, so `int16`'s accuracy (greedy tokens that
/// follow a float64 pass) is nearly free. A larger model's batches are bound by the arithmetic of
/// its transformer blocks, where `int16` measured 1.3× `int8`'s time (the Llama-3.2-1B shape at
/// 32 sequences): there the default is `int8`, llama.cpp's own rounding, and `--precision int16`
/// keeps the exact path for whoever needs it. The choice depends on the file alone, so every
/// worker of a fleet makes the same one, and checkpoints and the result cache name the
/// precision it resolved to.
extension MatmulPrecision {
    /// Weights in the transformer blocks' matrices from which the default is `int8`: between
    /// the default model (Gemma 3 270M, about 100 million; Qwen3 0.6B has 440 million) and the
    /// 1B class (Gemma 3 1B about 700 million, Llama 3.2 1B 970 million).
    public static let int8FromBlockWeights = 500_000_000

    /// The precision for a model whose blocks hold `blockWeights` matrix weights: `int8` from
    /// `int8FromBlockWeights` on, else `engineDefault` (`int16`, or `f32` without the integer kernels).
    public static func automatic(blockWeights: Int) -> MatmulPrecision {
        guard int8Available else { return .float32 }
        return blockWeights >= int8FromBlockWeights ? .int8 : engineDefault
    }

    /// The precision for the model in `file` (see `automatic(blockWeights:)`).
    public static func automatic(for file: GGUFFile) -> MatmulPrecision {
        automatic(blockWeights: blockWeights(file.tensors.map { ($0.name, $0.dimensions) }))
    }

    /// The weights of the matrices inside the transformer blocks (tensors `blk.N.*` of two or
    /// more dimensions): what a batch's arithmetic scales with, leaving out the embedding and the
    /// output head. Saturates rather than trapping on a hostile file's absurd dimensions.
    static func blockWeights(_ tensors: [(name: String, dimensions: [Int])]) -> Int {
        var total = 0
        for tensor in tensors where tensor.name.hasPrefix("blk.") && tensor.dimensions.count >= 2 {
            var count = 1
            for dimension in tensor.dimensions {
                let (product, overflow) = count.multipliedReportingOverflow(by: max(0, dimension))
                count = overflow ? Int.max : product
            }
            let (sum, overflow) = total.addingReportingOverflow(count)
            total = overflow ? Int.max : sum
        }
        return total
    }
}
