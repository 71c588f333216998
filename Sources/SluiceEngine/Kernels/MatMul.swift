import CSluiceKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A weight matrix in its file's (possibly quantized) layout: `rows` output
/// features, each a row of `columns` input features stored contiguously.
///
/// Quantized types the fused kernels handle (Q8_0, Q4_0, Q5_0, Q4_K, Q5_K,
/// Q6_K) are also repacked at init into `PackedWeights`; `data` stays valid
/// either way.
public struct WeightMatrix: @unchecked Sendable {
    public let name: String
    public let type: TensorType
    public let rows: Int
    public let columns: Int
    public let data: UnsafeRawPointer
    public let rowBytes: Int
    let packed: PackedWeights?
    let int8: Int8Weights?
    /// The precision this matrix's products run at.
    public let precision: MatmulPrecision

    /// - Parameters:
    ///   - precision: `.int16` and `.int8` repack for the integer kernels where the type
    ///     and CPU allow (see `MatmulPrecision`); other matrices keep the float path.
    ///   - releasingSource: `data` lies in a read-only file mapping whose pages may be
    ///     given back once repacked (they are read again from the file if touched later).
    ///     Never pass true for memory the process owns.
    public init(name: String, type: TensorType, rows: Int, columns: Int, data: UnsafeRawPointer,
                precision: MatmulPrecision = .float32, releasingSource: Bool = false) {
        self.name = name
        self.type = type
        self.rows = rows
        self.columns = columns
        self.data = data
        self.rowBytes = columns / type.blockSize * type.bytesPerBlock
        if precision.isInteger && rows > 0 && Int8Weights.supports(type, columns: columns) && MatmulPrecision.int8Available {
            int8 = Int8Weights(type: type, rows: rows, columns: columns, data: data, rowBytes: rowBytes,
                               releasingSource: releasingSource)
            packed = nil
            self.precision = precision
            return
        }
        self.precision = .float32
        if PackedWeights.supports(type) && columns % 32 == 0 && rows > 0 {
            packed = PackedWeights(type: type, rows: rows, columns: columns, data: data, rowBytes: rowBytes,
                                   releasingSource: releasingSource)
            int8 = nil
        } else {
            packed = nil
            int8 = nil
        }
    }

    /// Bytes allocated for the repacked layout (0 when the kernels read `data` as is).
    public var packedBytes: Int { packed?.allocatedBytes ?? int8?.allocatedBytes ?? 0 }

    /// Writes row `row`, dequantized, to `destination` (`columns` floats).
    @inline(__always)
    public func dequantize(row: Int, into destination: UnsafeMutablePointer<Float>) {
        if let packed {
            packed.decode(row: row, columns: columns, into: destination)
        } else if let int8 {
            int8.decode(row: row, into: destination)
        } else {
            dequantizeRow(type, data + row * rowBytes, count: columns, into: destination)
        }
    }
}

/// Batches up to this many tokens multiply straight from the packed weights,
/// decoding every 16 weights in registers once per tile of up to four tokens;
/// larger batches decode four rows into an L1 buffer once and reuse them for
/// every token (the decode then costs nothing next to the multiply-adds).
let fusedTokenLimit = 8

/// Activations one work item of a large batch multiplies, in bytes: a block of
/// tokens stays in L2 while the item streams its rows of weights past it.
let activationBlockBytes = 192 * 1024

