import Foundation
import Testing

@testable import SluiceEngine

/// Valid files: everything written comes back, through both the in-memory and the mmap path.
@Suite(.ownThread) struct GGUFParserTests {
    @Test func roundTripsEveryValueKindAndTensor() throws {
        let writer = GGUFTestWriter.sample()
        let (bytes, layout) = writer.build()
        let file = try GGUFFile(bytes: bytes)
        #expect(file.version == 3)
        #expect(file.fileSize == bytes.count)
        #expect(file.alignment == 32)
        #expect(file.dataOffset == layout.dataStart)
        #expect(file.path == nil)
        #expect(file.metadataEntries.map(\.key) == writer.metadata.map(\.0))
        for (key, value) in writer.metadata {
            #expect(file.metadata[key] == value, "\(key)")
        }
        #expect(file.tensors.map(\.name) == writer.tensors.map(\.name))
        for (tensor, written) in zip(file.tensors, writer.tensors) {
            #expect(tensor.dimensions == written.dimensions)
            #expect(tensor.type == written.type)
            #expect(tensor.byteCount == written.data.count)
            #expect(Array(UnsafeRawBufferPointer(start: tensor.data, count: tensor.byteCount)) == written.data)
        }
        let norm = try #require(file.tensor(named: "output_norm.weight"))
        var values = [Float](repeating: 0, count: 4)
        dequantizeRow(of: norm, row: 0, into: &values)
        #expect(values == [1, -2, 0.5, 3])
        let embedding = try #require(file.tensor(named: "token_embd.weight"))
        #expect(embedding.rowCount == 2 && embedding.rowLength == 32 && embedding.bytesPerRow == 34)
        #expect(embedding.row(1) == embedding.data + 34)
        let all = embedding.dequantized()
        var second = [Float](repeating: 0, count: 32)
        dequantizeRow(.q8_0, embedding.data + 34, count: 32, into: &second)
        #expect(all.count == 64 && Array(all[32...]) == second)
        #expect(all.allSatisfy { $0.isFinite })
    }

    /// The fingerprint is a function of the bytes: equal for equal files, different when a
    /// weight in a tensor's first bytes differs (a fine-tune of the same layout).
    @Test func contentFingerprintFollowsTheBytes() throws {
        let (bytes, layout) = GGUFTestWriter.sample().build()
        let fingerprint = try GGUFFile(bytes: bytes).contentFingerprint
        #expect(try GGUFFile(bytes: bytes).contentFingerprint == fingerprint)
        var changed = bytes
        changed[layout.dataStart + 1] ^= 0x10
        #expect(try GGUFFile(bytes: changed).contentFingerprint != fingerprint)
    }

    @Test func typedAccessors() throws {
        let file = try GGUFFile(bytes: GGUFTestWriter.sample().build().bytes)
        #expect(try file.string("general.architecture") == "llama")
        #expect(file.architecture == "llama")
        #expect(try file.string("general.name") == "tiny ✓")
        #expect(try file.int("llama.block_count") == 2)
        #expect(try file.int("llama.embedding_length") == 256)
        #expect(try file.int("llama.small") == -3)
        #expect(try file.int("llama.u8") == 200)
        #expect(try file.int("llama.u16") == 60000)
        #expect(try file.int("llama.i16") == -30000)
        #expect(try file.int("llama.i64") == -1 << 40)
        #expect(try file.float("llama.rope.freq_base") == 10000)
        #expect(try file.float("llama.attention.layer_norm_rms_epsilon") == Float(1e-5))
        #expect(try file.bool("tokenizer.ggml.add_bos_token"))
        #expect(try file.stringArray("tokenizer.ggml.tokens") == ["<unk>", "<s>", "</s>", "▁hello", ""])
        #expect(try file.floatArray("tokenizer.ggml.scores") == [0, -1, -2, -3.5, -4])
        #expect(try file.intArray("tokenizer.ggml.token_type") == [2, 3, 3, 1, 1])
        #expect(try file.metadataTable.boolArrayIfPresent("test.flags") == [true, false, true])
        #expect(try file.intIfPresent("absent") == nil)
        #expect(try file.stringIfPresent("absent") == nil)
        #expect(try file.floatArrayIfPresent("absent") == nil)

        let tokens = try file.stringArrayStorage("tokenizer.ggml.tokens")
        #expect(tokens.count == 5)
        #expect(tokens.withUTF8(at: 3) { Array($0) } == Array("▁hello".utf8))
        #expect(tokens[4] == "")

        try expectError(.missing, "metadata key 'absent' is missing") { _ = try file.int("absent") }
        try expectError(.typeMismatch, "metadata key 'general.architecture' has type string, expected an integer") {
            _ = try file.int("general.architecture")
        }
        try expectError(.typeMismatch, "metadata key 'llama.block_count' has type uint32, expected string") {
            _ = try file.string("llama.block_count")
        }
        try expectError(.typeMismatch, "metadata key 'llama.block_count' has type uint32, expected a float") {
            _ = try file.float("llama.block_count")
        }
        try expectError(.typeMismatch, "metadata key 'llama.block_count' has type uint32, expected bool") {
            _ = try file.bool("llama.block_count")
        }
        try expectError(.typeMismatch, "metadata key 'tokenizer.ggml.scores' has type array of float32, expected array of string") {
            _ = try file.stringArray("tokenizer.ggml.scores")
        }
        try expectError(.typeMismatch, "metadata key 'tokenizer.ggml.tokens' has type array of string, expected array of integer") {
            _ = try file.intArray("tokenizer.ggml.tokens")
        }
        try expectError(.typeMismatch, "metadata key 'tokenizer.ggml.token_type' has type array of int32, expected array of float") {
            _ = try file.floatArray("tokenizer.ggml.token_type")
        }
        try expectError(.typeMismatch, "metadata key 'general.name' has type string, expected an array") {
            _ = try file.stringArray("general.name")
        }
    }

