import CSluiceKernels

/// How the matrix products treat activations.
public enum MatmulPrecision: String, Sendable, CaseIterable, Codable {
    /// Activations stay float32: each weight is multiplied exactly as the file defines it,
    /// and results stay within about 1e-5 nats of a float64 pass.
    case float32 = "f32"
    /// Activations are rounded to 16-bit integers (one scale per 32 elements, or per 16
    /// where the weights have a scale per 16), and multiplied with exact integer dot products:
    /// AVX-512 VNNI's, or AVX2's (the same bits) on CPUs without it.
    case int16
    /// Activations are rounded to 8 bits per block, as llama.cpp does: half the integer
    /// work of `int16` with VNNI (the same work with AVX2, which multiplies 16-bit values
    /// either way), with about llama.cpp's rounding error.
    case int8

    /// Whether this build and the kernel variant in use run the integer kernels (`int16` and
    /// `int8`): `avx2` and above, each variant with the same results bit for bit.
    public static var int8Available: Bool { sluice_int8_available() != 0 }

    /// The engine's default for models below `int8FromBlockWeights` (the default model among them;
    /// see `automatic(for:)` for larger ones): `int16` where the CPU runs it (as accurate as every
    /// check on the default model requires, and faster), else `float32`. Every x86 variant from
    /// `avx2` up has the same default and the same results, so a fleet's machines agree.
    public static var engineDefault: MatmulPrecision { int8Available ? .int16 : .float32 }

    /// Bumped whenever the integer precisions' results change in any bit (a different rounding
    /// or order of operations), so that results cached by an earlier build are not reused.
    /// 2: half-float KV cache, and signed weights' offsets taken off in integers.
    public static let integerArithmeticRevision = 2

    /// Whether products at this precision run on the integer kernels.
    var isInteger: Bool { self != .float32 }
}

/// A quantized weight matrix in the layout the integer kernels read: unsigned bytes `u`
/// with a scale `s` and offset `m` per block, each weight being `s * u - m`.
///
/// Every supported type maps to that exactly: types with signed quants store
/// `u = q + bias` (a power of two) and need no stored offsets, since `m = s * bias`
/// is exact in float32 (and so is `s * u - m`); the K-quants keep their own offsets.
/// Scales that came from the file as half floats stay half floats. Rows are grouped
/// in panels of 16: for each four columns, the 16 rows' four bytes form one 64-byte
/// line, so one VNNI instruction multiplies 16 rows by four activations broadcast to
/// every lane (the AVX2 kernels read each 32-byte half as 8 rows' 32-bit lanes). A lone
/// sequence's decode step reads every weight once, so the bytes per weight (1.06 for
/// Q8_0/Q4_0/Q5_0) bound its speed.
///
/// Where the avx512-vnni variant runs (sluice_int4.h; other variants keep the byte layout),
/// weights whose `u` fits in four bits (Q4_0, Q4_K) are stored two per byte and Q6_K's at
/// six bits each instead (`bits`), the K-quants' scales and offsets as the file's small
/// integer multipliers of half floats per 256 columns: 0.58 bytes per Q4_K weight instead
/// of 1.25, 0.82 per Q6_K weight instead of 1.25, for bit for bit the same products.
final class Int8Weights: @unchecked Sendable {
    // Sendable: written once in init, read-only afterwards.

    /// Whether matrices loaded in this task may use the compact layouts where they apply (tests
    /// compare both layouts through whole models; their outputs are the same bits).
    @TaskLocal static var compactAllowed = true

    /// The bits per weight of `type`'s compact layout, if it has one.
    static func compactBits(_ type: TensorType) -> Int? {
        switch type {
        case .q4_0, .q4_K: 4
        case .q6_K: 6
        default: nil
        }
    }

    /// Whether `type`'s weights get their compact layout on this CPU.
    static func prefersCompact(_ type: TensorType) -> Bool {
        compactBits(type) != nil && compactAllowed && sluice_int4_available() != 0
    }

