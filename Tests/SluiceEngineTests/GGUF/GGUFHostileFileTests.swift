import Testing

@testable import SluiceEngine

/// A corpus of malformed and hostile files, each with the exact error it must give.
@Suite(.ownThread) struct GGUFHostileFileTests {
    // MARK: Building blocks

    /// Magic, version, tensor count, metadata count: 24 bytes.
    static func header(version: UInt32 = 3, tensors: UInt64 = 0, entries: UInt64 = 0) -> ByteWriter {
        var w = ByteWriter()
        w.bytes += Array("GGUF".utf8)
        w.u32(version)
        w.u64(tensors)
        w.u64(entries)
        return w
    }

    /// One metadata entry with key "k" (offset 24..33), type at 33, value from 37.
    static func oneEntry(type: UInt32, _ value: (inout ByteWriter) -> Void) -> [UInt8] {
        var w = header(entries: 1)
        w.string("k")
        w.u32(type)
        value(&w)
        return w.bytes
    }

    /// One tensor named "t": name 24..<33, dimension count at 33, dimensions from 37,
    /// then type and offset; data (zeros) from offset 64 when the info is 32 bytes or less.
    static func oneTensor(
        dimensions: [UInt64], dimensionCount: UInt32? = nil, type: UInt32 = TensorType.f32.rawValue,
        offset: UInt64 = 0, dataBytes: Int, name: [UInt8] = Array("t".utf8)
    ) -> [UInt8] {
        var w = header(tensors: 1)
        w.rawString(name)
        w.u32(dimensionCount ?? UInt32(dimensions.count))
        dimensions.forEach { w.u64($0) }
        w.u32(type)
        w.u64(offset)
        w.pad(to: 32)
        w.bytes += [UInt8](repeating: 0, count: dataBytes)
        return w.bytes
    }

    func rejects(_ bytes: [UInt8], _ kind: GGUFError.Kind, _ message: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try expectError(kind, message, sourceLocation: sourceLocation) { _ = try GGUFFile(bytes: bytes) }
    }

    // MARK: Header

    @Test func headerProblems() throws {
        try rejects([], .truncated, "file is 0 bytes, too short to be a GGUF file (no magic)")
        try rejects(Array("GGU".utf8), .truncated, "file is 3 bytes, too short to be a GGUF file (no magic)")
        try rejects(Array("GGUF".utf8), .truncated, "file ends while reading version at offset 4: needs 4 bytes, only 0 left (file is 4 bytes)")
        var ggml = Self.header()
        ggml.bytes[2] = UInt8(ascii: "M"); ggml.bytes[3] = UInt8(ascii: "L")
        try rejects(ggml.bytes, .badMagic, "not a GGUF file: magic at offset 0 is 0x47474d4c (\"GGML\"), expected \"GGUF\"")
        try rejects([0, 1, 2, 3, 4, 5, 6, 7], .badMagic, "not a GGUF file: magic at offset 0 is 0x00010203, expected \"GGUF\"")
        try rejects(Self.header(version: 1).bytes, .unsupportedVersion, "unsupported GGUF version 1 at offset 4; Sluice reads versions 2 and 3")
        try rejects(Self.header(version: 4).bytes, .unsupportedVersion, "unsupported GGUF version 4 at offset 4; Sluice reads versions 2 and 3")
        try rejects(
            Self.header(version: 0x0300_0000).bytes, .unsupportedVersion,
            "big-endian GGUF files are not supported (version field at offset 4 reads 3 byte-swapped)")
        try rejects(
            Array(Self.header().bytes.prefix(11)), .truncated,
            "file ends while reading tensor count at offset 8: needs 8 bytes, only 3 left (file is 11 bytes)")
        try rejects(
            Array(Self.header().bytes.prefix(20)), .truncated,
            "file ends while reading metadata entry count at offset 16: needs 8 bytes, only 4 left (file is 20 bytes)")
    }

