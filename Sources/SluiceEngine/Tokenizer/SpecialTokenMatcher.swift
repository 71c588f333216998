/// A piece of input after special tokens are split out: raw text (a byte
/// range of the input) or a special token matched as a whole.
enum TextFragment: Equatable {
    case text(Range<Int>)
    case token(Int32)
}

/// Finds special tokens (control, unknown and user-defined tokens) in text,
/// with llama.cpp's precedence (`tokenizer_st_partition`): tokens are tried
/// one after another, longest text first, and each takes all its leftmost
/// non-overlapping occurrences in the text not yet taken. So a longer token
/// wins over a shorter one anywhere, not only where both start.
///
/// Instead of llama.cpp's one pass over the text per special token (6,414 for
/// Gemma 3), all occurrences are found in one pass over the text with a
/// sorted-prefix search, then accepted in that same precedence order.
struct SpecialTokenMatcher: Sendable {
    /// Special tokens sorted by their bytes (lexicographic, a prefix before its extensions).
    private let sortedTokens: [Int32]
    /// Precedence of `sortedTokens[i]`: lower is tried first.
    private let sortedPrecedence: [Int32]
    private let startsSpecial: [Bool]
    private let maxLength: Int

    init(tokens: [Int32], storage: [UInt8], ends: [Int]) {
        func range(_ id: Int32) -> Range<Int> { (id == 0 ? 0 : ends[Int(id) - 1])..<ends[Int(id)] }
        // Longest first; equal lengths by id (llama.cpp's std::sort leaves ties unspecified).
        let byPrecedence = tokens.filter { !range($0).isEmpty }.sorted { a, b in
            let la = range(a).count, lb = range(b).count
            return la != lb ? la > lb : a < b
        }
        var precedence: [Int32: Int32] = [:]
        for (rank, id) in byPrecedence.enumerated() { precedence[id] = Int32(rank) }
        let sorted = byPrecedence.sorted { a, b in
            storage[range(a)].lexicographicallyPrecedes(storage[range(b)]) || (storage[range(a)] == storage[range(b)] && a < b)
        }
        sortedTokens = sorted
        sortedPrecedence = sorted.map { precedence[$0]! }
        var starts = [Bool](repeating: false, count: 256)
        for id in sorted { starts[Int(storage[range(id).lowerBound])] = true }
        startsSpecial = starts
        maxLength = byPrecedence.first.map { range($0).count } ?? 0
    }

    var isEmpty: Bool { sortedTokens.isEmpty }

    /// Splits `text` into raw-text fragments and special tokens. Tokens whose
    /// attributes `excluded` intersects are not matched (control and unknown
    /// tokens when special tokens are not parsed); matched tokens with
    /// `leftStrip`/`rightStrip` swallow adjacent ASCII whitespace.
    func partition(_ text: UnsafeBufferPointer<UInt8>, tokenizer: Tokenizer, excluded: TokenAttributes) -> [TextFragment] {
        guard !text.isEmpty else { return [] }
        guard !sortedTokens.isEmpty else { return [.text(0..<text.count)] }

        // (precedence, start, token) of every occurrence.
        var occurrences: [(precedence: Int32, start: Int32, token: Int32)] = []
        let storage = tokenizer.tokenStorage
        let ends = tokenizer.tokenEnds
        storage.withUnsafeBufferPointer { storage in
            for position in 0..<text.count where startsSpecial[Int(text[position])] {
                var low = 0
                var high = sortedTokens.count
                var depth = 0
                while true {
                    // All of [low, high) share the prefix text[position ..< position + depth].
                    if depth > 0 {
                        while low < high {
                            let id = sortedTokens[low]
                            let start = id == 0 ? 0 : ends[Int(id) - 1]
                            guard ends[Int(id)] - start == depth else { break }
                            if tokenizer.attributes(of: id).isDisjoint(with: excluded) {
                                occurrences.append((sortedPrecedence[low], Int32(position), id))
                            }
                            low += 1
                        }
                    }
                    guard low < high, position + depth < text.count, depth < maxLength else { break }
                    let byte = text[position + depth]
                    // Entries in [low, high) are longer than depth: narrow to byte `depth` == byte.
                    func byteAt(_ index: Int) -> UInt8 {
                        let id = sortedTokens[index]
                        return storage[(id == 0 ? 0 : ends[Int(id) - 1]) + depth]
                    }
                    var lo = low, hi = high
                    while lo < hi {
                        let mid = (lo + hi) / 2
                        if byteAt(mid) < byte { lo = mid + 1 } else { hi = mid }
                    }
                    let newLow = lo
                    hi = high
                    while lo < hi {
                        let mid = (lo + hi) / 2
                        if byteAt(mid) <= byte { lo = mid + 1 } else { hi = mid }
                    }
                    low = newLow
                    high = lo
                    depth += 1
                }
            }
        }
        guard !occurrences.isEmpty else { return [.text(0..<text.count)] }
        // Order by (precedence, start): occurrences were found in increasing
        // start order, so a stable counting sort by precedence is enough and
        // stays linear even for long runs of whitespace tokens.
        var bucketStarts = [Int](repeating: 0, count: sortedTokens.count + 1)
        for occurrence in occurrences { bucketStarts[Int(occurrence.precedence) + 1] += 1 }
        for index in 1..<bucketStarts.count { bucketStarts[index] += bucketStarts[index - 1] }
        var ordered = occurrences
        for occurrence in occurrences {
            ordered[bucketStarts[Int(occurrence.precedence)]] = occurrence
            bucketStarts[Int(occurrence.precedence)] += 1
        }
        occurrences = ordered

        // 0: free text, 1: part of a matched token, 2: whitespace stripped next to one.
        var taken = [UInt8](repeating: 0, count: text.count)
        var tokenAt: [Int: (token: Int32, length: Int)] = [:]
        for occurrence in occurrences {
            let start = Int(occurrence.start)
            let length = tokenizer.tokenLength(occurrence.token)
            var free = true
            for index in start..<(start + length) where taken[index] != 0 { free = false; break }
            guard free else { continue }
            for index in start..<(start + length) { taken[index] = 1 }
            tokenAt[start] = (occurrence.token, length)
            let attributes = tokenizer.attributes(of: occurrence.token)
            if attributes.contains(.leftStrip) {
                var index = start - 1
                while index >= 0 && taken[index] == 0 && isCSpace(text[index]) { taken[index] = 2; index -= 1 }
            }
            if attributes.contains(.rightStrip) {
                var index = start + length
                while index < text.count && taken[index] == 0 && isCSpace(text[index]) { taken[index] = 2; index += 1 }
            }
        }

        var fragments: [TextFragment] = []
        var position = 0
        while position < text.count {
            switch taken[position] {
            case 1:
                let match = tokenAt[position]!
                fragments.append(.token(match.token))
                position += match.length
            case 2:
                position += 1
            default:
                let start = position
                while position < text.count && taken[position] == 0 { position += 1 }
                fragments.append(.text(start..<position))
            }
        }
        return fragments
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp uses for stripping.
@inline(__always)
func isCSpace(_ byte: UInt8) -> Bool {
    byte == 0x20 || (byte >= 0x09 && byte <= 0x0D)
}
