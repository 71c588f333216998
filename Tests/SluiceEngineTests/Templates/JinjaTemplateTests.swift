import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// The interpreter's semantics one construct at a time, and its refusals by name.
@Suite(.ownThread)
struct JinjaTemplateTests {
    func render(_ source: String, _ variables: [String: JSON] = [:]) throws -> String {
        try JinjaTemplate(source).render(variables)
    }

    func failure(_ source: String, _ variables: [String: JSON] = [:]) -> JinjaError? {
        do {
            _ = try render(source, variables)
            return nil
        } catch {
            return error as? JinjaError
        }
    }

    @Test func expressions() throws {
        #expect(try render("{{ 1 + 2 * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 7 / 2 }}|{{ 2 ** 10 }}") == "7|3|-4|2|3.5|1024")
        #expect(try render("{{ 'a' ~ 1 ~ none }}|{{ [1, 'x', none, true] }}|{{ {'k': 1.5} }}") == "a1None|[1, 'x', None, True]|{'k': 1.5}")
        #expect(try render("{{ 'yes' if 1 < 2 < 3 else 'no' }}{{ 'x' if false }}") == "yes")
        #expect(try render("{{ 'ell' in 'hello' }}{{ 2 not in [1, 2] }}{{ 'k' in {'k': 0} }}") == "TrueFalseTrue")
        #expect(try render("{{ 'abcdef'[1:4] }}{{ 'abc'[::-1] }}{{ [1,2,3][-1] }}{{ [1,2,3][:-1] }}") == "bcdcba3[1, 2]")
        #expect(try render("{{ not 0 and 'a' or 'b' }}") == "a")
        #expect(try render("{{ x.y }}|{{ x['y'] }}|{{ x.get('z', 'd') }}", ["x": .object([("y", .string("v"))])]) == "v|v|d")
    }

    @Test func filtersAndTests() throws {
        #expect(try render("{{ '  a b  ' | trim }}|{{ [1,2] | length }}|{{ 'ab' | upper }}|{{ none | default('d') }}|{{ u | default('u') }}") == "a b|2|AB|None|u")
        #expect(try render("{{ {'a': [1, 'é'], 'b': none} | tojson }}") == #"{"a": [1, "é"], "b": null}"#)
        #expect(try render("{{ {'a': [1]} | tojson(indent=2) }}") == "{\n  \"a\": [\n    1\n  ]\n}")
        #expect(try render("{{ ['a','b'] | join(', ') }}|{{ [3,4] | first }}{{ [3,4] | last }}|{{ 'aXbX' | replace('X', '-') }}") == "a, b|34|a-b-")
        let people: JSON = .array([.object([("n", .string("a")), ("r", .string("user"))]), .object([("n", .string("b")), ("r", .string("tool"))])])
        #expect(try render("{{ p | selectattr('r', 'equalto', 'user') | map(attribute='n') | join }}{{ p | rejectattr('r', 'equalto', 'user') | map(attribute='n') | join }}", ["p": people]) == "ab")
        #expect(try render("{{ x is defined }}{{ y is defined }}{{ none is none }}{{ 's' is string }}{{ {} is mapping }}{{ 3 is odd }}{{ x is not none }}", ["x": .number("1")]) == "TrueFalseTrueTrueTrueTrueTrue")
        #expect(try render("{% for k, v in {'a': 1, 'b': 2} | items %}{{ k }}={{ v }};{% endfor %}") == "a=1;b=2;")
        #expect(try render("{{ ' x '.strip() }}{{ 'a,b'.split(',') }}{{ 'ab'.startswith('a') }}{{ '\\nx\\n'.lstrip('\\n') }}") == "x['a', 'b']Truex\n")
    }

    @Test func statementsAndScopes() throws {
        #expect(try render("{% for x in [1,2,3] %}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }} {% endfor %}") == "1TrueFalse3 2FalseFalse3 3FalseTrue3 ")
        #expect(try render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}") == "1", "a set inside a loop does not leak")
        #expect(try render("{% set ns = namespace(x=1) %}{% for i in [1] %}{% set ns.x = 2 %}{% endfor %}{{ ns.x }}") == "2")
        #expect(try render("{% for i in range(5) if i is odd %}{{ i }}{% else %}none{% endfor %}{% for i in [] %}x{% else %}empty{% endfor %}") == "13empty")
        #expect(try render("{% for i in range(9) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}") == "02")
        #expect(try render("{% macro greet(name, punctuation='!') %}hi {{ name }}{{ punctuation }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }}") == "hi a! hi b?")
        #expect(try render("{% macro count(n) %}{{ n }}{% if n > 0 %}{{ count(n - 1) }}{% endif %}{% endmacro %}{{ count(3) }}") == "3210")
        #expect(try render("{% set block %}in{{ 1 }}{% endset %}[{{ block }}]") == "[in1]")
        #expect(try render("{% if false %}a{% elif true %}b{% else %}c{% endif %}") == "b")
    }

    @Test func whitespaceControlAsTransformersConfiguresIt() throws {
        // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before one.
        #expect(try render("{% if true %}\n    x\n    {% endif %}\ny") == "    x\ny")
        #expect(try render("a  {%- if true -%}  b  {%- endif -%}  c") == "abc")
        #expect(try render("a {{- ' b ' -}} c") == "a b c")
        #expect(try render("  {# note #}\nx{{ 1 }}\n") == "x1\n", "comments strip like blocks; expressions keep their newline")
    }

    @Test func unsupportedConstructsAreRefusedByName() {
        #expect(failure("{{ x | frobnicate }}", ["x": .string("a")])?.message == "unsupported filter 'frobnicate'")
        #expect(failure("{{ 1 is prime }}")?.message == "unsupported test 'prime'")
        #expect(failure("{% include 'other.jinja' %}")?.message == "unsupported statement 'include'")
        #expect(failure("{{ 'a'.zfill(3) }}")?.message == "unsupported function or method 'zfill'")
        #expect(failure("{{ lipsum() }}")?.message == "unsupported function or method 'lipsum'")
        #expect(failure("line1\n{{ x.y }}")?.line == 2)
        #expect(failure("{% if true %}unclosed")?.message.contains("endif") == true)
        #expect(failure("{{ 'unterminated }}") != nil)
        #expect(failure("{{ raise_exception('bad roles') }}") == JinjaError("bad roles", line: 1, raisedByTemplate: true))
        #expect(failure("{{ 9223372036854775807 + 1 }}")?.message.contains("overflow") == true)
        #expect(failure("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")?.message.contains("recurses") == true)
    }
}