    @Test func hugeCounts() throws {
        try rejects(
            Self.header(tensors: .max).bytes, .countTooLarge,
            "tensor count 18446744073709551615 at offset 8 exceeds Sluice's limit of 4194304")
        try rejects(
            Self.header(tensors: 1000).bytes, .countTooLarge,
            "tensor count 1000 at offset 8 is impossible: each needs at least 24 bytes, only 0 bytes follow (file is 24 bytes)")
        try rejects(
            Self.header(entries: 1 << 40).bytes, .countTooLarge,
            "metadata entry count 1099511627776 at offset 16 exceeds Sluice's limit of 1048576")
        var twoEntries = Self.header(entries: 2)
        twoEntries.bytes += [UInt8](repeating: 0, count: 13)
        try rejects(
            twoEntries.bytes, .countTooLarge,
            "metadata entry count 2 at offset 16 is impossible: each needs at least 13 bytes, only 13 bytes follow (file is 37 bytes)")
    }

    // MARK: Metadata

    @Test func hugeLengths() throws {
        var hugeKey = Self.header(entries: 1)
        hugeKey.u64(.max)
        hugeKey.bytes += [0, 0, 0, 0, 0]
        try rejects(
            hugeKey.bytes, .countTooLarge,
            "key of metadata entry 0 at offset 24 claims 18446744073709551615 bytes, but only 5 bytes follow (file is 37 bytes)")
        try rejects(
            Self.oneEntry(type: 8) { $0.u64(.max) }, .countTooLarge,
            "string value of key 'k' at offset 37 claims 18446744073709551615 bytes, but only 0 bytes follow (file is 45 bytes)")
        try rejects(
            Self.oneEntry(type: 9) { $0.u32(4); $0.u64(.max) }, .countTooLarge,
            "key 'k': array of 18446744073709551615 uint32 elements at offset 41 cannot fit: at least 4 bytes each, only 0 bytes follow")
        try rejects(
            Self.oneEntry(type: 9) { $0.u32(4); $0.u64(3); $0.u32(1); $0.u32(2) }, .countTooLarge,
            "key 'k': array of 3 uint32 elements at offset 41 cannot fit: at least 4 bytes each, only 8 bytes follow")
        try rejects(
            Self.oneEntry(type: 9) { $0.u32(8); $0.u64(1); $0.u64(.max) }, .countTooLarge,
            "key 'k': string 0 at offset 49 claims 18446744073709551615 bytes, only 0 bytes follow")
        try rejects(
            Self.oneEntry(type: 9) { $0.u32(8); $0.u64(2); $0.string("ab"); $0.u64(3); $0.bytes += [1, 2] }, .countTooLarge,
            "key 'k': string 1 at offset 59 claims 3 bytes, only 2 bytes follow")
        try rejects(
            Self.oneEntry(type: 9) { $0.u32(9); $0.u64(1 << 40) }, .countTooLarge,
            "key 'k': array of 1099511627776 array elements at offset 41 cannot fit: at least 12 bytes each, only 0 bytes follow")
    }

    @Test func wrongValueTypes() throws {
        try rejects(Self.oneEntry(type: 13) { _ in }, .invalidValueType, "key 'k': invalid value type 13 at offset 33")
        try rejects(
            Self.oneEntry(type: .max) { _ in }, .invalidValueType, "key 'k': invalid value type 4294967295 at offset 33")
        try rejects(
            Self.oneEntry(type: 9) { $0.u32(77); $0.u64(0) }, .invalidValueType,
            "key 'k': invalid array element type 77 at offset 37")
        try rejects(
            Self.oneEntry(type: 7) { $0.u8(2) }, .invalidBool, "key 'k': bool value 2 at offset 37 is neither 0 nor 1")
        try rejects(
            Self.oneEntry(type: 9) { $0.u32(7); $0.u64(3); $0.bytes += [1, 0, 5] }, .invalidBool,
            "key 'k': bool array element 2 at offset 51 is 5, neither 0 nor 1")
        try rejects(
            Self.oneEntry(type: 4) { $0.bytes += [1, 2] }, .truncated,
            "file ends while reading value of key 'k' at offset 37: needs 4 bytes, only 2 left (file is 39 bytes)")
    }

