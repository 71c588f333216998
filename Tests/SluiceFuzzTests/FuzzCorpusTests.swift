import Foundation
import Testing
import SluiceFuzzTargets

/// Every committed seed (Fuzz/corpus/TARGET) and every input a fuzzer once crashed on
/// (Fuzz/crashes/TARGET) through its target, in the normal build: a fixed crash that comes
/// back fails here, without the fuzzer.
struct FuzzCorpusTests {
    static let fuzzFolder = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz")

    static func inputs(_ kind: String, _ target: String) -> [URL] {
        let folder = fuzzFolder.appendingPathComponent(kind).appendingPathComponent(target)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().map { folder.appendingPathComponent($0) }
    }

    @Test(arguments: FuzzTargets.all.map(\.name))
    func seedCorpusRunsClean(_ name: String) throws {
        let target = try #require(FuzzTargets.named(name))
        let seeds = Self.inputs("corpus", name)
        #expect(seeds.count >= 3, "Fuzz/corpus/\(name) should hold seeds")
        for seed in seeds {
            #expect(throws: Never.self, "\(name): \(seed.lastPathComponent)") { try target.run(Array(try Data(contentsOf: seed))) }
        }
    }

    @Test(arguments: FuzzTargets.all.map(\.name))
    func pastCrashesStayFixed(_ name: String) throws {
        let target = try #require(FuzzTargets.named(name))
        for input in Self.inputs("crashes", name) {
            #expect(throws: Never.self, "\(name): \(input.lastPathComponent)") { try target.run(Array(try Data(contentsOf: input))) }
        }
    }

    @Test func everyTargetHasACorpusFolder() {
        let folders = (try? FileManager.default.contentsOfDirectory(atPath: Self.fuzzFolder.appendingPathComponent("corpus").path)) ?? []
        #expect(Set(folders.filter { !$0.hasPrefix(".") }) == Set(FuzzTargets.all.map(\.name)))
    }
}
