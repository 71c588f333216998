/// Keys and values of every sequence the engine holds, in float32 or float16 (`KVStorage`),
/// in fixed-size, reference-counted blocks under a memory budget.
///
/// Layers are grouped by attention window: global layers form one group, and
/// sliding-window layers with the same window another. A block holds
/// `blockPositions` consecutive positions for every layer of one group (per
/// layer: keys, then values), so a sequence grows one block at a time without
/// copying, and a sliding-window group can drop a sequence's blocks that fell
/// out of its window (`trimWindows`) while the global group keeps them.
///
/// Blocks are reference counted so that sequences whose prompts start alike can
/// share them (see PrefixCache.swift): a block leaves memory when no sequence
/// uses it and the prefix index does not keep it; blocks the index keeps for
/// later requests are evicted, least recently used first, when the budget needs
/// room. When even that is not enough, `reserve` refuses and the engine preempts
/// a sequence and recomputes it later instead of running out of memory.
///
/// Only the engine thread touches a cache; views handed to the kernels stay
/// valid until the sequence grows, shrinks or is released.
public final class KVCache: @unchecked Sendable {
    public let layerCount: Int
    /// Elements per token per layer for keys (and for values): KV heads × head size.
    public let width: Int
    /// How keys and values are stored.
    public let storage: KVStorage
    /// Positions per block by default. Small blocks let short common prompts (a system
    /// prompt of a few dozen tokens) be shared; they cost nothing in the kernels, which
    /// address every position through the block table anyway.
    public static let defaultBlockPositions = 16
    /// Positions per block (a power of two).
    public let blockPositions: Int
    let blockShift: Int
    /// Layers that share one attention window, and so one block table per sequence.
    struct Group {
        /// A query at position p needs keys from p - window + 1 on; nil: from 0.
        var window: Int?
        var layers: [Int]
        var bytesPerBlock: Int
    }
    let groups: [Group]
    /// For each layer: its group and its index within the group, as (group, index).
    let layerPlaces: UnsafeMutablePointer<(group: Int, index: Int)>
    /// The most bytes the blocks may take; Int.max: unlimited.
    public let budgetBytes: Int
    /// Bytes of all blocks in memory: those sequences use and those only the prefix index keeps.
    public private(set) var bytesAllocated = 0
    /// Bytes of blocks only the prefix index keeps: evictable whenever room is needed.
    public internal(set) var bytesReclaimable = 0

    struct Block {
        var pointer: UnsafeMutableRawPointer?
        var group: Int
        /// Sequences whose tables hold this block.
        var references: Int
        /// The prefix-index entry that keeps this block, or -1.
        var entry: Int
    }
    var blocks: [Block] = []
    private var freeBlockIDs: [Int] = []
    var sequences: [Int: SequenceBlocks] = [:]
    /// Full prompt blocks by content, for prefix sharing (PrefixCache.swift).
    var prefixIndex = PrefixIndex()
    /// Prompt tokens whose keys and values came from the prefix index instead of being computed.
    public internal(set) var reusedPromptTokens = 0
    /// Cached blocks evicted to make room.
    public internal(set) var evictedBlocks = 0

    /// - Parameters:
    ///   - budgetBytes: the most memory the cache may hold; nil: unlimited.
    ///   - slidingWindows: each layer's attention window (nil: global); empty: all global.
    ///   - blockPositions: positions per block, a power of two.
    ///   - storage: how keys and values are stored.
    public init(layerCount: Int, width: Int, budgetBytes: Int? = nil, slidingWindows: [Int?] = [],
                blockPositions: Int = KVCache.defaultBlockPositions, storage: KVStorage = .float32) {
        precondition(blockPositions > 0 && blockPositions & (blockPositions - 1) == 0, "block size must be a power of two")
        precondition(slidingWindows.isEmpty || slidingWindows.count == layerCount, "one window per layer")
        self.layerCount = layerCount
        self.width = width
        self.storage = storage
        self.blockPositions = blockPositions
        blockShift = blockPositions.trailingZeroBitCount
        self.budgetBytes = budgetBytes ?? Int.max
        var groups: [Group] = []
        layerPlaces = .allocate(capacity: max(1, layerCount))
        for layer in 0..<layerCount {
            let window = slidingWindows.isEmpty ? nil : slidingWindows[layer]
            let index: Int
            if let existing = groups.firstIndex(where: { $0.window == window }) {
                index = existing
            } else {
                index = groups.count
                groups.append(Group(window: window, layers: [], bytesPerBlock: 0))
            }
            (layerPlaces + layer).initialize(to: (group: index, index: groups[index].layers.count))
            groups[index].layers.append(layer)
        }
        for g in groups.indices {
            groups[g].bytesPerBlock = blockPositions * width * groups[g].layers.count * 2 * storage.bytesPerElement
        }
        self.groups = groups
    }

