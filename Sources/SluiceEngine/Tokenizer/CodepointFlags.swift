/// Unicode category flags of one code point, in the shape llama.cpp's
/// pre-tokenizers test them (`\p{L}`, `\p{N}`, `\s` …).
///
/// Every assigned code point has exactly one category bit; unassigned ones
/// are `undefined`. `whitespace` is the Unicode White_Space property, which is
/// the set llama.cpp uses for `\s`. Checked against llama.cpp's own table for
/// all 1,114,112 code points: identical.
struct CodepointFlags: OptionSet, Sendable {
    let rawValue: UInt16

    static let undefined = CodepointFlags(rawValue: 0x0001)
    static let number = CodepointFlags(rawValue: 0x0002)
    static let letter = CodepointFlags(rawValue: 0x0004)
    static let separator = CodepointFlags(rawValue: 0x0008)
    static let mark = CodepointFlags(rawValue: 0x0010)
    static let punctuation = CodepointFlags(rawValue: 0x0020)
    static let symbol = CodepointFlags(rawValue: 0x0040)
    static let control = CodepointFlags(rawValue: 0x0080)
    static let whitespace = CodepointFlags(rawValue: 0x0100)

    /// The flags of a position outside the text: none at all.
    static let outside = CodepointFlags([])

    var isLetter: Bool { contains(.letter) }
    var isNumber: Bool { contains(.number) }
    var isWhitespace: Bool { contains(.whitespace) }
    /// The category bits alone, without `whitespace`.
    var category: CodepointFlags { CodepointFlags(rawValue: rawValue & 0x00FF) }

    /// Flags of `codePoint`; values that are not Unicode scalars count as undefined.
    static func of(_ codePoint: UInt32) -> CodepointFlags {
        if codePoint < 128 { return asciiTable[Int(codePoint)] }
        guard let scalar = Unicode.Scalar(codePoint) else {
            // Surrogates are category Cs (control-like) in llama.cpp's table.
            return (0xD800...0xDFFF).contains(codePoint) ? .control : .undefined
        }
        return compute(scalar)
    }

    private static let asciiTable: [CodepointFlags] = (0..<128).map { compute(Unicode.Scalar(UInt8($0))) }

    /// llama.cpp's category table is generated from Unicode 15.1; characters
    /// assigned later count as unassigned there, so they do here too.
    static let unicodeVersion = (major: 15, minor: 1)

    private static func compute(_ scalar: Unicode.Scalar) -> CodepointFlags {
        let properties = scalar.properties
        var flags: CodepointFlags
        if let age = properties.age,
           age.major > unicodeVersion.major || (age.major == unicodeVersion.major && age.minor > unicodeVersion.minor) {
            return properties.isWhitespace ? [.undefined, .whitespace] : .undefined
        }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            flags = .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            flags = .number
        case .spaceSeparator, .lineSeparator, .paragraphSeparator:
            flags = .separator
        case .nonspacingMark, .spacingMark, .enclosingMark:
            flags = .mark
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            flags = .punctuation
        case .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
            flags = .symbol
        case .control, .format, .surrogate, .privateUse:
            flags = .control
        case .unassigned:
            flags = .undefined
        @unknown default:
            flags = .undefined
        }
        if properties.isWhitespace { flags.insert(.whitespace) }
        return flags
    }
}
