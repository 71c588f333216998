#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Exact lookup of byte strings, keyed by their bytes.
///
/// Tokenizers must compare token texts byte for byte: Swift `String` equality
/// is canonical equivalence ("é" precomposed equals "e" + U+0301), which would
/// merge distinct vocabulary entries. Keys live in one contiguous buffer
/// (`storage`, with `ends[i]` the end of key `i`), so building the table for a
/// 262,144-token vocabulary allocates three arrays, not one object per token.
struct ByteStringTable: Sendable {
    let storage: [UInt8]
    let ends: [Int]
    private let slots: [Int32]
    private let mask: Int

    /// - Parameter lastWins: for duplicate keys, map to the last index (as
    ///   llama.cpp's `token_to_id[text] = id` does) instead of the first.
    init(storage: [UInt8], ends: [Int], lastWins: Bool) {
        self.storage = storage
        self.ends = ends
        var capacity = 16
        while capacity < ends.count * 2 { capacity <<= 1 }
        mask = capacity - 1
        var slots = [Int32](repeating: -1, count: capacity)
        storage.withUnsafeBufferPointer { bytes in
            for index in ends.indices {
                let start = index == 0 ? 0 : ends[index - 1]
                let key = UnsafeBufferPointer(rebasing: bytes[start..<ends[index]])
                var slot = Int(truncatingIfNeeded: ByteHash.hash(key)) & (capacity - 1)
                while true {
                    let occupant = slots[slot]
                    if occupant < 0 {
                        slots[slot] = Int32(index)
                        break
                    }
                    let oStart = occupant == 0 ? 0 : ends[Int(occupant) - 1]
                    let other = UnsafeBufferPointer(rebasing: bytes[oStart..<ends[Int(occupant)]])
                    if ByteHash.equal(key, other) {
                        if lastWins { slots[slot] = Int32(index) }
                        break
                    }
                    slot = (slot + 1) & (capacity - 1)
                }
            }
        }
        self.slots = slots
    }

    /// The index whose key equals `key`, or nil.
    func lookup(_ key: UnsafeBufferPointer<UInt8>) -> Int32? {
        var slot = Int(truncatingIfNeeded: ByteHash.hash(key)) & mask
        return storage.withUnsafeBufferPointer { bytes in
            slots.withUnsafeBufferPointer { slots in
                while true {
                    let occupant = slots[slot]
                    if occupant < 0 { return nil }
                    let start = occupant == 0 ? 0 : ends[Int(occupant) - 1]
                    let end = ends[Int(occupant)]
                    if end - start == key.count,
                       ByteHash.equal(key, UnsafeBufferPointer(rebasing: bytes[start..<end])) {
                        return occupant
                    }
                    slot = (slot + 1) & mask
                }
            }
        }
    }

    func lookup(_ key: [UInt8]) -> Int32? {
        key.withUnsafeBufferPointer { lookup($0) }
    }
}

/// BPE merge ranks: the rank of the pair (first, second), compared byte for byte.
///
/// A merge line is "first second", split at the first space after the first
/// byte (as llama.cpp does, so a first part may itself start with a space).
/// The first line of a duplicated pair keeps its rank.
struct MergeRankTable: Sendable {
    private let storage: [UInt8]
    /// Per rank: start of the line, the split position (the space), end of the line.
    private let lineStarts: [Int]
    private let splits: [Int]
    private let lineEnds: [Int]
    private let slots: [Int32]
    private let mask: Int

    var count: Int { lineEnds.count }

    init(storage: [UInt8], ends: [Int]) {
        self.storage = storage
        var lineStarts: [Int] = []
        var splits: [Int] = []
        lineStarts.reserveCapacity(ends.count)
        splits.reserveCapacity(ends.count)
        for index in ends.indices {
            let start = index == 0 ? 0 : ends[index - 1]
            var split = -1
            if ends[index] - start > 1 {
                for position in (start + 1)..<ends[index] where storage[position] == 0x20 {
                    split = position
                    break
                }
            }
            lineStarts.append(start)
            splits.append(split)
        }
        self.lineStarts = lineStarts
        self.splits = splits
        self.lineEnds = ends
        var capacity = 16
        while capacity < ends.count * 2 { capacity <<= 1 }
        mask = capacity - 1
        var slots = [Int32](repeating: -1, count: capacity)
        storage.withUnsafeBufferPointer { bytes in
            for rank in ends.indices where splits[rank] >= 0 {
                let first = UnsafeBufferPointer(rebasing: bytes[lineStarts[rank]..<splits[rank]])
                let second = UnsafeBufferPointer(rebasing: bytes[(splits[rank] + 1)..<ends[rank]])
                var slot = Int(truncatingIfNeeded: ByteHash.hash(first, second)) & (capacity - 1)
                while true {
                    let occupant = Int(slots[slot])
                    if occupant < 0 {
                        slots[slot] = Int32(rank)
                        break
                    }
                    let oFirst = UnsafeBufferPointer(rebasing: bytes[lineStarts[occupant]..<splits[occupant]])
                    let oSecond = UnsafeBufferPointer(rebasing: bytes[(splits[occupant] + 1)..<ends[occupant]])
                    if ByteHash.equal(first, oFirst) && ByteHash.equal(second, oSecond) { break }
                    slot = (slot + 1) & (capacity - 1)
                }
            }
        }
        self.slots = slots
    }

    /// The rank of merging `first` with `second`, or nil when no merge exists.
    func rank(_ first: UnsafeBufferPointer<UInt8>, _ second: UnsafeBufferPointer<UInt8>) -> Int32? {
        var slot = Int(truncatingIfNeeded: ByteHash.hash(first, second)) & mask
        return storage.withUnsafeBufferPointer { bytes in
            while true {
                let occupant = Int(slots[slot])
                if occupant < 0 { return nil }
                let split = splits[occupant]
                if split - lineStarts[occupant] == first.count, lineEnds[occupant] - split - 1 == second.count,
                   ByteHash.equal(first, UnsafeBufferPointer(rebasing: bytes[lineStarts[occupant]..<split])),
                   ByteHash.equal(second, UnsafeBufferPointer(rebasing: bytes[(split + 1)..<lineEnds[occupant]])) {
                    return Int32(occupant)
                }
                slot = (slot + 1) & mask
            }
        }
    }
}

enum ByteHash {
    @inline(__always)
    static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        finish(feed(0xcbf2_9ce4_8422_2325, bytes))
    }

    /// Hash of a pair; the separator keeps ("ab", "c") and ("a", "bc") apart.
    @inline(__always)
    static func hash(_ first: UnsafeBufferPointer<UInt8>, _ second: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h = feed(0xcbf2_9ce4_8422_2325, first)
        h = (h ^ 0x1FF) &* 0x0000_0100_0000_01b3
        return finish(feed(h, second))
    }

    @inline(__always)
    private static func feed(_ seed: UInt64, _ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h = seed
        for byte in bytes { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return h
    }

    @inline(__always)
    private static func finish(_ value: UInt64) -> UInt64 {
        var h = value
        h ^= h >> 33
        h &*= 0xff51_afd7_ed55_8ccd
        h ^= h >> 33
        return h
    }

    @inline(__always)
    static func equal(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0
    }
}
