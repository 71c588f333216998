import SluiceEngine

extension FuzzTargets {
    /// The GGUF parser on a hostile file image, then what the engine reads from a parsed file:
    /// the metadata accessors, the tensor table and the tokenizer vocabulary.
    static let gguf = FuzzTarget(
        name: "gguf",
        summary: "GGUFFile(bytes:) on arbitrary bytes; a parsed file's tensors lie inside it, and its tokenizer loads or errs"
    ) { bytes throws(FuzzFinding) in
        guard let file = try? GGUFFile(bytes: UnsafeRawBufferPointer(bytes)) else { return }
        for tensor in file.tensors {
            guard tensor.fileOffset >= 0, tensor.byteCount >= 0,
                  tensor.fileOffset <= file.fileSize, tensor.byteCount <= file.fileSize - tensor.fileOffset else {
                throw FuzzFinding("tensor \(tensor.name) at \(tensor.fileOffset)+\(tensor.byteCount) is outside the \(file.fileSize)-byte file")
            }
            guard file.tensor(named: tensor.name) != nil else { throw FuzzFinding("tensor \(tensor.name) is not found by name") }
        }
        _ = try? file.requireSupportedTensorTypes()
        _ = file.architecture
        _ = file.contentFingerprint
        for entry in file.metadataEntries { _ = entry }
        guard let tokenizer = try? Tokenizer(gguf: file) else { return }
        let tokens = tokenizer.encode("Hello, world! 123 héllo", addSpecial: true, parseSpecial: true)
        guard tokens.allSatisfy({ $0 >= 0 && Int($0) < tokenizer.vocabularySize }) else {
            throw FuzzFinding("the tokenizer of a fuzzed file gave a token outside its vocabulary")
        }
        _ = tokenizer.decode(tokens)
    }
}
