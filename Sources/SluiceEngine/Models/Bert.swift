import CSluiceKernels
import Foundation
import SluiceCore

/// How a sentence-embedding model turns its token states into one vector.
public enum EmbeddingPooling: String, Sendable, CaseIterable {
    /// The average of every token's final state.
    case mean
    /// The final state of the first token (`[CLS]`).
    case cls
    /// The final state of the last token: under causal attention (a decoder model) the only
    /// one that has seen the whole input.
    case last
}

/// The shape of a BERT encoder, from its `config.json`.
public struct BertShape: Sendable, Equatable {
    public var hidden: Int
    public var layers: Int
    public var heads: Int
    public var intermediate: Int
    public var vocabularySize: Int
    public var maxPositions: Int
    public var tokenTypes: Int
    public var layerNormEpsilon: Float

    public var headDimension: Int { hidden / heads }
}

/// A BERT encoder (bidirectional attention, absolute position and token type embeddings,
/// post-LayerNorm residual blocks, erf GELU) with sentence-transformers pooling and L2
/// normalization: all-MiniLM-L6-v2 and the rest of the family, read from a Hugging Face folder
/// (`config.json`, `model.safetensors`, `1_Pooling/config.json`).
///
/// `embed` runs a batch of sequences as one packed forward pass: their tokens are laid end to
/// end (no padding), every matrix product covers all of them, and attention runs per sequence.
/// Each row of each product is reduced in the kernels' fixed order and every other step is per
/// token or per sequence, so a sequence's vector is the same bit for bit whatever shares its
/// batch and however many threads compute it.
public final class BertModel: @unchecked Sendable {
    // Sendable: immutable after init; `embed` allocates its own scratch.

    public let shape: BertShape
    public let pooling: EmbeddingPooling
    /// A fingerprint of the weights' content (see `SafeTensorsFile.contentFingerprint`).
    public let contentFingerprint: UInt64

    private let wordEmbeddings: [Float]
    private let positionEmbeddings: [Float]
    private let tokenTypeEmbeddings: [Float]
    private let embeddingNorm: (weight: [Float], bias: [Float])
    private let blocks: [Block]
    /// Owns the float copies of the matrices the `WeightMatrix` values point into.
    private let storage: [UnsafeMutableBufferPointer<Float>]

    struct Block {
        /// Query, key and value stacked: `3·hidden` rows.
        var qkv: WeightMatrix
        var qkvBias: [Float]
        var output: WeightMatrix
        var outputBias: [Float]
        var attentionNorm: (weight: [Float], bias: [Float])
        var up: WeightMatrix
        var upBias: [Float]
        var down: WeightMatrix
        var downBias: [Float]
        var outputNorm: (weight: [Float], bias: [Float])
    }