    @Test func keys() throws {
        var duplicate = Self.header(entries: 2)
        for _ in 0..<2 { duplicate.string("k"); duplicate.u32(0); duplicate.u8(1) }
        try rejects(duplicate.bytes, .duplicateKey, "duplicate metadata key 'k' at offset 38")
        var badUTF8 = Self.header(entries: 1)
        badUTF8.rawString([0x6B, 0xFF]); badUTF8.u32(0); badUTF8.u8(1)
        try rejects(badUTF8.bytes, .invalidUTF8, "key of metadata entry 0 at offset 24 is not valid UTF-8")
        var overlong = Self.header(entries: 1)
        overlong.rawString([0xC0, 0xAF]); overlong.u32(0); overlong.u8(1)  // overlong "/"
        try rejects(overlong.bytes, .invalidUTF8, "key of metadata entry 0 at offset 24 is not valid UTF-8")
    }

    /// `levels` arrays, each holding the next; the innermost holds no bytes.
    static func nested(levels: Int) -> [UInt8] {
        oneEntry(type: 9) { w in
            for _ in 0..<(levels - 1) { w.u32(9); w.u64(1) }
            w.u32(0); w.u64(0)
        }
    }

    @Test func nesting() throws {
        let file = try GGUFFile(bytes: Self.nested(levels: GGUFLimits.maxArrayNesting))
        var value = try #require(file.metadata["k"])
        var depth = 0
        while case .array(let array) = value {
            depth += 1
            if case .array(let inner) = array { value = .array(inner[0]) } else { break }
        }
        #expect(depth == GGUFLimits.maxArrayNesting)
        try rejects(Self.nested(levels: 9), .nestingTooDeep, "key 'k': arrays nested deeper than 8 levels at offset 121")
        // Deep nesting far past the limit stops at the limit, not at the stack's end.
        try rejects(Self.nested(levels: 100_000), .nestingTooDeep, "key 'k': arrays nested deeper than 8 levels at offset 121")
    }

    @Test func alignment() throws {
        for bad in [UInt32(0), 3, 48, 1 << 21] {
            var writer = GGUFTestWriter.sample()
            writer.metadata.append(("general.alignment", .uint32(bad)))
            try rejects(
                writer.build().bytes, .badAlignment,
                "key 'general.alignment' is \(bad); it must be a power of two from 1 to 1048576")
        }
        var negative = GGUFTestWriter.sample()
        negative.metadata.append(("general.alignment", .int32(-32)))
        try rejects(
            negative.build().bytes, .badAlignment,
            "key 'general.alignment' is -32; it must be a power of two from 1 to 1048576")
        var text = GGUFTestWriter.sample()
        text.metadata.append(("general.alignment", .string("32")))
        try rejects(text.build().bytes, .typeMismatch, "key 'general.alignment' has type string, expected an unsigned integer")
    }

    // MARK: Tensors

