/// Turns generated tokens into text one token at a time, emitting only
/// complete UTF-8: the bytes of a character split across tokens (byte-fallback
/// tokens, byte-level BPE pieces) are held back until the character completes.
///
/// The text is the concatenation of each token's piece, which is what
/// llama.cpp's server streams; for "llama" models without a space prefix
/// (Gemma) and for "gpt2" models without space cleaning it equals
/// `Tokenizer.decode`. Bytes that can never form valid UTF-8 become U+FFFD.
public struct StreamingDecoder: Sendable {
    public let tokenizer: Tokenizer
    /// Whether control tokens (`<end_of_turn>` …) are rendered as their text.
    public let renderSpecial: Bool
    private var pending: [UInt8] = []

    public init(tokenizer: Tokenizer, renderSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.renderSpecial = renderSpecial
    }

    /// Bytes received but not yet emitted (an incomplete character).
    public var pendingByteCount: Int { pending.count }

    /// Adds `token` and returns the text it completes (possibly empty).
    public mutating func append(_ token: Int32) -> String {
        tokenizer.appendPiece(token, renderSpecial: renderSpecial, stripLeadingSpaces: 0, to: &pending)
        let complete = Self.completePrefixLength(pending)
        guard complete > 0 else { return "" }
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeSubrange(..<complete)
        return text
    }

    /// Returns whatever is still held back (invalid bytes as U+FFFD) and resets.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// How many leading bytes can be emitted now: everything except a final
    /// sequence that is a valid but incomplete start of a UTF-8 character.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        let count = bytes.count
        // A UTF-8 character has at most 3 continuation bytes: look back at most 3.
        var index = count - 1
        var continuations = 0
        while index >= 0 && continuations < 3 && bytes[index] & 0xC0 == 0x80 {
            index -= 1
            continuations += 1
        }
        guard index >= 0 else { return count }
        let lead = bytes[index]
        let needed: Int
        switch lead {
        case 0xC2...0xDF: needed = 1
        case 0xE0...0xEF: needed = 2
        case 0xF0...0xF4: needed = 3
        default: return count  // ASCII or a byte no character starts with: nothing to wait for
        }
        guard continuations < needed else { return count }
        // Reject prefixes that no continuation can make valid (overlong, surrogate, > U+10FFFF).
        if continuations >= 1 {
            let second = bytes[index + 1]
            switch lead {
            case 0xE0 where second < 0xA0, 0xED where second > 0x9F, 0xF0 where second < 0x90, 0xF4 where second > 0x8F:
                return count
            default: break
            }
        }
        return index
    }
}
