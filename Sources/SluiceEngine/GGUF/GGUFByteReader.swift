#if _endian(big)
#error("GGUF parsing assumes a little-endian host")
#endif

/// A cursor over the file's bytes whose every read is checked against the end.
struct GGUFByteReader {
    let base: UnsafeRawPointer
    let size: Int
    private(set) var position: Int = 0

    init(base: UnsafeRawPointer, size: Int) {
        self.base = base
        self.size = size
    }

    var remaining: Int { size - position }

    /// Fails unless `count` bytes remain; `what` names the field for the error.
    func require(_ count: Int, _ what: @autoclosure () -> String) throws(GGUFError) {
        if count > size - position {
            throw GGUFError(
                .truncated,
                "file ends while reading \(what()) at offset \(position): needs \(count) bytes, only \(size - position) left (file is \(size) bytes)")
        }
    }

    mutating func skip(_ count: Int) {
        position += count
    }

    mutating func seek(to offset: Int) {
        position = offset
    }

    mutating func readUInt8(_ what: @autoclosure () -> String) throws(GGUFError) -> UInt8 {
        try require(1, what())
        return read(UInt8.self)
    }

    mutating func readUInt32(_ what: @autoclosure () -> String) throws(GGUFError) -> UInt32 {
        try require(4, what())
        return read(UInt32.self)
    }

    mutating func readUInt64(_ what: @autoclosure () -> String) throws(GGUFError) -> UInt64 {
        try require(8, what())
        return read(UInt64.self)
    }

    /// Reads a fixed-size little-endian value; the caller has checked the bounds.
    mutating func read<T: FixedWidthInteger>(_: T.Type) -> T {
        let value = base.loadUnaligned(fromByteOffset: position, as: T.self)
        position += MemoryLayout<T>.size
        return T(littleEndian: value)
    }

    /// Reads a string's length and returns its byte range, checked against the file.
    mutating func readStringBytes(_ what: @autoclosure () -> String) throws(GGUFError) -> UnsafeRawBufferPointer {
        let lengthOffset = position
        let length = try readUInt64("length of \(what())")
        guard length <= UInt64(remaining) else {
            throw GGUFError(
                .countTooLarge,
                "\(what()) at offset \(lengthOffset) claims \(length) bytes, but only \(remaining) bytes follow (file is \(size) bytes)")
        }
        let bytes = UnsafeRawBufferPointer(start: base + position, count: Int(length))
        position += Int(length)
        return bytes
    }

    /// Reads a string that must be valid UTF-8 (keys, tensor names).
    mutating func readValidatedString(_ what: @autoclosure () -> String) throws(GGUFError) -> String {
        let start = position
        let bytes = try readStringBytes(what())
        guard let string = String(validating: bytes, as: UTF8.self) else {
            throw GGUFError(.invalidUTF8, "\(what()) at offset \(start) is not valid UTF-8")
        }
        return string
    }
}
