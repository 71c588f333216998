/// Per-token attributes, derived from `tokenizer.ggml.token_type` and
/// adjusted by name the way llama.cpp adjusts them at load.
public struct TokenAttributes: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let unknown = TokenAttributes(rawValue: 1 << 0)
    public static let unused = TokenAttributes(rawValue: 1 << 1)
    public static let normal = TokenAttributes(rawValue: 1 << 2)
    public static let control = TokenAttributes(rawValue: 1 << 3)
    public static let userDefined = TokenAttributes(rawValue: 1 << 4)
    public static let byte = TokenAttributes(rawValue: 1 << 5)
    /// Whitespace to the left of this special token is dropped when it is matched in text.
    public static let leftStrip = TokenAttributes(rawValue: 1 << 7)
    /// Whitespace to the right of this special token is dropped when it is matched in text.
    public static let rightStrip = TokenAttributes(rawValue: 1 << 8)

    /// Rendered only when special tokens are rendered.
    static let hiddenUnlessSpecial: TokenAttributes = [.unknown, .control]
    /// Matched as whole tokens in text before the BPE runs.
    static let matchedInText: TokenAttributes = [.unknown, .control, .userDefined]

    /// The attributes of GGUF token type `type` (llama.cpp's `llama_token_type`).
    static func fromTokenType(_ type: Int32) -> TokenAttributes {
        switch type {
        case 1: .normal
        case 2: .unknown
        case 3: .control
        case 4: .userDefined
        case 5: .unused
        case 6: .byte
        default: []  // 0 (undefined) and anything unknown: rendered as nothing
        }
    }
}
