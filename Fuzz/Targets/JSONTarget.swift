import SluiceCore

extension FuzzTargets {
    /// SluiceCore's JSON parser: anything parsed serializes to text that parses to the same value.
    static let json = FuzzTarget(
        name: "json",
        summary: "JSON.parse on arbitrary bytes; a parsed value serializes and parses back to itself"
    ) { bytes throws(FuzzFinding) in
        guard let value = try? JSON.parse(bytes) else { return }
        let serialized = value.serialized
        let again: JSON
        do { again = try JSON.parse(serialized) } catch {
            throw FuzzFinding("the serialization of a parsed value does not parse: \(error) in \(serialized.prefix(200))")
        }
        guard again == value else { throw FuzzFinding("serialize/parse changed the value: \(serialized.prefix(200))") }
        guard again.serialized == serialized else { throw FuzzFinding("serialization is not stable: \(serialized.prefix(200))") }
    }
}
