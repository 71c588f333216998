/// The type ids GGUF uses for metadata values.
public enum GGUFValueType: UInt32, Sendable, CustomStringConvertible {
    case uint8 = 0
    case int8 = 1
    case uint16 = 2
    case int16 = 3
    case uint32 = 4
    case int32 = 5
    case float32 = 6
    case bool = 7
    case string = 8
    case array = 9
    case uint64 = 10
    case int64 = 11
    case float64 = 12

    public var description: String {
        switch self {
        case .uint8: "uint8"
        case .int8: "int8"
        case .uint16: "uint16"
        case .int16: "int16"
        case .uint32: "uint32"
        case .int32: "int32"
        case .float32: "float32"
        case .bool: "bool"
        case .string: "string"
        case .array: "array"
        case .uint64: "uint64"
        case .int64: "int64"
        case .float64: "float64"
        }
    }

    /// Bytes a value of this type occupies, or nil for strings and arrays.
    var fixedSize: Int? {
        switch self {
        case .uint8, .int8, .bool: 1
        case .uint16, .int16: 2
        case .uint32, .int32, .float32: 4
        case .uint64, .int64, .float64: 8
        case .string, .array: nil
        }
    }

    /// The fewest bytes a value of this type can occupy in a file; bounds
    /// element counts before anything is allocated for them.
    var minimumEncodedSize: Int {
        switch self {
        case .string: 8  // length only
        case .array: 12  // element type + count
        default: fixedSize!
        }
    }
}

/// One metadata value.
///
/// Strings: GGUF declares them UTF-8, but writers do not always obey, and
/// llama.cpp keeps the raw bytes. Sluice keeps raw bytes where they matter
/// (`GGUFStringArray`, e.g. tokenizer vocabularies) and decodes `String`s with
/// invalid sequences replaced by U+FFFD. Keys and tensor names must be valid
/// UTF-8: a file where they are not is rejected.
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8)
    case int8(Int8)
    case uint16(UInt16)
    case int16(Int16)
    case uint32(UInt32)
    case int32(Int32)
    case uint64(UInt64)
    case int64(Int64)
    case float32(Float)
    case float64(Double)
    case bool(Bool)
    case string(String)
    case array(GGUFArray)

    public var type: GGUFValueType {
        switch self {
        case .uint8: .uint8
        case .int8: .int8
        case .uint16: .uint16
        case .int16: .int16
        case .uint32: .uint32
        case .int32: .int32
        case .uint64: .uint64
        case .int64: .int64
        case .float32: .float32
        case .float64: .float64
        case .bool: .bool
        case .string: .string
        case .array: .array
        }
    }

    /// `uint32`, or `array of string` for arrays: for error messages.
    public var typeDescription: String {
        if case .array(let array) = self { return "array of \(array.elementType)" }
        return type.description
    }

    /// The value as an `Int` if it is an integer of any width that fits.
    public var integerValue: Int? {
        switch self {
        case .uint8(let v): Int(v)
        case .int8(let v): Int(v)
        case .uint16(let v): Int(v)
        case .int16(let v): Int(v)
        case .uint32(let v): Int(v)
        case .int32(let v): Int(v)
        case .uint64(let v): Int(exactly: v)
        case .int64(let v): Int(v)
        default: nil
        }
    }

    /// The value as text (`640`, `1e-06`, `"gemma3"`), arrays summarized.
    public var scalarDescription: String {
        switch self {
        case .uint8(let v): "\(v)"
        case .int8(let v): "\(v)"
        case .uint16(let v): "\(v)"
        case .int16(let v): "\(v)"
        case .uint32(let v): "\(v)"
        case .int32(let v): "\(v)"
        case .uint64(let v): "\(v)"
        case .int64(let v): "\(v)"
        case .float32(let v): "\(v)"
        case .float64(let v): "\(v)"
        case .bool(let v): "\(v)"
        case .string(let v): "\"\(v)\""
        case .array(let a): "[\(a.count) \(a.elementType) elements]"
        }
    }

    var isInteger: Bool {
        switch self {
        case .uint8, .int8, .uint16, .int16, .uint32, .int32, .uint64, .int64: true
        default: false
        }
    }
}