/// `y[t][r] = Σ_k x[t][k] · W[r][k]` for `tokens` rows of activations.
///
/// Each weight is decoded from its packed layout (see `PackedWeights`) to the
/// same float `dequantizeRow` gives; small batches multiply it straight from
/// registers, large ones from a decoded block of four rows in L1. Work items
/// cover a block of rows and a block of tokens, so activations of long
/// prompts stay in L2.
///
/// Batch-invariant by construction: every output element is one accumulator
/// reduced in the same order (16-lane fused multiply-adds over `k`, then the
/// lanes, then the scalar tail) whatever `tokens`, the tile or code path it
/// falls in or the thread that computes it. A request's logits therefore do not
/// depend on what shares its batch, which is what makes resumed and cached
/// results exact.
///
/// - Parameters:
///   - x: `tokens × W.columns` activations, row-major.
///   - y: `tokens × W.rows` outputs, row-major.
public func matmul(_ x: UnsafePointer<Float>, tokens: Int, _ w: WeightMatrix, into y: UnsafeMutablePointer<Float>, pool: ComputePool) {
    guard tokens > 0, w.rows > 0 else { return }
    if let int8 = w.int8 {
        integerMatmuls(x, tokens: tokens, [IntegerProduct(weights: int8, lowBytes: w.precision == .int16, output: y)], pool: pool)
        return
    }
    guard let packed = w.packed else {
        dequantizingMatmul(x, tokens: tokens, w, into: y, pool: pool)
        return
    }
    packedMatmul(x, tokens: tokens, w, packed, into: y, pool: pool)
}

/// Several products of the same activations, `products[i].output = x · products[i].matrixᵀ`:
/// bit for bit what one `matmul` call per product gives. On the integer kernels the
/// activations are rounded once and all products share one parallel loop.
public func matmul(_ x: UnsafePointer<Float>, tokens: Int, _ products: [(matrix: WeightMatrix, output: UnsafeMutablePointer<Float>)],
                   pool: ComputePool) {
    let integer = products.compactMap { product in
        product.matrix.int8.map { IntegerProduct(weights: $0, lowBytes: product.matrix.precision == .int16, output: product.output) }
    }
    if integer.count == products.count && tokens > 0 {
        integerMatmuls(x, tokens: tokens, integer, pool: pool)
    } else {
        for product in products { matmul(x, tokens: tokens, product.matrix, into: product.output, pool: pool) }
    }
}

private func packedMatmul(_ x: UnsafePointer<Float>, tokens: Int, _ w: WeightMatrix, _ packed: PackedWeights,
                          into y: UnsafeMutablePointer<Float>, pool: ComputePool) {
    let columns = w.columns, rows = w.rows
    let tokenBlock = tokens <= fusedTokenLimit ? tokens : max(8, min(tokens, activationBlockBytes / (4 * columns)) / 4 * 4)
    let tokenBlocks = (tokens + tokenBlock - 1) / tokenBlock
    // Few, large items for the output head (262,144 rows), so claiming them stays cheap.
    let rowsPerItem = rows >= 16_384 && tokens <= fusedTokenLimit ? 64 : 16
    let rowBlocks = (rows + rowsPerItem - 1) / rowsPerItem
    pool.parallelFor(tokenBlocks * rowBlocks) { item in
        let firstToken = item / rowBlocks * tokenBlock, lastToken = min(tokens, firstToken + tokenBlock)
        let firstRow = item % rowBlocks * rowsPerItem, lastRow = min(rows, firstRow + rowsPerItem)
        if lastToken - firstToken <= fusedTokenLimit {
            fusedRows(packed, firstRow..<lastRow, x, tokens: firstToken..<lastToken, columns: columns, y, outStride: rows)
        } else {
            decodedRows(w, firstRow..<lastRow, x, tokens: firstToken..<lastToken, y)
        }
    }
}

/// Rows `rowRange` times tokens `tokenRange`, straight from the packed weights: each 16 weights
/// decoded in registers once per tile of up to four tokens (f32_matmul_kernels.h).
@inline(__always)
private func fusedRows(_ w: PackedWeights, _ rowRange: Range<Int>, _ x: UnsafePointer<Float>, tokens tokenRange: Range<Int>,
                       columns: Int, _ y: UnsafeMutablePointer<Float>, outStride: Int) {
    let packedRows = avx2Available ? sluice_f32_packed_rows_avx2 : sluice_f32_packed_rows_baseline
    packedRows(w.quants.assumingMemoryBound(to: Int8.self), w.scales, w.mins.map { UnsafePointer($0) }, columns, w.scalesPerRow,
               Int32(w.scaleShift), rowRange.lowerBound, rowRange.upperBound, x, tokenRange.lowerBound, tokenRange.upperBound,
               y, outStride)
}

