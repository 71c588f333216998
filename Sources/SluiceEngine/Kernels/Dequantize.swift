/// Dequantizes `count` elements of `type` at `source` into `destination`.
///
/// `count` must be a multiple of `type.blockSize` and `type.isSupported`.
/// Results are exactly what the GGUF reference dequantizer (gguf-py's
/// `gguf.quants.dequantize`, which follows ggml-quants.c) computes: same
/// float32 operations in the same order, no fused multiply-adds.
/// `source` needs no particular alignment.
public func dequantizeRow(
    _ type: TensorType, _ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>
) {
    precondition(count >= 0 && count % type.blockSize == 0, "\(count) elements is not a whole number of \(type.name) blocks")
    let blocks = count / type.blockSize
    switch type {
    case .f32: UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: count * 4)
    case .f16: Dequantize.f16(source, count: count, into: destination)
    case .bf16: Dequantize.bf16(source, count: count, into: destination)
    case .q8_0: Dequantize.q8_0(source, blocks: blocks, into: destination)
    case .q4_0: Dequantize.q4_0(source, blocks: blocks, into: destination)
    case .q5_0: Dequantize.q5_0(source, blocks: blocks, into: destination)
    case .q4_K: Dequantize.q4_K(source, blocks: blocks, into: destination)
    case .q5_K: Dequantize.q5_K(source, blocks: blocks, into: destination)
    case .q6_K: Dequantize.q6_K(source, blocks: blocks, into: destination)
    default: preconditionFailure("dequantizeRow: type \(type) is not supported")
    }
}

/// Dequantizes a whole row of `tensor` (see `dequantizeRow`); `destination`
/// must hold `tensor.rowLength` floats.
public func dequantizeRow(of tensor: GGUFTensor, row: Int, into destination: UnsafeMutablePointer<Float>) {
    dequantizeRow(tensor.type, tensor.row(row), count: tensor.rowLength, into: destination)
}

extension GGUFTensor {
    /// The whole tensor as floats (for small tensors such as norm weights;
    /// large ones are better dequantized row by row where they are used).
    public func dequantized() -> [Float] {
        [Float](unsafeUninitializedCapacity: elementCount) { buffer, initialized in
            if elementCount > 0 {
                dequantizeRow(type, data, count: elementCount, into: buffer.baseAddress!)
            }
            initialized = elementCount
        }
    }
}

/// Block-level dequantizers, one per type. Each reads `blocks` consecutive
/// blocks at `source` and writes `blocks * blockSize` floats. Loops have
/// fixed trip counts over raw pointers so that LLVM vectorizes them.
public enum Dequantize {
    /// A block's f16 scale at `p + offset`, as a Float (exact; see
    /// `halfToFloatPortable`).
    @inline(__always)
    static func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        halfToFloatPortable(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
    }

    /// IEEE half (as bits) to single: exact for every finite value
    /// (subnormals included) and the infinities; a NaN stays a NaN with its
    /// sign and payload, though the hardware conversion may set the quiet bit.
    @inline(__always)
    static func halfToFloat(_ bits: UInt16) -> Float {
        #if arch(x86_64) && os(macOS)
        return halfToFloatPortable(bits)  // Float16 is unavailable on Intel Macs
        #else
        return Float(Float16(bitPattern: bits))  // one vcvtph2ps / fcvt
        #endif
    }

    /// The same conversion in integer arithmetic, keeping NaN payloads bit for
    /// bit. Branch-free; used for block scales because the hardware
    /// conversion of one scalar merged into a stale register, chaining each
    /// block's work to the previous one (Q8_0 went from 11 to 19 G floats/s).
    @inline(__always)
    static func halfToFloatPortable(_ bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = bits & 0x7C00
        let mantissa = UInt32(bits & 0x03FF)
        let normal = (UInt32(bits & 0x7FFF) << 13) &+ (112 << 23)
        let special = 0x7F80_0000 | (mantissa << 13)  // infinity or NaN, payload kept
        let subnormal = (Float(Int32(mantissa)) * 0x1p-24).bitPattern  // exact, zero included
        let magnitude = exponent == 0x7C00 ? special : (exponent == 0 ? subnormal : normal)
        return Float(bitPattern: sign | magnitude)
    }

