import Foundation

/// Rotary position embedding tables for one frequency base.
///
/// Angles are computed in Double from the position and the base (llama.cpp
/// accumulates them by repeated float multiplication), so rotations agree with
/// the float64 reference to float precision at any position.
public final class RotaryEmbedding: @unchecked Sendable {
    /// How the rotated pairs are laid out in a head.
    public enum Style: Sendable {
        /// Adjacent pairs `(2i, 2i+1)`: Llama as converted to GGUF.
        case interleaved
        /// Halves `(i, i + d/2)`: GPT-NeoX, Gemma, Qwen.
        case halves
    }

    public let style: Style
    public let dimensions: Int
    private var inverseFrequencies: [Double]
    private var cosTable: [Float] = []
    private var sinTable: [Float] = []
    private var positions = 0

    /// - Parameters:
    ///   - base: the frequency base (`rope.freq_base`).
    ///   - positionScale: linear RoPE scaling: positions are multiplied by this (1 / factor).
    ///   - frequencyFactors: optional per-pair divisors (Llama 3.1's `rope_freqs`).
    public init(dimensions: Int, base: Double, style: Style, positionScale: Double = 1, frequencyFactors: [Float]? = nil) {
        self.dimensions = dimensions
        self.style = style
        inverseFrequencies = (0..<dimensions / 2).map { i in
            var f = pow(base, -2.0 * Double(i) / Double(dimensions)) * positionScale
            if let factors = frequencyFactors, i < factors.count { f /= Double(factors[i]) }
            return f
        }
    }

    /// Makes sure positions below `count` have table entries. Not thread-safe: call before parallel use.
    public func reserve(positions count: Int) {
        guard count > positions else { return }
        let newCount = max(count, positions * 2, 64)
        let half = dimensions / 2
        cosTable.reserveCapacity(newCount * half)
        sinTable.reserveCapacity(newCount * half)
        for p in positions..<newCount {
            for i in 0..<half {
                let angle = Double(p) * inverseFrequencies[i]
                cosTable.append(Float(cos(angle)))
                sinTable.append(Float(sin(angle)))
            }
        }
        positions = newCount
    }

    /// Rotates `heads` consecutive heads of `dimensions` floats at `position` in place.
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
        precondition(position < positions, "rotary table not reserved for position \(position)")
        let half = dimensions / 2
        cosTable.withUnsafeBufferPointer { cosines in
            sinTable.withUnsafeBufferPointer { sines in
                let c = cosines.baseAddress! + position * half
                let s = sines.baseAddress! + position * half
                for h in 0..<heads {
                    let head = x + h * dimensions
                    switch style {
                    case .halves:
                        for i in 0..<half {
                            let a = head[i], b = head[i + half]
                            head[i] = a * c[i] - b * s[i]
                            head[i + half] = a * s[i] + b * c[i]
                        }
                    case .interleaved:
                        for i in 0..<half {
                            let a = head[2 * i], b = head[2 * i + 1]
                            head[2 * i] = a * c[i] - b * s[i]
                            head[2 * i + 1] = a * s[i] + b * c[i]
                        }
                    }
                }
            }
        }
    }
}