    deinit {
        for block in blocks { block.pointer?.deallocate() }
        for storage in sequences.values { storage.deallocate() }
        layerPlaces.deallocate()
    }

    /// Bytes one position takes in every layer: what a block of each group costs, per position.
    public var bytesPerBlock: Int { groups.reduce(0) { $0 + $1.bytesPerBlock } }

    /// Blocks needed to hold `positions` positions, in each group.
    public func blocks(for positions: Int) -> Int {
        (positions + blockPositions - 1) >> blockShift
    }

    /// Bytes that are not free but could be freed at once (cached blocks no sequence uses) are
    /// counted as available: `reserve` evicts them when it needs room.
    public var availableBytes: Int {
        budgetBytes == Int.max ? Int.max : budgetBytes - bytesAllocated + bytesReclaimable
    }

    /// The longest sequence the budget can hold with nothing else in the cache and every
    /// block still present (before any sliding-window trimming).
    public var maxPositionsPerSequence: Int {
        budgetBytes == Int.max ? Int.max : max(1, budgetBytes / bytesPerBlock) * blockPositions
    }

    /// Bytes a sequence needs to grow from nothing to `positions` positions.
    public func bytesNeeded(positions: Int) -> Int { blocks(for: positions) * bytesPerBlock }

    /// Whether a new sequence of `positions` positions fits beside what sequences use now.
    public func canHold(positions: Int) -> Bool { bytesNeeded(positions: positions) <= availableBytes }

    /// Bytes that reserving room for the given (slot, positions) pairs would add.
    public func additionalBytes(_ requests: [(slot: Int, positions: Int)]) -> Int {
        requests.reduce(0) { total, request in
            let needed = blocks(for: request.positions)
            let storage = sequences[request.slot]
            return total + groups.indices.reduce(0) { sum, g in
                sum + max(0, needed - (storage?.tables[g].count ?? 0)) * groups[g].bytesPerBlock
            }
        }
    }

    /// Whether reserving room for the given (slot, positions) pairs fits the budget.
    public func fits(_ requests: [(slot: Int, positions: Int)]) -> Bool {
        additionalBytes(requests) <= availableBytes
    }

    /// Makes room for positions `0..<positions` of sequence `slot`, creating it if needed.
    /// Evicts cached blocks no sequence uses when the budget requires it. Returns false,
    /// allocating nothing, when that would exceed the budget.
    @discardableResult
    public func reserve(slot: Int, positions: Int) -> Bool {
        let needed = additionalBytes([(slot: slot, positions: positions)])
        guard needed > 0 else { return true }
        guard needed <= availableBytes else { return false }
        if budgetBytes != Int.max, budgetBytes - bytesAllocated < needed {
            // Evicting ranks every cached block, so once the cache is full it frees a little more
            // than asked (1/64 of the budget), and the next few reservations need no ranking.
            evictCachedBlocks(bytes: max(needed - (budgetBytes - bytesAllocated), min(bytesReclaimable, budgetBytes / 64)))
        }
        let storage = sequence(slot)
        let count = blocks(for: positions)
        for g in groups.indices {
            while storage.tables[g].count < count {
                let id = allocateBlock(group: g)
                storage.append(group: g, id: id, pointer: blocks[id].pointer)
            }
        }
        return true
    }

