/// Strict UTF-8 checks shared by the JSON parser and the batch-line validator.
public enum UTF8Validation {
    /// The length of the valid multi-byte UTF-8 sequence starting at `i`, or nil when
    /// it is not one (a stray continuation byte, an overlong form, a surrogate, a code
    /// point past U+10FFFF, or a sequence cut off by the end of `bytes`).
    @inlinable
    public static func multiByteLength(_ bytes: UnsafeBufferPointer<UInt8>, at i: Int) -> Int? {
        let b0 = bytes[i]
        let length: Int
        var lower: UInt8 = 0x80, upper: UInt8 = 0xBF
        switch b0 {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; lower = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; upper = 0x9F
        case 0xF0: length = 4; lower = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; upper = 0x8F
        default: return nil
        }
        guard i + length <= bytes.count else { return nil }
        let b1 = bytes[i + 1]
        guard b1 >= lower && b1 <= upper else { return nil }
        var k = 2
        while k < length {
            let bk = bytes[i + k]
            guard bk >= 0x80 && bk <= 0xBF else { return nil }
            k += 1
        }
        return length
    }
}
