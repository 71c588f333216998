/// One piece of text being merged: a run of bytes in the input, linked to its
/// neighbours. A merged-away symbol has `length == 0`.
struct MergeSymbol {
    var start: Int32
    var length: Int32
    var previous: Int32
    var next: Int32
}

/// A candidate merge of two adjacent SentencePiece symbols.
struct ScoredBigram: HeapOrdered {
    var left: Int32
    var right: Int32
    var score: Float
    var size: Int32

    /// Highest score first; among equal scores the leftmost pair (llama.cpp's `llm_bigram_spm` order).
    static func precedes(_ a: ScoredBigram, _ b: ScoredBigram) -> Bool {
        a.score > b.score || (a.score == b.score && a.left < b.left)
    }
}

/// The "llama" (SentencePiece BPE) merge over one fragment of whitespace-escaped
/// text, as llama.cpp's `llm_tokenizer_spm_session` does it: start from UTF-8
/// characters, repeatedly merge the adjacent pair whose concatenation is the
/// vocabulary entry with the highest score, then emit each symbol's token or,
/// for a character that is no token, its bytes' `<0xNN>` tokens.
///
/// Each merge adds at most two candidates to a heap, so a fragment of n
/// characters costs O(n log n) rather than the O(n²) of rescanning all pairs.
struct SentencePieceMerger {
    private var symbols: [MergeSymbol] = []
    private var queue = BinaryHeap<ScoredBigram>()

    mutating func tokenize(_ text: UnsafeBufferPointer<UInt8>, tokenizer: Tokenizer, into output: inout [Int32]) {
        guard !text.isEmpty else { return }
        symbols.removeAll(keepingCapacity: true)
        queue.removeAll()

        var offset = 0
        var index: Int32 = 0
        while offset < text.count {
            let length = min(utf8SequenceLength(text[offset]), text.count - offset)
            let end = offset + length
            symbols.append(MergeSymbol(
                start: Int32(offset), length: Int32(length),
                previous: index - 1, next: end == text.count ? -1 : index + 1))
            offset = end
            index += 1
        }

        for right in symbols.indices.dropFirst() {
            addBigram(Int32(right - 1), Int32(right), text: text, tokenizer: tokenizer)
        }

        while let bigram = queue.pop() {
            let left = Int(bigram.left)
            let right = Int(bigram.right)
            // Stale candidate: one side was merged away or has grown since.
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
            addBigram(symbols[left].previous, bigram.left, text: text, tokenizer: tokenizer)
            addBigram(bigram.left, symbols[left].next, text: text, tokenizer: tokenizer)
        }

        var cursor: Int32 = 0
        while cursor >= 0 {
            let symbol = symbols[Int(cursor)]
            let piece = UnsafeBufferPointer(rebasing: text[Int(symbol.start)..<Int(symbol.start + symbol.length)])
            if let token = tokenizer.tokenID(bytes: piece) {
                output.append(token)
            } else {
                // A symbol that is no token is a single unmerged character: every
                // merge produces a vocabulary entry, and Swift strings are valid
                // UTF-8, so llama.cpp's re-segmentation via `rev_merge` never
                // applies here. Fall back to byte tokens.
                for byte in piece {
                    if let token = tokenizer.byteFallbackToken(byte) { output.append(token) }
                }
            }
            cursor = symbol.next
        }
    }

    private mutating func addBigram(_ left: Int32, _ right: Int32, text: UnsafeBufferPointer<UInt8>, tokenizer: Tokenizer) {
        guard left >= 0, right >= 0 else { return }
        let start = Int(symbols[Int(left)].start)
        let size = symbols[Int(left)].length + symbols[Int(right)].length
        let merged = UnsafeBufferPointer(rebasing: text[start..<(start + Int(size))])
        guard let token = tokenizer.tokenID(bytes: merged) else { return }
        queue.push(ScoredBigram(left: left, right: right, score: tokenizer.score(of: token), size: size))
    }
}

/// The length of the UTF-8 sequence that `lead` starts, judged by its high
/// bits alone (llama.cpp's `unicode_len_utf8`): continuation bytes count as 1.
@inline(__always)
func utf8SequenceLength(_ lead: UInt8) -> Int {
    switch lead >> 4 {
    case 0xC, 0xD: 2
    case 0xE: 3
    case 0xF: 4
    default: 1
    }
}
