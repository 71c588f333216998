/// A weight matrix in its file's (possibly quantized) layout: `rows` output
/// features, each a row of `columns` input features stored contiguously.
public struct WeightMatrix: @unchecked Sendable {
    public let name: String
    public let type: TensorType
    public let rows: Int
    public let columns: Int
    public let data: UnsafeRawPointer
    public let rowBytes: Int

    public init(name: String, type: TensorType, rows: Int, columns: Int, data: UnsafeRawPointer) {
        self.name = name
        self.type = type
        self.rows = rows
        self.columns = columns
        self.data = data
        self.rowBytes = columns / type.blockSize * type.bytesPerBlock
    }

    /// Writes row `row`, dequantized, to `destination` (`columns` floats).
    @inline(__always)
    public func dequantize(row: Int, into destination: UnsafeMutablePointer<Float>) {
        dequantizeRow(type, data + row * rowBytes, count: columns, into: destination)
    }
}

/// Rows of weights each work item covers: small enough to balance two to
/// sixteen threads, large enough that claiming items costs nothing measurable.
private let rowsPerItem = 16

/// `y[t][r] = Σ_k x[t][k] · W[r][k]` for `tokens` rows of activations.
///
/// Each weight row is dequantized once per call, into a small buffer that stays
/// in L1, and then multiplied with every activation row: batching pays because
/// the weights are read from memory once per step, whatever the batch size.
///
/// Batch-invariant by construction: every output element is one accumulator
/// reduced in the same order (16-lane fused multiply-adds over `k`, then the
/// lanes, then the scalar tail) whatever `tokens`, the tile it falls in or the
/// thread that computes it. A request's logits therefore do not depend on what
/// shares its batch, which is what makes resumed and cached results exact.
///
/// - Parameters:
///   - x: `tokens × W.columns` activations, row-major.
///   - y: `tokens × W.rows` outputs, row-major.
public func matmul(_ x: UnsafePointer<Float>, tokens: Int, _ w: WeightMatrix, into y: UnsafeMutablePointer<Float>, pool: ComputePool) {
    let items = (w.rows + rowsPerItem - 1) / rowsPerItem
    let columns = w.columns
    pool.parallelFor(items) { item in
        let firstRow = item * rowsPerItem
        let lastRow = min(w.rows, firstRow + rowsPerItem)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * columns) { scratch in
            let rows = scratch.baseAddress!
            var r = firstRow
            while r + 4 <= lastRow {
                for i in 0..<4 { w.dequantize(row: r + i, into: rows + i * columns) }
                var t = 0
                while t + 4 <= tokens {
                    tile4x4(rows, x + t * columns, columns: columns, y + t * w.rows + r, outStride: w.rows)
                    t += 4
                }
                while t < tokens {
                    tile4x1(rows, x + t * columns, columns: columns, y + t * w.rows + r)
                    t += 1
                }
                r += 4
            }
            while r < lastRow {
                w.dequantize(row: r, into: rows)
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
func finish(_ acc: SIMD16<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, from start: Int, to end: Int) -> Float {
    var sum = acc.sum()
    var k = start
    while k < end {
        sum = sum.addingProduct(a[k], b[k])
        k += 1
    }
    return sum
}

/// The dot product of two float vectors, in the kernels' fixed reduction order.
@inline(__always)
public func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    var acc = SIMD16<Float>()
    var k = 0
    while k + 16 <= count {
        acc.addProduct(load16(a + k), load16(b + k))
        k += 16
    }
    return finish(acc, a, b, from: k, to: count)
}

/// Four weight rows times four activation rows.
@inline(__always)
private func tile4x4(_ w: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, columns: Int,
                     _ y: UnsafeMutablePointer<Float>, outStride: Int) {
    let w0 = UnsafePointer(w), w1 = w0 + columns, w2 = w1 + columns, w3 = w2 + columns
    let x0 = x, x1 = x0 + columns, x2 = x1 + columns, x3 = x2 + columns
    var a00 = SIMD16<Float>(), a01 = SIMD16<Float>(), a02 = SIMD16<Float>(), a03 = SIMD16<Float>()
    var a10 = SIMD16<Float>(), a11 = SIMD16<Float>(), a12 = SIMD16<Float>(), a13 = SIMD16<Float>()
    var a20 = SIMD16<Float>(), a21 = SIMD16<Float>(), a22 = SIMD16<Float>(), a23 = SIMD16<Float>()
    var a30 = SIMD16<Float>(), a31 = SIMD16<Float>(), a32 = SIMD16<Float>(), a33 = SIMD16<Float>()
    var k = 0
    while k + 16 <= columns {
        let v0 = load16(x0 + k), v1 = load16(x1 + k), v2 = load16(x2 + k), v3 = load16(x3 + k)
        let u0 = load16(w0 + k)
        a00.addProduct(u0, v0); a01.addProduct(u0, v1); a02.addProduct(u0, v2); a03.addProduct(u0, v3)
        let u1 = load16(w1 + k)
        a10.addProduct(u1, v0); a11.addProduct(u1, v1); a12.addProduct(u1, v2); a13.addProduct(u1, v3)
        let u2 = load16(w2 + k)
        a20.addProduct(u2, v0); a21.addProduct(u2, v1); a22.addProduct(u2, v2); a23.addProduct(u2, v3)
        let u3 = load16(w3 + k)
        a30.addProduct(u3, v0); a31.addProduct(u3, v1); a32.addProduct(u3, v2); a33.addProduct(u3, v3)
        k += 16
    }
    let y0 = y, y1 = y0 + outStride, y2 = y1 + outStride, y3 = y2 + outStride
    y0[0] = finish(a00, w0, x0, from: k, to: columns); y1[0] = finish(a01, w0, x1, from: k, to: columns)
    y2[0] = finish(a02, w0, x2, from: k, to: columns); y3[0] = finish(a03, w0, x3, from: k, to: columns)
    y0[1] = finish(a10, w1, x0, from: k, to: columns); y1[1] = finish(a11, w1, x1, from: k, to: columns)
    y2[1] = finish(a12, w1, x2, from: k, to: columns); y3[1] = finish(a13, w1, x3, from: k, to: columns)
    y0[2] = finish(a20, w2, x0, from: k, to: columns); y1[2] = finish(a21, w2, x1, from: k, to: columns)
    y2[2] = finish(a22, w2, x2, from: k, to: columns); y3[2] = finish(a23, w2, x3, from: k, to: columns)
    y0[3] = finish(a30, w3, x0, from: k, to: columns); y1[3] = finish(a31, w3, x1, from: k, to: columns)
    y2[3] = finish(a32, w3, x2, from: k, to: columns); y3[3] = finish(a33, w3, x3, from: k, to: columns)
}

/// Four weight rows times one activation row.
@inline(__always)
private func tile4x1(_ w: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, columns: Int, _ y: UnsafeMutablePointer<Float>) {
    let w0 = UnsafePointer(w), w1 = w0 + columns, w2 = w1 + columns, w3 = w2 + columns
    var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
    var k = 0
    while k + 16 <= columns {
        let v = load16(x + k)
        a0.addProduct(load16(w0 + k), v)
        a1.addProduct(load16(w1 + k), v)
        a2.addProduct(load16(w2 + k), v)
        a3.addProduct(load16(w3 + k), v)
        k += 16
    }
    y[0] = finish(a0, w0, x, from: k, to: columns)
    y[1] = finish(a1, w1, x, from: k, to: columns)
    y[2] = finish(a2, w2, x, from: k, to: columns)
    y[3] = finish(a3, w3, x, from: k, to: columns)
}