    @Test func tensorShapes() throws {
        #expect(try GGUFFile(bytes: Self.oneTensor(dimensions: [4], dataBytes: 16)).tensors.count == 1)
        try rejects(
            Self.oneTensor(dimensions: [1, 1, 1, 1, 1], dataBytes: 4), .badTensorShape,
            "tensor 't' has 5 dimensions at offset 33; GGUF allows at most 4")
        try rejects(
            Self.oneTensor(dimensions: [4], dimensionCount: .max, dataBytes: 16), .badTensorShape,
            "tensor 't' has 4294967295 dimensions at offset 33; GGUF allows at most 4")
        try rejects(
            Self.oneTensor(dimensions: [.max], dataBytes: 16), .badTensorShape,
            "tensor 't': dimension 0 is 18446744073709551615, larger than 2^63-1")
        try rejects(
            Self.oneTensor(dimensions: [1 << 32, 1 << 32], dataBytes: 16), .badTensorShape,
            "tensor 't': element count of dimensions [4294967296, 4294967296] overflows")
        try rejects(
            Self.oneTensor(dimensions: [1 << 31, 1 << 31], dataBytes: 16), .badTensorShape,
            "tensor 't': byte size of 4611686018427387904 F32 elements overflows")
        try rejects(
            Self.oneTensor(dimensions: [100], type: TensorType.q4_K.rawValue, dataBytes: 144), .badTensorShape,
            "tensor 't': row length 100 is not a multiple of the Q4_K block size 256")
        try rejects(
            Self.oneTensor(dimensions: [16, 2], type: TensorType.q8_0.rawValue, dataBytes: 64), .badTensorShape,
            "tensor 't': row length 16 is not a multiple of the Q8_0 block size 32")
        try rejects(
            Self.oneTensor(dimensions: [4], type: 4, dataBytes: 16), .unknownTensorType,
            "tensor 't' has unknown type id 4 (offset 45)")
        try rejects(
            Self.oneTensor(dimensions: [4], type: 1000, dataBytes: 16), .unknownTensorType,
            "tensor 't' has unknown type id 1000 (offset 45)")
        try rejects(
            Self.oneTensor(dimensions: [4], dataBytes: 16, name: [0xFF]), .invalidUTF8,
            "name of tensor 0 at offset 24 is not valid UTF-8")
    }

    @Test func unsupportedTypeIsNamedAtLoad() throws {
        let file = try GGUFFile(bytes: Self.oneTensor(dimensions: [256], type: TensorType.q2_K.rawValue, dataBytes: 84))
        try expectError(.unsupportedTensorType, "tensor 't' has type Q2_K (10), which Sluice does not support") {
            try file.requireSupportedTensorTypes()
        }
        try expectError(.unsupportedTensorType, "tensor 't' has type Q2_K (10), which Sluice does not support") {
            _ = try file.requireTensor("t")
        }
    }

    @Test func tensorDataPlacement() throws {
        try rejects(
            Self.oneTensor(dimensions: [4], offset: 16, dataBytes: 64), .misalignedTensor,
            "tensor 't': data offset 16 is not a multiple of the alignment 32")
        try rejects(
            Self.oneTensor(dimensions: [4], offset: 1 << 40, dataBytes: 16), .dataOutOfBounds,
            "tensor 't': data offset 1099511627776 (after data start 64) lies past end of file (80 bytes)")
        try rejects(
            Self.oneTensor(dimensions: [4], offset: UInt64.max & ~31, dataBytes: 16), .dataOutOfBounds,
            "tensor 't': data offset 18446744073709551584 (after data start 64) lies past end of file (80 bytes)")
        try rejects(
            Self.oneTensor(dimensions: [100], dataBytes: 16), .dataOutOfBounds,
            "tensor 't': data range 64..<464 extends past end of file (80 bytes)")
        try rejects(
            Self.oneTensor(dimensions: [1 << 60], type: TensorType.i8.rawValue, dataBytes: 16), .dataOutOfBounds,
            "tensor 't': data range 64..<1152921504606847040 extends past end of file (80 bytes)")
        try rejects(
            Self.oneTensor(dimensions: [4], offset: 32, dataBytes: 16), .dataOutOfBounds,
            "tensor 't': data range 96..<112 extends past end of file (80 bytes)")
        let noData = Array(Self.oneTensor(dimensions: [4], dataBytes: 0).prefix(57))
        try rejects(
            noData, .truncated,
            "file ends before its data section: tensor descriptions end at offset 57, data would start at 64 (alignment 32), file is 57 bytes")
        let cut = Array(Self.oneTensor(dimensions: [4], dataBytes: 0).prefix(48))
        try rejects(
            cut, .truncated, "file ends while reading type of tensor 't' at offset 45: needs 4 bytes, only 3 left (file is 48 bytes)")
    }

