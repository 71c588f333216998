import CSluiceKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A quantized weight matrix in the layout the fused kernels read: signed
/// 8-bit integers with one float scale (and, for Q4_K/Q5_K, one float offset)
/// per 16 or 32 elements, so that every weight is `scale * Float(q) - offset`.
///
/// That expression is exactly what `dequantizeRow` computes for each of these
/// types (the K-quants' sub-block scales are small integers times `d`, whose
/// products are exact in float32, and the dequantizers multiply them in the same
/// order), so a kernel reading this layout sees the very same float weights as
/// one that dequantizes the file's blocks: results agree to the bit.
///
/// Rows are interleaved by fours: for each group of four rows ("quad"), the
/// 16 quants of chunk c of each of the four rows form one 64-byte line, and
/// their scales four consecutive floats. A kernel multiplying four rows at
/// once then reads one sequential stream (four streams 680 bytes apart, as in
/// the file's row-major Q8_0, measured half the bandwidth).
final class PackedWeights: @unchecked Sendable {
    // Sendable: written once in init, read-only afterwards.

    let rows: Int
    let columns: Int
    /// `log2(elements per scale) - 4`: 0 for a scale per 16 elements (Q6_K), 1 for one per 32.
    let scaleShift: Int
    /// Scales (and offsets) of one row.
    let scalesPerRow: Int
    /// Quants, `quadBytes` per four rows (the last quad padded with zeros).
    let quants: UnsafeMutableRawPointer
    /// Owns `quants`: carved from huge-page mappings (see `StreamedBuffer`).
    private let quantStorage: StreamedBuffer
    /// Scales, `4 * scalesPerRow` per quad, interleaved like the quants.
    let scales: UnsafeMutablePointer<Float>
    /// Offsets subtracted after scaling (Q4_K, Q5_K), laid out like `scales`; nil for the other types.
    let mins: UnsafeMutablePointer<Float>?

    var quadBytes: Int { 4 * columns }
    var quadCount: Int { (rows + 3) / 4 }

    /// The types this layout represents exactly.
    static func supports(_ type: TensorType) -> Bool {
        switch type {
        case .q8_0, .q4_0, .q5_0, .q4_K, .q5_K, .q6_K: true
        default: false
        }
    }

    /// Repacks `rows` rows of `columns` elements of `type` at `data` (`rowBytes` apart).
    /// With `releasingSource`, the source pages (a read-only file mapping) are
    /// given back as packing goes, so the peak footprint never holds both copies.
    init(type: TensorType, rows: Int, columns: Int, data: UnsafeRawPointer, rowBytes: Int, releasingSource: Bool) {
        precondition(Self.supports(type) && columns % 32 == 0 && columns % type.blockSize == 0)
        self.rows = rows
        self.columns = columns
        scaleShift = type == .q6_K ? 0 : 1
        scalesPerRow = (columns / 16) >> scaleShift
        let quads = (rows + 3) / 4
        quantStorage = StreamedBuffer(byteCount: quads * 4 * columns)
        quants = quantStorage.pointer
        let scaleCount = max(1, quads * 4 * scalesPerRow)
        scales = .allocate(capacity: scaleCount)
        scales.initialize(repeating: 0, count: scaleCount)
        let hasMins = type == .q4_K || type == .q5_K
        mins = hasMins ? .allocate(capacity: scaleCount) : nil
        mins?.initialize(repeating: 0, count: scaleCount)

        let rowQuants = UnsafeMutablePointer<Int8>.allocate(capacity: columns)
        let rowScales = UnsafeMutablePointer<Float>.allocate(capacity: scalesPerRow)
        let rowMins = UnsafeMutablePointer<Float>.allocate(capacity: scalesPerRow)
        defer { rowQuants.deallocate(); rowScales.deallocate(); rowMins.deallocate() }
        let rowsPerRelease = max(1, (4 << 20) / max(1, rowBytes))
        for row in 0..<rows {
            if releasingSource && row > 0 && row % rowsPerRelease == 0 {
                Self.releaseMappedPages(data + (row - rowsPerRelease) * rowBytes, byteCount: rowsPerRelease * rowBytes)
            }
            Self.unpackRow(type, data + row * rowBytes, columns: columns, rowQuants, rowScales, rowMins)
            let quad = row >> 2, lane = row & 3
            let q = quants + quad * 4 * columns + 16 * lane
            for c in 0..<columns / 16 {
                (q + 64 * c).copyMemory(from: rowQuants + 16 * c, byteCount: 16)
            }
            let base = quad * 4 * scalesPerRow + lane
            for i in 0..<scalesPerRow {
                scales[base + 4 * i] = rowScales[i]
                if hasMins { mins![base + 4 * i] = rowMins[i] }
            }
        }
        if releasingSource {
            // Whole range: also the pages straddling the chunk boundaries above.
            Self.releaseMappedPages(data, byteCount: rows * rowBytes)
        }
    }

