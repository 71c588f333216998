import Foundation
import Testing

/// Issue 19: one x86-64 binary for a mixed fleet. The binary runs under qemu-user emulating older
/// CPUs (qemu's cpuid reports the model's instruction sets): below the build's x86-64-v2 baseline it
/// refuses with one line before any SSE4 instruction runs; on a v2 CPU (Nehalem) it picks the
/// `portable` kernels and computes the same tokens as every other variant; on an AVX2-only CPU it
/// picks the `avx2` kernels, and with them `int16`, by itself. (qemu would also execute AVX-512 it
/// does not advertise, so this proves the choice, not the absence of wider instructions; the
/// kernels' agreement is AttentionTests', IntegerMatMulTests' and scripts/test-cpu-variants' business.)
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
        // Penryn: SSE4.1 without SSE4.2 (x86-64-v2 less one); Conroe: SSSE3 without SSE4.1.
        for (cpu, missing) in [("Penryn", "sse4.2"), ("Conroe", "sse4.1")] {
            guard let result = try await run(cpu: cpu, ["--version"], in: scratch, children: children) else { return }
            #expect(result.status == 1, "qemu -cpu \(cpu): status \(result.status) (SIGILL is 132): \(result.stderr)")
            #expect(result.stdout.isEmpty, "qemu -cpu \(cpu): \(result.stdout)")
            let lines = result.stderr.split(separator: "\n").filter { $0.hasPrefix("sluice:") }
            #expect(lines.count == 1 && lines[0].contains("needs an x86-64-v2 CPU") && lines[0].contains("lacks \(missing);"),
                    "qemu -cpu \(cpu): \(result.stderr)")
        }
    }

    /// A Nehalem (x86-64-v2: no AVX, no FMA) runs the portable kernels, whose fused multiply-adds are
    /// libm's, and generates the tokens this machine's own kernels give at `f32`: greedy and
    /// sampled, on a quantized Llama (packed float products, SiLU) and a half-float Gemma 3 (GELU,
    /// sliding-window attention).
    @Test func aV2CPURunsThePortableKernelsToTheSameTokens() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        guard let version = try await run(cpu: "Nehalem", ["--version"], in: scratch, children: children) else { return }
        #expect(version.status == 0, "\(version.stderr)")
        #expect(version.stdout.contains("(CPU kernels: portable; default precision f32)"), "\(version.stdout)")
        let fixtures = repositoryRoot.appendingPathComponent("Tests/SluiceEngineTests/Fixtures/tiny")
        for model in ["llama-spm-quant.gguf", "gemma3-swa-f16.gguf"] {
            for sampling in [["--temperature", "0"], ["--temperature", "0.9", "--seed", "7"]] {
                let arguments = ["generate", "The quick brown fox", "--model", fixtures.appendingPathComponent(model).path,
                                 "--max-tokens", "12", "--threads", "2", "--precision", "f32"] + sampling
                guard let emulated = try await run(cpu: "Nehalem", arguments, in: scratch, children: children) else { return }
                #expect(emulated.status == 0, "\(model) \(sampling) under Nehalem: \(emulated.stderr)")
                for variant in ["portable", ""] {
                    let native = try await runNative(arguments, environment: ["SLUICE_CPU": variant], in: scratch, children: children)
                    #expect(native.status == 0, "\(model) \(sampling) SLUICE_CPU=\(variant): \(native.stderr)")
                    #expect(!native.stdout.isEmpty && emulated.stdout == native.stdout,
                            "\(model) \(sampling): Nehalem gave \(emulated.stdout.debugDescription), SLUICE_CPU=\(variant) \(native.stdout.debugDescription)")
                }
            }
        }
    }

    /// Runs sluice on this machine itself.
    func runNative(_ arguments: [String], environment: [String: String], in scratch: Scratch, children: Children) async throws -> CommandResult {
        let out = scratch.path("native.out"), err = scratch.path("native.err")
        let process = try children.spawn(try sluiceBinary(), arguments, stdout: out, stderr: err, environment: environment)
        let status = try await waitForExit(process, seconds: 120)
        #expect(status != nil, "sluice \(arguments) did not finish within 120 s")
        return CommandResult(status: status ?? -1, stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
                             stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
    }

    @Test func anAVX2OnlyCPUChoosesTheAvx2KernelsAndRefusesWiderOnes() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        guard let chosen = try await run(cpu: "Haswell", ["--version"], in: scratch, children: children) else { return }
        #expect(chosen.status == 0, "\(chosen.stderr)")
        // The AVX2 integer kernels make int16 the default there too (the same bits as VNNI's).
        #expect(chosen.stdout.contains("(CPU kernels: avx2; default precision int16, int8 from 500M block weights)"), "\(chosen.stdout)")
        guard let pinned = try await run(cpu: "Haswell", ["--version"], environment: ["SLUICE_CPU": "avx512-vnni"],
                                         in: scratch, children: children) else { return }
        #expect(pinned.stdout.contains("SLUICE_CPU=avx512-vnni: this CPU runs at most the avx2 kernels"), "\(pinned.stdout)")
    }
}
