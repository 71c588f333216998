import Foundation
import SluiceCore
import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// Dequantization throughput, run by hand:
///   SLUICE_DEQUANT_BENCH=1 swift test -c release -Xswiftc -enable-testing --filter DequantizeBenchmark
/// Dequantizes 2048-element rows (as a matmul does, into a buffer that stays
/// in L1) from 4096 rows of random blocks with realistic f16 scales, and
/// prints floats per second.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["SLUICE_DEQUANT_BENCH"] != nil))
struct DequantizeBenchmarkTests {
    @Test func throughput() {
        let rowLength = 2048
        let rows = 4096
        var generator = SplitMix64(seed: 7)
        for type in DequantizeTests.supported {
            let rowBytes = rowLength / type.blockSize * type.bytesPerBlock
            var source = [UInt8](repeating: 0, count: rowBytes * rows)
            for i in source.indices { source[i] = UInt8(truncatingIfNeeded: generator.next()) }
            // Realistic scales: small normal f16 values, as quantizers write them.
            let scaleOffsets: [TensorType: [Int]] = [
                .q4_0: [0], .q5_0: [0], .q8_0: [0], .q4_K: [0, 2], .q5_K: [0, 2], .q6_K: [208],
            ]
            for block in 0..<(source.count / type.bytesPerBlock) {
                for offset in scaleOffsets[type] ?? [] {
                    let scale = Float16(Float(generator.next() % 1000 + 1) * 1e-5).bitPattern
                    source[block * type.bytesPerBlock + offset] = UInt8(truncatingIfNeeded: scale)
                    source[block * type.bytesPerBlock + offset + 1] = UInt8(truncatingIfNeeded: scale >> 8)
                }
            }
            var row = [Float](repeating: 0, count: rowLength)
            let clock = ContinuousClock()
            var best = Duration.seconds(1000)
            var checksum: Float = 0
            for _ in 0..<5 {
                let elapsed = source.withUnsafeBytes { raw in
                    row.withUnsafeMutableBufferPointer { out in
                        clock.measure {
                            for r in 0..<rows {
                                dequantizeRow(type, raw.baseAddress! + r * rowBytes, count: rowLength, into: out.baseAddress!)
                                checksum += out[r % rowLength]
                            }
                        }
                    }
                }
                best = min(best, elapsed)
            }
            let seconds = best.inSeconds
            let floatsPerSecond = Double(rows * rowLength) / seconds
            let sourceGBs = Double(rows * rowBytes) / seconds / 1e9
            print("dequantize \(type.name.padding(toLength: 5, withPad: " ", startingAt: 0)): \(String(format: "%6.2f", floatsPerSecond / 1e9)) G floats/s (\(String(format: "%5.1f", sourceGBs)) GB/s of blocks read) [checksum \(checksum.isNaN ? 0 : 1)]")
        }
    }
}
