import SluiceTestSupport

@testable import SluiceEngine

/// Little-endian byte building for hand-made GGUF files.
struct ByteWriter {
    var bytes: [UInt8] = []

    var count: Int { bytes.count }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { integer(v) }
    mutating func u32(_ v: UInt32) { integer(v) }
    mutating func u64(_ v: UInt64) { integer(v) }

    mutating func integer<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// A GGUF string: u64 length, then the bytes.
    mutating func string(_ s: String) { rawString(Array(s.utf8)) }

    mutating func rawString(_ b: [UInt8]) {
        u64(UInt64(b.count))
        bytes.append(contentsOf: b)
    }

    mutating func pad(to alignment: Int) {
        while bytes.count % alignment != 0 { bytes.append(0) }
    }

    mutating func value(_ v: GGUFValue) {
        switch v {
        case .uint8(let x): u8(x)
        case .int8(let x): integer(x)
        case .uint16(let x): integer(x)
        case .int16(let x): integer(x)
        case .uint32(let x): integer(x)
        case .int32(let x): integer(x)
        case .uint64(let x): integer(x)
        case .int64(let x): integer(x)
        case .float32(let x): integer(x.bitPattern)
        case .float64(let x): integer(x.bitPattern)
        case .bool(let x): u8(x ? 1 : 0)
        case .string(let x): string(x)
        case .array(let a): array(a)
        }
    }

    /// Element type, count, elements.
    mutating func array(_ a: GGUFArray) {
        u32(a.elementType.rawValue)
        u64(UInt64(a.count))
        switch a {
        case .uint8(let xs): xs.forEach { u8($0) }
        case .int8(let xs): xs.forEach { integer($0) }
        case .uint16(let xs): xs.forEach { integer($0) }
        case .int16(let xs): xs.forEach { integer($0) }
        case .uint32(let xs): xs.forEach { integer($0) }
        case .int32(let xs): xs.forEach { integer($0) }
        case .uint64(let xs): xs.forEach { integer($0) }
        case .int64(let xs): xs.forEach { integer($0) }
        case .float32(let xs): xs.forEach { integer($0.bitPattern) }
        case .float64(let xs): xs.forEach { integer($0.bitPattern) }
        case .bool(let xs): xs.forEach { u8($0 ? 1 : 0) }
        case .string(let xs): for i in xs.indices { xs.withUTF8(at: i) { rawString(Array($0)) } }
        case .array(let xs): xs.forEach { array($0) }
        }
    }
}

/// Builds valid GGUF files (and records where each part lies, so tests can
/// damage precisely the field they mean to).
struct GGUFTestWriter {
    struct Tensor {
        var name: String
        var dimensions: [Int]
        var type: TensorType
        var data: [UInt8]
        /// Written instead of the computed offset, for hostile files.
        var offsetOverride: UInt64? = nil
    }

    struct Layout {
        var metadataStart = 0
        var entryStarts: [Int] = []
        var tensorInfoStart = 0
        var tensorInfoStarts: [Int] = []
        var tensorInfoEnd = 0
        var dataStart = 0
        var tensorDataStarts: [Int] = []
        var end = 0
    }

    var version: UInt32 = 3
    var metadata: [(String, GGUFValue)] = []
    var tensors: [Tensor] = []
    /// Used to lay out the data; add `general.alignment` to `metadata` to
    /// declare a value other than the default 32.
    var alignment = 32

    func build() -> (bytes: [UInt8], layout: Layout) {
        var w = ByteWriter()
        var layout = Layout()
        w.bytes.append(contentsOf: Array("GGUF".utf8))
        w.u32(version)
        w.u64(UInt64(tensors.count))
        w.u64(UInt64(metadata.count))
        layout.metadataStart = w.count
        for (key, value) in metadata {
            layout.entryStarts.append(w.count)
            w.string(key)
            w.u32(value.type.rawValue)
            w.value(value)
        }
        layout.tensorInfoStart = w.count
        var offset = 0
        var offsets: [Int] = []
        for tensor in tensors {
            offsets.append(offset)
            offset += tensor.data.count
            offset = (offset + alignment - 1) / alignment * alignment
        }
        for (tensor, relative) in zip(tensors, offsets) {
            layout.tensorInfoStarts.append(w.count)
            w.string(tensor.name)
            w.u32(UInt32(tensor.dimensions.count))
            tensor.dimensions.forEach { w.u64(UInt64($0)) }
            w.u32(tensor.type.rawValue)
            w.u64(tensor.offsetOverride ?? UInt64(relative))
        }
        layout.tensorInfoEnd = w.count
        if !tensors.isEmpty { w.pad(to: alignment) }
        layout.dataStart = w.count
        for (index, tensor) in tensors.enumerated() {
            if index > 0 { w.pad(to: alignment) }
            layout.tensorDataStarts.append(w.count)
            w.bytes.append(contentsOf: tensor.data)
        }
        layout.end = w.count
        return (w.bytes, layout)
    }

    /// A small valid file with every metadata value kind and three tensors.
    static func sample() -> GGUFTestWriter {
        var writer = GGUFTestWriter()
        writer.metadata = [
            ("general.architecture", .string("llama")),
            ("general.name", .string("tiny ✓")),
            ("llama.block_count", .uint32(2)),
            ("llama.embedding_length", .uint64(256)),
            ("llama.rope.freq_base", .float32(10000)),
            ("llama.attention.layer_norm_rms_epsilon", .float64(1e-5)),
            ("llama.small", .int8(-3)),
            ("llama.u8", .uint8(200)),
            ("llama.u16", .uint16(60000)),
            ("llama.i16", .int16(-30000)),
            ("llama.i32", .int32(-7)),
            ("llama.i64", .int64(-1 << 40)),
            ("tokenizer.ggml.add_bos_token", .bool(true)),
            ("tokenizer.ggml.tokens", .array(.string(GGUFStringArray(["<unk>", "<s>", "</s>", "▁hello", ""])))),
            ("tokenizer.ggml.scores", .array(.float32([0, -1, -2, -3.5, -4]))),
            ("tokenizer.ggml.token_type", .array(.int32([2, 3, 3, 1, 1]))),
            ("tokenizer.ggml.merges", .array(.string(GGUFStringArray(["▁ h", "e l"])))),
            ("test.flags", .array(.bool([true, false, true]))),
            ("test.nested", .array(.array([.uint8([1, 2]), .string(GGUFStringArray(["a"])), .array([])]))),
        ]
        var generator = SplitMix64(seed: 42)
        func randomBytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: generator.next()) } }
        var q4k = randomBytes(144)
        q4k[0] = 0x00; q4k[1] = 0x20  // d = 2^-7
        q4k[2] = 0x00; q4k[3] = 0x1C  // dmin = 2^-8
        var q8 = randomBytes(2 * 34)
        q8[0] = 0x00; q8[1] = 0x24; q8[34] = 0x00; q8[35] = 0xA4
        let f32 = [Float](arrayLiteral: 1, -2, 0.5, 3).flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
        writer.tensors = [
            Tensor(name: "output_norm.weight", dimensions: [4], type: .f32, data: f32),
            Tensor(name: "blk.0.attn_q.weight", dimensions: [256, 1], type: .q4_K, data: q4k),
            Tensor(name: "token_embd.weight", dimensions: [32, 2], type: .q8_0, data: q8),
        ]
        return writer
    }
}
