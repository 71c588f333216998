/// Keys and values of every sequence the engine holds, in float32, in fixed-size blocks.
///
/// A block holds `blockPositions` consecutive positions of one sequence for every
/// layer (keys, then values, per layer), so a sequence grows one block at a time
/// without copying, memory is accounted exactly, and the cache can refuse to
/// grow past its budget: the engine then preempts a sequence and recomputes it
/// later instead of running out of memory.
public final class KVCache: @unchecked Sendable {
    public let layerCount: Int
    /// Floats per token per layer for keys (and for values): KV heads × head size.
    public let width: Int
    /// Positions per block (a power of two).
    public static let blockPositions = 256
    static let blockShift = 8
    /// Bytes of one block: every layer's keys and values for `blockPositions` positions.
    public let bytesPerBlock: Int
    /// The most blocks that may be allocated at once.
    public let blockBudget: Int
    public private(set) var blocksInUse = 0
    private var sequences: [Int: SequenceBlocks] = [:]

    /// - Parameter budgetBytes: the most memory the cache may hold; nil: unlimited.
    public init(layerCount: Int, width: Int, budgetBytes: Int? = nil) {
        self.layerCount = layerCount
        self.width = width
        let bytesPerBlock = Self.blockPositions * width * layerCount * 2 * MemoryLayout<Float>.size
        self.bytesPerBlock = bytesPerBlock
        blockBudget = budgetBytes.map { max(1, $0 / bytesPerBlock) } ?? Int.max
    }

    deinit {
        for storage in sequences.values { storage.deallocate() }
    }

    /// Bytes held for all sequences.
    public var bytesAllocated: Int { blocksInUse * bytesPerBlock }

    /// Blocks needed to hold `positions` positions.
    public static func blocks(for positions: Int) -> Int {
        (positions + blockPositions - 1) / blockPositions
    }

    /// Blocks that reserving room for the given (slot, positions) pairs would add.
    public func additionalBlocks(_ requests: [(slot: Int, positions: Int)]) -> Int {
        requests.reduce(0) { total, request in
            total + max(0, Self.blocks(for: request.positions) - (sequences[request.slot]?.blockCount ?? 0))
        }
    }

    /// Blocks that can still be allocated.
    public var freeBlocks: Int { blockBudget == Int.max ? Int.max : blockBudget - blocksInUse }

    /// Makes room for positions `0..<positions` of sequence `slot`, creating it if needed.
    /// Returns false, allocating nothing, when that would exceed the budget.
    @discardableResult
    public func reserve(slot: Int, positions: Int) -> Bool {
        let storage = sequences[slot] ?? SequenceBlocks()
        let needed = Self.blocks(for: positions) - storage.blockCount
        guard needed > 0 else { return true }
        guard needed <= freeBlocks else { return false }
        let floatsPerBlock = bytesPerBlock / MemoryLayout<Float>.size
        for _ in 0..<needed { storage.append(.allocate(capacity: floatsPerBlock)) }
        blocksInUse += needed
        sequences[slot] = storage
        return true
    }

    /// Frees sequence `slot`'s blocks past the ones holding positions `0..<positions`
    /// (room reserved for speculative tokens that were rejected). Kept positions are untouched.
    public func truncate(slot: Int, positions: Int) {
        guard let storage = sequences[slot] else { return }
        let excess = storage.blockCount - Self.blocks(for: positions)
        guard excess > 0 else { return }
        storage.removeLast(excess)
        blocksInUse -= excess
    }

    /// Forgets sequence `slot` and frees its memory.
    public func release(slot: Int) {
        guard let storage = sequences.removeValue(forKey: slot) else { return }
        blocksInUse -= storage.blockCount
        storage.deallocate()
    }

    /// Where sequence `slot`'s keys and values are. Valid until the sequence grows or is released.
    public func view(slot: Int) -> SequenceView {
        SequenceView(blocks: UnsafePointer(sequences[slot]!.table), width: width)
    }
}

/// Read and write access to one sequence's cached keys and values.
public struct SequenceView: @unchecked Sendable {
    let blocks: UnsafePointer<UnsafeMutablePointer<Float>>
    let width: Int

    /// The `width` key floats of `layer` at `position`.
    @inline(__always)
    public func key(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        blocks[position >> KVCache.blockShift] + (2 * layer * KVCache.blockPositions + (position & (KVCache.blockPositions - 1))) * width
    }

    /// The `width` value floats of `layer` at `position`.
    @inline(__always)
    public func value(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        blocks[position >> KVCache.blockShift] + ((2 * layer + 1) * KVCache.blockPositions + (position & (KVCache.blockPositions - 1))) * width
    }
}

/// One sequence's block table.
private final class SequenceBlocks {
    private(set) var table: UnsafeMutablePointer<UnsafeMutablePointer<Float>> = .allocate(capacity: 4)
    private var capacity = 4
    private(set) var blockCount = 0

    func append(_ block: UnsafeMutablePointer<Float>) {
        if blockCount == capacity {
            let grown = UnsafeMutablePointer<UnsafeMutablePointer<Float>>.allocate(capacity: capacity * 2)
            grown.moveInitialize(from: table, count: blockCount)
            table.deallocate()
            table = grown
            capacity *= 2
        }
        (table + blockCount).initialize(to: block)
        blockCount += 1
    }

    func removeLast(_ count: Int) {
        for i in (blockCount - count)..<blockCount { table[i].deallocate() }
        blockCount -= count
    }

    func deallocate() {
        for i in 0..<blockCount { table[i].deallocate() }
        table.deallocate()
    }
}