    let rows: Int
    let columns: Int
    let kind: sluice_weight_kind
    /// Elements per scale: 16 (Q6_K) or 32.
    let block: Int
    /// What the offsets are a multiple of the scales by, for kinds without stored offsets.
    let bias: Float
    /// Bits per stored weight: 8 (a byte each), 4 (two per byte) or 6 (see sluice_int4.h).
    let bits: Int
    /// Two weights per byte.
    var nibbles: Bool { bits == 4 }
    let weights: UnsafeMutableRawPointer
    /// Own `weights` and `scales`: carved from huge-page mappings (see `StreamedBuffer`).
    private let weightStorage: StreamedBuffer
    private let scaleStorage: StreamedBuffer
    /// Half floats for `SLUICE_WEIGHTS_HALF_SCALED32`, floats otherwise; at 4 bits and
    /// `SLUICE_WEIGHTS_AFFINE32`, 16 scale then 16 offset multipliers (bytes) per panel and
    /// block; at 6 bits, 16 signed scale multipliers per panel and block.
    let scales: UnsafeMutableRawPointer
    /// Stored offsets (`SLUICE_WEIGHTS_AFFINE32` in bytes only).
    let offsets: UnsafeMutablePointer<Float>?
    /// The half floats the multipliers scale, per panel and 256 columns: at 4 bits and
    /// `SLUICE_WEIGHTS_AFFINE32` the 16 rows' `d`, then their `dmin`; at 6 bits their `d`.
    let superScales: UnsafeMutablePointer<UInt16>?

    var panels: Int { (rows + 15) / 16 }
    var blocksPerRow: Int { columns / block }
    private var scaleBytes: Int { kind == SLUICE_WEIGHTS_HALF_SCALED32 ? 2 : 4 }
    /// Weight bytes per panel.
    private var panelBytes: Int { bits * 2 * columns }
    /// Scale bytes per panel (offsets and super-block scales apart).
    private var panelScaleBytes: Int { bits == 4 ? 32 * blocksPerRow : bits == 6 ? 16 * blocksPerRow : 16 * blocksPerRow * scaleBytes }
    /// Super-block half floats per panel.
    private var panelSuperScales: Int { (bits == 6 ? 16 : 32) * (columns / 256) }

    static func supports(_ type: TensorType, columns: Int) -> Bool {
        PackedWeights.supports(type) && columns % 32 == 0 && columns % type.blockSize == 0
    }

