import Testing

@testable import SluiceEngine

/// The block cache on its own: reference-counted sharing of prompt blocks, eviction of cached
/// blocks least recently used first, and sliding-window trimming, with exact byte accounting.
struct KVCacheTests {
    /// Two layers: layer 0 global, layer 1 with a window of 8; 4 positions per block, 2 floats per position.
    func makeCache(budgetBlocks: Int? = nil) -> KVCache {
        let probe = KVCache(layerCount: 2, width: 2, slidingWindows: [nil, 8], blockPositions: 4)
        return KVCache(layerCount: 2, width: 2, budgetBytes: budgetBlocks.map { $0 * probe.bytesPerBlock },
                       slidingWindows: [nil, 8], blockPositions: 4)
    }

    /// Writes a value identifying (slot, layer, position) into every key and value of `positions`.
    func fill(_ cache: KVCache, slot: Int, positions: Range<Int>) {
        let view = cache.view(slot: slot)
        for layer in 0..<2 {
            for p in positions {
                view.key(layer: layer, position: p).update(repeating: Float(slot * 10_000 + layer * 1000 + p), count: 2)
                view.value(layer: layer, position: p).update(repeating: -Float(slot * 10_000 + layer * 1000 + p), count: 2)
            }
        }
    }

    /// Computes `prompt` into `slot` the way the engine does: attach what is cached, reserve and fill the rest, register.
    @discardableResult
    func admit(_ cache: KVCache, slot: Int, prompt: [Int32], total: Int? = nil) -> Int {
        let reused = cache.attachCachedPrefix(slot: slot, prompt: prompt, cached: 0, total: total ?? prompt.count)
        #expect(cache.reserve(slot: slot, positions: prompt.count))
        fill(cache, slot: slot, positions: reused..<prompt.count)
        cache.registerPromptBlocks(slot: slot, prompt: prompt, cached: prompt.count)
        return reused
    }

