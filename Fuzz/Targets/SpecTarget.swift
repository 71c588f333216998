import SluiceSchedule

extension FuzzTargets {
    /// The TOML job spec parser and the checks on each field.
    static let spec = FuzzTarget(
        name: "spec",
        summary: "JobSpec.parse (SpecDocument's TOML subset and every field check) on arbitrary text; errors name the file"
    ) { bytes throws(FuzzFinding) in
        guard bytes.count <= 16 << 10 else { return }
        do {
            _ = try JobSpec.parse(text(bytes), path: "/nonexistent-sluice-fuzz/jobs/spec.toml")
        } catch let error as SpecError {
            guard error.file.hasSuffix("spec.toml") else { throw FuzzFinding("a spec error that does not name the file: \(error)") }
        } catch {
            throw FuzzFinding("JobSpec.parse threw something other than a SpecError: \(error)")
        }
    }
}