    /// Forgets sequence `slot`: its blocks go back to the budget, or stay in the prefix index.
    public func release(slot: Int) {
        guard let storage = sequences.removeValue(forKey: slot) else { return }
        for table in storage.tables {
            for i in 0..<table.count where table.ids[i] >= 0 { dropReference(table.ids[i]) }
        }
        for entry in storage.chain { prefixIndex.entries[entry]?.users -= 1 }
        storage.deallocate()
    }

    /// Drops sequence `slot`'s blocks that no future query of a sliding-window layer can see:
    /// queries from now on are at `nextPosition` or later, and a window-w layer reads only the
    /// positions after `query - w`. Global layers keep everything.
    public func trimWindows(slot: Int, nextPosition: Int) {
        guard let storage = sequences[slot] else { return }
        for (g, group) in groups.enumerated() {
            guard let window = group.window else { continue }
            let keepFrom = min(max(0, nextPosition - window + 1) >> blockShift, storage.tables[g].count)
            while storage.trimmed[g] < keepFrom {
                let i = storage.trimmed[g]
                if storage.tables[g].ids[i] >= 0 {
                    dropReference(storage.tables[g].ids[i])
                    storage.tables[g].set(i, id: -1, pointer: nil)
                }
                storage.trimmed[g] += 1
            }
        }
    }

    /// Where sequence `slot`'s keys and values are. Valid until the sequence grows, shrinks or is released.
    public func view(slot: Int) -> SequenceView {
        SequenceView(tables: UnsafePointer(sequences[slot]!.pointerTables), places: UnsafePointer(layerPlaces),
                     width: width, elementBytes: storage.bytesPerElement, shift: blockShift)
    }

    // MARK: - Blocks

    func sequence(_ slot: Int) -> SequenceBlocks {
        if let existing = sequences[slot] { return existing }
        let created = SequenceBlocks(groups: groups.count)
        sequences[slot] = created
        return created
    }

    private func allocateBlock(group: Int) -> Int {
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: groups[group].bytesPerBlock, alignment: 64)
        bytesAllocated += groups[group].bytesPerBlock
        let block = Block(pointer: pointer, group: group, references: 1, entry: -1)
        if let id = freeBlockIDs.popLast() {
            blocks[id] = block
            return id
        }
        blocks.append(block)
        return blocks.count - 1
    }

    /// A sequence starts using block `id` (one the prefix index keeps).
    func addReference(_ id: Int) {
        if blocks[id].references == 0 && blocks[id].entry >= 0 { bytesReclaimable -= groups[blocks[id].group].bytesPerBlock }
        blocks[id].references += 1
    }

    /// A sequence stops using block `id`: it is freed, or kept (evictable) when the prefix index holds it.
    func dropReference(_ id: Int) {
        blocks[id].references -= 1
        precondition(blocks[id].references >= 0, "KV block released twice")
        guard blocks[id].references == 0 else { return }
        if blocks[id].entry >= 0 {
            bytesReclaimable += groups[blocks[id].group].bytesPerBlock
        } else {
            freeBlock(id)
        }
    }

    /// Returns an unused block's memory to the budget.
    func freeBlock(_ id: Int) {
        blocks[id].pointer?.deallocate()
        bytesAllocated -= groups[blocks[id].group].bytesPerBlock
        blocks[id] = Block(pointer: nil, group: 0, references: 0, entry: -1)
        freeBlockIDs.append(id)
    }
}

/// Read and write access to one sequence's cached keys and values.
public struct SequenceView: @unchecked Sendable {
    /// Per group: the block table (a block's memory, or nil where it was trimmed).
    let tables: UnsafePointer<UnsafeMutablePointer<UnsafeMutableRawPointer?>>
    let places: UnsafePointer<(group: Int, index: Int)>
    let width: Int
    let elementBytes: Int
    let shift: Int

    /// The `width` key floats of `layer` at `position` (float32 caches only).
    @inline(__always)
    public func key(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        self.layer(layer).key(position)
    }

    /// The `width` value floats of `layer` at `position` (float32 caches only).
    @inline(__always)
    public func value(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        self.layer(layer).value(position)
    }

