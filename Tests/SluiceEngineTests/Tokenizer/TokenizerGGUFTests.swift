import Testing

@testable import SluiceEngine

/// Reading tokenizer metadata from GGUF files: bad metadata is an error that
/// names the key, never a crash.
@Suite(.ownThread) struct TokenizerGGUFTests {
    static func file(_ metadata: [(String, GGUFValue)]) throws -> GGUFFile {
        var writer = GGUFTestWriter()
        writer.metadata = [("general.architecture", .string("llama"))] + metadata
        return try GGUFFile(bytes: writer.build().bytes)
    }

    static let tokens: (String, GGUFValue) = ("tokenizer.ggml.tokens", .array(.string(GGUFStringArray(["<unk>", "<s>", "</s>", "▁a"]))))

    @Test func readsAVocabulary() throws {
        let file = try Self.file([
            ("tokenizer.ggml.model", .string("llama")), Self.tokens,
            ("tokenizer.ggml.scores", .array(.float32([0, 0, 0, -1]))),
            ("tokenizer.ggml.token_type", .array(.int32([2, 3, 3, 1]))),
            ("tokenizer.ggml.bos_token_id", .uint32(1)), ("tokenizer.ggml.eos_token_id", .uint32(2)),
            ("tokenizer.ggml.add_space_prefix", .bool(true)), ("general.name", .string("tiny")),
        ])
        let vocabulary = try TokenizerVocabulary(gguf: file)
        #expect(vocabulary.tokens.count == 4 && vocabulary.bosID == 1 && vocabulary.eosID == 2)
        #expect(vocabulary.addSpacePrefix == true && vocabulary.addBOS == nil && vocabulary.modelName == "tiny")
        let tokenizer = try Tokenizer(gguf: file)
        #expect(tokenizer.encode("a") == [1, 3])
    }

    @Test(arguments: [
        ("tokenizer.ggml.model", [("tokenizer.ggml.model", GGUFValue.uint32(1)), tokens]),
        ("tokenizer.ggml.model", [tokens]),
        ("tokenizer.ggml.tokens", [("tokenizer.ggml.model", .string("llama"))]),
        ("tokenizer.ggml.tokens", [("tokenizer.ggml.model", .string("llama")), ("tokenizer.ggml.tokens", .array(.int32([1, 2])))]),
        ("tokenizer.ggml.scores", [("tokenizer.ggml.model", .string("llama")), tokens, ("tokenizer.ggml.scores", .array(.string(GGUFStringArray(["x"]))))]),
        ("tokenizer.ggml.scores", [("tokenizer.ggml.model", .string("llama")), tokens, ("tokenizer.ggml.scores", .array(.float32([0])))]),
        ("tokenizer.ggml.token_type", [("tokenizer.ggml.model", .string("llama")), tokens, ("tokenizer.ggml.token_type", .array(.float32([0, 0, 0, 0])))]),
        ("tokenizer.ggml.bos_token_id", [("tokenizer.ggml.model", .string("llama")), tokens, ("tokenizer.ggml.bos_token_id", .string("1"))]),
        ("tokenizer.ggml.merges", [("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string("qwen2")), tokens]),
        ("tokenizer.ggml.pre", [("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string("nonesuch")), tokens]),
        ("tokenizer.ggml.model", [("tokenizer.ggml.model", .string("t5")), tokens]),
    ] as [(String, [(String, GGUFValue)])])
    func badMetadataIsAnErrorNamingTheKey(_ key: String, _ metadata: [(String, GGUFValue)]) throws {
        let file = try Self.file(metadata)
        do {
            _ = try Tokenizer(gguf: file)
            Issue.record("expected an error about \(key)")
        } catch {
            #expect(error.message.contains(key), "\(error.message)")
        }
    }
}