    /// F16: IEEE halves (vectorized hardware conversion).
    public static func f16(_ source: UnsafeRawPointer, count: Int, into y: UnsafeMutablePointer<Float>) {
        let x = source
        for i in 0..<count {
            y[i] = halfToFloat(UInt16(littleEndian: x.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
        }
    }

    /// BF16: the top 16 bits of a float32.
    public static func bf16(_ source: UnsafeRawPointer, count: Int, into y: UnsafeMutablePointer<Float>) {
        let x = source
        for i in 0..<count {
            y[i] = Float(bitPattern: UInt32(x.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
        }
    }

    /// Q8_0: 34 bytes: f16 d, int8 q[32]; y = q * d.
    public static func q8_0(_ source: UnsafeRawPointer, blocks: Int, into y: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + b * 34
            let d = half(block, 0)
            let q0 = block.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)
            let q1 = block.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)
            let out = y + b * 32
            for i in 0..<16 {
                out[i] = Float(Int32(q0[i])) * d
            }
            for i in 0..<16 {
                out[i + 16] = Float(Int32(q1[i])) * d
            }
        }
    }

    /// Q4_0: 18 bytes: f16 d, 16 bytes of nibbles (low nibbles are elements
    /// 0..<16, high nibbles 16..<32); y = d * (nibble - 8).
    public static func q4_0(_ source: UnsafeRawPointer, blocks: Int, into y: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + b * 18
            let d = half(block, 0)
            // A local copy lets LLVM vectorize without proving that `out` and the block don't alias.
            let q = block.loadUnaligned(fromByteOffset: 2, as: SIMD16<UInt8>.self)
            let low = q & 0x0F, high = q &>> 4
            let out = y + b * 32
            for i in 0..<16 {
                out[i] = d * Float(Int32(low[i]) &- 8)
            }
            for i in 0..<16 {
                out[i + 16] = d * Float(Int32(high[i]) &- 8)
            }
        }
    }