    /// - Parameter compact: the type's compact layout (Q4_0, Q4_K, Q6_K); by default where `prefersCompact`.
    init(type: TensorType, rows: Int, columns: Int, data: UnsafeRawPointer, rowBytes: Int, releasingSource: Bool,
         compact: Bool? = nil) {
        precondition(Self.supports(type, columns: columns))
        let compact = compact ?? Self.prefersCompact(type)
        precondition(!compact || Self.compactBits(type) != nil, "\(type) has no compact layout")
        bits = compact ? Self.compactBits(type)! : 8
        let nibbles = bits == 4
        self.rows = rows
        self.columns = columns
        let bias: Int32
        switch type {
        case .q8_0: (kind, bias) = (SLUICE_WEIGHTS_HALF_SCALED32, 128)
        case .q4_0: (kind, bias) = (SLUICE_WEIGHTS_HALF_SCALED32, 8)
        case .q5_0: (kind, bias) = (SLUICE_WEIGHTS_HALF_SCALED32, 16)
        case .q6_K: (kind, bias) = (SLUICE_WEIGHTS_SCALED16, 32)
        default: (kind, bias) = (SLUICE_WEIGHTS_AFFINE32, 0)  // Q4_K, Q5_K: unsigned, with their own offsets
        }
        self.bias = Float(bias)
        block = kind == SLUICE_WEIGHTS_SCALED16 ? 16 : 32
        let panels = (rows + 15) / 16, blocks = columns / block
        let weightBytes = max(1, panels * 2 * bits * columns)
        weightStorage = StreamedBuffer(byteCount: weightBytes)
        weights = weightStorage.pointer
        let scaleCount = max(1, panels * 16 * blocks)
        let halfScales = kind == SLUICE_WEIGHTS_HALF_SCALED32
        // Bytes: 32 per panel and block in every 4-bit layout (16 halves, or 16 + 16 multipliers),
        // 16 at 6 bits (16 multipliers).
        let scaleBytes = scaleCount * (bits == 6 ? 1 : halfScales || nibbles ? 2 : 4)
        scaleStorage = StreamedBuffer(byteCount: scaleBytes)
        scales = scaleStorage.pointer
        let affine = kind == SLUICE_WEIGHTS_AFFINE32
        offsets = affine && !nibbles ? .allocate(capacity: scaleCount) : nil
        offsets?.initialize(repeating: 0, count: scaleCount)
        let superCount = max(1, panels * (bits == 6 ? 16 : 32) * (columns / 256))
        superScales = (affine && nibbles) || bits == 6 ? .allocate(capacity: superCount) : nil
        superScales?.initialize(repeating: 0, count: superCount)

        let rowQuants = UnsafeMutablePointer<Int8>.allocate(capacity: columns)
        let rowScales = UnsafeMutablePointer<Float>.allocate(capacity: blocks)
        let rowMins = UnsafeMutablePointer<Float>.allocate(capacity: blocks)
        defer { rowQuants.deallocate(); rowScales.deallocate(); rowMins.deallocate() }
        rowMins.initialize(repeating: 0, count: blocks)
        let rowsPerRelease = max(1, (4 << 20) / max(1, rowBytes))
        let bytes = weights.assumingMemoryBound(to: UInt8.self)
        for row in 0..<rows {
            if releasingSource && row > 0 && row % rowsPerRelease == 0 {
                PackedWeights.releaseMappedPages(data + (row - rowsPerRelease) * rowBytes, byteCount: rowsPerRelease * rowBytes)
            }
            PackedWeights.unpackRow(type, data + row * rowBytes, columns: columns, rowQuants, rowScales, rowMins)
            if nibbles {
                storeNibbles(row: row, type: type, source: data + row * rowBytes, rowQuants, rowScales)
                continue
            }
            if bits == 6 {
                storeSixBits(row: row, source: data + row * rowBytes, rowQuants)
                continue
            }
            let panel = row >> 4, lane = row & 15
            let line = bytes + panel * 16 * columns + 4 * lane
            for k in 0..<columns {
                line[64 * (k >> 2) + (k & 3)] = UInt8(Int32(rowQuants[k]) + bias)
            }
            let base = panel * 16 * blocks + lane
            for b in 0..<blocks {
                if halfScales {
                    // The file's own half float, so the round trip is exact.
                    scales.storeBytes(of: Float16(rowScales[b]).bitPattern, toByteOffset: 2 * (base + 16 * b), as: UInt16.self)
                } else {
                    scales.storeBytes(of: rowScales[b], toByteOffset: 4 * (base + 16 * b), as: Float.self)
                }
                offsets?[base + 16 * b] = rowMins[b]
            }
        }
        if releasingSource { PackedWeights.releaseMappedPages(data, byteCount: rows * rowBytes) }
    }

