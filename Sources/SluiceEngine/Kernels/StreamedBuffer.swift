#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Zeroed memory for a large array the kernels stream, such as a matrix's weights, backed by
/// transparent huge pages where Linux gives them.
///
/// A decode step of one sequence reads every weight once, so it runs at the speed memory
/// delivers them. On 4 KiB pages that speed is capped by the page walks and by the hardware
/// prefetchers stopping at each page's end: streaming a 4-bit matrix with two threads on the
/// 2-core Zen 4 machine measured 25-31 GB/s on 4 KiB pages and 47-50 GB/s on 2 MiB ones.
/// Linux backs memory with huge pages only where asked (`madvise`, the usual
/// `transparent_hugepage` setting) and only in whole, aligned 2 MiB stretches, so buffers are
/// carved one after another out of large huge-page-aligned mappings (`HugePageChunk`): a
/// model's matrices then share huge pages instead of each ending in a stretch of small pages.
/// A chunk is unmapped when the last buffer in it is gone and no new buffer can go there.
/// Buffers under a page, and systems without these calls, use the ordinary allocator.
final class StreamedBuffer: @unchecked Sendable {
    // Sendable: the pointer is fixed; what it points to is the owner's to synchronize.

    static let hugePageBytes = 2 << 20
    /// Buffers smaller than this come from the ordinary allocator.
    static let smallestCarved = 4096

    let pointer: UnsafeMutableRawPointer
    let byteCount: Int
    /// The mapping the buffer was carved from (nil: the ordinary allocator's memory).
    private let chunk: HugePageChunk?

    /// A zeroed buffer of `byteCount` bytes (at least one), aligned to 64 bytes.
    init(byteCount: Int) {
        self.byteCount = max(1, byteCount)
        if self.byteCount >= Self.smallestCarved, let (chunk, pointer) = HugePageArena.carve(self.byteCount) {
            self.pointer = pointer
            self.chunk = chunk
        } else {
            pointer = .allocate(byteCount: self.byteCount, alignment: 64)
            pointer.initializeMemory(as: UInt8.self, repeating: 0, count: self.byteCount)
            chunk = nil
        }
    }

    deinit {
        if chunk == nil { pointer.deallocate() }
    }

    /// Whether the buffer was carved from a huge-page mapping.
    var isMapped: Bool { chunk != nil }
}

/// One anonymous mapping starting on a huge-page boundary, advised to use huge pages; its
/// buffers keep it alive, and it is unmapped with the last of them.
final class HugePageChunk: @unchecked Sendable {
    // Sendable: immutable.

    /// The chunks new buffers go to: 64 MiB, or more for a larger buffer.
    static let usualBytes = 64 << 20

    let base: UnsafeMutableRawPointer
    let length: Int

    /// Maps at least `byteCount` bytes (whole huge pages), or nil where that cannot be had.
    init?(atLeast byteCount: Int) {
        #if canImport(Glibc)
        let huge = StreamedBuffer.hugePageBytes
        let (rounded, overflow) = max(byteCount, Self.usualBytes).addingReportingOverflow(huge - 1)
        guard !overflow else { return nil }
        let length = rounded / huge * huge
        // Room to slide the start to the next huge-page boundary; the slack on both sides is unmapped.
        let (span, spanOverflow) = length.addingReportingOverflow(huge)
        guard !spanOverflow, let raw = mmap(nil, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              raw != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
        let address = UInt(bitPattern: raw)
        let start = (address + UInt(huge) - 1) / UInt(huge) * UInt(huge)
        let lead = Int(start - address), trail = span - lead - length
        if lead > 0 { munmap(raw, lead) }
        base = raw + lead
        if trail > 0 { munmap(base + length, trail) }
        self.length = length
        // Only advice: where huge pages are off the mapping simply keeps small ones.
        _ = madvise(base, length, Int32(MADV_HUGEPAGE))
        #else
        return nil
        #endif
    }

    deinit {
        #if canImport(Glibc)
        munmap(base, length)
        #endif
    }
}

/// Hands out buffers from the current chunk, front to back; a buffer that does not fit opens a
/// new chunk. Freed space is not reused: the weights it holds live as long as their model.
enum HugePageArena {
    private struct State {
        var chunk: HugePageChunk?
        var used = 0
    }

    private static let state = Mutex(State())

    /// A zeroed, 64-byte-aligned stretch of `byteCount` bytes and the chunk it lies in.
    static func carve(_ byteCount: Int) -> (HugePageChunk, UnsafeMutableRawPointer)? {
        state.withLock { state -> (HugePageChunk, UnsafeMutableRawPointer)? in
            let offset = (state.used + 63) / 64 * 64
            if let chunk = state.chunk, offset <= chunk.length, byteCount <= chunk.length - offset {
                state.used = offset + byteCount
                return (chunk, chunk.base + offset)
            }
            guard let chunk = HugePageChunk(atLeast: byteCount) else { return nil }
            state.chunk = chunk
            state.used = byteCount
            return (chunk, chunk.base)
        }
    }
}
