import Foundation
import SluiceFuzzTargets

// The libFuzzer driver `sluice-fuzz`, built only by scripts/fuzz (SLUICE_FUZZ=1, with
// -sanitize=fuzzer,address). SLUICE_FUZZ_TARGET names the target; the arguments are libFuzzer's.
//
// SwiftPM links an executable's entry point as `main`, so this program has its own `main` that
// hands over to libFuzzer's driver (LLVMFuzzerRunDriver, the entry libFuzzer offers to programs
// that keep their `main`) instead of using the one in libFuzzer's runtime.

let selectedTarget: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["SLUICE_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTargets.named(name) else {
        let names = FuzzTargets.all.map(\.name).joined(separator: ", ")
        report("sluice-fuzz: SLUICE_FUZZ_TARGET=\(name.isEmpty ? "(unset)" : name) names no target; targets: \(names)")
        exit(2)
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    do {
        try selectedTarget.run(UnsafeBufferPointer(start: data, count: size))
    } catch {
        report("sluice-fuzz: \(selectedTarget.name): \(error)")
        abort()
    }
    return 0
}

/// libFuzzer's `int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*cb)(const uint8_t *, size_t))`.
/// Integer and pointer arguments pass the same way in Swift's and C's conventions on x86-64 and arm64.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

@main
enum FuzzMain {
    static func main() {
        _ = selectedTarget
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(runFuzzerDriver(&argc, &argv, fuzzOneInput))
    }
}

private func report(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
