import CSluiceKernels

/// How the KV cache stores keys and values.
public enum KVStorage: String, Sendable, CaseIterable {
    /// Exactly as the forward pass computed them.
    case float32
    /// IEEE half floats, as llama.cpp's cache holds them by default: half the memory, and half
    /// the memory traffic of attention, which reads every cached position of every sequence each
    /// step. Each element keeps 11 significant bits; magnitudes beyond 65504 saturate.
    case float16

    /// Bytes per stored element.
    public var bytesPerElement: Int { self == .float32 ? 4 : 2 }
}

extension KVStorage {
    /// float16 for a model whose matrix products round activations to integers (a far coarser
    /// rounding than the cache's), float32 for one that keeps them exact.
    static func matching(_ matrices: [WeightMatrix]) -> KVStorage {
        matrices.contains { $0.int8 != nil } ? .float16 : .float32
    }
}

/// An element type of the KV cache, which the attention kernels read as floats.
protocol CacheElement {
    /// Sixteen consecutive elements as floats.
    static func load16(_ p: UnsafePointer<Self>) -> SIMD16<Float>
    static func float(_ element: Self) -> Float
    /// Stores `count` floats as elements.
    static func store(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Self>, count: Int)
}

extension Float: CacheElement {
    @inline(__always)
    static func load16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
    }

    @inline(__always)
    static func float(_ element: Float) -> Float { element }

    @inline(__always)
    static func store(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, count: Int) {
        destination.update(from: source, count: count)
    }
}

extension Float16: CacheElement {
    @inline(__always)
    static func load16(_ p: UnsafePointer<Float16>) -> SIMD16<Float> {
        sluice_load_half_x16(p)
    }

    @inline(__always)
    static func float(_ element: Float16) -> Float { Float(element) }

    /// Rounds to nearest even; magnitudes beyond the largest half float saturate rather than
    /// becoming infinities, which would turn a whole softmax into NaN. In C from the `avx2`
    /// variant up (F16C's conversion; below it, the x86-64-v2 build converts in software).
    @inline(__always)
    static func store(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float16>, count: Int) {
        if avx2Available {
            sluice_store_halves_saturated_avx2(destination, source, count)
        } else {
            portableStore(source, into: destination, count: count)
        }
    }

    /// `store` in Swift.
    @inline(__always)
    static func portableStore(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float16>, count: Int) {
        let largest = Float(Float16.greatestFiniteMagnitude)
        var k = 0
        while k + 16 <= count {
            sluice_store_half_saturated_x16(destination + k, UnsafeRawPointer(source + k).loadUnaligned(as: SIMD16<Float>.self))
            k += 16
        }
        while k < count {
            destination[k] = Float16(Swift.min(largest, Swift.max(-largest, source[k])))
            k += 1
        }
    }
}
