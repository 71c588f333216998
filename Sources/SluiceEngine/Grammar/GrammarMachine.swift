/// Recognizes a `Grammar` byte by byte, and says which tokens may come next.
///
/// A parse position is a stack of grammar positions (as in llama.cpp's grammar sampler):
/// its top is the byte class to match next, the rest is what follows when the current
/// rule ends. Stacks are interned as linked nodes, so a state (the set of stacks the bytes
/// so far can be in) is a sorted list of node ids, itself interned as a small integer.
/// States are a function of the bytes consumed only; transitions and token masks are
/// memoized per state, so a state that recurs (the inside of a string, the next key of an
/// object) costs one table lookup after its first visit.
///
/// Used only on the engine thread (the caches are mutated without locks).
final class GrammarMachine: @unchecked Sendable {
    typealias State = Int32
    static let dead: State = -1
    private static let unknown: State = -2
    /// The id of the empty stack: the whole grammar matched.
    private static let acceptedNode: Int32 = -1

    let grammar: Grammar
    private var nodeIndex: [UInt64: Int32] = [:]
    private var nodePosition: [Int32] = []
    private var nodeParent: [Int32] = []
    private var stateIndex: [[Int32]: State] = [:]
    private var stateNodes: [[Int32]] = []
    private var transitions: [State] = []
    private var masks: [State: TokenMask] = [:]
    private(set) var initialState: State = 0
    /// Kept masks at most (each is vocabulary/8 bytes: 32 KiB for 262,144 tokens); the cache
    /// starts over when full. A schema's recurring states number in the tens to hundreds.
    var maskCacheLimit = 1024

    init(grammar: Grammar) {
        self.grammar = grammar
        var nodes: [Int32] = []
        var visited = Set<Int32>()
        for start in grammar.alternatives[grammar.root] {
            expand(continuation(start, parent: Self.acceptedNode), into: &nodes, visited: &visited)
        }
        initialState = intern(nodes)
    }

    // MARK: States

    /// The state after `byte` in `state`, or `dead`.
    @inline(__always)
    func advance(_ state: State, byte: UInt8) -> State {
        let slot = Int(state) &* 256 &+ Int(byte)
        let known = transitions[slot]
        if known != Self.unknown { return known }
        let next = computeAdvance(state, byte: byte)
        transitions[slot] = next
        return next
    }

    /// The state after `bytes`, or `dead`.
    func advance(_ state: State, bytes: some Sequence<UInt8>) -> State {
        var state = state
        for byte in bytes {
            state = advance(state, byte: byte)
            if state == Self.dead { return state }
        }
        return state
    }

    /// Whether the bytes so far are a complete match.
    func isAccepting(_ state: State) -> Bool { stateNodes[Int(state)].first == Self.acceptedNode }

    /// Whether some byte can follow.
    func canContinue(_ state: State) -> Bool { stateNodes[Int(state)].contains { $0 != Self.acceptedNode } }

    private func computeAdvance(_ state: State, byte: UInt8) -> State {
        var nodes: [Int32] = []
        var visited = Set<Int32>()
        for node in stateNodes[Int(state)] where node != Self.acceptedNode {
            let position = Int(nodePosition[Int(node)])
            guard case let .bytes(set) = grammar.elements[position], set.contains(byte) else { continue }
            expand(continuation(position + 1, parent: nodeParent[Int(node)]), into: &nodes, visited: &visited)
        }
        return nodes.isEmpty ? Self.dead : intern(nodes)
    }

    /// The stack that continues at `position` under `parent`: the parent itself when the
    /// alternative ends there (so right recursion keeps stacks bounded).
    private func continuation(_ position: Int, parent: Int32) -> Int32 {
        if case .end = grammar.elements[position] { return parent }
        let key = UInt64(UInt32(position)) << 32 | UInt64(UInt32(bitPattern: parent))
        if let id = nodeIndex[key] { return id }
        let id = Int32(nodePosition.count)
        nodePosition.append(Int32(position))
        nodeParent.append(parent)
        nodeIndex[key] = id
        return id
    }

    /// Adds the stacks `node` stands for once every rule on top is opened down to a byte class.
    private func expand(_ node: Int32, into nodes: inout [Int32], visited: inout Set<Int32>) {
        guard visited.insert(node).inserted else { return }
        if node == Self.acceptedNode {
            nodes.append(node)
            return
        }
        let position = Int(nodePosition[Int(node)])
        switch grammar.elements[position] {
        case .bytes: nodes.append(node)
        case let .rule(rule):
            let after = continuation(position + 1, parent: nodeParent[Int(node)])
            for start in grammar.alternatives[rule] {
                expand(continuation(start, parent: after), into: &nodes, visited: &visited)
            }
        case .end: preconditionFailure("continuation() never leaves a stack at an alternative's end")
        }
    }

    private func intern(_ nodes: [Int32]) -> State {
        let key = Array(Set(nodes)).sorted()
        if let id = stateIndex[key] { return id }
        let id = State(stateNodes.count)
        stateNodes.append(key)
        stateIndex[key] = id
        transitions.append(contentsOf: repeatElement(Self.unknown, count: 256))
        return id
    }

    // MARK: Token masks

    /// The tokens that may come next in `state`: those whose bytes keep the text a prefix of
    /// the language, and the end-of-generation tokens when the text so far is complete.
    func mask(_ state: State, trie: TokenTrie) -> TokenMask {
        if let cached = masks[state] { return cached }
        var mask = TokenMask(vocabularySize: trie.vocabularySize)
        var states = [State](repeating: Self.dead, count: trie.maximumDepth + 1)
        states[0] = state
        var node = 0
        let count = trie.nodeCount
        trie.withArrays { bytes, depths, skips, tokenStarts, tokens in
            while node < count {
                let depth = Int(depths[node])
                let next = advance(states[depth - 1], byte: bytes[node])
                if next == Self.dead {
                    node = Int(skips[node])
                    continue
                }
                states[depth] = next
                for i in Int(tokenStarts[node])..<Int(tokenStarts[node + 1]) { mask.insert(tokens[i]) }
                node += 1
            }
        }
        if isAccepting(state) { for token in trie.endTokens { mask.insert(token) } }
        if masks.count >= maskCacheLimit { masks.removeAll(keepingCapacity: true) }
        masks[state] = mask
        return mask
    }
}

/// A set of token ids (a bitset over the vocabulary).
struct TokenMask: Sendable {
    private(set) var words: [UInt64]
    private(set) var count = 0

    init(vocabularySize: Int) {
        words = [UInt64](repeating: 0, count: (vocabularySize + 63) / 64)
    }

    @inline(__always)
    func contains(_ token: Int32) -> Bool {
        let index = Int(token)
        guard index >= 0, index >> 6 < words.count else { return false }
        return words[index >> 6] & (1 << UInt64(index & 63)) != 0
    }

    mutating func insert(_ token: Int32) {
        let index = Int(token)
        let bit = UInt64(1) << UInt64(index & 63)
        if words[index >> 6] & bit == 0 {
            words[index >> 6] |= bit
            count += 1
        }
    }
}
