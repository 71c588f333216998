/// Bounds Sluice applies beyond what the file size already bounds.
public enum GGUFLimits {
    /// Deepest array-of-array nesting accepted (llama.cpp writes none).
    public static let maxArrayNesting = 8
    /// Largest `general.alignment` accepted.
    public static let maxAlignment = 1 << 20
    /// Most metadata entries accepted (real files have under 100).
    public static let maxMetadataCount: UInt64 = 1 << 20
    /// Most tensors accepted (real files have at most tens of thousands).
    public static let maxTensorCount: UInt64 = 1 << 22
    /// Most dimensions a tensor may have (GGML_MAX_DIMS).
    public static let maxDimensions = 4
    /// Alignment when `general.alignment` is absent.
    public static let defaultAlignment = 32
}

/// What parsing a GGUF image yields; the file object adds ownership of the bytes.
struct GGUFParseResult {
    var version: UInt32
    var metadata: GGUFMetadata
    var tensors: [GGUFTensor]
    var alignment: Int
    var dataOffset: Int
}

/// Parses a complete GGUF image at `base..<base+size`. Every read is bounds
/// checked; no count from the file is trusted before it is compared with the
/// bytes that remain.
struct GGUFParser {
    private var reader: GGUFByteReader

    init(base: UnsafeRawPointer, size: Int) {
        reader = GGUFByteReader(base: base, size: size)
    }

    private static let magic: UInt32 = 0x4655_4747  // "GGUF" read little-endian

    // The fewest bytes a metadata entry and a tensor description can take.
    private static let minimumEntrySize = 8 + 4 + 1
    private static let minimumTensorInfoSize = 8 + 4 + 4 + 8

    mutating func parse() throws(GGUFError) -> GGUFParseResult {
        let size = reader.size
        guard size >= 4 else {
            throw GGUFError(.truncated, "file is \(size) bytes, too short to be a GGUF file (no magic)")
        }
        let magic = reader.read(UInt32.self)
        guard magic == Self.magic else {
            throw GGUFError(.badMagic, "not a GGUF file: magic at offset 0 is \(Self.describeMagic(magic)), expected \"GGUF\"")
        }
        let version = try reader.readUInt32("version")
        guard version == 2 || version == 3 else {
            if version.byteSwapped == 2 || version.byteSwapped == 3 {
                throw GGUFError(.unsupportedVersion, "big-endian GGUF files are not supported (version field at offset 4 reads \(version.byteSwapped) byte-swapped)")
            }
            throw GGUFError(.unsupportedVersion, "unsupported GGUF version \(version) at offset 4; Sluice reads versions 2 and 3")
        }
        let tensorCountOffset = reader.position
        let tensorCount = try reader.readUInt64("tensor count")
        let metadataCountOffset = reader.position
        let metadataCount = try reader.readUInt64("metadata entry count")

        try Self.checkCount(
            tensorCount, what: "tensor count", offset: tensorCountOffset, limit: GGUFLimits.maxTensorCount,
            minimumSize: Self.minimumTensorInfoSize, remaining: reader.remaining, fileSize: size)
        try Self.checkCount(
            metadataCount, what: "metadata entry count", offset: metadataCountOffset, limit: GGUFLimits.maxMetadataCount,
            minimumSize: Self.minimumEntrySize, remaining: reader.remaining, fileSize: size)

        var entries: [GGUFMetadataEntry] = []
        var seenKeys: Set<String> = []
        for index in 0..<Int(metadataCount) {
            let entryOffset = reader.position
            let key = try reader.readValidatedString("key of metadata entry \(index)")
            guard seenKeys.insert(key).inserted else {
                throw GGUFError(.duplicateKey, "duplicate metadata key '\(key)' at offset \(entryOffset)")
            }
            let typeOffset = reader.position
            let rawType = try reader.readUInt32("value type of key '\(key)'")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw GGUFError(.invalidValueType, "key '\(key)': invalid value type \(rawType) at offset \(typeOffset)")
            }
            let value = try readValue(type, key: key, depth: 0)
            entries.append(GGUFMetadataEntry(key: key, value: value))
        }
        let metadata = GGUFMetadata(validatedEntries: entries)
        let alignment = try Self.alignment(from: metadata)

        let infos = try readTensorInfos(count: Int(tensorCount))

