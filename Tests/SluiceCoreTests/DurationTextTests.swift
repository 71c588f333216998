import SluiceCore
import Testing

struct DurationTextTests {
    @Test(arguments: [
        ("90", 90.0), ("0.5", 0.5), ("90s", 90), ("1m30s", 90), ("2h", 7200), ("1h30m", 5400), ("7d", 604_800),
        ("1w", 604_800), ("250ms", 0.25), ("1.5h", 5400), (" 15m ", 900), ("0", 0), ("0s", 0), ("2h0m5s", 7205),
    ])
    func readsWhatPeopleWrite(_ text: String, _ seconds: Double) throws {
        #expect(try DurationText.seconds(text) == seconds)
    }

    @Test(arguments: [
        "", " ", "s", "1x", "-5", "-5s", "1e3", "1.2.3s", ".s", "nan", "inf", "1 h", "1h 30m", "90s5", "5s!",
        "٣s", "１s", "0x10", "1_000", "99999999999d", "36526d", String(repeating: "9", count: 400) + "s",
    ])
    func refusesAnythingElse(_ text: String) {
        #expect(throws: DurationText.ParseError.self) { try DurationText.seconds(text) }
    }

    @Test func theLimitIsAHundredYears() throws {
        #expect(try DurationText.seconds("36525d") == DurationText.maximumSeconds)
        let error = #expect(throws: DurationText.ParseError.self) { try DurationText.seconds("36525d1s") }
        #expect(error?.description.contains("longer than the maximum") == true)
        #expect(error?.isTooLong == true)
        #expect((#expect(throws: DurationText.ParseError.self) { try DurationText.seconds("1x") })?.isTooLong == false)
    }

    @Test func specsRequireAUnit() throws {
        #expect(try DurationText.seconds("90s", plainNumbers: false) == 90)
        let error = #expect(throws: DurationText.ParseError.self) { try DurationText.seconds("90", plainNumbers: false) }
        #expect(error?.description.contains("unit is missing") == true)
    }
}
