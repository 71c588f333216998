import Foundation
import SluiceEngine

extension FuzzTargets {
    /// The two tokenizer kinds of the committed tiny models (Tests/SluiceEngineTests/Fixtures/tiny),
    /// loaded once: byte-level BPE (Llama 3) and SentencePiece (Llama).
    static let tinyTokenizers: [(name: String, tokenizer: Tokenizer)] = ["llama3-bpe-f16", "llama-spm-f32"].map { name in
        let path = repositoryRoot.appendingPathComponent("Tests/SluiceEngineTests/Fixtures/tiny/\(name).gguf").path
        do {
            return (name, try Tokenizer(gguf: GGUFFile(path: path)))
        } catch {
            fatalError("fuzz: cannot load the tokenizer of \(path): \(error)")
        }
    }

    /// Arbitrary text in, tokens out, and back. The first byte picks the tokenizer and whether
    /// special tokens are parsed; the rest is the text (invalid UTF-8 repaired as files are).
    static let tokenizer = FuzzTarget(
        name: "tokenizer",
        summary: "encode arbitrary text with a tiny model's BPE or SentencePiece tokenizer; tokens are in the vocabulary, decode(encode(x)) == x, streaming decode equals the concatenated pieces"
    ) { bytes throws(FuzzFinding) in
        guard let selector = bytes.first, bytes.count <= 4096 else { return }
        let (name, tokenizer) = tinyTokenizers[Int(selector & 1)]
        let input = text(UnsafeBufferPointer(rebasing: bytes.dropFirst()))
        let parseSpecial = selector & 2 != 0
        let tokens = tokenizer.encode(input, addSpecial: false, parseSpecial: parseSpecial)
        guard tokens.allSatisfy({ $0 >= 0 && Int($0) < tokenizer.vocabularySize }) else {
            throw FuzzFinding("\(name): a token outside the vocabulary for \(input.debugDescription)")
        }
        let decoded = tokenizer.decode(tokens)
        var streaming = StreamingDecoder(tokenizer: tokenizer, renderSpecial: true)
        var streamed = ""
        for token in tokens { streamed += streaming.append(token) }
        streamed += streaming.finish()
        // The streaming decoder promises the plain concatenation of the pieces (`decode` may also
        // drop the space SentencePiece put in front).
        let pieces = tokenizer.concatenatedPieces(tokens, renderSpecial: true)
        guard streamed == pieces else {
            throw FuzzFinding("\(name): streaming decode \(streamed.debugDescription) differs from the pieces \(pieces.debugDescription)")
        }
        // Without special-token parsing every text round-trips: byte-level BPE through its pieces
        // (`decode` also drops spaces before punctuation, as llama.cpp's clean_spaces does for this
        // pre-tokenizer), SentencePiece through `decode` (which drops the space it put in front),
        // except that SentencePiece reads its space mark U+2581 as a space (as llama.cpp does).
        if !parseSpecial {
            if name.contains("bpe") {
                guard pieces == input else {
                    throw FuzzFinding("\(name): the pieces of encode(\(input.debugDescription)) are \(pieces.debugDescription)")
                }
            } else if !input.unicodeScalars.contains("\u{2581}") {
                guard decoded == input else {
                    throw FuzzFinding("\(name): decode(encode(\(input.debugDescription))) = \(decoded.debugDescription)")
                }
            }
        }
    }
}
