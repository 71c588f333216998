/// The vocabulary's byte strings as a trie, laid out in depth-first order so a walk is a
/// linear scan that jumps over the subtrees a grammar state rules out.
///
/// Node `i` (the root is implicit) is reached by byte `bytes[i]` at depth `depths[i]` from
/// the nearest earlier node of depth `depths[i] - 1`; its subtree ends before `skips[i]`;
/// the tokens whose bytes end there are `tokens[tokenStarts[i]..<tokenStarts[i + 1]]`.
/// Control tokens and tokens with no bytes are left out: a constrained generation never
/// picks them; the end-of-generation tokens are kept apart, for complete values.
final class TokenTrie: @unchecked Sendable {
    let vocabularySize: Int
    let endTokens: [Int32]
    let maximumDepth: Int
    private let bytes: [UInt8]
    private let depths: [UInt16]
    private let skips: [Int32]
    private let tokenStarts: [Int32]
    private let tokens: [Int32]
    /// Every token's bytes, for advancing a grammar over chosen tokens.
    let pieces: [[UInt8]]

    var nodeCount: Int { bytes.count }

    init(tokenizer: Tokenizer) {
        vocabularySize = tokenizer.vocabularySize
        var pieces: [[UInt8]] = []
        pieces.reserveCapacity(vocabularySize)
        var entries: [Int32] = []
        var ends: [Int32] = []
        for id in 0..<Int32(vocabularySize) {
            let piece = tokenizer.piece(for: id)
            pieces.append(piece)
            if tokenizer.isEndOfGeneration(id) {
                ends.append(id)
            } else if !tokenizer.isControl(id) && !piece.isEmpty && piece.count < Int(UInt16.max) {
                entries.append(id)
            }
        }
        entries.sort { a, b in
            pieces[Int(a)].lexicographicallyPrecedes(pieces[Int(b)]) || (pieces[Int(a)] == pieces[Int(b)] && a < b)
        }
        var bytes: [UInt8] = []
        var depths: [UInt16] = []
        var skips: [Int32] = []
        var tokenStarts: [Int32] = []
        var tokens: [Int32] = []
        var path: [Int] = []  // node index at each depth - 1 along the current branch
        var previous: [UInt8] = []
        for id in entries {
            let piece = pieces[Int(id)]
            var common = 0
            while common < min(piece.count, previous.count), piece[common] == previous[common] { common += 1 }
            // Close the nodes below the common prefix.
            while path.count > common { skips[path.removeLast()] = Int32(bytes.count) }
            for depth in common..<piece.count {
                path.append(bytes.count)
                bytes.append(piece[depth])
                depths.append(UInt16(depth + 1))
                skips.append(0)
                tokenStarts.append(Int32(tokens.count))
            }
            tokens.append(id)  // ends at the deepest node of the path (tokenStarts of later nodes follow)
            previous = piece
        }
        while let node = path.popLast() { skips[node] = Int32(bytes.count) }
        tokenStarts.append(Int32(tokens.count))
        self.bytes = bytes
        self.depths = depths
        self.skips = skips
        self.tokenStarts = tokenStarts
        self.tokens = tokens
        self.pieces = pieces
        self.endTokens = ends
        maximumDepth = Int(depths.max() ?? 0)
    }

    func withArrays<R>(_ body: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt16>, UnsafeBufferPointer<Int32>,
                                UnsafeBufferPointer<Int32>, UnsafeBufferPointer<Int32>) -> R) -> R {
        bytes.withUnsafeBufferPointer { b in
            depths.withUnsafeBufferPointer { d in
                skips.withUnsafeBufferPointer { s in
                    tokenStarts.withUnsafeBufferPointer { ts in
                        tokens.withUnsafeBufferPointer { t in body(b, d, s, ts, t) }
                    }
                }
            }
        }
    }
}