    @Test func aSharedPrefixIsReferencedNotCopiedAndLeavesOneTokenToCompute() {
        let cache = makeCache()
        let prompt: [Int32] = Array(0..<10)
        #expect(admit(cache, slot: 0, prompt: prompt) == 0)
        let afterFirst = cache.bytesAllocated
        #expect(afterFirst == 3 * cache.bytesPerBlock)
        // Same first 9 tokens, then different: blocks 0 and 1 (positions 0..<8) are shared.
        let other: [Int32] = Array(0..<9) + [99, 98, 97]
        #expect(admit(cache, slot: 1, prompt: other) == 8)
        #expect(cache.reusedPromptTokens == 8)
        #expect(cache.bytesAllocated == afterFirst + cache.bytesPerBlock, "only the third block is new")
        let a = cache.view(slot: 0), b = cache.view(slot: 1)
        for layer in 0..<2 {
            for p in 0..<8 { #expect(a.key(layer: layer, position: p) == b.key(layer: layer, position: p)) }
            #expect(a.key(layer: layer, position: 8) != b.key(layer: layer, position: 8))
        }
        // The very same 8-token prompt: its last token must be computed for its logits, so only block 0 is reused.
        let exact: [Int32] = Array(0..<8)
        #expect(cache.attachCachedPrefix(slot: 2, prompt: exact, cached: 0, total: 8) == 4)
        // With generated tokens after it (a resumed request) both blocks are reused.
        #expect(cache.attachCachedPrefix(slot: 3, prompt: exact, cached: 0, total: 11) == 8)
        // Different first block: nothing.
        #expect(cache.attachCachedPrefix(slot: 4, prompt: [5] + Array(1..<10), cached: 0, total: 10) == 0)
    }

    @Test func aPartialOwnBlockIsSwappedForTheCachedOne() {
        let cache = makeCache()
        let prompt: [Int32] = Array(0..<12)
        admit(cache, slot: 0, prompt: prompt)
        // Slot 1 computed positions 0..<2 itself (in the same step as slot 0, say), then finds the cached chain.
        #expect(cache.reserve(slot: 1, positions: 2))
        fill(cache, slot: 1, positions: 0..<2)
        let before = cache.bytesAllocated
        #expect(cache.attachCachedPrefix(slot: 1, prompt: prompt, cached: 2, total: 12) == 8)
        #expect(cache.bytesAllocated == before - cache.bytesPerBlock, "its own partial block is freed")
        #expect(cache.view(slot: 1).key(layer: 0, position: 5) == cache.view(slot: 0).key(layer: 0, position: 5))
    }

    @Test func blocksTwoSequencesComputedAtOnceAreDeduplicated() {
        let cache = makeCache()
        let prompt: [Int32] = Array(0..<9)
        for slot in 0..<2 {
            #expect(cache.reserve(slot: slot, positions: 9))
            fill(cache, slot: slot, positions: 0..<9)
        }
        #expect(cache.bytesAllocated == 6 * cache.bytesPerBlock)
        cache.registerPromptBlocks(slot: 0, prompt: prompt, cached: 9)
        cache.registerPromptBlocks(slot: 1, prompt: prompt, cached: 9)
        #expect(cache.bytesAllocated == 4 * cache.bytesPerBlock, "slot 1's copies of blocks 0 and 1 are freed")
        #expect(cache.view(slot: 1).value(layer: 1, position: 7) == cache.view(slot: 0).value(layer: 1, position: 7))
        #expect(cache.cachedPrefixBlocks == 2)
    }

    @Test func releasedPromptsStayCachedUntilTheBudgetNeedsRoomThenLeastRecentlyUsedGoFirst() {
        let cache = makeCache(budgetBlocks: 6)
        let first: [Int32] = Array(0..<9), second: [Int32] = Array(100..<109)
        admit(cache, slot: 0, prompt: first)       // blocks: 3 per group
        admit(cache, slot: 1, prompt: second)
        #expect(cache.bytesAllocated == 6 * cache.bytesPerBlock)
        #expect(!cache.canHold(positions: 4))
        cache.release(slot: 0)
        cache.release(slot: 1)
        // The partial third blocks were freed; the two full blocks of each prompt stay, evictable.
        #expect(cache.bytesAllocated == 4 * cache.bytesPerBlock)
        #expect(cache.bytesReclaimable == 4 * cache.bytesPerBlock)
        #expect(cache.availableBytes == 6 * cache.bytesPerBlock)
        // Using `first` again makes `second` the least recently used.
        #expect(admit(cache, slot: 2, prompt: first) == 8)
        cache.release(slot: 2)
        // A new 16-position sequence needs 4 blocks: the 2 free ones and `second`'s two.
        #expect(cache.reserve(slot: 3, positions: 16))
        #expect(cache.bytesAllocated == 6 * cache.bytesPerBlock)
        #expect(cache.attachCachedPrefix(slot: 4, prompt: second, cached: 0, total: 9) == 0, "second was evicted")
        #expect(cache.attachCachedPrefix(slot: 5, prompt: first, cached: 0, total: 9) == 8, "first is still cached")
        // Blocks in use are never evicted: with slot 5 holding `first`, nothing else fits.
        #expect(!cache.reserve(slot: 6, positions: 4))
        cache.release(slot: 5)
        #expect(cache.reserve(slot: 6, positions: 4))
        // Its least recently used block went first: the deeper one (block 1) before block 0.
        #expect(cache.attachCachedPrefix(slot: 7, prompt: first, cached: 0, total: 9) == 4)
    }

    @Test func slidingWindowBlocksOutOfEveryFutureQuerysReachAreFreed() {
        let cache = makeCache()
        #expect(cache.reserve(slot: 0, positions: 20))
        fill(cache, slot: 0, positions: 0..<20)
        let global = cache.groups[0].bytesPerBlock, local = cache.groups[1].bytesPerBlock
        #expect(cache.bytesAllocated == 5 * (global + local))
        // The next query is at 20 and sees 13...20 in the window-8 layer: blocks 0, 1, 2 (positions 0..<12) go.
        cache.trimWindows(slot: 0, nextPosition: 20)
        #expect(cache.bytesAllocated == 5 * global + 2 * local)
        let view = cache.view(slot: 0)
        #expect(view.key(layer: 1, position: 13).pointee == 1013)
        #expect(view.key(layer: 0, position: 0).pointee == 0, "the global layer keeps everything")
        #expect(cache.additionalBytes([(slot: 0, positions: 24)]) == global + local)
        cache.release(slot: 0)
        #expect(cache.bytesAllocated == 0)
    }

    @Test func aCachedChainIsUsedOnlyAsFarAsTheWindowsBlocksAreStillThere() {
        let cache = makeCache()
        let prompt: [Int32] = Array(0..<21)
        admit(cache, slot: 0, prompt: prompt)        // 5 full blocks registered, every group present
        // The sequence moves on and trims its window blocks; the index still keeps them.
        cache.trimWindows(slot: 0, nextPosition: 21)
        cache.release(slot: 0)
        // Evict the window-layer blocks of the chain's last two entries by hand, as the budget would.
        let entries = cache.prefixIndex.entries.sorted { $0.value.depth < $1.value.depth }
        #expect(entries.count == 5)
        for (id, entry) in entries.suffix(2) {
            cache.freeBlock(entry.blocks[1])
            cache.bytesReclaimable -= cache.groups[1].bytesPerBlock
            cache.prefixIndex.entries[id]!.blocks[1] = -1
        }
        // A prefix of 20 needs window blocks 3 and 4 (positions 13..<20); 16 needs 2 and 3; 12 needs 1 and 2.
        let reused = cache.attachCachedPrefix(slot: 1, prompt: prompt + [7], cached: 0, total: 22)
        #expect(reused == 12)
        // It reads the global layer from 0 and the window layer from 5 (the first query is at 12); older window blocks are holes.
        let view = cache.view(slot: 1)
        #expect(view.key(layer: 0, position: 0).pointee == 0)
        #expect(view.key(layer: 1, position: 5).pointee == 1005)
        #expect(cache.sequences[1]!.tables[1].ids[0] == -1)
    }

    @Test func halfFloatStorageTakesHalfTheBytesAndRoundsAsFloat16Does() {
        let single = KVCache(layerCount: 2, width: 20, slidingWindows: [nil, 8], blockPositions: 4)
        let half = KVCache(layerCount: 2, width: 20, slidingWindows: [nil, 8], blockPositions: 4, storage: .float16)
        #expect(half.bytesPerBlock * 2 == single.bytesPerBlock)
        #expect(half.bytesNeeded(positions: 9) * 2 == single.bytesNeeded(positions: 9))

        // 20 per position: one vector of 16 and a scalar tail of 4, each with values past the half range.
        let keys: [Float] = [1.0 / 3, -1.0 / 3, 1e-7, -2.5e-8, 65504, 65519, 65520, 1e6, -1e6, -65536, 0, -0.0,
                             1e30, 3.14159, 2049, 2051, 65520, -1e9, 1e-7, 6.1e-5]
        let values = keys.map { -$0 / 7 }
        #expect(half.reserve(slot: 0, positions: 6))
        storeKeysAndValues(keys, values, width: 20, placements: [TokenPlacement(slot: 0, position: 5)], layer: 1, cache: half)
        let view = half.view(slot: 0).layer(1)
        let storedKeys = view.key(5, as: Float16.self), storedValues = view.value(5, as: Float16.self)
        // Float16's own rounding to nearest even, except that magnitudes past 65504 saturate.
        func expected(_ x: Float) -> Float16 { Float16(min(65504, max(-65504, x))) }
        for i in 0..<20 {
            #expect(storedKeys[i].bitPattern == expected(keys[i]).bitPattern, "key \(i): \(keys[i]) stored as \(storedKeys[i])")
            #expect(storedValues[i].bitPattern == expected(values[i]).bitPattern, "value \(i): \(values[i]) stored as \(storedValues[i])")
            #expect(storedKeys[i].isFinite && storedValues[i].isFinite)
        }
        #expect(storedKeys[7] == 65504 && storedKeys[8] == -65504 && storedKeys[6] == 65504)
    }
}
