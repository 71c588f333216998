import Testing

@testable import SluiceCore

struct JSONTests {
    @Test func roundTripKeepsKeyOrderAndNumberText() throws {
        let text = #"{"z":1,"a":[true,false,null,-0.50,1e400,12345678901234567890],"m":{"k":"v"},"s":"\u00e9\n\"\\\/"}"#
        let value = try JSON.parse(text)
        #expect(value.objectValue?.map(\.key) == ["z", "a", "m", "s"])
        #expect(value["a"]?.arrayValue?[3] == .number("-0.50"))
        #expect(value["a"]?.arrayValue?[5] == .number("12345678901234567890"))
        #expect(value["s"]?.stringValue == "é\n\"\\/")
        #expect(value.serialized == #"{"z":1,"a":[true,false,null,-0.50,1e400,12345678901234567890],"m":{"k":"v"},"s":"é\n\"\\/"}"#)
        #expect(try JSON.parse(value.serialized) == value)
    }

    @Test func accessorsAndBuilders() throws {
        let value = try JSON.parse(#"{"n":3,"f":2.5,"big":1e30,"dup":1,"dup":2}"#)
        #expect(value["n"]?.intValue == 3 && value["f"]?.intValue == nil && value["f"]?.doubleValue == 2.5)
        #expect(value["big"]?.intValue == nil)
        #expect(value["dup"]?.intValue == 2)
        #expect(JSON.double(3.0) == .number("3") && JSON.double(0.1) == .number("0.1") && JSON.double(.nan) == .null)
        #expect(value.setting("n", to: .int(4))["n"]?.intValue == 4)
        #expect(JSON.string("\u{1}").serialized == #""\u0001""#)
    }

    @Test func surrogatePairsDecode() throws {
        #expect(try JSON.parse(#""\ud83d\ude00""#) == .string("😀"))
    }

    @Test(arguments: [
        ("", "unexpected end"), ("{", "end of text"), ("[1,]", "unexpected character"), ("{\"a\" 1}", "expected ':'"),
        ("01", "may not start with 0"), ("1.", "fraction"), ("1e", "exponent"), ("tru", "unexpected"),
        ("\"abc", "unterminated"), ("\"\\x\"", "invalid escape"), ("\"\\ud800\"", "surrogate"), ("1 2", "after the value"),
        ("\"a\u{1}\"", "control character"), ("{\"a\":1,}", "expected a string key"),
    ])
    func invalidTextIsExplained(text: String, fragment: String) {
        do {
            _ = try JSON.parse(text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.description.contains(fragment), "\(text): \(error)")
        }
    }

    @Test func invalidUTF8AndDeepNestingAreRejected() {
        #expect(throws: JSONParseError.self) { try JSON.parse([0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSON.parse([0x22, 0xED, 0xA0, 0x80, 0x22]) }
        let deep = String(repeating: "[", count: JSON.maximumDepth + 1) + String(repeating: "]", count: JSON.maximumDepth + 1)
        #expect(throws: JSONParseError.self) { try JSON.parse(deep) }
        let fine = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect((try? JSON.parse(fine)) != nil)
    }
}
