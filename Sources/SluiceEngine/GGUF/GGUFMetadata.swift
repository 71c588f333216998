/// A GGUF file's metadata: the entries in file order, lookup by key, and typed
/// accessors whose errors name the key and the expected and actual types.
///
/// Each accessor comes in two forms: `string(key)` throws when the key is
/// missing; `stringIfPresent(key)` returns nil then. Both throw on a type
/// mismatch.
public struct GGUFMetadata: Sendable {
    /// The entries in the order the file lists them.
    public let entries: [GGUFMetadataEntry]
    /// The entries by key.
    public let values: [String: GGUFValue]

    /// Builds metadata from entries; duplicate keys are an error.
    public init(entries: [GGUFMetadataEntry]) throws(GGUFError) {
        var values: [String: GGUFValue] = [:]
        for entry in entries {
            if values.updateValue(entry.value, forKey: entry.key) != nil {
                throw GGUFError(.duplicateKey, "duplicate metadata key '\(entry.key)'")
            }
        }
        self.entries = entries
        self.values = values
    }

    /// For the parser, which has already rejected duplicates.
    init(validatedEntries entries: [GGUFMetadataEntry]) {
        self.entries = entries
        self.values = Dictionary(entries.map { ($0.key, $0.value) }, uniquingKeysWith: { first, _ in first })
    }

    public subscript(key: String) -> GGUFValue? { values[key] }

    public var keys: [String] { entries.map(\.key) }

    private func require(_ key: String) throws(GGUFError) -> GGUFValue {
        guard let value = values[key] else {
            throw GGUFError(.missing, "metadata key '\(key)' is missing")
        }
        return value
    }

    private static func mismatch(_ key: String, expected: String, _ value: GGUFValue) -> GGUFError {
        GGUFError(.typeMismatch, "metadata key '\(key)' has type \(value.typeDescription), expected \(expected)")
    }

    // MARK: Scalars

    public func stringIfPresent(_ key: String) throws(GGUFError) -> String? {
        guard let value = values[key] else { return nil }
        guard case .string(let s) = value else { throw Self.mismatch(key, expected: "string", value) }
        return s
    }

    public func string(_ key: String) throws(GGUFError) -> String {
        _ = try require(key)
        return try stringIfPresent(key)!
    }

    /// Any integer type, as long as the value fits in `Int`.
    public func intIfPresent(_ key: String) throws(GGUFError) -> Int? {
        guard let value = values[key] else { return nil }
        guard value.isInteger else { throw Self.mismatch(key, expected: "an integer", value) }
        guard let int = value.integerValue else {
            throw GGUFError(.valueOutOfRange, "metadata key '\(key)': value \(value.scalarDescription) does not fit in Int")
        }
        return int
    }

    public func int(_ key: String) throws(GGUFError) -> Int {
        _ = try require(key)
        return try intIfPresent(key)!
    }

    /// float32 or float64 (narrowed to Float).
    public func floatIfPresent(_ key: String) throws(GGUFError) -> Float? {
        guard let value = values[key] else { return nil }
        switch value {
        case .float32(let f): return f
        case .float64(let d): return Float(d)
        default: throw Self.mismatch(key, expected: "a float", value)
        }
    }

    public func float(_ key: String) throws(GGUFError) -> Float {
        _ = try require(key)
        return try floatIfPresent(key)!
    }

    public func boolIfPresent(_ key: String) throws(GGUFError) -> Bool? {
        guard let value = values[key] else { return nil }
        guard case .bool(let b) = value else { throw Self.mismatch(key, expected: "bool", value) }
        return b
    }

    public func bool(_ key: String) throws(GGUFError) -> Bool {
        _ = try require(key)
        return try boolIfPresent(key)!
    }

    // MARK: Arrays

    public func arrayIfPresent(_ key: String) throws(GGUFError) -> GGUFArray? {
        guard let value = values[key] else { return nil }
        guard case .array(let a) = value else { throw Self.mismatch(key, expected: "an array", value) }
        return a
    }

    public func array(_ key: String) throws(GGUFError) -> GGUFArray {
        _ = try require(key)
        return try arrayIfPresent(key)!
    }

    /// A string array as raw bytes plus offsets: no per-string allocation.
    public func stringArrayStorageIfPresent(_ key: String) throws(GGUFError) -> GGUFStringArray? {
        guard let array = try arrayIfPresent(key) else { return nil }
        guard case .string(let strings) = array else {
            throw Self.mismatch(key, expected: "array of string", .array(array))
        }
        return strings
    }

    public func stringArrayStorage(_ key: String) throws(GGUFError) -> GGUFStringArray {
        _ = try require(key)
        return try stringArrayStorageIfPresent(key)!
    }

    /// Decoded strings (invalid UTF-8 replaced by U+FFFD).
    public func stringArrayIfPresent(_ key: String) throws(GGUFError) -> [String]? {
        try stringArrayStorageIfPresent(key)?.strings
    }

    public func stringArray(_ key: String) throws(GGUFError) -> [String] {
        try stringArrayStorage(key).strings
    }

    /// Arrays of float32 or float64 (narrowed to Float).
    public func floatArrayIfPresent(_ key: String) throws(GGUFError) -> [Float]? {
        guard let array = try arrayIfPresent(key) else { return nil }
        switch array {
        case .float32(let a): return a
        case .float64(let a): return a.map { Float($0) }
        default: throw Self.mismatch(key, expected: "array of float", .array(array))
        }
    }

    public func floatArray(_ key: String) throws(GGUFError) -> [Float] {
        _ = try require(key)
        return try floatArrayIfPresent(key)!
    }

    /// Arrays of any integer type, each element fitting in `Int`.
    public func intArrayIfPresent(_ key: String) throws(GGUFError) -> [Int]? {
        guard let array = try arrayIfPresent(key) else { return nil }
        switch array {
        case .uint8(let a): return a.map { Int($0) }
        case .int8(let a): return a.map { Int($0) }
        case .uint16(let a): return a.map { Int($0) }
        case .int16(let a): return a.map { Int($0) }
        case .uint32(let a): return a.map { Int($0) }
        case .int32(let a): return a.map { Int($0) }
        case .int64(let a): return a.map { Int($0) }
        case .uint64(let a):
            if let index = a.firstIndex(where: { $0 > UInt64(Int.max) }) {
                throw GGUFError(.valueOutOfRange, "metadata key '\(key)': element \(index) (\(a[index])) does not fit in Int")
            }
            return a.map { Int($0) }
        default: throw Self.mismatch(key, expected: "array of integer", .array(array))
        }
    }

    public func intArray(_ key: String) throws(GGUFError) -> [Int] {
        _ = try require(key)
        return try intArrayIfPresent(key)!
    }

    /// Arrays of bool.
    public func boolArrayIfPresent(_ key: String) throws(GGUFError) -> [Bool]? {
        guard let array = try arrayIfPresent(key) else { return nil }
        guard case .bool(let a) = array else { throw Self.mismatch(key, expected: "array of bool", .array(array)) }
        return a
    }
}
