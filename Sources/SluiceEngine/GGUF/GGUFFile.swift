#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A parsed GGUF file: header, metadata, tensor table, and the tensor data,
/// memory-mapped read-only for the object's lifetime.
///
/// Everything the file claims (counts, lengths, offsets, dimensions,
/// alignment) is checked against its size and against overflow while
/// parsing; a malformed file throws a `GGUFError` naming the problem. The
/// file must not be truncated by someone else while it is mapped.
public final class GGUFFile: @unchecked Sendable {
    // Sendable: every stored property is immutable after init, and the bytes
    // are mapped read-only (or owned and never written) until deinit.

    /// The path given to `init(path:)`, or nil for an in-memory image.
    public let path: String?
    /// GGUF format version (2 or 3).
    public let version: UInt32
    /// All metadata, with typed accessors.
    public let metadataTable: GGUFMetadata
    /// The tensors in file order.
    public let tensors: [GGUFTensor]
    /// Alignment of tensor data (`general.alignment`, default 32).
    public let alignment: Int
    /// Absolute offset of the data section.
    public let dataOffset: Int
    /// Size of the file in bytes.
    public let fileSize: Int

    private let tensorIndex: [String: Int]
    private let base: UnsafeRawPointer
    private let ownership: Ownership

    private enum Ownership {
        case mapped(length: Int)
        case allocated
    }

