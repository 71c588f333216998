/// Keys and values of every sequence the engine holds, per layer, in float32.
///
/// Each sequence owns one contiguous buffer per layer for keys and one for
/// values, grown by doubling; `positions` tokens are valid. Attention reads a
/// sequence's keys for positions `0..<length` through `keys(layer:slot:)`.
public final class KVCache: @unchecked Sendable {
    public let layerCount: Int
    /// Floats per token per layer for keys (and for values): KV heads × head size.
    public let width: Int
    private var sequences: [Int: SequenceStorage] = [:]

    public init(layerCount: Int, width: Int) {
        self.layerCount = layerCount
        self.width = width
    }

    deinit {
        for storage in sequences.values { storage.deallocate() }
    }

    /// Bytes held for all sequences.
    public var bytesAllocated: Int {
        sequences.values.reduce(0) { $0 + $1.capacity * width * layerCount * 2 * MemoryLayout<Float>.size }
    }

    /// Makes room for positions `0..<positions` of sequence `slot`, creating it if needed.
    public func reserve(slot: Int, positions: Int) {
        if let storage = sequences[slot] {
            storage.grow(to: positions, width: width)
        } else {
            sequences[slot] = SequenceStorage(layers: layerCount, capacity: max(positions, 64), width: width)
        }
    }

    /// Forgets sequence `slot` and frees its memory.
    public func release(slot: Int) {
        sequences.removeValue(forKey: slot)?.deallocate()
    }

    /// Keys of `slot` in `layer`: `width` floats per position.
    @inline(__always)
    public func keys(layer: Int, slot: Int) -> UnsafeMutablePointer<Float> {
        sequences[slot]!.keys[layer]
    }

    /// Values of `slot` in `layer`: `width` floats per position.
    @inline(__always)
    public func values(layer: Int, slot: Int) -> UnsafeMutablePointer<Float> {
        sequences[slot]!.values[layer]
    }
}

private final class SequenceStorage {
    var capacity: Int
    var keys: [UnsafeMutablePointer<Float>]
    var values: [UnsafeMutablePointer<Float>]

    init(layers: Int, capacity: Int, width: Int) {
        self.capacity = capacity
        keys = (0..<layers).map { _ in .allocate(capacity: capacity * width) }
        values = (0..<layers).map { _ in .allocate(capacity: capacity * width) }
    }

    func grow(to positions: Int, width: Int) {
        guard positions > capacity else { return }
        let newCapacity = max(positions, capacity * 2)
        for layer in keys.indices {
            keys[layer] = moved(keys[layer], count: capacity * width, to: newCapacity * width)
            values[layer] = moved(values[layer], count: capacity * width, to: newCapacity * width)
        }
        capacity = newCapacity
    }

    private func moved(_ old: UnsafeMutablePointer<Float>, count: Int, to newCount: Int) -> UnsafeMutablePointer<Float> {
        let new = UnsafeMutablePointer<Float>.allocate(capacity: newCount)
        new.update(from: old, count: count)
        old.deallocate()
        return new
    }

    func deallocate() {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }
}
