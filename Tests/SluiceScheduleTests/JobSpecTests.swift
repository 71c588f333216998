import Foundation
import SluiceCore
import Testing
@testable import SluiceSchedule

private let base = "/srv/jobs/nightly.toml"

private func parse(_ text: String) throws(SpecError) -> JobSpec {
    try JobSpec.parse(text, path: base, displayName: "nightly.toml")
}

private func specError(_ text: String) -> String {
    do {
        _ = try parse(text)
        return "accepted"
    } catch {
        return error.description
    }
}

private let minimal = """
    name = "nightly"
    [input]
    path = "inbox/"
    [output]
    folder = "out"
    """

@Test func fullSpecParses() throws {
    let spec = try parse("""
        # comment
        name = "nightly"   # trailing comment
        schedule = "30 1 * * mon-fri"
        deadline = "1h30m"
        priority = -5
        retention = "30d"
        on_overlap = "join"
        grace = 10
        database = "../db/sluice.db"

        [input]
        path = "inbox/*.batch.jsonl"
        settle = "0s"

        [engine]
        kind = "openai"
        base_url = "http://127.0.0.1:8080"
        model = 'gemma-3-270m'
        concurrency = 1_000
        precision = "int8"

        [defaults]
        temperature = 0.7
        max_tokens = 64
        stop = ["\\n\\n", "END"]
        response_format = { type = "json_object" }
        logit_bias.50256 = -100

        [output]
        folder = "/data/results"
        name = "{date}-{stem}.jsonl"
        errors = "{stem}.errors.jsonl"
        """)
    #expect(spec.name == "nightly")
    #expect(spec.schedule?.text == "30 1 * * mon-fri")
    #expect(spec.deadline == .after(5400))
    #expect(spec.priority == -5)
    #expect(spec.retentionSeconds == Double(30 * 86_400))
    #expect(spec.onOverlap == .join)
    #expect(spec.graceSeconds == 10)
    #expect(spec.database == "/srv/db/sluice.db")
    #expect(spec.input.path == "/srv/jobs/inbox")
    #expect(spec.input.kind == .glob("*.batch.jsonl"))
    #expect(spec.input.settleSeconds == 0)
    #expect(spec.engine.kind == "openai" && spec.engine.baseURL == "http://127.0.0.1:8080")
    #expect(spec.engine.model == "gemma-3-270m" && spec.engine.concurrency == 1000)
    #expect(spec.engine.precision == "int8")
    #expect(spec.bodyDefaults?.serialized
            == #"{"temperature":0.7,"max_tokens":64,"stop":["\n\n","END"],"response_format":{"type":"json_object"},"logit_bias":{"50256":-100}}"#)
    #expect(spec.output.folder == "/data/results")
    #expect(spec.output.namePattern == "{date}-{stem}.jsonl" && spec.output.errorsPattern == "{stem}.errors.jsonl")
}

@Test func defaultsOfAMinimalSpec() throws {
    let spec = try parse(minimal)
    #expect(spec.input.kind == .folder && spec.input.path == "/srv/jobs/inbox" && spec.input.settleSeconds == 10)
    #expect(spec.engine.kind == "builtin" && spec.engine.precision == nil)
    #expect(spec.schedule == nil && spec.deadline == nil && spec.retentionSeconds == nil)
    #expect(spec.onOverlap == .exit && spec.priority == 0 && spec.graceSeconds == 30)
    #expect(spec.output.namePattern == "{stem}.results.jsonl" && spec.output.errorsPattern == nil)
    #expect(try parse(minimal.replacingOccurrences(of: "inbox/", with: "one.jsonl")).input.kind == .file)
    #expect(try parse("deadline = \"06:30\"\n" + minimal).deadline == .at(hour: 6, minute: 30))
    #expect(try parse("retention = \"forever\"\n" + minimal).retentionSeconds == nil)
    #expect(try parse(minimal + "\n[engine]\nprecision = \"auto\"").engine.precision == "auto")
}

@Test func exampleSpecsParse() throws {
    let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("jobs/examples")
    let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".toml") }
    #expect(names.count >= 2)
    for name in names {
        let spec = try JobSpec.load(path: folder.appendingPathComponent(name).path)
        #expect(spec.schedule != nil, "\(name)")
    }
}

