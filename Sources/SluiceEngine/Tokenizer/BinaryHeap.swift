/// Elements that a `BinaryHeap` pops in order.
protocol HeapOrdered {
    /// True when `a` must come out of the heap before `b`.
    static func precedes(_ a: Self, _ b: Self) -> Bool
}

/// A binary min-heap under `Element.precedes`, reusable across calls.
struct BinaryHeap<Element: HeapOrdered> {
    private(set) var elements: [Element] = []

    var isEmpty: Bool { elements.isEmpty }

    mutating func removeAll() { elements.removeAll(keepingCapacity: true) }

    mutating func push(_ element: Element) {
        elements.append(element)
        var child = elements.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Element.precedes(elements[child], elements[parent]) else { break }
            elements.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Element? {
        guard let last = elements.popLast() else { return nil }
        guard !elements.isEmpty else { return last }
        let top = elements[0]
        elements[0] = last
        var parent = 0
        let count = elements.count
        while true {
            let left = 2 * parent + 1
            guard left < count else { break }
            var best = left
            if left + 1 < count, Element.precedes(elements[left + 1], elements[left]) { best = left + 1 }
            guard Element.precedes(elements[best], elements[parent]) else { break }
            elements.swapAt(best, parent)
            parent = best
        }
        return top
    }
}
