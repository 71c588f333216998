import Foundation
import Testing

@testable import SluiceEngine

/// Known facts about the default model (scripts/fetch-model installs it; CI runs that first).
@Suite(.ownThread) struct GGUFDefaultModelTests {
    @Test func loadsTheDefaultModel() throws {
        let path = DefaultModelLocation.path
        #expect(FileManager.default.fileExists(atPath: path), "run scripts/fetch-model first: \(path)")
        let file = try GGUFFile(path: path)

        #expect(file.version == 3)
        #expect(file.architecture == "gemma3")
        #expect(try file.int("gemma3.block_count") == 18)
        #expect(try file.int("gemma3.embedding_length") == 640)
        #expect(try file.int("gemma3.attention.head_count_kv") == 1)
        #expect(try file.float("gemma3.rope.freq_base") == 1_000_000)
        #expect(try file.string("tokenizer.ggml.model") == "llama")
        #expect(try file.bool("tokenizer.ggml.add_bos_token") == true)
        #expect(file.alignment == 32)
        #expect(file.metadataEntries.count == 33)
        #expect(file.metadataEntries.first?.key == "general.architecture")

        let tokens = try file.stringArrayStorage("tokenizer.ggml.tokens")
        #expect(tokens.count == 262_144)
        #expect(tokens[2] == "<bos>")
        #expect(tokens[1] == "<eos>")
        #expect(try file.floatArray("tokenizer.ggml.scores").count == 262_144)
        #expect(try file.intArray("tokenizer.ggml.token_type").count == 262_144)

        #expect(file.tensors.count == 236)
        let types = Set(file.tensors.map(\.type))
        #expect(types == [.q4_K, .q5_0, .q6_K, .q8_0, .f32])
        try file.requireSupportedTensorTypes()

        let embedding = try #require(file.tensor(named: "token_embd.weight"))
        #expect(embedding.dimensions == [640, 262_144])
        #expect(embedding.type == .q8_0)
        #expect(embedding.rowCount == 262_144)
        #expect(embedding.bytesPerRow == 640 / 32 * 34)
        #expect(file.tensor(named: "blk.17.attn_q.weight") != nil)
        #expect(file.tensor(named: "blk.18.attn_q.weight") == nil)

        // Tensor data fills the data section: sizes sum to what lies after it,
        // give or take alignment padding after each tensor.
        let totalBytes = file.tensors.reduce(0) { $0 + $1.byteCount }
        #expect(totalBytes == 246_587_904)
        #expect(file.dataOffset == 6_525_120)
        let dataSection = file.fileSize - file.dataOffset
        #expect(totalBytes <= dataSection && dataSection - totalBytes < file.tensors.count * file.alignment)
        for tensor in file.tensors {
            #expect(tensor.byteCount == tensor.type.byteCount(elements: tensor.elementCount))
            #expect(tensor.elementCount == tensor.dimensions.reduce(1, *))
        }
    }

    @Test func parsesTheDefaultModelMetadataQuickly() throws {
        let path = DefaultModelLocation.path
        _ = try GGUFFile(path: path)  // warm the page cache
        let clock = ContinuousClock()
        var best = Duration.seconds(1000)
        for _ in 0..<5 {
            let elapsed = try clock.measure { _ = try GGUFFile(path: path) }
            best = min(best, elapsed)
        }
        print("GGUF parse of the default model (metadata + tensor table): best of 5 \(best)")
        // Bounds that only reading the tensor data or a pathological parse would cross (the
        // metadata alone is a few MB); not a benchmark, the figure is printed above.
        #expect(best < .seconds(2))

        // Decoding the whole vocabulary into Swift strings, as a tokenizer might.
        let file = try GGUFFile(path: path)
        var decode = Duration.seconds(1000)
        for _ in 0..<3 {
            var count = 0
            decode = min(decode, try clock.measure { count = try file.stringArray("tokenizer.ggml.tokens").count })
            #expect(count == 262_144)
        }
        print("GGUF: decoding 262,144 vocabulary strings: best of 3 \(decode)")
        #expect(decode < .seconds(5))
    }

    /// Real blocks, not random ones: row 0 of the first tensor of each type,
    /// against gguf-py's dequantizer (fixtures from scripts/make-dequant-fixtures).
    @Test(arguments: [
        "output_norm.weight", "token_embd.weight", "blk.0.attn_k.weight", "blk.0.attn_output.weight",
        "blk.0.ffn_down.weight",
    ])
    func dequantizesRealRowsExactly(name: String) throws {
        let file = try GGUFFile(path: DefaultModelLocation.path)
        let tensor = try file.requireTensor(name)
        let expected = DequantizeTests.floats(try DequantizeTests.fixture("model.\(name).row0.bin"))
        #expect(expected.count == tensor.rowLength)
        var actual = [Float](repeating: .nan, count: tensor.rowLength)
        dequantizeRow(of: tensor, row: 0, into: &actual)
        #expect(actual.map(\.bitPattern) == expected.map(\.bitPattern), "\(name) (\(tensor.type))")
    }

    /// Every weight of the model dequantizes to a finite number.
    @Test func wholeModelDequantizesToFiniteValues() throws {
        let file = try GGUFFile(path: DefaultModelLocation.path)
        var row = [Float](repeating: 0, count: file.tensors.map(\.rowLength).max()!)
        var total = 0
        let clock = ContinuousClock()
        let elapsed = clock.measure {
            for tensor in file.tensors {
                var finite = true
                row.withUnsafeMutableBufferPointer { out in
                    for r in 0..<tensor.rowCount {
                        dequantizeRow(of: tensor, row: r, into: out.baseAddress!)
                        for i in 0..<tensor.rowLength where !out[i].isFinite { finite = false }
                    }
                }
                #expect(finite, "\(tensor.name) has non-finite weights")
                total += tensor.elementCount
            }
        }
        #expect(total == 268_098_176)
        print("GGUF: dequantized all \(total) weights of the default model in \(elapsed)")
    }
}