/// Four decoded weight rows at `w` times `tokens` activation rows at `x`, into `y[t * outStride + r]`
/// (f32_matmul_kernels.h: four tokens at a time, then one).
@inline(__always)
private func rowTiles(_ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, tokens: Int, columns: Int,
                      _ y: UnsafeMutablePointer<Float>, outStride: Int) {
    let tiles = avx2Available ? sluice_f32_row_tiles_avx2 : sluice_f32_row_tiles_baseline
    tiles(w, 4, x, tokens, columns, y, outStride)
}

/// Rows `rowRange` times tokens `tokenRange`, through four rows of weights decoded into L1.
private func decodedRows(_ w: WeightMatrix, _ rowRange: Range<Int>, _ x: UnsafePointer<Float>, tokens tokenRange: Range<Int>,
                         _ y: UnsafeMutablePointer<Float>) {
    let columns = w.columns
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * columns) { scratch in
        let rows = scratch.baseAddress!
        var r = rowRange.lowerBound
        while r + 4 <= rowRange.upperBound {
            for i in 0..<4 { w.dequantize(row: r + i, into: rows + i * columns) }
            rowTiles(rows, x + tokenRange.lowerBound * columns, tokens: tokenRange.count, columns: columns,
                     y + tokenRange.lowerBound * w.rows + r, outStride: w.rows)
            r += 4
        }
        while r < rowRange.upperBound {
            w.dequantize(row: r, into: rows)
            for t in tokenRange {
                y[t * w.rows + r] = dot(rows, x + t * columns, count: columns)
            }
            r += 1
        }
    }
}

/// Rows of weights each work item of `dequantizingMatmul` covers.
private let rowsPerItem = 16

/// The general kernel (and the one before packed layouts existed): each weight
/// row is dequantized once per call into a small buffer in L1 and multiplied
/// with every activation row. Used for types without a packed layout (F32,
/// F16, BF16) and as the baseline in benchmarks; same reduction order as
/// `matmul`, so results agree to the bit.
public func dequantizingMatmul(_ x: UnsafePointer<Float>, tokens: Int, _ w: WeightMatrix, into y: UnsafeMutablePointer<Float>, pool: ComputePool) {
    let items = (w.rows + rowsPerItem - 1) / rowsPerItem
    let columns = w.columns
    pool.parallelFor(items) { item in
        let firstRow = item * rowsPerItem
        let lastRow = min(w.rows, firstRow + rowsPerItem)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * columns) { scratch in
            let rows = scratch.baseAddress!
            var r = firstRow
            while r + 4 <= lastRow {
                for i in 0..<4 { dequantizeRow(w.type, w.data + (r + i) * w.rowBytes, count: columns, into: rows + i * columns) }
                rowTiles(rows, x, tokens: tokens, columns: columns, y + r, outStride: w.rows)
                r += 4
            }
            while r < lastRow {
                dequantizeRow(w.type, w.data + r * w.rowBytes, count: columns, into: rows)
                for t in 0..<tokens {
                    y[t * w.rows + r] = dot(rows, x + t * columns, count: columns)
                }
                r += 1
            }
        }
    }
}

@inline(__always)
func load16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}

@inline(__always)
func load16(_ p: UnsafeMutablePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}

/// Finishes one accumulator: the lanes, then the elements past the last full vector.
/// Every kernel ends a dot product through here, so all agree to the bit.
@inline(__always)
func finish<B: CacheElement>(_ acc: SIMD16<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<B>, from start: Int, to end: Int) -> Float {
    var sum = laneSum(acc)
    var k = start
    while k < end {
        sum = sum.addingProduct(a[k], B.float(b[k]))
        k += 1
    }
    return sum
}

