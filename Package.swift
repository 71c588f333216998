// swift-tools-version: 6.1
import Foundation
import PackageDescription

// Numeric code needs the CPU's vector units: without a target CPU, Swift SIMD
// lowers to SSE and scalar `fmaf` calls. `SLUICE_TARGET_CPU` overrides the
// default (`native`) for builds meant to run on another machine.
let targetCPU = ProcessInfo.processInfo.environment["SLUICE_TARGET_CPU"] ?? "native"
let fastMath: [SwiftSetting] = [.unsafeFlags(["-target-cpu", targetCPU])]

let package = Package(
    name: "Sluice",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        .executable(name: "sluice-bench", targets: ["sluice-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
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
        // The int8 (AVX-512 VNNI) matrix kernels: Swift SIMD cannot emit `vpdpbusd`.
        .target(name: "CSluiceKernels", cSettings: [.unsafeFlags(["-march=\(targetCPU)", "-O3"])]),
        .target(name: "SluiceEngine", dependencies: ["SluiceCore", "CSluiceKernels"], swiftSettings: fastMath),
        .target(name: "SluiceRemote", dependencies: ["SluiceCore"]),
        .target(name: "SluiceSchedule", dependencies: ["SluiceCore", "SluiceQueue"]),
        .target(
            name: "SluiceRunner",
            dependencies: ["SluiceCore", "SluiceQueue", "SluiceEngine", "SluiceRemote"]
        ),
        .executableTarget(
            name: "sluice",
            dependencies: [
                "SluiceRunner",
                "SluiceSchedule",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "sluice-bench",
            dependencies: [
                "SluiceRunner",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: fastMath
        ),
        // Helpers several test targets share (a seeded generator, a loopback connection).
        .target(name: "SluiceTestSupport", path: "Tests/SluiceTestSupport"),
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