    /// One layer's keys and values, for loops over positions.
    @inline(__always)
    public func layer(_ layer: Int) -> LayerView {
        let place = places[layer]
        let rowBytes = width * elementBytes
        let positions = 1 << shift
        return LayerView(table: UnsafePointer(tables[place.group]), keyOffset: 2 * place.index * positions * rowBytes,
                         valueOffset: (2 * place.index + 1) * positions * rowBytes, rowBytes: rowBytes, shift: shift)
    }
}

/// One layer's keys and values of one sequence.
public struct LayerView: @unchecked Sendable {
    let table: UnsafePointer<UnsafeMutableRawPointer?>
    /// Byte offsets within a block.
    let keyOffset: Int
    let valueOffset: Int
    let rowBytes: Int
    let shift: Int

    /// The key at `position` (which must not have been trimmed), as the cache stores it.
    @inline(__always)
    func key<Element: CacheElement>(_ position: Int, as: Element.Type) -> UnsafeMutablePointer<Element> {
        (table[position >> shift]! + keyOffset + (position & ((1 << shift) - 1)) * rowBytes).assumingMemoryBound(to: Element.self)
    }

    /// The value at `position` (which must not have been trimmed), as the cache stores it.
    @inline(__always)
    func value<Element: CacheElement>(_ position: Int, as: Element.Type) -> UnsafeMutablePointer<Element> {
        (table[position >> shift]! + valueOffset + (position & ((1 << shift) - 1)) * rowBytes).assumingMemoryBound(to: Element.self)
    }

    /// The `width` key floats at `position` (float32 caches only).
    @inline(__always)
    public func key(_ position: Int) -> UnsafeMutablePointer<Float> { key(position, as: Float.self) }

    /// The `width` value floats at `position` (float32 caches only).
    @inline(__always)
    public func value(_ position: Int) -> UnsafeMutablePointer<Float> { value(position, as: Float.self) }
}

/// One sequence's block tables (one per layer group) and its place in the prefix index.
final class SequenceBlocks {
    /// One table per group; a pointer array the kernels read, beside the block ids.
    struct Table {
        private(set) var ids: [Int] = []
        fileprivate(set) var pointers: UnsafeMutablePointer<UnsafeMutableRawPointer?> = .allocate(capacity: 8)
        fileprivate var capacity = 8
        var count: Int { ids.count }
    }
    var tables: [Table]
    /// Per group: the leading blocks already checked by `trimWindows`.
    var trimmed: [Int]
    /// Per group, the current pointer table: what `SequenceView` reads.
    let pointerTables: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutableRawPointer?>>
    /// Prefix-index entries of this sequence's leading full prompt blocks, in order.
    var chain: [Int] = []

    init(groups: Int) {
        tables = (0..<groups).map { _ in Table() }
        trimmed = Array(repeating: 0, count: groups)
        pointerTables = .allocate(capacity: max(1, groups))
        for g in 0..<groups { (pointerTables + g).initialize(to: tables[g].pointers) }
    }

    func deallocate() {
        for table in tables { table.pointers.deallocate() }
        pointerTables.deallocate()
    }
}

extension SequenceBlocks.Table {
    /// Appends block `id` (-1: none) with its memory.
    mutating func append(id: Int, pointer: UnsafeMutableRawPointer?) {
        if ids.count == capacity {
            let grown = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: capacity * 2)
            grown.moveInitialize(from: pointers, count: ids.count)
            pointers.deallocate()
            pointers = grown
            capacity *= 2
        }
        (pointers + ids.count).initialize(to: pointer)
        ids.append(id)
    }

    mutating func set(_ index: Int, id: Int, pointer: UnsafeMutableRawPointer?) {
        ids[index] = id
        pointers[index] = pointer
    }
}

extension SequenceBlocks {
    /// Appends to group `g`'s table, keeping the kernels' pointer table current.
    func append(group g: Int, id: Int, pointer: UnsafeMutableRawPointer?) {
        tables[g].append(id: id, pointer: pointer)
        pointerTables[g] = tables[g].pointers
    }
}