@Test func badSpecsNameTheFieldAndLine() {
    let cases: [(String, String)] = [
        ("[input]\npath = \"x\"\n[output]\nfolder = \"o\"", "nightly.toml:1: name: is required"),
        ("name = 5\n" + minimal.dropFirst(17), "nightly.toml:1: name: must be a string, not an integer"),
        ("name = \"a/b\"\n[input]\npath = \"x\"\n[output]\nfolder = \"o\"", "nightly.toml:1: name: \"a/b\" may not contain"),
        (minimal + "\nschedule = \"1 2 3\"", "nightly.toml:6: output.schedule: unknown field"),
        ("schedule = \"61 * * * *\"\n" + minimal, "nightly.toml:1: schedule: cron expression \"61 * * * *\": minute: 61 is out of range 0-59"),
        ("deadline = \"soon\"\n" + minimal, "nightly.toml:1: deadline: \"soon\" is not a duration"),
        ("deadline = \"25:00\"\n" + minimal, "nightly.toml:1: deadline: \"25:00\" is not a time of day"),
        ("on_overlap = \"wait\"\n" + minimal, "nightly.toml:1: on_overlap: must be \"exit\" or \"join\""),
        ("priorty = 3\n" + minimal, "nightly.toml:1: priorty: unknown field (allowed here: name, database, schedule, deadline, priority, retention, on_overlap, grace, input, engine, defaults, output); did you mean priority?"),
        ("name = \"n\"\n[output]\nfolder = \"o\"", "nightly.toml:1: input: is required"),
        (minimal + "\n[engine]\nkind = \"vllm\"", "nightly.toml:7: engine.kind: must be \"builtin\" or \"openai\""),
        (minimal + "\n[engine]\nkind = \"openai\"", "nightly.toml:6: engine.base_url: is required when kind = \"openai\""),
        (minimal + "\n[engine]\nkind = \"openai\"\nbase_url = \"ftp://x\"", "nightly.toml:8: engine.base_url: \"ftp://x\" is not an http"),
        (minimal + "\n[engine]\nconcurrency = 0", "nightly.toml:7: engine.concurrency: must be between 1 and 100000 (got 0)"),
        (minimal + "\n[engine]\nprecision = \"fp8\"", "nightly.toml:7: engine.precision: must be one of \"auto\", \"f32\", \"int16\", \"int8\" (got \"fp8\")"),
        (minimal + "\nname = \"{bad}\"", "nightly.toml:6: output.name: unknown placeholder {bad}"),
        (minimal + "\nname = \"a/b.jsonl\"", "nightly.toml:6: output.name: is a file name and may not contain \"/\""),
        (minimal + "\n[defaults]\nmax_tokens = 1\nmax_tokens = 2", "nightly.toml:8: defaults.max_tokens is set twice (first on line 7)"),
        (minimal + "\n[input]\nsettle = 1", "nightly.toml:6: table [input] is defined twice (first on line 2)"),
        ("name = \"n\"\n[input]\npath = \"inbox/*.jsonl\"\n[output]\nfolder = \"o\"", "accepted"),
        ("name = \"n\"\n[input]\npath = \"in*/x.jsonl\"\n[output]\nfolder = \"o\"", "nightly.toml:3: input.path: wildcards are supported in the file name only"),
        ("name = \"unterminated\n", "nightly.toml:1: unterminated string"),
        ("name = \"\"\"x\"\"\"\n", "nightly.toml:1: name: multi-line strings are not supported"),
        ("when = 2026-11-27\n", "nightly.toml:1: when: dates and times are not supported"),
        ("name = nightly\n", "nightly.toml:1: name: nightly is not a value (strings need quotes: \"nightly\")"),
        ("name = \"n\" extra\n", "nightly.toml:1: unexpected \"e\" after the value"),
        ("[[input]]\n", "nightly.toml:1: arrays of tables ([[…]]) are not supported"),
        ("name = \"n\"\nname.x = 1\n", "nightly.toml:2: name is already a string (line 1), not a table"),
        ("x = [1, 2\n", "nightly.toml:2: x: expected , or ] in the array, found end of file"),
        ("x = \"\\q\"\n", "nightly.toml:1: unknown escape \\q in a string"),
        (minimal + "\n[output]", "nightly.toml:6: table [output] is defined twice"),
    ]
    for (text, expected) in cases {
        let message = specError(text)
        #expect(message.hasPrefix(expected), "spec:\n\(text)\nexpected: \(expected)\ngot: \(message)")
    }
}

@Test func outputNames() {
    let created = Date(timeIntervalSince1970: 1_795_000_000) // 2026-11-18 in UTC
    let utc = TimeZone(identifier: "UTC")!
    #expect(OutputNaming.fileName("{date}-{stem}.{sha8}.{job}-{spec}-{file}", spec: "n", inputFile: "/in/a.b.jsonl", job: 7,
                                  sha256: "0123456789abcdef", created: created, timeZone: utc)
            == "2026-11-18-a.b.01234567.7-n-a.b.jsonl")
    #expect(OutputNaming.fileName("{stem}.out", spec: "n", inputFile: "x.txt", job: 1, sha256: "", created: created, timeZone: utc) == "x.out")
}

@Test func durations() {
    #expect(SpecReader.parseDuration("90s") == 90)
    #expect(SpecReader.parseDuration("1h30m") == 5400)
    #expect(SpecReader.parseDuration("2d") == 172_800)
    #expect(SpecReader.parseDuration("1.5h") == 5400)
    #expect(SpecReader.parseDuration("10") == nil)
    #expect(SpecReader.parseDuration("h") == nil)
    #expect(SpecReader.parseDuration("5 m") == nil)
}