    /// Row `row` (its quants `q`, scales `s` as `unpackRow` gives them) in the 4-bit layout.
    private func storeNibbles(row: Int, type: TensorType, source: UnsafeRawPointer, _ q: UnsafeMutablePointer<Int8>,
                              _ s: UnsafeMutablePointer<Float>) {
        let panel = row >> 4, lane = row & 15
        let line = weights.assumingMemoryBound(to: UInt8.self) + panel * panelBytes + 4 * lane
        for k in 0..<columns {
            let u = UInt8(Int32(q[k]) + Int32(bias))
            line[64 * (k >> 3) + (k & 3)] |= (k >> 2) & 1 == 0 ? u : u << 4
        }
        let rowScales = scales.assumingMemoryBound(to: UInt8.self) + panel * panelScaleBytes
        if type == .q4_0 {
            for b in 0..<blocksPerRow {
                // The file's own half float, so the round trip is exact.
                scales.storeBytes(of: Float16(s[b]).bitPattern, toByteOffset: panel * panelScaleBytes + 32 * b + 2 * lane,
                                  as: UInt16.self)
            }
            return
        }
        // Q4_K: the file's d and dmin, and its 6-bit multipliers (scalesAndMins with d = dmin = 1
        // gives them exactly), whose products are the scales and offsets `unpackRow` computes.
        let superScales = superScales! + panel * panelSuperScales + lane
        for sb in 0..<(columns / 256) {
            let block = source + 144 * sb
            superScales[32 * sb] = UInt16(littleEndian: block.loadUnaligned(fromByteOffset: 0, as: UInt16.self))
            superScales[32 * sb + 16] = UInt16(littleEndian: block.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
            let (multipliers, offsetMultipliers) = Dequantize.scalesAndMins(block, d: 1, dmin: 1)
            for j in 0..<8 {
                rowScales[32 * (8 * sb + j) + lane] = UInt8(multipliers[j])
                rowScales[32 * (8 * sb + j) + 16 + lane] = UInt8(offsetMultipliers[j])
            }
        }
    }

    /// Row `row` of Q6_K (its quants `q` as `unpackRow` gives them) in the 6-bit layout.
    private func storeSixBits(row: Int, source: UnsafeRawPointer, _ q: UnsafeMutablePointer<Int8>) {
        let panel = row >> 4, lane = row & 15
        let line = weights.assumingMemoryBound(to: UInt8.self) + panel * panelBytes + 4 * lane
        for k in 0..<columns {
            let u = UInt8(Int32(q[k]) + Int32(bias))
            let b = k >> 4, g = (k & 15) >> 2, i = k & 3
            line[192 * b + 64 * (g >> 1) + i] |= (u & 15) << UInt8(4 * (g & 1))
            line[192 * b + 128 + i] |= (u >> 4) << UInt8(2 * g)
        }
        // The file's d and its signed 8-bit multipliers, whose products are the scales `unpackRow` computes.
        let rowScales = (scales + panel * panelScaleBytes).assumingMemoryBound(to: Int8.self) + lane
        let superScales = superScales! + panel * panelSuperScales + lane
        for sb in 0..<(columns / 256) {
            let block = source + 210 * sb
            superScales[16 * sb] = UInt16(littleEndian: block.loadUnaligned(fromByteOffset: 208, as: UInt16.self))
            for j in 0..<16 {
                rowScales[16 * (16 * sb + j)] = block.load(fromByteOffset: 192 + j, as: Int8.self)
            }
        }
    }

    deinit {
        offsets?.deallocate()
        superScales?.deallocate()
    }

    var allocatedBytes: Int {
        bits != 8 ? panels * (panelBytes + panelScaleBytes + (superScales == nil ? 0 : 2 * panelSuperScales))
            : panels * 16 * (columns + blocksPerRow * (scaleBytes + (offsets == nil ? 0 : 4)))
    }

    /// Block `b`'s scale and offset for row `row`.
    @inline(__always)
    private func scaleAndOffset(row: Int, block b: Int) -> (Float, Float) {
        let panel = row >> 4, lane = row & 15
        if bits == 6 {
            let d = Dequantize.halfToFloatPortable(superScales![panel * panelSuperScales + 16 * (b >> 4) + lane])
            let s = d * Float(scales.load(fromByteOffset: panel * panelScaleBytes + 16 * b + lane, as: Int8.self))
            return (s, s * bias)
        }
        if nibbles {
            let at = panel * panelScaleBytes + 32 * b
            if let superScales {
                let halves = superScales + panel * panelSuperScales + 32 * (b >> 3) + lane
                let d = Dequantize.halfToFloatPortable(halves[0]), dmin = Dequantize.halfToFloatPortable(halves[16])
                let multiplier = scales.load(fromByteOffset: at + lane, as: UInt8.self)
                let offsetMultiplier = scales.load(fromByteOffset: at + 16 + lane, as: UInt8.self)
                return (d * Float(multiplier), dmin * Float(offsetMultiplier))
            }
            let s = Float(Float16(bitPattern: scales.load(fromByteOffset: at + 2 * lane, as: UInt16.self)))
            return (s, s * bias)
        }
        let index = panel * 16 * blocksPerRow + lane + 16 * b
        let s = kind == SLUICE_WEIGHTS_HALF_SCALED32
            ? Float(Float16(bitPattern: scales.load(fromByteOffset: 2 * index, as: UInt16.self)))
            : scales.load(fromByteOffset: 4 * index, as: Float.self)
        return (s, offsets?[index] ?? s * bias)
    }

    /// The unsigned quant `u` of row `row`, column `k`.
    @inline(__always)
    private func quant(row: Int, column k: Int) -> Int {
        let bytes = weights.assumingMemoryBound(to: UInt8.self) + (row >> 4) * panelBytes + 4 * (row & 15)
        if nibbles {
            return Int(bytes[64 * (k >> 3) + (k & 3)] >> UInt8(4 * ((k >> 2) & 1))) & 15
        }
        if bits == 6 {
            let line = bytes + 192 * (k >> 4), g = (k & 15) >> 2, i = k & 3
            let low = Int(line[64 * (g >> 1) + i] >> UInt8(4 * (g & 1))) & 15
            return low | (Int(line[128 + i] >> UInt8(2 * g)) & 3) << 4
        }
        return Int(bytes[64 * (k >> 2) + (k & 3)])
    }

    /// Row `row`'s Euclidean norm, as an upper bound, and the largest `255 |s| + |m|` of its
    /// blocks, which bounds every partial sum the kernel forms per unit of activation magnitude.
    func normAndLargestTerm(row: Int) -> (norm: Double, largestTerm: Double) {
        var squares = 0.0, largest = 0.0
        for b in 0..<blocksPerRow {
            let (s, m) = scaleAndOffset(row: row, block: b)
            var sum = 0, sumOfSquares = 0
            for k in (b * block)..<((b + 1) * block) {
                let u = quant(row: row, column: k)
                sum += u
                sumOfSquares += u * u
            }
            let (scale, offset) = (Double(s), Double(m))
            if kind != SLUICE_WEIGHTS_AFFINE32 {
                // Σ (s (u − bias))² from an exact integer sum of squares.
                let bias = Int(self.bias)
                squares += scale * scale * Double(sumOfSquares - 2 * bias * sum + block * bias * bias)
            } else {
                // Σ (s u − m)², with room for the rounding of the terms that cancel.
                let positive = scale * scale * Double(sumOfSquares) + Double(block) * offset * offset
                squares += max(0, positive - 2 * scale * offset * Double(sum)) + 1e-12 * positive
            }
            largest = max(largest, 255 * abs(scale) + abs(offset))
        }
        return (squares.squareRoot() * (1 + 1e-9), largest)
    }

    /// The product of panels `panels` (rows `16 · panels.lowerBound` on) with the rounded
    /// activation rows `tokens`, on this thread: row `16 · panels.lowerBound + i` of token
    /// `tokens.lowerBound + t` goes to `y[t · yStride + i]`. Every element gets the same bits
    /// whatever the panels and tokens around it in the call.
    func multiply(panels: Range<Int>, _ a: RoundedActivations, tokens: Range<Int>, into y: UnsafeMutablePointer<Float>,
                  yStride: Int) {
        let first = panels.lowerBound, token = tokens.lowerBound
        if nibbles {
            sluice_int4_matmul((weights + first * panelBytes).assumingMemoryBound(to: UInt8.self), Int32(kind.rawValue),
                               (scales + first * panelScaleBytes).assumingMemoryBound(to: UInt8.self),
                               superScales.map { $0 + first * panelSuperScales }, Int32(bias), Int32(columns),
                               Int32(min(rows - 16 * first, 16 * panels.count)), 0, Int32(panels.count),
                               a.quantized + token * columns, a.low.map { $0 + token * columns },
                               a.scales + token * a.blocks, a.scaledSums + token * a.blocks, a.sums + token * a.blocks,
                               Int32(tokens.count), y, Int32(yStride))
            return
        }
        if bits == 6 {
            sluice_int6_matmul((weights + first * panelBytes).assumingMemoryBound(to: UInt8.self),
                               (scales + first * panelScaleBytes).assumingMemoryBound(to: Int8.self),
                               superScales! + first * panelSuperScales, Int32(columns),
                               Int32(min(rows - 16 * first, 16 * panels.count)), 0, Int32(panels.count),
                               a.quantized + token * columns, a.low.map { $0 + token * columns },
                               a.scales + token * a.blocks, a.sums + token * a.blocks, Int32(tokens.count), y, Int32(yStride))
            return
        }
        let scaleIndex = first * 16 * blocksPerRow
        sluice_int8_matmul((weights + first * 16 * columns).assumingMemoryBound(to: UInt8.self), Int32(kind.rawValue),
                           scales + scaleIndex * scaleBytes, offsets.map { $0 + scaleIndex }, Int32(bias),
                           Int32(columns), Int32(min(rows - 16 * first, 16 * panels.count)), 0, Int32(panels.count),
                           a.quantized + token * columns, a.low.map { $0 + token * columns },
                           a.scales + token * a.blocks, a.scaledSums + token * a.blocks, a.sums + token * a.blocks,
                           Int32(tokens.count), y, Int32(yStride))
    }

    /// Row `row` of `multiply`'s product for token `token` of `a`, computed alone: the same bits.
    func rowProduct(row: Int, _ a: RoundedActivations, token: Int) -> Float {
        if nibbles {
            return sluice_int4_row_product(weights.assumingMemoryBound(to: UInt8.self), Int32(kind.rawValue),
                                           scales.assumingMemoryBound(to: UInt8.self), superScales, Int32(bias),
                                           Int32(columns), Int32(row), a.quantized + token * columns,
                                           a.low.map { $0 + token * columns }, a.scales + token * a.blocks,
                                           a.scaledSums + token * a.blocks, a.sums + token * a.blocks)
        }
        if bits == 6 {
            return sluice_int6_row_product(weights.assumingMemoryBound(to: UInt8.self), scales.assumingMemoryBound(to: Int8.self),
                                           superScales, Int32(columns), Int32(row), a.quantized + token * columns,
                                           a.low.map { $0 + token * columns }, a.scales + token * a.blocks, a.sums + token * a.blocks)
        }
        return sluice_int8_row_product(weights.assumingMemoryBound(to: UInt8.self), Int32(kind.rawValue), scales, offsets,
                                Int32(bias), Int32(columns), Int32(row), a.quantized + token * columns,
                                a.low.map { $0 + token * columns }, a.scales + token * a.blocks,
                                a.scaledSums + token * a.blocks, a.sums + token * a.blocks)
    }

    /// Writes row `row` as floats: the values `dequantizeRow` writes (a zero may differ in sign).
    func decode(row: Int, into destination: UnsafeMutablePointer<Float>) {
        for b in 0..<blocksPerRow {
            let (s, m) = scaleAndOffset(row: row, block: b)
            for k in (b * block)..<((b + 1) * block) {
                destination[k] = s * Float(quant(row: row, column: k)) - m
            }
        }
    }
}

/// One matrix product for `integerMatmuls`.
struct IntegerProduct {
    var weights: Int8Weights
    /// Two bytes per activation (`int16`) or one (`int8`).
    var lowBytes: Bool
    var output: UnsafeMutablePointer<Float>
}

/// Activations rounded to integers per block, for every product that reads them alike.
final class RoundedActivations {
    let columns: Int
    let blocks: Int
    /// Which products can use this rounding: equal for equal blocks and bytes per activation.
    let roundingKey: Int
    let quantized: UnsafeMutablePointer<Int8>
    let low: UnsafeMutablePointer<Int8>?
    let scales: UnsafeMutablePointer<Float>
    let scaledSums: UnsafeMutablePointer<Float>
    /// Each block's integers summed (exact), at its scale.
    let sums: UnsafeMutablePointer<Int32>

