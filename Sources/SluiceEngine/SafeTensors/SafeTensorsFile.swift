#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import SluiceCore

/// A problem with a safetensors file, naming the file and what was wrong.
public struct SafeTensorsError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// One tensor of a safetensors file: its element type, shape and bytes in the mapping.
public struct SafeTensor: @unchecked Sendable {
    public enum DType: String, Sendable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64", i64 = "I64", i32 = "I32"

        var byteWidth: Int {
            switch self {
            case .f16, .bf16: return 2
            case .f32, .i32: return 4
            case .f64, .i64: return 8
            }
        }
    }

    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let data: UnsafeRawPointer
    public let byteCount: Int

    public var elementCount: Int { shape.reduce(1, *) }
}

/// A safetensors file (Hugging Face's weight format), memory-mapped read-only.
///
/// The format is an 8-byte little-endian header length, a JSON header mapping each tensor
/// name to `{dtype, shape, data_offsets: [begin, end]}` relative to the end of the header,
/// then the raw little-endian tensor bytes. Every number the header claims is checked:
/// the header fits the file, each shape's element count times the dtype's width equals its
/// byte range without overflow, every range lies inside the data section, and ranges do
/// not overlap. A malformed or hostile file throws a `SafeTensorsError`; nothing traps.
public final class SafeTensorsFile: @unchecked Sendable {
    // Sendable: immutable after init; the bytes are mapped read-only until deinit.

    public let path: String
    public let fileSize: Int
    /// The tensors, in the order of their data.
    public let tensors: [SafeTensor]
    /// The header's `__metadata__` strings.
    public let metadata: [String: String]

    private let base: UnsafeRawPointer
    private let index: [String: Int]

    /// Headers larger than this are refused (real ones are tens of kilobytes).
    static let maximumHeaderBytes = 100 << 20

    public init(path: String) throws(SafeTensorsError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SafeTensorsError("cannot open '\(path)': \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw SafeTensorsError("'\(path)' is not a regular file")
        }
        let size = Int(info.st_size)
        guard size >= 8 else { throw SafeTensorsError("'\(path)' is \(size) bytes, too short for a safetensors header") }
        guard let mapping = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapping != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw SafeTensorsError("cannot map '\(path)' (\(size) bytes): \(String(cString: strerror(errno)))")
        }
        do {
            (tensors, metadata) = try Self.parse(UnsafeRawPointer(mapping), size: size, path: path)
        } catch {
            munmap(mapping, size)
            throw error
        }
        self.path = path
        self.fileSize = size
        self.base = UnsafeRawPointer(mapping)
        var index: [String: Int] = [:]
        for (i, tensor) in tensors.enumerated() { index[tensor.name] = i }
        self.index = index
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), fileSize) }

    public func tensor(named name: String) -> SafeTensor? { index[name].map { tensors[$0] } }

    /// A 64-bit FNV-1a hash of the size, the header and the first 4 KiB of every tensor:
    /// tells models apart wherever the file lies (as `GGUFFile.contentFingerprint` does).
    public var contentFingerprint: UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        func add(_ bytes: UnsafeRawBufferPointer) {
            for byte in bytes {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01B3
            }
        }
        withUnsafeBytes(of: UInt64(fileSize).littleEndian) { add($0) }
        let headerEnd = tensors.map { $0.data - base }.min() ?? fileSize
        add(UnsafeRawBufferPointer(start: base, count: headerEnd))
        for tensor in tensors { add(UnsafeRawBufferPointer(start: tensor.data, count: min(tensor.byteCount, 4096))) }
        return hash
    }

    private static func parse(_ base: UnsafeRawPointer, size: Int, path: String) throws(SafeTensorsError) -> ([SafeTensor], [String: String]) {
        let declared = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
        guard declared <= UInt64(min(size - 8, maximumHeaderBytes)) else {
            throw SafeTensorsError("'\(path)': the header claims \(declared) bytes but the file has \(size - 8) after the length")
        }
        let headerBytes = Int(declared)
        let dataStart = 8 + headerBytes
        let dataBytes = size - dataStart
        let header: JSON
        do {
            header = try JSON.parse(UnsafeBufferPointer(start: (base + 8).assumingMemoryBound(to: UInt8.self), count: headerBytes))
        } catch {
            throw SafeTensorsError("'\(path)': the header is not JSON: \(error)")
        }
        guard let entries = header.objectValue else { throw SafeTensorsError("'\(path)': the header is \(header.kindName), not an object") }
        var tensors: [SafeTensor] = []
        var metadata: [String: String] = [:]
        var names = Set<String>()
        for (name, value) in entries {
            guard names.insert(name).inserted else { throw SafeTensorsError("'\(path)': tensor '\(name)' appears twice in the header") }
            if name == "__metadata__" {
                for (key, item) in value.objectValue ?? [] { metadata[key] = item.stringValue }
                continue
            }
            func bad(_ what: String) -> SafeTensorsError { SafeTensorsError("'\(path)': tensor '\(name)': \(what)") }
            guard let dtypeText = value["dtype"]?.stringValue else { throw bad("no dtype") }
            guard let dtype = SafeTensor.DType(rawValue: dtypeText) else { throw bad("dtype \(dtypeText) is not supported") }
            guard let shapeValues = value["shape"]?.arrayValue, shapeValues.count <= 8 else { throw bad("no shape, or more than 8 dimensions") }
            var shape: [Int] = []
            var elements = 1
            for dimension in shapeValues {
                guard let n = dimension.intValue, n >= 0 else { throw bad("shape \(value["shape"]!.serialized) has a dimension that is not a non-negative integer") }
                let (product, overflow) = elements.multipliedReportingOverflow(by: n)
                guard !overflow, product <= size else { throw bad("shape \(shapeValues.map(\.serialized)) is larger than the file") }
                elements = product
                shape.append(n)
            }
            guard let offsets = value["data_offsets"]?.arrayValue, offsets.count == 2,
                  let begin = offsets[0].intValue, let end = offsets[1].intValue else {
                throw bad("data_offsets must be two integers")
            }
            guard begin >= 0, begin <= end, end <= dataBytes else {
                throw bad("data_offsets [\(begin), \(end)] are outside the \(dataBytes) bytes of data")
            }
            guard end - begin == elements * dtype.byteWidth else {
                throw bad("data_offsets cover \(end - begin) bytes but shape \(shape) of \(dtype.rawValue) needs \(elements * dtype.byteWidth)")
            }
            tensors.append(SafeTensor(name: name, dtype: dtype, shape: shape, data: base + dataStart + begin, byteCount: end - begin))
        }
        tensors.sort { $0.data < $1.data }
        for (a, b) in zip(tensors, tensors.dropFirst()) where a.data + a.byteCount > b.data {
            throw SafeTensorsError("'\(path)': tensors '\(a.name)' and '\(b.name)' overlap")
        }
        return (tensors, metadata)
    }
}