    deinit {
        scales.deallocate()
        mins?.deallocate()
    }

    /// Bytes this layout allocated.
    var allocatedBytes: Int {
        quadCount * (quadBytes + 4 * scalesPerRow * 4 * (mins == nil ? 1 : 2))
    }

    // MARK: Per-type unpacking (each mirrors its dequantizer in Dequantize.swift)

    /// One row of `type` as integers `q`, scales `s` (one per 16 elements for Q6_K, per 32
    /// otherwise) and, for Q4_K/Q5_K, offsets `m`: each weight is `s * q - m` (or `s * q`).
    static func unpackRow(_ type: TensorType, _ source: UnsafeRawPointer, columns: Int, _ q: UnsafeMutablePointer<Int8>,
                          _ s: UnsafeMutablePointer<Float>, _ m: UnsafeMutablePointer<Float>) {
        switch type {
        case .q8_0: packQ8_0(source, groups: columns / 32, q, s)
        case .q4_0: packQ4_0(source, groups: columns / 32, q, s)
        case .q5_0: packQ5_0(source, groups: columns / 32, q, s)
        case .q4_K: packQ4_K(source, blocks: columns / 256, q, s, m, highBits: false)
        case .q5_K: packQ4_K(source, blocks: columns / 256, q, s, m, highBits: true)
        case .q6_K: packQ6_K(source, blocks: columns / 256, q, s)
        default: preconditionFailure("unpackRow: \(type) has no packed layout")
        }
    }

    /// Q8_0: q * d.
    private static func packQ8_0(_ source: UnsafeRawPointer, groups: Int, _ q: UnsafeMutablePointer<Int8>, _ s: UnsafeMutablePointer<Float>) {
        for b in 0..<groups {
            let block = source + 34 * b
            s[b] = Dequantize.half(block, 0)
            UnsafeMutableRawPointer(q + 32 * b).copyMemory(from: block + 2, byteCount: 32)
        }
    }

    /// Q4_0: d * (nibble - 8); low nibbles are elements 0..<16.
    private static func packQ4_0(_ source: UnsafeRawPointer, groups: Int, _ q: UnsafeMutablePointer<Int8>, _ s: UnsafeMutablePointer<Float>) {
        for b in 0..<groups {
            let block = source + 18 * b
            s[b] = Dequantize.half(block, 0)
            let bytes = (block + 2).assumingMemoryBound(to: UInt8.self)
            for i in 0..<16 {
                q[32 * b + i] = Int8(Int32(bytes[i] & 0x0F) - 8)
                q[32 * b + i + 16] = Int8(Int32(bytes[i] >> 4) - 8)
            }
        }
    }

    /// Q5_0: d * (q - 16), the fifth bit of element i being bit i of the u32 at offset 2.
    private static func packQ5_0(_ source: UnsafeRawPointer, groups: Int, _ q: UnsafeMutablePointer<Int8>, _ s: UnsafeMutablePointer<Float>) {
        for b in 0..<groups {
            let block = source + 22 * b
            s[b] = Dequantize.half(block, 0)
            let qh = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
            let bytes = (block + 6).assumingMemoryBound(to: UInt8.self)
            for i in 0..<16 {
                let low = UInt32(bytes[i] & 0x0F) | (((qh >> UInt32(i)) & 1) << 4)
                let high = UInt32(bytes[i] >> 4) | (((qh >> UInt32(i + 16)) & 1) << 4)
                q[32 * b + i] = Int8(Int32(low) - 16)
                q[32 * b + i + 16] = Int8(Int32(high) - 16)
            }
        }
    }

