/// Prefix sharing: requests whose prompts start with the same tokens share the KV blocks
/// of that start, computed once.
///
/// Every full block of a prompt (positions `b·B ..< (b+1)·B`, B = `blockPositions`) is
/// entered in the index under the key (entry of block b-1, the block's B tokens). Since the
/// parent entry stands for every token before the block, the key is a chained key over all
/// tokens up to the end of the block, and it is exact: a lookup compares tokens, so two
/// different prompts never share by a hash collision. A new sequence walks the chain as far
/// as its prompt matches and starts prefill after it; blocks are reference counted, and
/// blocks no sequence uses stay in memory, kept by the index, until the budget needs room
/// (`evictCachedBlocks`: least recently used first, never a block a sequence uses).
///
/// Why the output cannot change: the keys and values at position p depend only on tokens
/// 0...p, and every kernel computes them in one fixed order whatever the batch or chunk
/// (batch- and prefill-invariant), so a shared block holds bitwise what the sequence would
/// have computed itself; attention reduces a query row over positions in increasing order,
/// reading each position through the block table, so where a block came from is invisible.
///
/// Sliding-window layers: layers are grouped by window (KVCache.Group), and a block of a
/// window-w group is dropped from a sequence once every future query is more than w
/// positions past it (`trimWindows`). A shared prefix of L positions needs, for a window-w
/// group, only the blocks holding positions L-w+1 ..< L (the first query after the prefix
/// is at L), and for global groups all of them. So an index entry keeps a block per group,
/// and a window group's block may be missing from it (evicted on its own, or never stored
/// because the sequence that computed it had trimmed it): a lookup takes the longest chain
/// whose needed blocks are all present, and gives the new sequence's table holes (no
/// block) for the older window-group blocks, which it never reads. A global block is
/// evicted only with its whole entry, and only when no live sequence's chain and no other
/// entry goes through it, so a chain is never broken in the middle.
///
/// Preemption and recompute: a preempted sequence simply releases its references; when it
/// is admitted again it finds its own prompt blocks in the index (unless they were evicted)
/// and recomputes only the rest. Only prompt blocks are entered: generated tokens differ
/// between requests, and a resumed request's generated tokens are recomputed.
struct PrefixIndex {
    struct Key: Hashable {
        /// The entry of the previous block, or -1 for a prompt's first block.
        var parent: Int
        var tokens: [Int32]
    }

    struct Entry {
        var key: Key
        /// Which block of a prompt this is.
        var depth: Int
        /// The block kept for each layer group, or -1 where there is none.
        var blocks: [Int]
        /// Entries whose parent this is.
        var children = 0
        /// Live sequences whose chain goes through this entry.
        var users = 0
        var lastUsed: UInt64 = 0
    }

    var entries: [Int: Entry] = [:]
    var byKey: [Key: Int] = [:]
    var nextID = 0
    var clock: UInt64 = 0
}

extension KVCache {
    /// Entries in the prefix index.
    public var cachedPrefixBlocks: Int { prefixIndex.entries.count }

