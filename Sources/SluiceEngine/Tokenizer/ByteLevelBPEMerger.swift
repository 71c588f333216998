/// A candidate merge of two adjacent byte-level BPE symbols.
struct RankedBigram: HeapOrdered {
    var left: Int32
    var right: Int32
    var rank: Int32
    var size: Int32

    /// Lowest merge rank first; among equal ranks the leftmost pair (llama.cpp's `llm_bigram_bpe` order).
    static func precedes(_ a: RankedBigram, _ b: RankedBigram) -> Bool {
        a.rank < b.rank || (a.rank == b.rank && a.left < b.left)
    }
}

/// GPT-2's reversible map from bytes to printable code points: printable
/// Latin-1 bytes map to themselves, the other 68 bytes to U+0100 onwards.
enum ByteLevelAlphabet {
    /// UTF-8 of the code point standing for each byte.
    static let encoded: [[UInt8]] = (0..<256).map { Array(String(Character(Unicode.Scalar(codePoint(for: UInt8($0)))!)).utf8) }

    /// The byte each of the 256 code points stands for, by code point (nil: not in the alphabet).
    static let decoded: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for byte in 0..<256 { map[codePoint(for: UInt8(byte))] = UInt8(byte) }
        return map
    }()

    static func codePoint(for byte: UInt8) -> UInt32 {
        if isSelfMapped(byte) { return UInt32(byte) }
        var shifted: UInt32 = 0
        for earlier in 0..<Int(byte) where !isSelfMapped(UInt8(earlier)) { shifted += 1 }
        return 256 + shifted
    }

    private static func isSelfMapped(_ byte: UInt8) -> Bool {
        (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
    }
}

/// The "gpt2" (byte-level BPE) tokenization of one text fragment, as llama.cpp's
/// `llm_tokenizer_bpe_session` does it: pre-tokenize into words, map each
/// word's bytes to the byte-level alphabet, merge adjacent symbols by lowest
/// merge rank (a heap of candidates, O(n log n) per word), and emit tokens.
struct ByteLevelBPEMerger {
    private var symbols: [MergeSymbol] = []
    private var queue = BinaryHeap<RankedBigram>()
    private var word: [UInt8] = []
    private var codePoints: [UInt32] = []
    private var codePointFlags: [CodepointFlags] = []
    private var byteOffsets: [Int] = []

    mutating func tokenize(_ text: UnsafeBufferPointer<UInt8>, tokenizer: Tokenizer, preTokenizer: PreTokenizer,
                           merges: MergeRankTable, into output: inout [Int32]) {
        guard !text.isEmpty else { return }
        decodeCodePoints(text)
        let lengths = codePoints.withUnsafeBufferPointer { cps in
            codePointFlags.withUnsafeBufferPointer { fls in preTokenizer.split(cps, flags: fls) }
        }
        var first = 0
        for length in lengths {
            let byteStart = byteOffsets[first]
            let byteEnd = byteOffsets[first + length]
            first += length
            tokenizeWord(UnsafeBufferPointer(rebasing: text[byteStart..<byteEnd]), tokenizer: tokenizer,
                         ignoreMerges: preTokenizer.ignoresMerges, merges: merges, into: &output)
        }
    }

    /// Code points of valid UTF-8 (the text comes from a Swift string) with their byte offsets.
    private mutating func decodeCodePoints(_ text: UnsafeBufferPointer<UInt8>) {
        codePoints.removeAll(keepingCapacity: true)
        codePointFlags.removeAll(keepingCapacity: true)
        byteOffsets.removeAll(keepingCapacity: true)
        var offset = 0
        while offset < text.count {
            byteOffsets.append(offset)
            let lead = text[offset]
            let length = min(utf8SequenceLength(lead), text.count - offset)
            var value: UInt32
            switch length {
            case 2: value = UInt32(lead & 0x1F)
            case 3: value = UInt32(lead & 0x0F)
            case 4: value = UInt32(lead & 0x07)
            default: value = UInt32(lead)
            }
            if length > 1 {
                for index in 1..<length { value = (value << 6) | UInt32(text[offset + index] & 0x3F) }
            }
            codePoints.append(value)
            codePointFlags.append(CodepointFlags.of(value))
            offset += length
        }
        byteOffsets.append(text.count)
    }

    private mutating func tokenizeWord(_ raw: UnsafeBufferPointer<UInt8>, tokenizer: Tokenizer, ignoreMerges: Bool,
                                       merges: MergeRankTable, into output: inout [Int32]) {
        word.removeAll(keepingCapacity: true)
        symbols.removeAll(keepingCapacity: true)
        queue.removeAll()
        for byte in raw {
            let start = Int32(word.count)
            word.append(contentsOf: ByteLevelAlphabet.encoded[Int(byte)])
            symbols.append(MergeSymbol(start: start, length: Int32(word.count) - start,
                                       previous: Int32(symbols.count) - 1, next: Int32(symbols.count) + 1))
        }
        guard !symbols.isEmpty else { return }
        symbols[symbols.count - 1].next = -1

        let encodedWord = word  // a second reference, so the closure below may mutate `self`
        encodedWord.withUnsafeBufferPointer { word in
            if ignoreMerges, let whole = tokenizer.tokenID(bytes: word) {
                output.append(whole)
                return
            }
            for right in symbols.indices.dropFirst() {
                addBigram(Int32(right - 1), Int32(right), word: word, merges: merges)
            }
            while let bigram = queue.pop() {
                let left = Int(bigram.left)
                let right = Int(bigram.right)
                // Stale candidate: one side was merged away or has grown since
                // (equivalent to llama.cpp's comparison of the pair's text).
                if symbols[left].length == 0 || symbols[right].length == 0
                    || symbols[left].length + symbols[right].length != bigram.size {
                    continue
                }
                symbols[left].length += symbols[right].length
                symbols[right].length = 0
                symbols[left].next = symbols[right].next
                if symbols[right].next >= 0 {
                    symbols[Int(symbols[right].next)].previous = bigram.left
                }
                addBigram(symbols[left].previous, bigram.left, word: word, merges: merges)
                addBigram(bigram.left, symbols[left].next, word: word, merges: merges)
            }
            for symbol in symbols where symbol.length > 0 {
                let piece = UnsafeBufferPointer(rebasing: word[Int(symbol.start)..<Int(symbol.start + symbol.length)])
                if let token = tokenizer.tokenID(bytes: piece) {
                    output.append(token)
                } else {
                    // llama.cpp looks up each byte of the encoded text as a
                    // one-byte token and silently drops the bytes that are none.
                    for index in piece.indices {
                        if let token = tokenizer.tokenID(bytes: UnsafeBufferPointer(rebasing: piece[index..<(index + 1)])) {
                            output.append(token)
                        }
                    }
                }
            }
        }
    }

    private mutating func addBigram(_ left: Int32, _ right: Int32, word: UnsafeBufferPointer<UInt8>, merges: MergeRankTable) {
        guard left >= 0, right >= 0 else { return }
        let l = symbols[Int(left)]
        let r = symbols[Int(right)]
        let first = UnsafeBufferPointer(rebasing: word[Int(l.start)..<Int(l.start + l.length)])
        let second = UnsafeBufferPointer(rebasing: word[Int(r.start)..<Int(r.start + r.length)])
        guard let rank = merges.rank(first, second) else { return }
        queue.push(RankedBigram(left: left, right: right, rank: rank, size: l.length + r.length))
    }
}
