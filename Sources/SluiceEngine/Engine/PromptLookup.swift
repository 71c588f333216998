/// Prompt-lookup drafting: guesses a sequence's next tokens by finding where its
/// last few tokens occurred before (in the prompt or in what it generated) and
/// proposing what followed them there.
///
/// Outputs that copy from their input (extraction, rewriting, quoting) or repeat
/// themselves continue exactly like an earlier stretch of text, so the guess is
/// often right and costs nothing but a scan of the token history.
struct PromptLookup: Sendable {
    /// The longest suffix that is looked up; longer matches are tried first.
    var maxNgram: Int
    /// The shortest suffix that is looked up.
    var minNgram: Int

    init(maxNgram: Int = 3, minNgram: Int = 1) {
        precondition(minNgram >= 1 && maxNgram >= minNgram, "n-gram lengths must satisfy 1 ≤ min ≤ max")
        self.maxNgram = maxNgram
        self.minNgram = minNgram
    }

    /// Up to `count` tokens proposed to follow `history`, with the length of the suffix
    /// that matched (0 and no tokens when no suffix of at least `minNgram` tokens recurs).
    ///
    /// The latest earlier occurrence of the longest matching suffix wins: a copy in
    /// progress continues from where it was last seen. Proposals may run past the end
    /// of the history into themselves, so a repeating pattern is continued as a repetition.
    func draft<History: RandomAccessCollection<Int32>>(_ history: History, count: Int) -> (tokens: [Int32], matched: Int)
        where History.Index == Int {
        let length = history.count
        guard count > 0, length > minNgram else { return ([], 0) }
        let base = history.startIndex
        @inline(__always) func at(_ i: Int) -> Int32 { history[base + i] }

        for n in stride(from: min(maxNgram, length - 1), through: minNgram, by: -1) {
            let suffixStart = length - n
            // Candidates end before the suffix itself starts its last token, latest first.
            var start = suffixStart - 1
            while start >= 0 {
                var matches = true
                for j in 0..<n where at(start + j) != at(suffixStart + j) {
                    matches = false
                    break
                }
                if matches {
                    var tokens: [Int32] = []
                    tokens.reserveCapacity(count)
                    var source = start + n
                    while tokens.count < count {
                        // `source` < length + tokens.count always holds, since start + n < length.
                        tokens.append(source < length ? at(source) : tokens[source - length])
                        source += 1
                    }
                    return (tokens, n)
                }
                start -= 1
            }
        }
        return ([], 0)
    }
}

/// The prompt followed by the generated tokens, without copying either.
struct TokenHistory: RandomAccessCollection {
    let prompt: [Int32]
    let generated: [Int32]

    var startIndex: Int { 0 }
    var endIndex: Int { prompt.count + generated.count }

    subscript(position: Int) -> Int32 {
        position < prompt.count ? prompt[position] : generated[position - prompt.count]
    }
}