    @Test func tensorTable() throws {
        var duplicate = GGUFTestWriter.sample()
        duplicate.tensors[2].name = duplicate.tensors[0].name
        let (duplicateBytes, duplicateLayout) = duplicate.build()
        try rejects(
            duplicateBytes, .duplicateTensor,
            "duplicate tensor name 'output_norm.weight' (tensors 0 and 2, offset \(duplicateLayout.tensorInfoStarts[2]))")

        var overlapping = GGUFTestWriter.sample()
        overlapping.tensors[2].offsetOverride = 32  // inside the Q4_K tensor (32..<176)
        let (overlapBytes, layout) = overlapping.build()
        let start = layout.dataStart
        try rejects(
            overlapBytes, .overlappingTensors,
            "tensors 'blk.0.attn_q.weight' (bytes \(start + 32)..<\(start + 176)) and 'token_embd.weight' (bytes \(start + 32)..<\(start + 100)) overlap")
    }

    // MARK: Truncation

    /// Every strict prefix of a valid file is rejected with a truncation-type
    /// error; at section boundaries the message is exact.
    @Test func truncatedAnywhere() throws {
        let (bytes, layout) = GGUFTestWriter.sample().build()
        #expect(layout.end == bytes.count)
        for length in 0..<bytes.count {
            do {
                _ = try GGUFFile(bytes: Array(bytes.prefix(length)))
                Issue.record("prefix of \(length) bytes parsed")
            } catch {
                #expect([.truncated, .countTooLarge, .dataOutOfBounds].contains(error.kind), "\(length): \(error)")
            }
        }
        func prefix(_ n: Int) -> [UInt8] { Array(bytes.prefix(n)) }
        try rejects(
            prefix(24), .countTooLarge,
            "tensor count 3 at offset 8 is impossible: each needs at least 24 bytes, only 0 bytes follow (file is 24 bytes)")
        // Cut at an entry boundary, the header's counts are judged first: the
        // bytes left after the header must hold 3 tensor descriptions (24
        // bytes each at least) and 19 entries (13 bytes each at least).
        for (index, start) in layout.entryStarts.enumerated() where index > 0 {
            let left = start - 24
            if left < 3 * 24 {
                try rejects(
                    prefix(start), .countTooLarge,
                    "tensor count 3 at offset 8 is impossible: each needs at least 24 bytes, only \(left) bytes follow (file is \(start) bytes)")
            } else if left < 19 * 13 {
                try rejects(
                    prefix(start), .countTooLarge,
                    "metadata entry count 19 at offset 16 is impossible: each needs at least 13 bytes, only \(left) bytes follow (file is \(start) bytes)")
            } else {
                try rejects(
                    prefix(start), .truncated,
                    "file ends while reading length of key of metadata entry \(index) at offset \(start): needs 8 bytes, only 0 left (file is \(start) bytes)")
            }
        }
        #expect(layout.entryStarts.last! - 24 >= 19 * 13, "the last boundaries test plain truncation")
        let infoStart = layout.tensorInfoStart
        try rejects(
            prefix(infoStart), .truncated,
            "file ends while reading length of name of tensor 0 at offset \(infoStart): needs 8 bytes, only 0 left (file is \(infoStart) bytes)")
        let infoEnd = layout.tensorInfoEnd
        #expect(infoEnd % 32 != 0)
        try rejects(
            prefix(infoEnd), .truncated,
            "file ends before its data section: tensor descriptions end at offset \(infoEnd), data would start at \(layout.dataStart) (alignment 32), file is \(infoEnd) bytes")
        let data = layout.dataStart
        try rejects(
            prefix(data), .dataOutOfBounds,
            "tensor 'output_norm.weight': data range \(data)..<\(data + 16) extends past end of file (\(data) bytes)")
        try rejects(
            prefix(bytes.count - 1), .dataOutOfBounds,
            "tensor 'token_embd.weight': data range \(layout.tensorDataStarts[2])..<\(bytes.count) extends past end of file (\(bytes.count - 1) bytes)")
    }
}
