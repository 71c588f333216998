#if canImport(Glibc)
import Glibc
#endif

/// Zeroed memory for a large array the kernels stream, such as a matrix's weights, backed by
/// transparent huge pages where Linux gives them.
///
/// A decode step of one sequence reads every weight once, so it runs at the speed memory
/// delivers them. On 4 KiB pages that speed is capped by the page walks and by the hardware
/// prefetchers stopping at each page's end: streaming a 4-bit matrix with two threads on the
/// 2-core Zen 4 machine measured 25-31 GB/s on 4 KiB pages and 47-50 GB/s on 2 MiB ones.
/// Linux backs a region with huge pages only where asked (`madvise`, the usual
/// `transparent_hugepage` setting) and only in 2 MiB-aligned stretches, so a buffer of at least
/// one huge page is mapped on its own, starting on a 2 MiB boundary. Its last partial huge
/// page stays in small pages: nothing is allocated beyond the buffer's own pages. Smaller
/// buffers, and systems without these calls, use the ordinary allocator.
final class StreamedBuffer: @unchecked Sendable {
    // Sendable: the pointer is fixed; what it points to is the owner's to synchronize.

    static let hugePageBytes = 2 << 20

    let pointer: UnsafeMutableRawPointer
    let byteCount: Int
    /// The mapped length, when the buffer has its own mapping (nil: the ordinary allocator's).
    private let mappedBytes: Int?

    /// A zeroed buffer of `byteCount` bytes (at least one), aligned to 64 bytes or more.
    init(byteCount: Int) {
        self.byteCount = max(1, byteCount)
        if self.byteCount >= Self.hugePageBytes, let (pointer, mapped) = Self.mapAligned(self.byteCount) {
            self.pointer = pointer
            mappedBytes = mapped
        } else {
            pointer = .allocate(byteCount: self.byteCount, alignment: 64)
            pointer.initializeMemory(as: UInt8.self, repeating: 0, count: self.byteCount)
            mappedBytes = nil
        }
    }

    deinit {
        #if canImport(Glibc)
        if let mappedBytes {
            munmap(pointer, mappedBytes)
            return
        }
        #endif
        pointer.deallocate()
    }

    /// Whether the buffer has its own mapping, aligned to a huge page.
    var isMapped: Bool { mappedBytes != nil }

    /// An anonymous mapping of `byteCount` bytes (rounded up to whole small pages) starting on a
    /// huge-page boundary and advised to use huge pages, or nil where that cannot be had.
    private static func mapAligned(_ byteCount: Int) -> (UnsafeMutableRawPointer, Int)? {
        #if canImport(Glibc)
        let pageBytes = max(4096, Int(sysconf(Int32(_SC_PAGESIZE))))
        let length = (byteCount + pageBytes - 1) / pageBytes * pageBytes
        // Room to slide the start to the next huge-page boundary; the slack on both sides is unmapped.
        let (span, overflow) = length.addingReportingOverflow(hugePageBytes)
        guard !overflow, let raw = mmap(nil, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              raw != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
        let address = UInt(bitPattern: raw)
        let start = (address + UInt(hugePageBytes) - 1) / UInt(hugePageBytes) * UInt(hugePageBytes)
        let lead = Int(start - address), trail = span - lead - length
        if lead > 0 { munmap(raw, lead) }
        let pointer = raw + lead
        if trail > 0 { munmap(pointer + length, trail) }
        // Only advice: where huge pages are off the mapping simply keeps small ones.
        _ = madvise(pointer, length, Int32(MADV_HUGEPAGE))
        return (pointer, length)
        #else
        return nil
        #endif
    }
}