    @Test func integersThatDoNotFitIntAreRangeErrors() throws {
        var writer = GGUFTestWriter()
        writer.metadata = [("big", .uint64(.max)), ("bigs", .array(.uint64([1, .max])))]
        let file = try GGUFFile(bytes: writer.build().bytes)
        try expectError(.valueOutOfRange, "metadata key 'big': value 18446744073709551615 does not fit in Int") {
            _ = try file.int("big")
        }
        try expectError(.valueOutOfRange, "metadata key 'bigs': element 1 (18446744073709551615) does not fit in Int") {
            _ = try file.intArray("bigs")
        }
    }

    @Test func version2AndCustomAlignment() throws {
        var writer = GGUFTestWriter.sample()
        writer.version = 2
        writer.alignment = 64
        writer.metadata.append(("general.alignment", .uint32(64)))
        let (bytes, layout) = writer.build()
        let file = try GGUFFile(bytes: bytes)
        #expect(file.version == 2)
        #expect(file.alignment == 64)
        #expect(file.dataOffset == layout.dataStart && layout.dataStart % 64 == 0)
        #expect(file.tensors.map(\.fileOffset) == layout.tensorDataStarts)
    }

    @Test func fileWithoutTensorsOrMetadata() throws {
        let file = try GGUFFile(bytes: GGUFTestWriter().build().bytes)
        #expect(file.tensors.isEmpty && file.metadataEntries.isEmpty)
    }

    @Test func invalidUTF8InValuesIsRepairedButRawBytesAreKept() throws {
        var w = ByteWriter()
        w.bytes += Array("GGUF".utf8)
        w.u32(3); w.u64(0); w.u64(2)
        w.string("s"); w.u32(GGUFValueType.string.rawValue); w.rawString([0x61, 0xFF, 0x62])
        w.string("a"); w.u32(GGUFValueType.array.rawValue); w.u32(GGUFValueType.string.rawValue); w.u64(2)
        w.rawString([0xC3]); w.rawString([0xC3, 0xA9])
        let file = try GGUFFile(bytes: w.bytes)
        #expect(try file.string("s") == "a\u{FFFD}b")
        let strings = try file.stringArrayStorage("a")
        #expect(strings.withUTF8(at: 0) { Array($0) } == [0xC3])
        #expect(strings[0] == "\u{FFFD}")
        #expect(strings[1] == "é")
    }

    @Test func mapsFilesFromDisk() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-gguf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("tiny.gguf").path
        let (bytes, _) = GGUFTestWriter.sample().build()
        try Data(bytes).write(to: URL(fileURLWithPath: path))

        let file = try GGUFFile(path: path)
        #expect(file.path == path)
        #expect(file.tensors.count == 3)
        let tensor = try #require(file.tensor(named: "blk.0.attn_q.weight"))
        #expect(Array(UnsafeRawBufferPointer(start: tensor.data, count: 144)) == GGUFTestWriter.sample().tensors[1].data)

        try expectError(.io, "cannot open '\(directory.path)/absent.gguf': No such file or directory") {
            _ = try GGUFFile(path: directory.path + "/absent.gguf")
        }
        try expectError(.io, "'\(directory.path)' is not a regular file") { _ = try GGUFFile(path: directory.path) }
        let empty = directory.appendingPathComponent("empty.gguf").path
        #expect(FileManager.default.createFile(atPath: empty, contents: Data()))
        try expectError(.truncated, "'\(empty)' is 0 bytes, too short to be a GGUF file (no magic)") {
            _ = try GGUFFile(path: empty)
        }
        let garbage = directory.appendingPathComponent("garbage.gguf").path
        #expect(FileManager.default.createFile(atPath: garbage, contents: Data("hello world".utf8)))
        try expectError(.badMagic, "not a GGUF file: magic at offset 0 is 0x68656c6c (\"hell\"), expected \"GGUF\"") {
            _ = try GGUFFile(path: garbage)
        }
    }

    @Test func requireTensorChecksPresenceAndType() throws {
        let file = try GGUFFile(bytes: GGUFTestWriter.sample().build().bytes)
        #expect(try file.requireTensor("token_embd.weight").type == .q8_0)
        try expectError(.missing, "tensor 'nope' is missing") { _ = try file.requireTensor("nope") }
        try expectError(.unsupportedTensorType, "tensor 'token_embd.weight' has type Q8_0 (8), expected one of F16, F32") {
            _ = try file.requireTensor("token_embd.weight", allowedTypes: [.f32, .f16])
        }
    }
}

/// Runs `body` and checks that it throws exactly this GGUFError.
func expectError(
    _ kind: GGUFError.Kind, _ message: String, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) throws {
    do {
        try body()
        Issue.record("expected error: \(message)", sourceLocation: sourceLocation)
    } catch let error as GGUFError {
        #expect(error.kind == kind, sourceLocation: sourceLocation)
        #expect(error.description == message, sourceLocation: sourceLocation)
    }
}