    /// Loads the model in the folder `directory`, pooling as its `1_Pooling/config.json` says
    /// unless `pooling` overrides it.
    public init(directory: String, pooling: EmbeddingPooling? = nil) throws {
        let config = try Self.readJSON(directory + "/config.json")
        func int(_ key: String, default value: Int? = nil, _ range: ClosedRange<Int>) throws -> Int {
            guard let n = config[key]?.intValue ?? value else { throw ModelLoadError("\(directory)/config.json has no integer '\(key)'") }
            guard range.contains(n) else { throw ModelLoadError("\(directory)/config.json: '\(key)' is \(n), outside \(range)") }
            return n
        }
        let modelType = config["model_type"]?.stringValue ?? "bert"
        guard modelType == "bert" else { throw ModelLoadError("\(directory): model_type \(modelType) is not supported (bert is)") }
        if let act = config["hidden_act"]?.stringValue, act != "gelu" {
            throw ModelLoadError("\(directory): hidden_act \(act) is not supported (gelu is)")
        }
        if let kind = config["position_embedding_type"]?.stringValue, kind != "absolute" {
            throw ModelLoadError("\(directory): position_embedding_type \(kind) is not supported (absolute is)")
        }
        var shape = BertShape(
            hidden: try int("hidden_size", 16...16384), layers: try int("num_hidden_layers", 1...256),
            heads: try int("num_attention_heads", 1...1024), intermediate: try int("intermediate_size", 1...65536),
            vocabularySize: try int("vocab_size", 1...1_000_000), maxPositions: try int("max_position_embeddings", 2...65536),
            tokenTypes: try int("type_vocab_size", default: 2, 1...16), layerNormEpsilon: 1e-12)
        if let eps = config["layer_norm_eps"]?.doubleValue {
            guard eps > 0, eps < 1 else { throw ModelLoadError("\(directory)/config.json: layer_norm_eps \(eps) is out of range") }
            shape.layerNormEpsilon = Float(eps)
        }
        guard shape.hidden % shape.heads == 0 else {
            throw ModelLoadError("\(directory): hidden_size \(shape.hidden) is not a multiple of num_attention_heads \(shape.heads)")
        }
        self.shape = shape
        self.pooling = try pooling ?? Self.readPooling(directory)

        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: directory + "/model.safetensors") } catch { throw ModelLoadError(error.description) }
        contentFingerprint = file.contentFingerprint
        let prefix = file.tensor(named: "embeddings.word_embeddings.weight") == nil ? "bert." : ""
        var storage: [UnsafeMutableBufferPointer<Float>] = []
        func floats(_ name: String, _ expected: [Int]) throws -> [Float] {
            guard let tensor = file.tensor(named: prefix + name) else { throw ModelLoadError("\(file.path) has no tensor '\(prefix + name)'") }
            guard tensor.shape == expected else {
                throw ModelLoadError("\(file.path): tensor '\(tensor.name)' has shape \(tensor.shape), expected \(expected)")
            }
            return try Self.convert(tensor, path: file.path)
        }
        func matrix(_ names: [String], columns: Int, rows: Int) throws -> WeightMatrix {
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: rows * columns * names.count)
            storage.append(buffer)
            for (i, name) in names.enumerated() {
                let values = try floats(name, [rows, columns])
                _ = UnsafeMutableBufferPointer(rebasing: buffer[(i * rows * columns)...]).initialize(from: values)
            }
            return WeightMatrix(name: names[0], type: .f32, rows: rows * names.count, columns: columns,
                                data: UnsafeRawPointer(buffer.baseAddress!))
        }
        let h = shape.hidden
        wordEmbeddings = try floats("embeddings.word_embeddings.weight", [shape.vocabularySize, h])
        positionEmbeddings = try floats("embeddings.position_embeddings.weight", [shape.maxPositions, h])
        tokenTypeEmbeddings = try floats("embeddings.token_type_embeddings.weight", [shape.tokenTypes, h])
        embeddingNorm = (try floats("embeddings.LayerNorm.weight", [h]), try floats("embeddings.LayerNorm.bias", [h]))
        var blocks: [Block] = []
        for layer in 0..<shape.layers {
            let p = "encoder.layer.\(layer)."
            let attention = p + "attention.self."
            blocks.append(Block(
                qkv: try matrix([attention + "query.weight", attention + "key.weight", attention + "value.weight"], columns: h, rows: h),
                qkvBias: try floats(attention + "query.bias", [h]) + floats(attention + "key.bias", [h]) + floats(attention + "value.bias", [h]),
                output: try matrix([p + "attention.output.dense.weight"], columns: h, rows: h),
                outputBias: try floats(p + "attention.output.dense.bias", [h]),
                attentionNorm: (try floats(p + "attention.output.LayerNorm.weight", [h]), try floats(p + "attention.output.LayerNorm.bias", [h])),
                up: try matrix([p + "intermediate.dense.weight"], columns: h, rows: shape.intermediate),
                upBias: try floats(p + "intermediate.dense.bias", [shape.intermediate]),
                down: try matrix([p + "output.dense.weight"], columns: shape.intermediate, rows: h),
                downBias: try floats(p + "output.dense.bias", [h]),
                outputNorm: (try floats(p + "output.LayerNorm.weight", [h]), try floats(p + "output.LayerNorm.bias", [h]))))
        }
        self.blocks = blocks
        self.storage = storage
    }

    deinit { for buffer in storage { buffer.deallocate() } }

    static func readJSON(_ path: String) throws -> JSON {
        guard let data = FileManager.default.contents(atPath: path) else { throw ModelLoadError("cannot read '\(path)'") }
        do { return try JSON.parse([UInt8](data)) } catch { throw ModelLoadError("'\(path)' is not JSON: \(error)") }
    }

    /// sentence-transformers' pooling config; mean pooling when the folder has none.
    static func readPooling(_ directory: String) throws -> EmbeddingPooling {
        let path = directory + "/1_Pooling/config.json"
        guard FileManager.default.fileExists(atPath: path) else { return .mean }
        let config = try readJSON(path)
        let modes: [(key: String, pooling: EmbeddingPooling)] = [
            ("pooling_mode_mean_tokens", .mean), ("pooling_mode_cls_token", .cls), ("pooling_mode_lasttoken", .last)]
        for unsupported in ["pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens"]
            where config[unsupported]?.boolValue == true {
            throw ModelLoadError("\(path): \(unsupported) is not supported (mean, CLS and last-token pooling are)")
        }
        let on = modes.filter { config[$0.key]?.boolValue == true }
        guard on.count == 1 else { throw ModelLoadError("\(path): exactly one of mean, CLS and last-token pooling must be on") }
        return on[0].pooling
    }

    static func convert(_ tensor: SafeTensor, path: String) throws -> [Float] {
        let count = tensor.elementCount
        switch tensor.dtype {
        case .f32:
            return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                memcpy(buffer.baseAddress!, tensor.data, count * 4)
                initialized = count
            }
        case .f16:
            return (0..<count).map { Float(Float16(bitPattern: UInt16(littleEndian: tensor.data.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)))) }
        case .bf16:
            return (0..<count).map { Float(bitPattern: UInt32(UInt16(littleEndian: tensor.data.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) << 16) }
        case .f64, .i64, .i32:
            throw ModelLoadError("\(path): tensor '\(tensor.name)' is \(tensor.dtype.rawValue); weights must be F32, F16 or BF16")
        }
    }

    /// Unit-length embeddings of `sequences` (token ids, each 1 to `shape.maxPositions` long,
    /// every id below `shape.vocabularySize`): one vector of `shape.hidden` floats per sequence,
    /// in order, as one packed forward pass.
    public func embed(_ sequences: [[Int32]], pool: ComputePool) -> [[Float]] {
        let h = shape.hidden
        let total = sequences.reduce(0) { $0 + $1.count }
        guard total > 0 else { return sequences.map { _ in [Float](repeating: 0, count: h) } }
        var starts: [Int] = []
        var offset = 0
        for sequence in sequences {
            precondition(!sequence.isEmpty && sequence.count <= shape.maxPositions, "sequence length out of range")
            starts.append(offset)
            offset += sequence.count
        }
        let x = UnsafeMutablePointer<Float>.allocate(capacity: total * h)
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: total * max(3 * h, shape.intermediate))
        let context = UnsafeMutablePointer<Float>.allocate(capacity: total * h)
        defer { x.deallocate(); scratch.deallocate(); context.deallocate() }

        // Embeddings: word + position + token type 0, then LayerNorm.
        wordEmbeddings.withUnsafeBufferPointer { words in
            positionEmbeddings.withUnsafeBufferPointer { positions in
                tokenTypeEmbeddings.withUnsafeBufferPointer { types in
                    for (s, sequence) in sequences.enumerated() {
                        for (position, id) in sequence.enumerated() {
                            precondition(id >= 0 && Int(id) < shape.vocabularySize, "token id out of range")
                            let row = x + (starts[s] + position) * h
                            let word = words.baseAddress! + Int(id) * h, place = positions.baseAddress! + position * h
                            for i in 0..<h { row[i] = (word[i] + place[i]) + types[i] }
                        }
                    }
                }
            }
        }
        Self.layerNorm(x, rows: total, width: h, embeddingNorm, epsilon: shape.layerNormEpsilon, pool: pool)

        for block in blocks {
            // Attention: x = LN(x + (softmax(QKᵀ/√d)V)·Wo + bo).
            Self.product(x, tokens: total, block.qkv, bias: block.qkvBias, into: scratch, pool: pool)
            attention(qkv: scratch, starts: starts, lengths: sequences.map(\.count), into: context, pool: pool)
            Self.product(context, tokens: total, block.output, bias: block.outputBias, into: scratch, pool: pool)
            Self.addRows(scratch, into: x, count: total * h, pool: pool)
            Self.layerNorm(x, rows: total, width: h, block.attentionNorm, epsilon: shape.layerNormEpsilon, pool: pool)
            // Feed-forward: x = LN(x + GELU(x·Wiᵀ + bi)·Woᵀ + bo).
            Self.product(x, tokens: total, block.up, bias: block.upBias, into: scratch, pool: pool)
            forEachRange(total * shape.intermediate, minimumPerChunk: ElementwiseSplit.gateElements, granule: 16, pool: pool) { range in
                geluErf(scratch + range.lowerBound, count: range.count)
            }
            Self.product(scratch, tokens: total, block.down, bias: block.downBias, into: context, pool: pool)
            Self.addRows(context, into: x, count: total * h, pool: pool)
            Self.layerNorm(x, rows: total, width: h, block.outputNorm, epsilon: shape.layerNormEpsilon, pool: pool)
        }

        // Pooling in Double, then L2 normalization.
        return sequences.indices.map { s in
            let first = x + starts[s] * h
            var pooled = [Double](repeating: 0, count: h)
            switch pooling {
            case .cls:
                for i in 0..<h { pooled[i] = Double(first[i]) }
            case .last:
                let last = first + (sequences[s].count - 1) * h
                for i in 0..<h { pooled[i] = Double(last[i]) }
            case .mean:
                for t in 0..<sequences[s].count {
                    let row = first + t * h
                    for i in 0..<h { pooled[i] += Double(row[i]) }
                }
                let n = Double(sequences[s].count)
                for i in 0..<h { pooled[i] /= n }
            }
            return unitLength(pooled)
        }
    }

    /// Tokens per matrix product call: their activations stay in L2 while the weights stream past.
    static let tokensPerProduct = 64

    /// `y = x·Wᵀ + b`, in blocks of tokens (each output element is one fixed-order dot product,
    /// so blocking never changes a result).
    static func product(_ x: UnsafePointer<Float>, tokens: Int, _ w: WeightMatrix, bias: [Float],
                        into y: UnsafeMutablePointer<Float>, pool: ComputePool) {
        var start = 0
        while start < tokens {
            let count = min(tokensPerProduct, tokens - start)
            matmul(x + start * w.columns, tokens: count, w, into: y + start * w.rows, pool: pool)
            start += count
        }
        bias.withUnsafeBufferPointer { b in
            forEachRange(tokens, minimumPerChunk: ElementwiseSplit.rows(ofWidth: w.rows), pool: pool) { range in
                for t in range {
                    let row = y + t * w.rows
                    for i in 0..<w.rows { row[i] += b[i] }
                }
            }
        }
    }

    static func addRows(_ source: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float>, count: Int, pool: ComputePool) {
        forEachRange(count, minimumPerChunk: ElementwiseSplit.addElements, granule: 16, pool: pool) { range in
            for i in range { target[i] += source[i] }
        }
    }

    /// LayerNorm of each row in place; mean and variance in Double (two passes), like `rmsNorm`.
    static func layerNorm(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int, _ parameters: (weight: [Float], bias: [Float]),
                          epsilon: Float, pool: ComputePool) {
        parameters.weight.withUnsafeBufferPointer { weight in
            parameters.bias.withUnsafeBufferPointer { bias in
                forEachRange(rows, minimumPerChunk: ElementwiseSplit.rows(ofWidth: width), pool: pool) { range in
                    for r in range {
                        let row = x + r * width
                        var sum = 0.0
                        for i in 0..<width { sum += Double(row[i]) }
                        let mean = sum / Double(width)
                        var squares = 0.0
                        for i in 0..<width {
                            let d = Double(row[i]) - mean
                            squares += d * d
                        }
                        let scale = 1 / (squares / Double(width) + Double(epsilon)).squareRoot()
                        for i in 0..<width {
                            row[i] = Float((Double(row[i]) - mean) * scale) * weight[i] + bias[i]
                        }
                    }
                }
            }
        }
    }

    /// Bidirectional multi-head attention of every sequence over itself. `qkv` holds each
    /// token's query, key and value (`3·hidden` floats); `context` gets `hidden` floats per token.
    /// One work item is one sequence and head, computed alone in a fixed order.
    func attention(qkv: UnsafePointer<Float>, starts: [Int], lengths: [Int], into context: UnsafeMutablePointer<Float>, pool: ComputePool) {
        let h = shape.hidden, d = shape.headDimension, heads = shape.heads
        let stride = 3 * h
        let scale = Float(1 / Double(d).squareRoot())
        let longest = lengths.max() ?? 0
        pool.parallelFor(starts.count * heads) { item in
            let s = item / heads, head = item % heads
            let n = lengths[s]
            let base = qkv + starts[s] * stride
            withUnsafeTemporaryAllocation(of: Float.self, capacity: longest + d) { buffer in
                let scores = buffer.baseAddress!, accumulator = scores + longest
                for i in 0..<n {
                    let query = base + i * stride + head * d
                    var largest = -Float.infinity
                    for j in 0..<n {
                        let score = dot(query, base + j * stride + h + head * d, count: d) * scale
                        scores[j] = score
                        largest = max(largest, score)
                    }
                    var total: Float = 0
                    if avx2Available {
                        sluice_exp_shifted_avx2(scores, n, largest)
                    } else {
                        sluice_exp_shifted_baseline(scores, n, largest)
                    }
                    for j in 0..<n { total += scores[j] }
                    let inverse = 1 / total
                    for k in 0..<d { accumulator[k] = 0 }
                    for j in 0..<n {
                        let value = base + j * stride + 2 * h + head * d
                        let weight = scores[j]
                        if avx2Available {
                            sluice_multiply_add_avx2(accumulator, weight, value, d)
                        } else {
                            sluice_multiply_add_baseline(accumulator, weight, value, d)
                        }
                    }
                    let out = context + (starts[s] + i) * h + head * d
                    for k in 0..<d { out[k] = accumulator[k] * inverse }
                }
            }
        }
    }
}

