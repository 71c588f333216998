/// `sluice --version`. Bumped with each release; the engine's output identity
/// (BuiltinResultIdentity) is versioned separately, by what changes outputs.
enum SluiceVersion {
    static let number = "0.9.0"
}
