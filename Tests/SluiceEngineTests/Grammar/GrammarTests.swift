import SluiceCore
import Testing

@testable import SluiceEngine

/// The grammar compilers and recognizer, byte by byte (no model).
@Suite(.ownThread)
struct GrammarTests {
    func machine(_ schema: String) throws -> GrammarMachine {
        GrammarMachine(grammar: try JSONGrammar.schema(try JSON.parse(schema)))
    }

    /// Whether `text` is a complete match.
    func accepts(_ machine: GrammarMachine, _ text: String) -> Bool {
        let state = machine.advance(machine.initialState, bytes: Array(text.utf8))
        return state != GrammarMachine.dead && machine.isAccepting(state)
    }

    /// Whether `text` can still be extended to a match.
    func isPrefix(_ machine: GrammarMachine, _ text: String) -> Bool {
        machine.advance(machine.initialState, bytes: Array(text.utf8)) != GrammarMachine.dead
    }

    @Test func objectWithRequiredAndOptionalPropertiesInOrder() throws {
        let m = try machine("""
            {"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"tags":{"type":"array","items":{"type":"string"},"maxItems":2}},
             "required":["name"],"additionalProperties":false}
            """)
        for valid in [#"{"name":"Ann"}"#, #"{"name":"A\"b\u00e9","age":-12}"#, #"{ "name" : "x" , "tags" : [ "a", "b" ] }"#,
                      "{\n  \"name\": \"ü€😀\",\n  \"age\": 0\n}", #"{"name":"","tags":[]}"#] {
            #expect(accepts(m, valid), "\(valid)")
        }
        for invalid in [#"{}"#, #"{"age":3}"#, #"{"name":"a","name":"b"}"#, #"{"age":1,"name":"a"}"#, #"{"name":"a","age":01}"#,
                        #"{"name":"a","tags":["a","b","c"]}"#, #"{"name":"a",}"#, "{\"name\":\"a\nb\"}", #"{"name":"a"} "#,
                        #"{"name":"a","extra":1}"#] {
            #expect(!accepts(m, invalid), "\(invalid)")
        }
        #expect(isPrefix(m, #"{"name":"Ann"#))
        #expect(!isPrefix(m, #"{"nam3"#))
        // Complete and nothing may follow: generation ends here.
        let done = m.advance(m.initialState, bytes: Array(#"{"name":"x"}"#.utf8))
        #expect(m.isAccepting(done) && !m.canContinue(done))
    }

    @Test func enumsConstAnyOfNullableAndTypeLists() throws {
        let m = try machine("""
            {"type":"object","properties":{
              "color":{"enum":["red","green",3,null]},
              "kind":{"const":"fixed"},
              "value":{"anyOf":[{"type":"number"},{"type":"boolean"}]},
              "note":{"type":["string","null"]},
              "n":{"type":"integer","nullable":true}},
             "required":["color","kind","value","note","n"]}
            """)
        #expect(accepts(m, #"{"color":"red","kind":"fixed","value":1.5e3,"note":null,"n":null}"#))
        #expect(accepts(m, #"{"color":3,"kind":"fixed","value":true,"note":"hi","n":7}"#))
        #expect(!accepts(m, #"{"color":"blue","kind":"fixed","value":1,"note":null,"n":1}"#))
        #expect(!accepts(m, #"{"color":null,"kind":"other","value":1,"note":null,"n":1}"#))
        #expect(!accepts(m, #"{"color":null,"kind":"fixed","value":"1","note":null,"n":1}"#))
        #expect(!accepts(m, #"{"color":null,"kind":"fixed","value":1,"note":null,"n":1.5}"#))
    }

    @Test func recursiveDefinitionsAndArrayBounds() throws {
        let m = try machine("""
            {"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"children":{"type":"array","items":{"$ref":"#/$defs/node"}}},
             "required":["v","children"],"additionalProperties":false}},
             "type":"object","properties":{"root":{"$ref":"#/$defs/node"},"pair":{"type":"array","items":{"type":"boolean"},"minItems":2,"maxItems":3}},
             "required":["root","pair"],"additionalProperties":false}
            """)
        #expect(accepts(m, #"{"root":{"v":1,"children":[{"v":2,"children":[{"v":3,"children":[]}]}]},"pair":[true,false]}"#))
        #expect(accepts(m, #"{"root":{"v":1,"children":[]},"pair":[true,false,true]}"#))
        #expect(!accepts(m, #"{"root":{"v":1,"children":[]},"pair":[true]}"#))
        #expect(!accepts(m, #"{"root":{"v":1,"children":[]},"pair":[true,true,true,true]}"#))
        #expect(!accepts(m, #"{"root":{"v":1,"children":[{"v":2}]},"pair":[true,true]}"#))
        let selfReferencing = try machine(##"{"type":"object","properties":{"next":{"anyOf":[{"$ref":"#"},{"type":"null"}]}},"required":["next"]}"##)
        #expect(accepts(selfReferencing, #"{"next":{"next":{"next":null}}}"#))
    }

    @Test func patternsFormatsAndLengths() throws {
        let m = try machine("""
            {"type":"object","properties":{"zip":{"type":"string","pattern":"^[0-9]{5}(-[0-9]{4})?$"},"when":{"type":"string","format":"date"},
             "id":{"type":"string","format":"uuid"},"code":{"type":"string","minLength":2,"maxLength":3},"q":{"type":"string","pattern":"a\\"b|c\\\\d"}},
             "required":["zip","when","id","code","q"]}
            """)
        #expect(accepts(m, #"{"zip":"12345-6789","when":"2024-02-28","id":"123e4567-e89b-12d3-a456-426614174000","code":"ab","q":"a\"b"}"#))
        #expect(accepts(m, #"{"zip":"12345","when":"1999-12-31","id":"123e4567-e89b-12d3-a456-426614174000","code":"abc","q":"c7"}"#))
        #expect(!accepts(m, #"{"zip":"1234","when":"2024-02-28","id":"123e4567-e89b-12d3-a456-426614174000","code":"ab","q":"c7"}"#))
        #expect(!accepts(m, #"{"zip":"12345","when":"2024-13-01","id":"123e4567-e89b-12d3-a456-426614174000","code":"ab","q":"c7"}"#))
        #expect(!accepts(m, #"{"zip":"12345","when":"2024-01-01","id":"123e4567-e89b-12d3-a456-426614174000","code":"abcd","q":"c7"}"#))
        for date in ["0000-01-01", "2023-02-29", "2023-04-31", "2023-00-10"] {
            #expect(!accepts(m, #"{"zip":"12345","when":""# + date + #"","id":"123e4567-e89b-12d3-a456-426614174000","code":"ab","q":"c7"}"#), "\(date)")
        }
    }

    @Test func anyObjectAndRegexAndChoice() throws {
        let object = GrammarMachine(grammar: JSONGrammar.anyObject())
        #expect(accepts(object, #"{"a":[1,{"b":null},"x",-0.5e-3,true],"c":{}}"#))
        #expect(accepts(object, "{}"))
        #expect(!accepts(object, "[]") && !accepts(object, #"{"a":}"#) && !accepts(object, #"{"a":tru}"#))
        let regex = GrammarMachine(grammar: try JSONGrammar.regex(#"(yes|no)\.\d+"#))
        #expect(accepts(regex, "yes.42") && !accepts(regex, "yes42") && !accepts(regex, "maybe.1"))
        let choice = GrammarMachine(grammar: JSONGrammar.choice(["Positive", "Negative"]))
        #expect(accepts(choice, "Negative") && !accepts(choice, "Neg") && isPrefix(choice, "Neg"))
    }

    @Test(arguments: [
        (#"{"type":"integer","minimum":1,"multipleOf":2}"#, "'multipleOf' at #: a grammar does not enforce divisibility"),
        (#"{"type":"object","properties":{"a":{"allOf":[]}}}"#, "'allOf' at #/properties/a"),
        (#"{"type":"array","uniqueItems":true}"#, "'uniqueItems' at #: a grammar cannot rule out repeated items"),
        (#"{"type":"integer","minimum":"1"}"#, "'minimum' at # must be a number"),
        (#"{"type":"integer","exclusiveMaximum":true}"#, "needs 'maximum'"),
        (#"{"type":"integer","minimum":10,"maximum":2}"#, "no integer lies within the bounds at #"),
        (#"{"type":"array","prefixItems":[{"type":"integer"}],"items":false,"minItems":2}"#, "more items than 'prefixItems'"),
        (#"{"type":"array","prefixItems":{"type":"integer"}}"#, "'prefixItems' at # must be an array"),
        (#"{"type":"object","patternProperties":{}}"#, "'patternProperties'"),
        (#"{"type":"string","format":"ipv6"}"#, "format \"ipv6\""),
        (#"{"type":"string","pattern":"\\bword"}"#, "word boundaries"),
        (#"{"type":"object","properties":{},"required":["x"]}"#, "names 'x'"),
        (#"{"$ref":"http://example.com/s.json"}"#, "is not supported"),
        (#"{"type":"wat"}"#, "unknown type 'wat'"),
        (#"false"#, "no value matches"),
    ])
    func unsupportedSchemasAreNamed(schema: String, fragment: String) throws {
        do {
            _ = try JSONGrammar.schema(try JSON.parse(schema))
            Issue.record("accepted \(schema)")
        } catch let error as JSONGrammar.Failure {
            #expect(error.message.contains(fragment), "\(error.message)")
        }
    }

    @Test func tuplesWithPrefixItems() throws {
        // A closed pair: exactly [string, integer >= 0], each position its own schema.
        let pair = try machine(#"{"type":"array","prefixItems":[{"type":"string","maxLength":3},{"type":"integer","minimum":0}],"items":false,"minItems":2}"#)
        #expect(accepts(pair, #"["ab",7]"#) && accepts(pair, #"[ "abc" , 0 ]"#))
        for invalid in [#"[7,"ab"]"#, #"["ab"]"#, #"["ab",7,8]"#, #"["abcd",1]"#, #"["a",-1]"#, "[]"] { #expect(!accepts(pair, invalid), "\(invalid)") }
        // Without minItems a tuple may stop early (JSON Schema: prefixItems constrain only the items present).
        let open = try machine(#"{"type":"array","prefixItems":[{"type":"boolean"},{"type":"null"}],"items":{"type":"integer"},"maxItems":4}"#)
        for valid in ["[]", "[true]", "[false,null]", "[true,null,1]", "[true,null,1,2]"] { #expect(accepts(open, valid), "\(valid)") }
        for invalid in ["[null]", "[true,1]", "[true,null,1,2,3]", #"[true,null,"x"]"#] { #expect(!accepts(open, invalid), "\(invalid)") }
        // items absent: the rest are any values; maxItems below the prefix cuts the tuple.
        let rest = try machine(#"{"prefixItems":[{"const":1}],"minItems":1}"#)
        #expect(accepts(rest, #"[1,"x",{"a":[]}]"#) && !accepts(rest, "[2]") && !accepts(rest, "[]"))
        let cut = try machine(#"{"type":"array","prefixItems":[{"type":"integer"},{"type":"integer"},{"type":"integer"}],"maxItems":2}"#)
        #expect(accepts(cut, "[1,2]") && !accepts(cut, "[1,2,3]"))
        let none = try machine(#"{"type":"array","items":false}"#)
        #expect(accepts(none, "[]") && !accepts(none, "[1]"))
        // uniqueItems: false asks for nothing and is accepted.
        #expect(accepts(try machine(#"{"type":"array","items":{"type":"integer"},"uniqueItems":false}"#), "[1,1]"))
    }

    /// Right recursion (repetition) keeps the set of states finite: a long string revisits one state.
    @Test func repetitionRevisitsStates() throws {
        let m = try machine(#"{"type":"string"}"#)
        let a = m.advance(m.initialState, bytes: Array(#""abc"#.utf8))
        let b = m.advance(a, bytes: Array(String(repeating: "xyz", count: 200).utf8))
        #expect(a == b)
    }
}