    /// Q4_K / Q5_K: eight 32-element sub-blocks per 256, weight (d*scale) * q - dmin*min.
    private static func packQ4_K(_ source: UnsafeRawPointer, blocks: Int, _ q: UnsafeMutablePointer<Int8>,
                                 _ s: UnsafeMutablePointer<Float>, _ m: UnsafeMutablePointer<Float>, highBits: Bool) {
        let blockBytes = highBits ? 176 : 144
        let quantOffset = highBits ? 48 : 16
        for b in 0..<blocks {
            let block = source + blockBytes * b
            let (scales, mins) = Dequantize.scalesAndMins(block, d: Dequantize.half(block, 0), dmin: Dequantize.half(block, 2))
            let bytes = (block + quantOffset).assumingMemoryBound(to: UInt8.self)
            let high = (block + 16).assumingMemoryBound(to: UInt8.self)
            for j in 0..<8 {
                s[8 * b + j] = scales[j]
                m[8 * b + j] = mins[j]
            }
            for pair in 0..<4 {
                for l in 0..<32 {
                    let byte = bytes[32 * pair + l]
                    var low = UInt8(byte & 0x0F), upper = UInt8(byte >> 4)
                    if highBits {
                        low |= ((high[l] >> UInt8(2 * pair)) & 1) << 4
                        upper |= ((high[l] >> UInt8(2 * pair + 1)) & 1) << 4
                    }
                    q[256 * b + 64 * pair + l] = Int8(low)
                    q[256 * b + 64 * pair + 32 + l] = Int8(upper)
                }
            }
        }
    }

    /// Q6_K: (d * scale[i/16]) * (q - 32); see `Dequantize.q6_K` for the bit layout.
    private static func packQ6_K(_ source: UnsafeRawPointer, blocks: Int, _ q: UnsafeMutablePointer<Int8>, _ s: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + 210 * b
            let d = Dequantize.half(block, 208)
            let scales = (block + 192).assumingMemoryBound(to: Int8.self)
            for j in 0..<16 { s[16 * b + j] = d * Float(scales[j]) }
            let bytes = block.assumingMemoryBound(to: UInt8.self)
            for h in 0..<2 {
                let ql = bytes + 64 * h, qh = bytes + 128 + 32 * h
                let out = q + 256 * b + 128 * h
                for l in 0..<32 {
                    out[l] = Int8(Int32((ql[l] & 0x0F) | ((qh[l] & 0x03) << 4)) - 32)
                    out[32 + l] = Int8(Int32((ql[32 + l] & 0x0F) | (((qh[l] >> 2) & 0x03) << 4)) - 32)
                    out[64 + l] = Int8(Int32((ql[l] >> 4) | (((qh[l] >> 4) & 0x03) << 4)) - 32)
                    out[96 + l] = Int8(Int32((ql[32 + l] >> 4) | (((qh[l] >> 6) & 0x03) << 4)) - 32)
                }
            }
        }
    }

    // MARK: Decoding

    /// Writes row `row` as floats (`columns` of them), bit for bit what `dequantizeRow` writes.
    func decode(row: Int, columns: Int, into destination: UnsafeMutablePointer<Float>) {
        let decodeRow = avx2Available ? sluice_f32_decode_packed_row_avx2 : sluice_f32_decode_packed_row_baseline
        decodeRow(quants.assumingMemoryBound(to: Int8.self), scales, mins.map { UnsafePointer($0) }, columns, scalesPerRow,
                  Int32(scaleShift), row, destination)
    }

    /// Gives back to the kernel the physical pages behind `data` (a read-only,
    /// private file mapping: pages are dropped, and read again from the file if
    /// anything touches them later). Only whole pages inside the range are released.
    static func releaseMappedPages(_ data: UnsafeRawPointer, byteCount: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard page > 0 else { return }
        let start = (Int(bitPattern: data) + page - 1) / page * page
        let end = (Int(bitPattern: data) + byteCount) / page * page
        guard end > start, let pointer = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(pointer, end - start, MADV_DONTNEED)
    }
}