    /// Q5_0: 22 bytes: f16 d, 32 high bits (little-endian u32, bit i for
    /// element i), 16 bytes of nibbles as in Q4_0; y = d * (q - 16).
    public static func q5_0(_ source: UnsafeRawPointer, blocks: Int, into y: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + b * 22
            let d = half(block, 0)
            let qh = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
            let q = (block + 6).assumingMemoryBound(to: UInt8.self)
            let out = y + b * 32
            // (A SIMD16 copy of `q`, as in Q4_0, measured 30x slower here.)
            for i in 0..<16 {
                let low = UInt32(q[i] & 0x0F) | (((qh >> UInt32(i)) & 1) << 4)
                let high = UInt32(q[i] >> 4) | (((qh >> UInt32(i + 16)) & 1) << 4)
                out[i] = d * Float(Int32(bitPattern: low) &- 16)
                out[i + 16] = d * Float(Int32(bitPattern: high) &- 16)
            }
        }
    }

    /// The eight 6-bit scales and mins of a Q4_K/Q5_K block, from its 12
    /// packed bytes at `block + 4`: sub-blocks 0..<4 use the low 6 bits of
    /// bytes j and j+4; 4..<8 combine a nibble of byte j+4 with the top two
    /// bits of bytes j-4 and j. Returned multiplied by d and dmin.
    @inline(__always)
    static func scalesAndMins(_ block: UnsafeRawPointer, d: Float, dmin: Float) -> (scales: SIMD8<Float>, mins: SIMD8<Float>) {
        // A 16-byte load is safe: 128 bytes of quants follow the 12 scale bytes.
        let packed = block.loadUnaligned(fromByteOffset: 4, as: SIMD16<UInt8>.self)
        let low = packed.lowHalf.lowHalf, middle = packed.lowHalf.highHalf, high = packed.highHalf.lowHalf
        let scaleBits = SIMD8<UInt8>(lowHalf: low & 63, highHalf: (high & 0x0F) | ((low &>> 6) &<< 4))
        let minBits = SIMD8<UInt8>(lowHalf: middle & 63, highHalf: (high &>> 4) | ((middle &>> 6) &<< 4))
        var scales = SIMD8<Float>(), mins = SIMD8<Float>()
        for j in 0..<8 {
            scales[j] = Float(Int32(scaleBits[j]))
            mins[j] = Float(Int32(minBits[j]))
        }
        return (d * scales, dmin * mins)
    }

    /// Q4_K: 144 bytes: f16 d, f16 dmin, 12 bytes of packed 6-bit scales and
    /// mins, 128 bytes of nibbles. Each 32 bytes of nibbles hold two
    /// 32-element sub-blocks (low nibbles first); y = (d*scale) * q - dmin*min.
    public static func q4_K(_ source: UnsafeRawPointer, blocks: Int, into y: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + b * 144
            let d = half(block, 0)
            let dmin = half(block, 2)
            let (scales, mins) = scalesAndMins(block, d: d, dmin: dmin)
            let out = y + b * 256
            for pair in 0..<4 {
                let d1 = scales[2 * pair], min1 = mins[2 * pair]
                let d2 = scales[2 * pair + 1], min2 = mins[2 * pair + 1]
                let q0 = block.loadUnaligned(fromByteOffset: 16 + 32 * pair, as: SIMD16<UInt8>.self)
                let q1 = block.loadUnaligned(fromByteOffset: 16 + 32 * pair + 16, as: SIMD16<UInt8>.self)
                let o = out + 64 * pair
                affineStore(q0 & 0x0F, scale: d1, min: min1, into: o)
                affineStore(q1 & 0x0F, scale: d1, min: min1, into: o + 16)
                affineStore(q0 &>> 4, scale: d2, min: min2, into: o + 32)
                affineStore(q1 &>> 4, scale: d2, min: min2, into: o + 48)
            }
        }
    }

    /// Q5_K: 176 bytes: f16 d, f16 dmin, 12 bytes of scales/mins as Q4_K,
    /// 32 bytes of high bits (bit j of byte i is the 5th bit of element i of
    /// sub-block j), 128 bytes of nibbles as Q4_K.
    public static func q5_K(_ source: UnsafeRawPointer, blocks: Int, into y: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + b * 176
            let d = half(block, 0)
            let dmin = half(block, 2)
            let (scales, mins) = scalesAndMins(block, d: d, dmin: dmin)
            let qh0 = block.loadUnaligned(fromByteOffset: 16, as: SIMD16<UInt8>.self)
            let qh1 = block.loadUnaligned(fromByteOffset: 32, as: SIMD16<UInt8>.self)
            let out = y + b * 256
            for pair in 0..<4 {
                let d1 = scales[2 * pair], min1 = mins[2 * pair]
                let d2 = scales[2 * pair + 1], min2 = mins[2 * pair + 1]
                let q0 = block.loadUnaligned(fromByteOffset: 48 + 32 * pair, as: SIMD16<UInt8>.self)
                let q1 = block.loadUnaligned(fromByteOffset: 48 + 32 * pair + 16, as: SIMD16<UInt8>.self)
                let shift1 = SIMD16<UInt8>(repeating: UInt8(2 * pair))
                let shift2 = SIMD16<UInt8>(repeating: UInt8(2 * pair + 1))
                let o = out + 64 * pair
                affineStore((q0 & 0x0F) | (((qh0 &>> shift1) & 1) &<< 4), scale: d1, min: min1, into: o)
                affineStore((q1 & 0x0F) | (((qh1 &>> shift1) & 1) &<< 4), scale: d1, min: min1, into: o + 16)
                affineStore((q0 &>> 4) | (((qh0 &>> shift2) & 1) &<< 4), scale: d2, min: min2, into: o + 32)
                affineStore((q1 &>> 4) | (((qh1 &>> shift2) & 1) &<< 4), scale: d2, min: min2, into: o + 48)
            }
        }
    }

    /// Q6_K: 210 bytes: 128 bytes of low nibbles, 64 bytes of 2-bit high
    /// parts, 16 int8 scales (one per 16 elements), f16 d; y = (d*scale) * (q - 32).
    /// Each 128-element half uses 64 nibble bytes and 32 high bytes: element
    /// 32t + l (t 0..<4, l 0..<32) takes nibble (t&1)*32 + l (low nibble for
    /// t < 2, high for t ≥ 2) and bits 2t..2t+1 of high byte l.
    public static func q6_K(_ source: UnsafeRawPointer, blocks: Int, into y: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + b * 210
            let d = half(block, 208)
            let scales = (block + 192).assumingMemoryBound(to: Int8.self)
            let out = y + b * 256
            for h in 0..<2 {
                // Local copies let LLVM vectorize without alias checks.
                let ql0 = block.loadUnaligned(fromByteOffset: 64 * h, as: SIMD16<UInt8>.self)
                let ql1 = block.loadUnaligned(fromByteOffset: 64 * h + 16, as: SIMD16<UInt8>.self)
                let ql2 = block.loadUnaligned(fromByteOffset: 64 * h + 32, as: SIMD16<UInt8>.self)
                let ql3 = block.loadUnaligned(fromByteOffset: 64 * h + 48, as: SIMD16<UInt8>.self)
                let qh0 = block.loadUnaligned(fromByteOffset: 128 + 32 * h, as: SIMD16<UInt8>.self)
                let qh1 = block.loadUnaligned(fromByteOffset: 128 + 32 * h + 16, as: SIMD16<UInt8>.self)
                let sc = scales + 8 * h
                let o = out + 128 * h
                signedStore((ql0 & 0x0F) | ((qh0 & 0x03) &<< 4), minus: 32, scale: d * Float(sc[0]), into: o)
                signedStore((ql1 & 0x0F) | ((qh1 & 0x03) &<< 4), minus: 32, scale: d * Float(sc[1]), into: o + 16)
                signedStore((ql2 & 0x0F) | ((qh0 & 0x0C) &<< 2), minus: 32, scale: d * Float(sc[2]), into: o + 32)
                signedStore((ql3 & 0x0F) | ((qh1 & 0x0C) &<< 2), minus: 32, scale: d * Float(sc[3]), into: o + 48)
                signedStore((ql0 &>> 4) | (qh0 & 0x30), minus: 32, scale: d * Float(sc[4]), into: o + 64)
                signedStore((ql1 &>> 4) | (qh1 & 0x30), minus: 32, scale: d * Float(sc[5]), into: o + 80)
                signedStore((ql2 &>> 4) | ((qh0 & 0xC0) &>> 2), minus: 32, scale: d * Float(sc[6]), into: o + 96)
                signedStore((ql3 &>> 4) | ((qh1 & 0xC0) &>> 2), minus: 32, scale: d * Float(sc[7]), into: o + 112)
            }
        }
    }

    /// Writes `scale * (q[i] - offset)` for 16 elements.
    @inline(__always)
    static func signedStore(_ q: SIMD16<UInt8>, minus offset: Int32, scale: Float, into o: UnsafeMutablePointer<Float>) {
        for i in 0..<16 {
            o[i] = scale * Float(Int32(q[i]) &- offset)
        }
    }

    /// Writes `scale * q[i] - min` for 16 elements.
    @inline(__always)
    static func affineStore(_ q: SIMD16<UInt8>, scale: Float, min: Float, into o: UnsafeMutablePointer<Float>) {
        for i in 0..<16 {
            o[i] = scale * Float(Int32(q[i])) - min
        }
    }
}