/// `x = x·Φ(x)`, GELU in its exact (erf) form as BERT defines it, sixteen lanes at a time.
///
/// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5·10⁻⁷), with `exp16`; the same
/// operations on every lane, so a result does not depend on where its element falls. In C
/// (`sluice_gelu_erf_avx2` or `_baseline`, the operations of `portableGeluErf`).
func geluErf(_ x: UnsafeMutablePointer<Float>, count: Int) {
    if avx2Available {
        sluice_gelu_erf_avx2(x, count)
    } else {
        sluice_gelu_erf_baseline(x, count)
    }
}

/// `geluErf` in Swift, the C kernels' reference.
func portableGeluErf(_ x: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i < count {
        let n = min(16, count - i)
        let v = loadPartial16(x + i, count: n)
        let z = v * Float(1 / 2.0.squareRoot())
        let signBit = SIMD16<UInt32>(repeating: 0x8000_0000)
        let bits = unsafeBitCast(z, to: SIMD16<UInt32>.self)
        let a = unsafeBitCast(bits & ~signBit, to: SIMD16<Float>.self)
        let t = 1 / (1 + 0.327_591_1 * a)
        var p = SIMD16<Float>(repeating: 1.061_405_429)
        p = SIMD16(repeating: -1.453_152_027).addingProduct(p, t)
        p = SIMD16(repeating: 1.421_413_741).addingProduct(p, t)
        p = SIMD16(repeating: -0.284_496_736).addingProduct(p, t)
        p = SIMD16(repeating: 0.254_829_592).addingProduct(p, t)
        let magnitude = 1 - p * t * exp16(-(a * a))
        let erf = unsafeBitCast(unsafeBitCast(magnitude, to: SIMD16<UInt32>.self) | (bits & signBit), to: SIMD16<Float>.self)
        storePartial16(0.5 * v * (1 + erf), x + i, count: n)
        i += 16
    }
}
