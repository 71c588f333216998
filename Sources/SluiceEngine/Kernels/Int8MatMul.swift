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

    /// The engine's default: `int16` where the CPU runs it (as accurate as every check on
    /// the default model requires, and faster), else `float32`. Every x86 variant from `avx2`
    /// up has the same default and the same results, so a fleet's machines agree.
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
final class Int8Weights: @unchecked Sendable {
    // Sendable: written once in init, read-only afterwards.

    let rows: Int
    let columns: Int
    let kind: sluice_weight_kind
    /// Elements per scale: 16 (Q6_K) or 32.
    let block: Int
    /// What the offsets are a multiple of the scales by, for kinds without stored offsets.
    let bias: Float
    let weights: UnsafeMutableRawPointer
    /// Half floats for `SLUICE_WEIGHTS_HALF_SCALED32`, floats otherwise.
    let scales: UnsafeMutableRawPointer
    /// Stored offsets (`SLUICE_WEIGHTS_AFFINE32` only).
    let offsets: UnsafeMutablePointer<Float>?

    var panels: Int { (rows + 15) / 16 }
    var blocksPerRow: Int { columns / block }
    private var scaleBytes: Int { kind == SLUICE_WEIGHTS_HALF_SCALED32 ? 2 : 4 }

    static func supports(_ type: TensorType, columns: Int) -> Bool {
        PackedWeights.supports(type) && columns % 32 == 0 && columns % type.blockSize == 0
    }

    init(type: TensorType, rows: Int, columns: Int, data: UnsafeRawPointer, rowBytes: Int, releasingSource: Bool) {
        precondition(Self.supports(type, columns: columns))
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
        weights = .allocate(byteCount: max(1, panels * 16 * columns), alignment: 64)
        weights.initializeMemory(as: UInt8.self, repeating: 0, count: max(1, panels * 16 * columns))
        let scaleCount = max(1, panels * 16 * blocks)
        let halfScales = kind == SLUICE_WEIGHTS_HALF_SCALED32
        scales = .allocate(byteCount: scaleCount * (halfScales ? 2 : 4), alignment: 64)
        scales.initializeMemory(as: UInt8.self, repeating: 0, count: scaleCount * (halfScales ? 2 : 4))
        offsets = kind == SLUICE_WEIGHTS_AFFINE32 ? .allocate(capacity: scaleCount) : nil
        offsets?.initialize(repeating: 0, count: scaleCount)

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

    deinit {
        weights.deallocate()
        scales.deallocate()
        offsets?.deallocate()
    }

    var allocatedBytes: Int { panels * 16 * (columns + blocksPerRow * (scaleBytes + (offsets == nil ? 0 : 4))) }

    /// Block `b`'s scale and offset for row `row`.
    @inline(__always)
    private func scaleAndOffset(row: Int, block b: Int) -> (Float, Float) {
        let index = (row >> 4) * 16 * blocksPerRow + (row & 15) + 16 * b
        let s = kind == SLUICE_WEIGHTS_HALF_SCALED32
            ? Float(Float16(bitPattern: scales.load(fromByteOffset: 2 * index, as: UInt16.self)))
            : scales.load(fromByteOffset: 4 * index, as: Float.self)
        return (s, offsets?[index] ?? s * bias)
    }

    /// Row `row`'s Euclidean norm, as an upper bound, and the largest `255 |s| + |m|` of its
    /// blocks, which bounds every partial sum the kernel forms per unit of activation magnitude.
    func normAndLargestTerm(row: Int) -> (norm: Double, largestTerm: Double) {
        let bytes = weights.assumingMemoryBound(to: UInt8.self)
        let line = bytes + (row >> 4) * 16 * columns + 4 * (row & 15)
        var squares = 0.0, largest = 0.0
        for b in 0..<blocksPerRow {
            let (s, m) = scaleAndOffset(row: row, block: b)
            var sum = 0, sumOfSquares = 0
            for k in stride(from: b * block, to: (b + 1) * block, by: 4) {
                for j in 0..<4 {
                    let u = Int(line[64 * (k >> 2) + j])
                    sum += u
                    sumOfSquares += u * u
                }
            }
            let (scale, offset) = (Double(s), Double(m))
            if offsets == nil {
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
        sluice_int8_row_product(weights.assumingMemoryBound(to: UInt8.self), Int32(kind.rawValue), scales, offsets,
                                Int32(bias), Int32(columns), Int32(row), a.quantized + token * columns,
                                a.low.map { $0 + token * columns }, a.scales + token * a.blocks,
                                a.scaledSums + token * a.blocks, a.sums + token * a.blocks)
    }

    /// Writes row `row` as floats: the values `dequantizeRow` writes (a zero may differ in sign).
    func decode(row: Int, into destination: UnsafeMutablePointer<Float>) {
        let bytes = weights.assumingMemoryBound(to: UInt8.self)
        let line = bytes + (row >> 4) * 16 * columns + 4 * (row & 15)
        for b in 0..<blocksPerRow {
            let (s, m) = scaleAndOffset(row: row, block: b)
            for k in (b * block)..<((b + 1) * block) {
                destination[k] = s * Float(line[64 * (k >> 2) + (k & 3)]) - m
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
