import Foundation
import Testing

/// Issue 19: one x86-64 binary for a mixed fleet. The binary runs under qemu-user emulating older
/// CPUs (qemu's cpuid reports the model's instruction sets): below the build's x86-64-v3 baseline it
/// refuses with one line before any AVX2 instruction runs, and on an AVX2-only CPU it picks the
/// `avx2` kernels, and with them `int16`, by itself. (qemu would also execute AVX-512 it does not advertise, so this proves
/// the choice, not the absence of wider instructions; the kernels' agreement is AttentionTests',
/// IntegerMatMulTests' and scripts/test-cpu-variants' business.)
@Suite(.serialized) struct CPUBaselineTests {
    /// qemu-x86_64, or nil where the test cannot run (then it fails under CI=true).
    static func qemu() -> String? {
        #if arch(x86_64)
        for path in ["/usr/bin/qemu-x86_64", "/usr/bin/qemu-x86_64-static"] where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        if ProcessInfo.processInfo.environment["CI"] == "true" {
            Issue.record("CI=true but qemu-x86_64 is missing: scripts/test installs qemu-user for this test")
        } else {
            print("CPUBaselineTests: skipped: qemu-x86_64 is not installed (scripts/test installs qemu-user)")
        }
        #endif
        return nil
    }

    /// Runs sluice under `qemu -cpu cpu`; without `SLUICE_CPU` unless `environment` sets it (the suite may
    /// itself run with the kernels pinned, as scripts/test-cpu-variants does).
    func run(cpu: String, _ arguments: [String], environment: [String: String] = ["SLUICE_CPU": ""], in scratch: Scratch,
             children: Children) async throws -> CommandResult? {
        guard let qemu = Self.qemu() else { return nil }
        let out = scratch.path("\(cpu).out"), err = scratch.path("\(cpu).err")
        let process = try children.spawn(qemu, ["-cpu", cpu, try sluiceBinary()] + arguments, stdout: out, stderr: err,
                                          environment: environment)
        guard let status = try await waitForExit(process, seconds: 120) else {
            Issue.record("sluice under qemu -cpu \(cpu) did not finish within 120 s")
            return nil
        }
        return CommandResult(status: status, stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
                             stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
    }

    @Test func aCPUBelowTheBaselineIsRefusedWithOneLineInsteadOfSIGILL() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        // Nehalem: x86-64-v2 (SSE4.2, no AVX). Haswell without AVX2: a CPU missing one v3 feature.
        for (cpu, missing) in [("Nehalem", "avx"), ("Haswell,-avx2", "avx2")] {
            guard let result = try await run(cpu: cpu, ["--version"], in: scratch, children: children) else { return }
            #expect(result.status == 1, "qemu -cpu \(cpu): status \(result.status) (SIGILL is 132): \(result.stderr)")
            #expect(result.stdout.isEmpty, "qemu -cpu \(cpu): \(result.stdout)")
            let lines = result.stderr.split(separator: "\n").filter { $0.hasPrefix("sluice:") }
            #expect(lines.count == 1 && lines[0].contains("needs an x86-64-v3 CPU") && lines[0].contains("lacks \(missing);"),
                    "qemu -cpu \(cpu): \(result.stderr)")
        }
    }

    @Test func anAVX2OnlyCPUChoosesTheAvx2KernelsAndRefusesWiderOnes() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        guard let chosen = try await run(cpu: "Haswell", ["--version"], in: scratch, children: children) else { return }
        #expect(chosen.status == 0, "\(chosen.stderr)")
        // The AVX2 integer kernels make int16 the default there too (the same bits as VNNI's).
        #expect(chosen.stdout.contains("(CPU kernels: avx2; default precision int16)"), "\(chosen.stdout)")
        guard let pinned = try await run(cpu: "Haswell", ["--version"], environment: ["SLUICE_CPU": "avx512-vnni"],
                                         in: scratch, children: children) else { return }
        #expect(pinned.stdout.contains("SLUICE_CPU=avx512-vnni: this CPU runs at most the avx2 kernels"), "\(pinned.stdout)")
    }
}