    /// Gives sequence `slot` the cached blocks that continue its prompt from position `cached`,
    /// and returns how many positions it now has in the cache (`cached` when nothing matched).
    ///
    /// `cached` may be inside a block: the sequence's own partial block is then replaced by the
    /// cached full one, whose first positions hold the same bits. At least one position before
    /// `total` is always left to compute, since the last one's logits are needed.
    func attachCachedPrefix(slot: Int, prompt: [Int32], cached: Int, total: Int) -> Int {
        let existing = sequences[slot]
        let first = existing?.chain.count ?? 0
        // Only a sequence whose computed full blocks are all in the index can continue a chain.
        guard first == cached >> blockShift else { return cached }
        let B = blockPositions
        let limit = min(prompt.count, total - 1)
        var candidates: [Int] = []
        var parent = existing?.chain.last ?? -1
        var b = first
        while (b + 1) * B <= limit,
              let id = prefixIndex.byKey[PrefixIndex.Key(parent: parent, tokens: Array(prompt[(b * B)..<((b + 1) * B)]))] {
            candidates.append(id)
            parent = id
            b += 1
        }
        // The longest prefix whose blocks that a query right after it reads are all present.
        func usable(_ take: Int) -> Bool {
            let end = (first + take) * B
            for (g, group) in groups.enumerated() {
                let from = group.window.map { max(0, end - $0 + 1) >> blockShift } ?? 0
                for block in from..<(first + take) {
                    if block >= first {
                        if prefixIndex.entries[candidates[block - first]]!.blocks[g] < 0 { return false }
                    } else if block >= (existing?.tables[g].count ?? 0) || existing!.tables[g].ids[block] < 0 {
                        return false
                    }
                }
            }
            return true
        }
        var take = candidates.count
        while take > 0 && !usable(take) { take -= 1 }
        guard take > 0 else { return cached }

        let storage = sequence(slot)
        let end = (first + take) * B
        for block in first..<(first + take) {
            let entry = prefixIndex.entries[candidates[block - first]]!
            for (g, group) in groups.enumerated() {
                let keepFrom = group.window.map { max(0, end - $0 + 1) >> blockShift } ?? 0
                let id = block >= keepFrom ? entry.blocks[g] : -1
                if id >= 0 { addReference(id) }
                let pointer = id >= 0 ? blocks[id].pointer : nil
                if block < storage.tables[g].count {
                    let own = storage.tables[g].ids[block]
                    if own >= 0 { dropReference(own) }
                    storage.tables[g].set(block, id: id, pointer: pointer)
                } else {
                    storage.append(group: g, id: id, pointer: pointer)
                }
            }
        }
        for id in candidates[..<take] {
            prefixIndex.entries[id]!.users += 1
            storage.chain.append(id)
        }
        touch(storage.chain)
        reusedPromptTokens += end - cached
        return end
    }

    /// Enters sequence `slot`'s full prompt blocks among its first `cached` positions in the
    /// index. A block another sequence entered meanwhile (both computed it in one step) is
    /// shared from then on and the duplicate freed: the two hold the same bits.
    func registerPromptBlocks(slot: Int, prompt: [Int32], cached: Int) {
        guard let storage = sequences[slot] else { return }
        let full = min(cached, prompt.count) >> blockShift
        guard storage.chain.count < full else { return }
        let B = blockPositions
        while storage.chain.count < full {
            let b = storage.chain.count
            let key = PrefixIndex.Key(parent: storage.chain.last ?? -1, tokens: Array(prompt[(b * B)..<((b + 1) * B)]))
            let id: Int
            if let found = prefixIndex.byKey[key] {
                id = found
                for g in groups.indices {
                    let own = storage.tables[g].ids[b]
                    let kept = prefixIndex.entries[id]!.blocks[g]
                    if kept >= 0 {
                        if own >= 0 && own != kept {
                            addReference(kept)
                            dropReference(own)
                            storage.tables[g].set(b, id: kept, pointer: blocks[kept].pointer)
                        }
                    } else if own >= 0 {
                        prefixIndex.entries[id]!.blocks[g] = own
                        blocks[own].entry = id
                    }
                }
            } else {
                id = prefixIndex.nextID
                prefixIndex.nextID += 1
                let owned = groups.indices.map { storage.tables[$0].ids[b] }
                for block in owned where block >= 0 { blocks[block].entry = id }
                prefixIndex.entries[id] = PrefixIndex.Entry(key: key, depth: b, blocks: owned)
                prefixIndex.byKey[key] = id
                if let parent = storage.chain.last { prefixIndex.entries[parent]!.children += 1 }
            }
            prefixIndex.entries[id]!.users += 1
            storage.chain.append(id)
        }
        touch(storage.chain)
    }