    init(_ x: UnsafePointer<Float>, tokens: Int, columns: Int, block: Int, lowBytes: Bool, pool: ComputePool) {
        self.columns = columns
        blocks = columns / block
        roundingKey = Self.roundingKey(block: block, lowBytes: lowBytes)
        quantized = .allocate(capacity: (lowBytes ? 2 : 1) * tokens * columns)
        low = lowBytes ? quantized + tokens * columns : nil
        scales = .allocate(capacity: 2 * tokens * blocks)
        scaledSums = scales + tokens * blocks
        sums = .allocate(capacity: tokens * blocks)
        let chunk = 16
        let (quantized, low, scales, scaledSums, sums, blocks) = (quantized, low, scales, scaledSums, sums, blocks)
        pool.parallelFor((tokens + chunk - 1) / chunk) { item in
            let first = item * chunk, count = min(chunk, tokens - first)
            sluice_quantize_rows(x + first * columns, Int32(count), Int32(columns), Int32(block),
                                 quantized + first * columns, low.map { $0 + first * columns },
                                 scales + first * blocks, scaledSums + first * blocks, sums + first * blocks)
        }
    }

    deinit {
        quantized.deallocate()
        scales.deallocate()
        sums.deallocate()
    }

    static func roundingKey(block: Int, lowBytes: Bool) -> Int { 2 * block + (lowBytes ? 1 : 0) }
}

/// `y[t][r] = Σ_k x[t][k] · W[r][k]` for each product, with each activation row rounded to
/// integers per block (once for all products that round alike), in one parallel loop.
///
/// Batch-invariant like `matmul`'s float path: a row's rounding depends on that row alone,
/// block sums are exact integers, and each output element adds its blocks' scaled sums in
/// one fixed order whatever the batch, tile, thread or the other products in the call.
///
/// `alreadyRounded` holds roundings of these same activations that a caller made anyway;
/// products that round alike use them instead of rounding again.
func integerMatmuls(_ x: UnsafePointer<Float>, tokens: Int, _ products: [IntegerProduct], alreadyRounded: [RoundedActivations] = [],
                    pool: ComputePool) {
    guard tokens > 0, let columns = products.first?.weights.columns else { return }
    func roundingKey(_ product: IntegerProduct) -> Int {
        RoundedActivations.roundingKey(block: product.weights.block, lowBytes: product.lowBytes)
    }
    var rounded: [Int: RoundedActivations] = [:]
    for activations in alreadyRounded {
        precondition(activations.columns == columns, "roundings of other activations")
        rounded[activations.roundingKey] = activations
    }
    for product in products {
        let key = roundingKey(product)
        if rounded[key] == nil {
            rounded[key] = RoundedActivations(x, tokens: tokens, columns: columns, block: product.weights.block,
                                              lowBytes: product.lowBytes, pool: pool)
        }
    }
    // Tokens per item: their bytes stay in L2 while the item streams its panels past them.
    let tokenBlock = tokens <= 64 ? tokens : max(16, min(tokens, (256 * 1024) / columns) / 4 * 4)
    let tokenBlocks = (tokens + tokenBlock - 1) / tokenBlock
    struct Plan { var product: IntegerProduct; var activations: RoundedActivations; var panelsPerItem: Int; var panelBlocks: Int; var firstItem: Int }
    var plans: [Plan] = []
    var items = 0
    for product in products {
        let w = product.weights
        precondition(w.columns == columns, "products of the same activations need the same columns")
        // Few, large items for the output head (16,384 panels), so claiming them stays cheap.
        let panelsPerItem = w.panels >= 1024 && tokens <= 8 ? 8 : 2
        let panelBlocks = (w.panels + panelsPerItem - 1) / panelsPerItem
        plans.append(Plan(product: product, activations: rounded[roundingKey(product)]!,
                          panelsPerItem: panelsPerItem, panelBlocks: panelBlocks, firstItem: items))
        items += tokenBlocks * panelBlocks
    }
    pool.parallelFor(items) { item in
        let plan = plans.last { $0.firstItem <= item }!
        let local = item - plan.firstItem
        let w = plan.product.weights, rows = w.rows
        let firstToken = local / plan.panelBlocks * tokenBlock, lastToken = min(tokens, firstToken + tokenBlock)
        let firstPanel = local % plan.panelBlocks * plan.panelsPerItem, lastPanel = min(w.panels, firstPanel + plan.panelsPerItem)
        w.multiply(panels: firstPanel..<lastPanel, plan.activations, tokens: firstToken..<lastToken,
                   into: plan.product.output + firstToken * rows + 16 * firstPanel, yStride: rows)
    }
}
