/// `sluice --db PATH status`: options every command takes (today `--db`) may come before the
/// subcommand. ArgumentParser reads options only on the command that declares them, so they are
/// moved after the subcommand's own arguments (before a `--`, which ends the options).
enum LeadingOptions {
    static let hoisted = ["--db"]

    static func reorder(_ arguments: [String]) -> [String] {
        var rest = arguments[...]
        var moved: [String] = []
        while let first = rest.first {
            if hoisted.contains(first), rest.count >= 2 {
                moved += rest.prefix(2)
                rest = rest.dropFirst(2)
            } else if hoisted.contains(where: { first.hasPrefix($0 + "=") }) {
                moved.append(first)
                rest = rest.dropFirst()
            } else {
                break
            }
        }
        // Nothing after the options (`sluice --db x`): leave it for ArgumentParser to explain.
        guard !moved.isEmpty, !rest.isEmpty else { return arguments }
        var reordered = Array(rest)
        let end = reordered.firstIndex(of: "--") ?? reordered.endIndex
        reordered.insert(contentsOf: moved, at: end)
        return reordered
    }
}
