import Foundation
import Testing

@testable import SluiceEngine

/// Files the engine cannot run are refused at load with an error that names the problem.
@Suite(.ownThread)
struct ModelLoadingTests {
    static let pool = ComputePool(threads: 1)

    func llamaMetadata(architecture: String = "llama") -> [(String, GGUFValue)] {
        [
            ("general.architecture", .string(architecture)),
            ("\(architecture).embedding_length", .uint32(256)),
            ("\(architecture).block_count", .uint32(1)),
            ("\(architecture).attention.head_count", .uint32(4)),
            ("\(architecture).feed_forward_length", .uint32(256)),
        ]
    }

    func loadError(_ writer: GGUFTestWriter) -> String {
        do {
            let file = try GGUFFile(bytes: writer.build().bytes)
            _ = try loadLanguageModel(file, pool: Self.pool)
            return "loaded"
        } catch {
            return String(describing: error)
        }
    }

    @Test func unsupportedArchitectureIsNamed() {
        var writer = GGUFTestWriter()
        writer.metadata = llamaMetadata(architecture: "mamba")
        let message = loadError(writer)
        #expect(message.contains("'mamba'") && message.contains("gemma3, llama, qwen2"), "\(message)")
    }

    @Test func unsupportedTensorTypeIsNamed() {
        var writer = GGUFTestWriter()
        writer.metadata = llamaMetadata()
        writer.tensors = [.init(name: "token_embd.weight", dimensions: [256, 4], type: .q2_K,
                                data: [UInt8](repeating: 0, count: 4 * TensorType.q2_K.bytesPerBlock))]
        let message = loadError(writer)
        #expect(message.contains("token_embd.weight") && message.contains("Q2_K"), "\(message)")
    }

    @Test func missingTensorsAndHyperparametersAreNamed() {
        var writer = GGUFTestWriter()
        writer.metadata = llamaMetadata()
        writer.tensors = [.init(name: "token_embd.weight", dimensions: [256, 4], type: .f32,
                                data: [UInt8](repeating: 0, count: 256 * 4 * 4))]
        #expect(loadError(writer).contains("output_norm.weight"))
        writer.metadata.removeAll { $0.0 == "llama.block_count" }
        #expect(loadError(writer).contains("llama.block_count"))
    }

    @Test func wrongShapesAreNamed() {
        var writer = GGUFTestWriter()
        writer.metadata = llamaMetadata()
        writer.tensors = [
            .init(name: "token_embd.weight", dimensions: [128, 4], type: .f32, data: [UInt8](repeating: 0, count: 128 * 4 * 4)),
        ]
        let message = loadError(writer)
        #expect(message.contains("token_embd.weight") && message.contains("[128, 4]"), "\(message)")
    }

    @Test func notAModelFileIsAnErrorNotACrash() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-not-a-model-\(UUID()).gguf").path
        try Data("definitely not GGUF".utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: (any Error).self) { _ = try BuiltinEngine(modelPath: path) }
        #expect(throws: (any Error).self) { _ = try BuiltinEngine(modelPath: "/nonexistent/model.gguf") }
    }
}