    /// Marks a chain as just used. A chain is touched whole, so an entry is never more recently
    /// used than its parent, and least-recently-used eviction takes leaves first.
    private func touch(_ chain: [Int]) {
        prefixIndex.clock += 1
        for id in chain { prefixIndex.entries[id]!.lastUsed = prefixIndex.clock }
    }

    /// Frees at least `bytes` bytes of cached blocks no sequence uses, least recently used first
    /// (deeper blocks first among equals), or as many as can be freed.
    func evictCachedBlocks(bytes: Int) {
        var freed = 0
        var progress = true
        while freed < bytes && progress {
            progress = false
            var candidates: [(lastUsed: UInt64, depth: Int, global: Int, entry: Int, group: Int)] = []
            for (id, entry) in prefixIndex.entries {
                for (g, block) in entry.blocks.enumerated() where block >= 0 && blocks[block].references == 0 {
                    candidates.append((entry.lastUsed, entry.depth, groups[g].window == nil ? 1 : 0, id, g))
                }
            }
            // The entry id and group make the order total, whatever the dictionary's order.
            candidates.sort { ($0.lastUsed, -$0.depth, $0.global, $0.entry, $0.group) < ($1.lastUsed, -$1.depth, $1.global, $1.entry, $1.group) }
            for candidate in candidates where freed < bytes {
                guard let entry = prefixIndex.entries[candidate.entry], entry.blocks[candidate.group] >= 0 else { continue }
                if candidate.global == 1 {
                    // A global block goes with its entry; the entry must end every chain through it.
                    guard entry.children == 0, entry.users == 0,
                          entry.blocks.allSatisfy({ $0 < 0 || blocks[$0].references == 0 }) else { continue }
                    for block in entry.blocks where block >= 0 { freed += freeCachedBlock(block) }
                    removeEntry(candidate.entry)
                } else {
                    freed += freeCachedBlock(entry.blocks[candidate.group])
                    prefixIndex.entries[candidate.entry]!.blocks[candidate.group] = -1
                    let left = prefixIndex.entries[candidate.entry]!
                    if left.blocks.allSatisfy({ $0 < 0 }) && left.children == 0 && left.users == 0 {
                        removeEntry(candidate.entry)
                    }
                }
                progress = true
            }
        }
    }

    /// Frees a block only the index keeps; returns its size.
    private func freeCachedBlock(_ id: Int) -> Int {
        let size = groups[blocks[id].group].bytesPerBlock
        bytesReclaimable -= size
        freeBlock(id)
        evictedBlocks += 1
        return size
    }

    private func removeEntry(_ id: Int) {
        guard let entry = prefixIndex.entries.removeValue(forKey: id) else { return }
        prefixIndex.byKey.removeValue(forKey: entry.key)
        if entry.key.parent >= 0 { prefixIndex.entries[entry.key.parent]?.children -= 1 }
    }
}

extension KVCache {
    /// Before planning a step: gives every generation still prefilling its prompt the cached
    /// blocks that continue it (when `sharePrefixes`), then drops each generation's blocks that
    /// sliding-window layers no longer read. Runs before the step's room is made, so the
    /// budget sees both.
    func prepareStep(_ running: [Generation], sharePrefixes: Bool) {
        for generation in running {
            // A prompt whose log-probabilities are still being computed shares only the positions whose
            // logits it no longer needs (`shareableTotal`): the rest it computes itself.
            if sharePrefixes && generation.cachedCount < generation.promptTokens.count {
                generation.cachedCount = attachCachedPrefix(slot: generation.slot, prompt: generation.promptTokens,
                                                            cached: generation.cachedCount, total: generation.shareableTotal)
            }
            trimWindows(slot: generation.slot, nextPosition: generation.cachedCount)
        }
    }

    /// After a step: enters the prompt blocks the step completed in the prefix index.
    func registerComputedPrompts(_ running: [Generation]) {
        for generation in running where generation.cachedCount >= blockPositions {
            registerPromptBlocks(slot: generation.slot, prompt: generation.promptTokens, cached: generation.cachedCount)
        }
    }
}
