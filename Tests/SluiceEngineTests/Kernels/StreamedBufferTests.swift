import Foundation
import Testing

@testable import SluiceEngine

/// Weight buffers: zeroed and writable to their last byte, carved from mappings advised to use huge
/// pages (on Linux) unless tiny, and those mappings given back once their buffers are gone.
@Suite struct StreamedBufferTests {
    /// The `VmFlags` line of the mapping that contains `address`, from /proc/self/smaps.
    func vmFlags(containing address: UInt) throws -> String? {
        // Read to the end: /proc files report a size of zero.
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/smaps"))
        defer { try? handle.close() }
        let smaps = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
        var inside = false
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                let bounds = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inside = bounds.count == 2 && bounds[0] <= address && address < bounds[1]
            } else if inside, line.hasPrefix("VmFlags:") {
                return String(line)
            }
        }
        return nil
    }

    /// Whether a mapping contains `address`: /proc/self/smaps gives every mapping its `VmFlags` line.
    func isMapped(_ address: UInt) throws -> Bool {
        try vmFlags(containing: address) != nil
    }

    @Test(arguments: [1, 100, 4095, 4096, StreamedBuffer.hugePageBytes - 1, StreamedBuffer.hugePageBytes,
                      StreamedBuffer.hugePageBytes + 4097, 5 * StreamedBuffer.hugePageBytes + 123])
    func zeroedWritableAndAligned(byteCount: Int) throws {
        let buffer = StreamedBuffer(byteCount: byteCount)
        let bytes = buffer.pointer.assumingMemoryBound(to: UInt8.self)
        #expect(buffer.byteCount == byteCount)
        #expect(UInt(bitPattern: buffer.pointer) % 64 == 0)
        #expect((0..<byteCount).allSatisfy { bytes[$0] == 0 })
        for i in stride(from: 0, to: byteCount, by: 4093) { bytes[i] = 0xA5 }
        #expect(bytes[0] == 0xA5)
        bytes[byteCount - 1] = 0x5A
        #expect(bytes[byteCount - 1] == 0x5A)
        #if os(Linux)
        #expect(buffer.isMapped == (byteCount >= StreamedBuffer.smallestCarved))
        if buffer.isMapped {
            // Advised to use huge pages, where the kernel has them (whether it grants them is its setting).
            if FileManager.default.fileExists(atPath: "/sys/kernel/mm/transparent_hugepage/enabled") {
                let flags = try #require(try vmFlags(containing: UInt(bitPattern: buffer.pointer)))
                #expect(flags.split(separator: " ").contains("hg"), "\(flags)")
            }
        }
        #endif
    }

    @Test func aChunkIsUnmappedWithItsLastBuffer() throws {
        #if os(Linux)
        // Each of these fills a chunk of its own (larger than the usual chunk, whole huge pages, so no
        // other test's buffer can share it); once the second is the arena's current chunk, the first
        // one's mapping goes with its buffer.
        let size = HugePageChunk.usualBytes + StreamedBuffer.hugePageBytes
        var first: StreamedBuffer? = StreamedBuffer(byteCount: size)
        let address = UInt(bitPattern: first!.pointer)
        #expect(address % UInt(StreamedBuffer.hugePageBytes) == 0, "a new chunk starts on a huge-page boundary")
        let second = StreamedBuffer(byteCount: size)
        #expect(try isMapped(address))
        first = nil
        #expect(try !isMapped(address))
        withExtendedLifetime(second) {}
        #endif
    }

    @Test func manyBuffersComeAndGo() {
        // Mapping and unmapping leave no overlap: each buffer keeps its own bytes while others live.
        var buffers: [StreamedBuffer] = []
        for i in 0..<24 {
            let buffer = StreamedBuffer(byteCount: StreamedBuffer.hugePageBytes + 4096 * i)
            buffer.pointer.storeBytes(of: UInt64(i), as: UInt64.self)
            (buffer.pointer + buffer.byteCount - 8).storeBytes(of: UInt64(i), as: UInt64.self)
            buffers.append(buffer)
            if i % 3 == 2 { buffers.removeFirst() }
        }
        for buffer in buffers {
            let first = buffer.pointer.load(as: UInt64.self)
            #expect((buffer.pointer + buffer.byteCount - 8).load(as: UInt64.self) == first)
            #expect(buffer.byteCount == StreamedBuffer.hugePageBytes + 4096 * Int(first))
        }
    }
}
