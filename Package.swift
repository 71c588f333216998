// swift-tools-version: 6.1
import Foundation
import PackageDescription

// One build runs on every machine of a fleet: the baseline is x86-64-v2 (SSE4.2, POPCNT; every
// x86 server since 2009) and the kernels for AVX2, AVX-512 and AVX-512 VNNI are chosen at start
// (CPUKernels, `SLUICE_CPU`). Below x86-64-v3 Swift lowers each fused multiply-add of its SIMD code
// to a call into libm, so every kernel built on them also has a C version compiled for AVX2 + FMA
// (vector16.h), the same operations lane for lane, which runs from the `avx2` variant up.
// `SLUICE_TARGET_CPU` builds for one kind of machine instead (`native`, `x86-64-v3`,
// `neoverse-n1`, ...). (Swift's -target-cpu knows no "x86-64-v2": "nehalem" has the same
// instruction sets, and "haswell" those of x86-64-v3.)
let pinnedCPU = ProcessInfo.processInfo.environment["SLUICE_TARGET_CPU"]
#if arch(x86_64)
let swiftCPUNames = ["x86-64-v2": "nehalem", "x86-64-v3": "haswell", "x86-64-v4": "skylake-avx512"]
let fastMath: [SwiftSetting] = [.unsafeFlags(["-target-cpu", pinnedCPU.map { swiftCPUNames[$0] ?? $0 } ?? "nehalem"])]
let kernelCPUFlags = ["-march=\(pinnedCPU ?? "x86-64-v2")"]
// The executables refuse a CPU below the v2 baseline with one line instead of SIGILL; the check
// itself is compiled for plain x86-64. A pinned target is the builder's own choice: no check.
let startCheckFlags = ["-march=x86-64"] + (pinnedCPU == nil ? ["-DSLUICE_REQUIRE_X86_64_V2"] : [])
#else
let fastMath: [SwiftSetting] = pinnedCPU.map { [.unsafeFlags(["-target-cpu", $0])] } ?? []
let kernelCPUFlags = pinnedCPU.map { ["-mcpu=\($0)"] } ?? []
let startCheckFlags: [String] = []
#endif

let package = Package(
    name: "Sluice",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        .executable(name: "sluice-bench", targets: ["sluice-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // `sluice serve` (the OpenAI Files + Batches API): HTTP on SwiftNIO, multipart uploads.
        // No traits: neither swift-configuration nor Foundation-only extras are used.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0", traits: []),
        .package(url: "https://github.com/vapor/multipart-kit", from: "4.0.0"),
        // The remote engine's HTTP client (SwiftNIO, as the server): FoundationNetworking's spun a
        // core while answers were slow and sent requests into kept-alive connections servers had closed.
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CSQLite",
            path: "Sources/CSQLite",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        // PostgreSQL's C client, for the fleet store: a system library adds nothing to the
        // build (postgres-nio would compile SwiftNIO first; see docs/postgres-client.md).
        .systemLibrary(
            name: "CLibPQ",
            path: "Sources/CLibPQ",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(name: "SluiceCore"),
        .target(name: "SluiceQueue", dependencies: ["CSQLite", "CLibPQ", "SluiceCore"]),
        // The integer matrix kernels (Swift SIMD cannot emit `vpdpbusd`), and the float kernels
        // compiled for the instruction sets above the baseline.
        .target(name: "CSluiceKernels", cSettings: [.unsafeFlags(kernelCPUFlags + ["-O3"])]),
        .target(name: "SluiceEngine", dependencies: ["SluiceCore", "CSluiceKernels"], swiftSettings: fastMath),
        // Linked into the executables only: a constructor that refuses a CPU below the baseline.
        .target(name: "CSluiceStartCheck", cSettings: [.unsafeFlags(startCheckFlags)]),
        .target(
            name: "SluiceRemote",
            dependencies: ["SluiceCore", .product(name: "AsyncHTTPClient", package: "async-http-client")]
        ),
        .target(name: "SluiceSchedule", dependencies: ["SluiceCore", "SluiceQueue"]),
        .target(
            name: "SluiceRunner",
            dependencies: ["SluiceCore", "SluiceQueue", "SluiceEngine", "SluiceRemote"]
        ),
        .target(
            name: "SluiceServer",
            dependencies: [
                "SluiceCore", "SluiceQueue", "SluiceRunner",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "MultipartKit", package: "multipart-kit"),
            ]
        ),
        .executableTarget(
            name: "sluice",
            dependencies: [
                "CSluiceStartCheck",
                "SluiceRunner",
                "SluiceSchedule",
                "SluiceServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "sluice-bench",
            dependencies: [
                "CSluiceStartCheck",
                "SluiceRunner",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: fastMath
        ),
        // Helpers several test targets share (a seeded generator, a loopback connection, helper commands).
        .target(name: "SluiceTestSupport", dependencies: ["SluiceCore"], path: "Tests/SluiceTestSupport"),
        .testTarget(name: "SluiceCoreTests", dependencies: ["SluiceCore"]),
        .testTarget(name: "SluiceQueueTests", dependencies: ["SluiceQueue"]),
        .testTarget(
            name: "SluiceEngineTests",
            dependencies: ["SluiceEngine", "SluiceTestSupport"],
            resources: [.copy("Fixtures")],
            swiftSettings: fastMath
        ),
        .testTarget(name: "SluiceRemoteTests", dependencies: ["SluiceRemote", "SluiceTestSupport"]),
        .testTarget(name: "SluiceRunnerTests", dependencies: ["SluiceRunner", "SluiceTestSupport"]),
        .testTarget(name: "SluiceScheduleTests", dependencies: ["SluiceSchedule"], resources: [.copy("Fixtures")]),
        .testTarget(name: "SluiceServerTests", dependencies: ["SluiceServer", "SluiceQueue", "SluiceTestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: ["SluiceCore", "SluiceTestSupport"]),
        // The fuzz targets (one file each), and a test that runs their committed corpus and past
        // crashes through them in the normal build. scripts/fuzz builds the libFuzzer driver.
        .target(
            name: "SluiceFuzzTargets",
            dependencies: ["SluiceCore", "SluiceQueue", "SluiceEngine", "SluiceRemote", "SluiceSchedule"],
            path: "Fuzz/Targets"
        ),
        .testTarget(name: "SluiceFuzzTests", dependencies: ["SluiceFuzzTargets"]),
    ]
)

// The libFuzzer driver: only with SLUICE_FUZZ set (scripts/fuzz, its own scratch path and
// sanitizer flags), so the normal build never links a second `main`.
if ProcessInfo.processInfo.environment["SLUICE_FUZZ"] != nil {
    package.targets.append(.executableTarget(name: "sluice-fuzz", dependencies: ["SluiceFuzzTargets"], path: "Fuzz/Driver"))
    package.products.append(.executable(name: "sluice-fuzz", targets: ["sluice-fuzz"]))
}