    /// Maps the file at `path` read-only and parses it.
    public init(path: String) throws(GGUFError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw GGUFError(.io, "cannot open '\(path)': \(Self.errorText(errno))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw GGUFError(.io, "cannot inspect '\(path)': \(Self.errorText(errno))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw GGUFError(.io, "'\(path)' is not a regular file")
        }
        let size = Int(info.st_size)
        guard size >= 4 else {
            throw GGUFError(.truncated, "'\(path)' is \(size) bytes, too short to be a GGUF file (no magic)")
        }
        guard let mapping = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0),
            mapping != UnsafeMutableRawPointer(bitPattern: -1)
        else {
            throw GGUFError(.io, "cannot map '\(path)' (\(size) bytes): \(Self.errorText(errno))")
        }
        let parsed: GGUFParseResult
        do {
            var parser = GGUFParser(base: UnsafeRawPointer(mapping), size: size)
            parsed = try parser.parse()
        } catch {
            munmap(mapping, size)
            throw error
        }
        self.path = path
        self.base = UnsafeRawPointer(mapping)
        self.ownership = .mapped(length: size)
        self.fileSize = size
        self.version = parsed.version
        self.metadataTable = parsed.metadata
        self.tensors = parsed.tensors
        self.alignment = parsed.alignment
        self.dataOffset = parsed.dataOffset
        self.tensorIndex = Self.index(parsed.tensors)
    }

    /// Parses an in-memory GGUF image (copied; the caller keeps its buffer).
    /// Same parser and checks as `init(path:)`.
    public convenience init(bytes: UnsafeRawBufferPointer) throws(GGUFError) {
        let storage = Self.copy(bytes)
        try self.init(owning: storage, size: bytes.count)
    }

    /// Parses an in-memory GGUF image (copied).
    public convenience init(bytes: [UInt8]) throws(GGUFError) {
        let storage = bytes.withUnsafeBytes { Self.copy($0) }
        try self.init(owning: storage, size: bytes.count)
    }

    private static func copy(_ bytes: UnsafeRawBufferPointer) -> UnsafeMutableRawPointer {
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 64)
        if let source = bytes.baseAddress, bytes.count > 0 {
            storage.copyMemory(from: source, byteCount: bytes.count)
        }
        return storage
    }

    /// Takes ownership of `storage` (deallocated on failure or in deinit).
    private init(owning storage: UnsafeMutableRawPointer, size: Int) throws(GGUFError) {
        let parsed: GGUFParseResult
        do {
            var parser = GGUFParser(base: UnsafeRawPointer(storage), size: size)
            parsed = try parser.parse()
        } catch {
            storage.deallocate()
            throw error
        }
        self.path = nil
        self.base = UnsafeRawPointer(storage)
        self.ownership = .allocated
        self.fileSize = size
        self.version = parsed.version
        self.metadataTable = parsed.metadata
        self.tensors = parsed.tensors
        self.alignment = parsed.alignment
        self.dataOffset = parsed.dataOffset
        self.tensorIndex = Self.index(parsed.tensors)
    }

    deinit {
        switch ownership {
        case .mapped(let length): munmap(UnsafeMutableRawPointer(mutating: base), length)
        case .allocated: base.deallocate()
        }
    }

    private static func index(_ tensors: [GGUFTensor]) -> [String: Int] {
        var index: [String: Int] = [:]
        index.reserveCapacity(tensors.count)
        for (i, tensor) in tensors.enumerated() { index[tensor.name] = i }
        return index
    }

    private static func errorText(_ code: Int32) -> String {
        String(cString: strerror(code))
    }

    // MARK: Metadata

    /// All metadata by key.
    public var metadata: [String: GGUFValue] { metadataTable.values }
    /// All metadata in file order.
    public var metadataEntries: [GGUFMetadataEntry] { metadataTable.entries }

    public func string(_ key: String) throws(GGUFError) -> String { try metadataTable.string(key) }
    public func stringIfPresent(_ key: String) throws(GGUFError) -> String? { try metadataTable.stringIfPresent(key) }
    public func int(_ key: String) throws(GGUFError) -> Int { try metadataTable.int(key) }
    public func intIfPresent(_ key: String) throws(GGUFError) -> Int? { try metadataTable.intIfPresent(key) }
    public func float(_ key: String) throws(GGUFError) -> Float { try metadataTable.float(key) }
    public func floatIfPresent(_ key: String) throws(GGUFError) -> Float? { try metadataTable.floatIfPresent(key) }
    public func bool(_ key: String) throws(GGUFError) -> Bool { try metadataTable.bool(key) }
    public func boolIfPresent(_ key: String) throws(GGUFError) -> Bool? { try metadataTable.boolIfPresent(key) }
    public func stringArray(_ key: String) throws(GGUFError) -> [String] { try metadataTable.stringArray(key) }
    public func stringArrayStorage(_ key: String) throws(GGUFError) -> GGUFStringArray {
        try metadataTable.stringArrayStorage(key)
    }
    public func floatArray(_ key: String) throws(GGUFError) -> [Float] { try metadataTable.floatArray(key) }
    public func floatArrayIfPresent(_ key: String) throws(GGUFError) -> [Float]? {
        try metadataTable.floatArrayIfPresent(key)
    }
    public func intArray(_ key: String) throws(GGUFError) -> [Int] { try metadataTable.intArray(key) }
    public func intArrayIfPresent(_ key: String) throws(GGUFError) -> [Int]? { try metadataTable.intArrayIfPresent(key) }

    /// `general.architecture`, e.g. `gemma3`.
    public var architecture: String? { try? metadataTable.stringIfPresent("general.architecture") }

    /// A fingerprint of the file's content that tells models apart wherever the file lies: a
    /// 64-bit FNV-1a hash of the size, the header (metadata and tensor table) and the first
    /// 4 KiB of every tensor's data. Not a cryptographic digest; it reads a few hundred
    /// kilobytes instead of the whole file, and a fine-tune with the same layout still differs
    /// in the weights it samples.
    public var contentFingerprint: UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        func add(_ bytes: UnsafeRawBufferPointer) {
            for byte in bytes {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01B3
            }
        }
        withUnsafeBytes(of: UInt64(fileSize).littleEndian) { add($0) }
        add(UnsafeRawBufferPointer(start: base, count: min(dataOffset, fileSize)))
        for tensor in tensors {
            add(UnsafeRawBufferPointer(start: tensor.data, count: min(tensor.byteCount, 4096)))
        }
        return hash
    }

    // MARK: Tensors

    public func tensor(named name: String) -> GGUFTensor? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The named tensor, which must exist and have a type Sluice supports
    /// (and, if given, one of `allowedTypes`).
    public func requireTensor(_ name: String, allowedTypes: Set<TensorType>? = nil) throws(GGUFError) -> GGUFTensor {
        guard let tensor = tensor(named: name) else {
            throw GGUFError(.missing, "tensor '\(name)' is missing")
        }
        try Self.checkSupported(tensor)
        if let allowedTypes, !allowedTypes.contains(tensor.type) {
            let names = allowedTypes.map(\.name).sorted().joined(separator: ", ")
            throw GGUFError(.unsupportedTensorType, "tensor '\(name)' has type \(tensor.type), expected one of \(names)")
        }
        return tensor
    }

    /// Fails on the first tensor whose type Sluice cannot dequantize.
    public func requireSupportedTensorTypes() throws(GGUFError) {
        for tensor in tensors { try Self.checkSupported(tensor) }
    }

    private static func checkSupported(_ tensor: GGUFTensor) throws(GGUFError) {
        guard tensor.type.isSupported else {
            throw GGUFError(
                .unsupportedTensorType, "tensor '\(tensor.name)' has type \(tensor.type), which Sluice does not support")
        }
    }
}
