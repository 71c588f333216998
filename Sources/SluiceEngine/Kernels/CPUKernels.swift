import CSluiceKernels

/// The CPU kernel variant this process runs: chosen once at start from the CPU and the
/// `SLUICE_CPU` environment variable (`portable`, `avx2`, `avx512`, `avx512-vnni`).
///
/// One build carries every variant. At a given `--precision` they compute the same floats
/// (the AVX-512 kernels are lane for lane the operations of the portable code), so a request's
/// tokens do not depend on the machine and checkpoints move between machines; the variants
/// differ in speed and in which precisions they offer (the integer ones need `avx2` or above).
public enum CPUKernels {
    /// The variant's name, or nil when `SLUICE_CPU` asks for one this CPU lacks (see `refusal`).
    public static var variant: String? {
        let chosen = sluice_cpu_variant()
        return chosen < 0 ? nil : sluice_cpu_variant_name(chosen).map { String(cString: $0) }
    }

    /// The best variant this CPU runs, whatever `SLUICE_CPU` says.
    public static var bestVariant: String { String(cString: sluice_cpu_variant_name(sluice_cpu_best_variant())) }

    /// Why `SLUICE_CPU` cannot be honoured; nil when it can (or is unset).
    public static var refusal: String? {
        sluice_cpu_variant() < 0 ? String(cString: sluice_cpu_refusal()) : nil
    }

    /// Throws the refusal when `SLUICE_CPU` names a variant this CPU lacks or none at all.
    public static func requireUsable() throws(ModelLoadError) {
        if let refusal { throw ModelLoadError(refusal) }
    }

    /// "avx512-vnni" or, for a pinned one, "avx2 (SLUICE_CPU; the CPU runs avx512-vnni)".
    public static var summary: String {
        guard let variant else { return "none (\(refusal ?? ""))" }
        return variant == bestVariant ? variant : "\(variant) (SLUICE_CPU; the CPU runs \(bestVariant))"
    }
}