/// The dot product of two float vectors, in the kernels' fixed reduction order: `dotProduct`'s
/// operations, in C.
@inline(__always)
public func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    avx2Available ? sluice_dot_avx2(a, b, count) : sluice_dot_baseline(a, b, count)
}

/// `dot` with `b` held in any cache element type, read as floats.
@inline(__always)
func dotProduct<B: CacheElement>(_ a: UnsafePointer<Float>, _ b: UnsafePointer<B>, count: Int) -> Float {
    var acc = SIMD16<Float>()
    var k = 0
    while k + 16 <= count {
        acc.addProduct(load16(a + k), B.load16(b + k))
        k += 16
    }
    return finish(acc, a, b, from: k, to: count)
}

/// The 16 dot products of rows a0…a3 with rows b0…b3, `count` floats each:
/// `result[4 * i + j] = dot(aᵢ, bⱼ, count:)`, bit for bit (each accumulator sees the same
/// multiply-adds in the same order), with each b row loaded once for all four a rows.
/// The b rows may be held in any cache element type; they are read as floats.
@inline(__always)
func dotProducts4x4<B: CacheElement>(_ a0: UnsafePointer<Float>, _ a1: UnsafePointer<Float>, _ a2: UnsafePointer<Float>,
                                     _ a3: UnsafePointer<Float>, _ b0: UnsafePointer<B>, _ b1: UnsafePointer<B>,
                                     _ b2: UnsafePointer<B>, _ b3: UnsafePointer<B>, count: Int) -> SIMD16<Float> {
    var c00 = SIMD16<Float>(), c01 = SIMD16<Float>(), c02 = SIMD16<Float>(), c03 = SIMD16<Float>()
    var c10 = SIMD16<Float>(), c11 = SIMD16<Float>(), c12 = SIMD16<Float>(), c13 = SIMD16<Float>()
    var c20 = SIMD16<Float>(), c21 = SIMD16<Float>(), c22 = SIMD16<Float>(), c23 = SIMD16<Float>()
    var c30 = SIMD16<Float>(), c31 = SIMD16<Float>(), c32 = SIMD16<Float>(), c33 = SIMD16<Float>()
    var k = 0
    while k + 16 <= count {
        let x0 = load16(a0 + k), x1 = load16(a1 + k), x2 = load16(a2 + k), x3 = load16(a3 + k)
        let u0 = B.load16(b0 + k)
        c00.addProduct(x0, u0); c10.addProduct(x1, u0); c20.addProduct(x2, u0); c30.addProduct(x3, u0)
        let u1 = B.load16(b1 + k)
        c01.addProduct(x0, u1); c11.addProduct(x1, u1); c21.addProduct(x2, u1); c31.addProduct(x3, u1)
        let u2 = B.load16(b2 + k)
        c02.addProduct(x0, u2); c12.addProduct(x1, u2); c22.addProduct(x2, u2); c32.addProduct(x3, u2)
        let u3 = B.load16(b3 + k)
        c03.addProduct(x0, u3); c13.addProduct(x1, u3); c23.addProduct(x2, u3); c33.addProduct(x3, u3)
        k += 16
    }
    return SIMD16(finish(c00, a0, b0, from: k, to: count), finish(c01, a0, b1, from: k, to: count),
                  finish(c02, a0, b2, from: k, to: count), finish(c03, a0, b3, from: k, to: count),
                  finish(c10, a1, b0, from: k, to: count), finish(c11, a1, b1, from: k, to: count),
                  finish(c12, a1, b2, from: k, to: count), finish(c13, a1, b3, from: k, to: count),
                  finish(c20, a2, b0, from: k, to: count), finish(c21, a2, b1, from: k, to: count),
                  finish(c22, a2, b2, from: k, to: count), finish(c23, a2, b3, from: k, to: count),
                  finish(c30, a3, b0, from: k, to: count), finish(c31, a3, b1, from: k, to: count),
                  finish(c32, a3, b2, from: k, to: count), finish(c33, a3, b3, from: k, to: count))
}