        let (paddedEnd, overflow) = reader.position.addingReportingOverflow(alignment - 1)
        guard !overflow else {
            throw GGUFError(.dataOutOfBounds, "data section offset overflows")
        }
        let dataOffset = paddedEnd / alignment * alignment
        if !infos.isEmpty && dataOffset > size {
            throw GGUFError(
                .truncated,
                "file ends before its data section: tensor descriptions end at offset \(reader.position), data would start at \(dataOffset) (alignment \(alignment)), file is \(size) bytes")
        }
        let tensors = try placeTensors(infos, dataOffset: dataOffset, alignment: alignment)
        return GGUFParseResult(
            version: version, metadata: metadata, tensors: tensors, alignment: alignment, dataOffset: dataOffset)
    }

    private static func describeMagic(_ magic: UInt32) -> String {
        let bytes = (0..<4).map { UInt8(truncatingIfNeeded: magic >> ($0 * 8)) }
        let hex = bytes.map { b in String(b, radix: 16).count == 1 ? "0" + String(b, radix: 16) : String(b, radix: 16) }
        let printable = bytes.allSatisfy { $0 >= 0x20 && $0 < 0x7f }
        return "0x" + hex.joined() + (printable ? " (\"\(String(decoding: bytes, as: UTF8.self))\")" : "")
    }

    private static func checkCount(
        _ count: UInt64, what: String, offset: Int, limit: UInt64, minimumSize: Int, remaining: Int, fileSize: Int
    ) throws(GGUFError) {
        if count > limit {
            throw GGUFError(.countTooLarge, "\(what) \(count) at offset \(offset) exceeds Sluice's limit of \(limit)")
        }
        if count > UInt64(remaining / minimumSize) {
            throw GGUFError(
                .countTooLarge,
                "\(what) \(count) at offset \(offset) is impossible: each needs at least \(minimumSize) bytes, only \(remaining) bytes follow (file is \(fileSize) bytes)")
        }
    }

    // MARK: Metadata values

    private mutating func readValue(_ type: GGUFValueType, key: String, depth: Int) throws(GGUFError) -> GGUFValue {
        let what = "value of key '\(key)'"
        switch type {
        case .uint8: try reader.require(1, what); return .uint8(reader.read(UInt8.self))
        case .int8: try reader.require(1, what); return .int8(reader.read(Int8.self))
        case .uint16: try reader.require(2, what); return .uint16(reader.read(UInt16.self))
        case .int16: try reader.require(2, what); return .int16(reader.read(Int16.self))
        case .uint32: try reader.require(4, what); return .uint32(reader.read(UInt32.self))
        case .int32: try reader.require(4, what); return .int32(reader.read(Int32.self))
        case .uint64: try reader.require(8, what); return .uint64(reader.read(UInt64.self))
        case .int64: try reader.require(8, what); return .int64(reader.read(Int64.self))
        case .float32: try reader.require(4, what); return .float32(Float(bitPattern: reader.read(UInt32.self)))
        case .float64: try reader.require(8, what); return .float64(Double(bitPattern: reader.read(UInt64.self)))
        case .bool:
            let offset = reader.position
            let byte = try reader.readUInt8(what)
            guard byte <= 1 else {
                throw GGUFError(.invalidBool, "key '\(key)': bool value \(byte) at offset \(offset) is neither 0 nor 1")
            }
            return .bool(byte == 1)
        case .string:
            let bytes = try reader.readStringBytes("string value of key '\(key)'")
            return .string(String(decoding: bytes, as: UTF8.self))
        case .array:
            return .array(try readArray(key: key, depth: depth + 1))
        }
    }

    private mutating func readArray(key: String, depth: Int) throws(GGUFError) -> GGUFArray {
        let headerOffset = reader.position
        let rawType = try reader.readUInt32("array element type of key '\(key)'")
        guard let elementType = GGUFValueType(rawValue: rawType) else {
            throw GGUFError(.invalidValueType, "key '\(key)': invalid array element type \(rawType) at offset \(headerOffset)")
        }
        if elementType == .array && depth >= GGUFLimits.maxArrayNesting {
            throw GGUFError(
                .nestingTooDeep,
                "key '\(key)': arrays nested deeper than \(GGUFLimits.maxArrayNesting) levels at offset \(headerOffset)")
        }
        let countOffset = reader.position
        let rawCount = try reader.readUInt64("array length of key '\(key)'")
        let minimum = elementType.minimumEncodedSize
        guard rawCount <= UInt64(reader.remaining / minimum) else {
            throw GGUFError(
                .countTooLarge,
                "key '\(key)': array of \(rawCount) \(elementType) elements at offset \(countOffset) cannot fit: at least \(minimum) bytes each, only \(reader.remaining) bytes follow")
        }
        let count = Int(rawCount)
        switch elementType {
        case .uint8: return .uint8(copyElements(count))
        case .int8: return .int8(copyElements(count))
        case .uint16: return .uint16(copyElements(count))
        case .int16: return .int16(copyElements(count))
        case .uint32: return .uint32(copyElements(count))
        case .int32: return .int32(copyElements(count))
        case .uint64: return .uint64(copyElements(count))
        case .int64: return .int64(copyElements(count))
        case .float32: return .float32(copyElements(count))
        case .float64: return .float64(copyElements(count))
        case .bool:
            let start = reader.position
            let bytes: [UInt8] = copyElements(count)
            if let bad = bytes.firstIndex(where: { $0 > 1 }) {
                throw GGUFError(
                    .invalidBool,
                    "key '\(key)': bool array element \(bad) at offset \(start + bad) is \(bytes[bad]), neither 0 nor 1")
            }
            return .bool(bytes.map { $0 == 1 })
        case .string:
            return .string(try readStrings(count, key: key))
        case .array:
            var arrays: [GGUFArray] = []
            for _ in 0..<count {
                arrays.append(try readArray(key: key, depth: depth + 1))
            }
            return .array(arrays)
        }
    }

    /// Copies `count` little-endian fixed-size elements; bounds were checked by the caller.
    private mutating func copyElements<T>(_ count: Int) -> [T] {
        let byteCount = count * MemoryLayout<T>.stride
        let source = UnsafeRawBufferPointer(start: reader.base + reader.position, count: byteCount)
        reader.skip(byteCount)
        return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: source)
            initialized = count
        }
    }

    /// Reads `count` strings into one byte buffer: a first pass checks every
    /// length against the file, the second copies exactly what it measured.
    private mutating func readStrings(_ count: Int, key: String) throws(GGUFError) -> GGUFStringArray {
        let start = reader.position
        var total = 0
        for index in 0..<count {
            let lengthOffset = reader.position
            try reader.require(8, "length of string \(index) of array '\(key)'")
            let length = reader.read(UInt64.self)
            guard length <= UInt64(reader.remaining) else {
                throw GGUFError(
                    .countTooLarge,
                    "key '\(key)': string \(index) at offset \(lengthOffset) claims \(length) bytes, only \(reader.remaining) bytes follow")
            }
            reader.skip(Int(length))
            total += Int(length)
        }
        reader.seek(to: start)
        var ends = [Int](repeating: 0, count: count)
        let storage = [UInt8](unsafeUninitializedCapacity: total) { buffer, initialized in
            var written = 0
            for index in 0..<count {
                let length = Int(reader.read(UInt64.self))
                UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[written..<(written + length)])
                    .copyMemory(from: UnsafeRawBufferPointer(start: reader.base + reader.position, count: length))
                reader.skip(length)
                written += length
                ends[index] = written
            }
            initialized = total
        }
        return GGUFStringArray(storage: storage, ends: ends)
    }

    private static func alignment(from metadata: GGUFMetadata) throws(GGUFError) -> Int {
        let key = "general.alignment"
        guard let value = metadata[key] else { return GGUFLimits.defaultAlignment }
        guard value.isInteger else {
            throw GGUFError(.typeMismatch, "key '\(key)' has type \(value.typeDescription), expected an unsigned integer")
        }
        guard let alignment = value.integerValue, alignment > 0, alignment <= GGUFLimits.maxAlignment,
            alignment & (alignment - 1) == 0
        else {
            throw GGUFError(
                .badAlignment,
                "key '\(key)' is \(value.scalarDescription); it must be a power of two from 1 to \(GGUFLimits.maxAlignment)")
        }
        return alignment
    }

    // MARK: Tensors

    private struct TensorInfo {
        var name: String
        var dimensions: [Int]
        var type: TensorType
        var relativeOffset: UInt64
        var elementCount: Int
        var byteCount: Int
        var infoOffset: Int
    }

    private mutating func readTensorInfos(count: Int) throws(GGUFError) -> [TensorInfo] {
        var infos: [TensorInfo] = []
        var seen: [String: Int] = [:]
        for index in 0..<count {
            let infoOffset = reader.position
            let name = try reader.readValidatedString("name of tensor \(index)")
            if let first = seen[name] {
                throw GGUFError(.duplicateTensor, "duplicate tensor name '\(name)' (tensors \(first) and \(index), offset \(infoOffset))")
            }
            seen[name] = index
            let dimsOffset = reader.position
            let dimensionCount = try reader.readUInt32("dimension count of tensor '\(name)'")
            guard dimensionCount <= UInt32(GGUFLimits.maxDimensions) else {
                throw GGUFError(
                    .badTensorShape,
                    "tensor '\(name)' has \(dimensionCount) dimensions at offset \(dimsOffset); GGUF allows at most \(GGUFLimits.maxDimensions)")
            }
            var dimensions: [Int] = []
            var elementCount = 1
            for axis in 0..<Int(dimensionCount) {
                let raw = try reader.readUInt64("dimension \(axis) of tensor '\(name)'")
                guard raw <= UInt64(Int64.max) else {
                    throw GGUFError(.badTensorShape, "tensor '\(name)': dimension \(axis) is \(raw), larger than 2^63-1")
                }
                dimensions.append(Int(raw))
            }
            for dimension in dimensions {
                let (product, overflow) = elementCount.multipliedReportingOverflow(by: dimension)
                guard !overflow else {
                    throw GGUFError(.badTensorShape, "tensor '\(name)': element count of dimensions \(dimensions) overflows")
                }
                elementCount = product
            }
            let typeOffset = reader.position
            let rawType = try reader.readUInt32("type of tensor '\(name)'")
            guard let type = TensorType(rawValue: rawType) else {
                throw GGUFError(.unknownTensorType, "tensor '\(name)' has unknown type id \(rawType) (offset \(typeOffset))")
            }
            let relativeOffset = try reader.readUInt64("data offset of tensor '\(name)'")
            let rowLength = dimensions.first ?? 1
            guard rowLength % type.blockSize == 0 else {
                throw GGUFError(
                    .badTensorShape,
                    "tensor '\(name)': row length \(rowLength) is not a multiple of the \(type.name) block size \(type.blockSize)")
            }
            guard let byteCount = type.byteCount(elements: elementCount) else {
                throw GGUFError(.badTensorShape, "tensor '\(name)': byte size of \(elementCount) \(type.name) elements overflows")
            }
            infos.append(
                TensorInfo(
                    name: name, dimensions: dimensions, type: type, relativeOffset: relativeOffset,
                    elementCount: elementCount, byteCount: byteCount, infoOffset: infoOffset))
        }
        return infos
    }

    private func placeTensors(_ infos: [TensorInfo], dataOffset: Int, alignment: Int) throws(GGUFError) -> [GGUFTensor] {
        let size = reader.size
        var tensors: [GGUFTensor] = []
        tensors.reserveCapacity(infos.count)
        for info in infos {
            guard info.relativeOffset % UInt64(alignment) == 0 else {
                throw GGUFError(
                    .misalignedTensor,
                    "tensor '\(info.name)': data offset \(info.relativeOffset) is not a multiple of the alignment \(alignment)")
            }
            guard info.relativeOffset <= UInt64(size) else {
                throw GGUFError(
                    .dataOutOfBounds,
                    "tensor '\(info.name)': data offset \(info.relativeOffset) (after data start \(dataOffset)) lies past end of file (\(size) bytes)")
            }
            let start = dataOffset + Int(info.relativeOffset)  // both ≤ size: cannot overflow
            let (end, overflow) = start.addingReportingOverflow(info.byteCount)
            guard !overflow, end <= size else {
                throw GGUFError(
                    .dataOutOfBounds,
                    "tensor '\(info.name)': data range \(start)..<\(overflow ? "overflow" : String(end)) extends past end of file (\(size) bytes)")
            }
            tensors.append(
                GGUFTensor(
                    name: info.name, dimensions: info.dimensions, type: info.type, elementCount: info.elementCount,
                    byteCount: info.byteCount, fileOffset: start, data: reader.base + start))
        }
        let byStart = tensors.indices.filter { tensors[$0].byteCount > 0 }.sorted {
            (tensors[$0].fileOffset, $0) < (tensors[$1].fileOffset, $1)
        }
        for (previous, next) in zip(byStart, byStart.dropFirst()) {
            let a = tensors[previous]
            let b = tensors[next]
            if b.fileOffset < a.fileOffset + a.byteCount {
                throw GGUFError(
                    .overlappingTensors,
                    "tensors '\(a.name)' (bytes \(a.fileOffset)..<\(a.fileOffset + a.byteCount)) and '\(b.name)' (bytes \(b.fileOffset)..<\(b.fileOffset + b.byteCount)) overlap")
            }
        }
        return tensors
    }
}