/// A homogeneous metadata array, stored unboxed (one Swift array per element
/// type), so that a 262,144-entry vocabulary costs a few copies, not 262,144
/// enum values.
public enum GGUFArray: Sendable, Equatable {
    case uint8([UInt8])
    case int8([Int8])
    case uint16([UInt16])
    case int16([Int16])
    case uint32([UInt32])
    case int32([Int32])
    case uint64([UInt64])
    case int64([Int64])
    case float32([Float])
    case float64([Double])
    case bool([Bool])
    case string(GGUFStringArray)
    /// Arrays of arrays; each inner array has its own element type.
    case array([GGUFArray])

    public var elementType: GGUFValueType {
        switch self {
        case .uint8: .uint8
        case .int8: .int8
        case .uint16: .uint16
        case .int16: .int16
        case .uint32: .uint32
        case .int32: .int32
        case .uint64: .uint64
        case .int64: .int64
        case .float32: .float32
        case .float64: .float64
        case .bool: .bool
        case .string: .string
        case .array: .array
        }
    }

    public var count: Int {
        switch self {
        case .uint8(let a): a.count
        case .int8(let a): a.count
        case .uint16(let a): a.count
        case .int16(let a): a.count
        case .uint32(let a): a.count
        case .int32(let a): a.count
        case .uint64(let a): a.count
        case .int64(let a): a.count
        case .float32(let a): a.count
        case .float64(let a): a.count
        case .bool(let a): a.count
        case .string(let a): a.count
        case .array(let a): a.count
        }
    }
}

/// An array of GGUF strings kept as their raw bytes, back to back.
///
/// Subscripting gives a `String` (invalid UTF-8 replaced by U+FFFD);
/// `withUTF8(at:)` gives the exact bytes the file holds.
public struct GGUFStringArray: Sendable, Equatable, RandomAccessCollection {
    /// All strings' bytes, concatenated.
    public let storage: [UInt8]
    /// `ends[i]` is the end of string `i` in `storage`; it starts at `ends[i-1]` (or 0).
    public let ends: [Int]

    public init(storage: [UInt8], ends: [Int]) {
        precondition(ends.last ?? 0 <= storage.count, "string ends past its storage")
        self.storage = storage
        self.ends = ends
    }

    /// Builds the array from Swift strings (for tests and writers).
    public init(_ strings: [String]) {
        var storage: [UInt8] = []
        var ends: [Int] = []
        ends.reserveCapacity(strings.count)
        for s in strings {
            storage.append(contentsOf: s.utf8)
            ends.append(storage.count)
        }
        self.init(storage: storage, ends: ends)
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { ends.count }

    /// The byte range of string `i` in `storage`.
    public func byteRange(at i: Int) -> Range<Int> {
        (i == 0 ? 0 : ends[i - 1])..<ends[i]
    }

    public subscript(i: Int) -> String {
        let range = byteRange(at: i)
        return storage.withUnsafeBufferPointer {
            String(decoding: UnsafeBufferPointer(rebasing: $0[range]), as: UTF8.self)
        }
    }

    /// Calls `body` with the raw bytes of string `i`.
    public func withUTF8<R>(at i: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        let range = byteRange(at: i)
        return try storage.withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[range])) }
    }

    /// All strings decoded (invalid UTF-8 replaced by U+FFFD).
    public var strings: [String] {
        storage.withUnsafeBufferPointer { bytes in
            var result: [String] = []
            result.reserveCapacity(ends.count)
            var start = 0
            for end in ends {
                result.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self))
                start = end
            }
            return result
        }
    }
}

/// One metadata key/value pair, in file order.
public struct GGUFMetadataEntry: Sendable, Equatable {
    public let key: String
    public let value: GGUFValue

    public init(key: String, value: GGUFValue) {
        self.key = key
        self.value = value
    }
}
