import SluiceCore
import Testing

@testable import SluiceEngine

@Suite(.ownThread)
struct GenerationRequestTests {
    func parse(_ endpoint: Endpoint, _ text: String) throws -> GenerationRequest {
        try GenerationRequest(endpoint: endpoint, body: try JSON.parse(text))
    }

    func error(_ endpoint: Endpoint, _ text: String) -> RequestError? {
        do {
            _ = try parse(endpoint, text)
            return nil
        } catch let error as RequestError {
            return error
        } catch {
            return RequestError("unexpected \(error)")
        }
    }

    @Test func chatBodyWithEveryOption() throws {
        let request = try parse(.chatCompletions, """
            {"model":"m","messages":[{"role":"developer","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],
             "max_completion_tokens":7,"temperature":0.5,"top_p":0.9,"top_k":40,"min_p":0.05,"seed":-3,"stop":["\\n\\n","END"],
             "n":1,"logprobs":true,"top_logprobs":4,"presence_penalty":0,"user":"u1","response_format":{"type":"text"}}
            """)
        #expect(request.prompt == .chat([ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi there")]))
        #expect(request.maxTokens == 7)
        #expect(request.sampling.temperature == 0.5 && request.sampling.topP == 0.9 && request.sampling.topK == 40 && request.sampling.minP == 0.05)
        #expect(request.sampling.seed == UInt64(bitPattern: -3) && request.hasSeed)
        #expect(request.stop == ["\n\n", "END"])
        #expect(request.logprobs == 4)
        #expect(request.model == "m")
    }

    @Test func completionDefaults() throws {
        let request = try parse(.completions, #"{"prompt":"Hello"}"#)
        #expect(request.prompt == .text("Hello"))
        #expect(request.maxTokens == 16)
        #expect(request.sampling.temperature == 1 && request.sampling.topK == 0 && request.sampling.topP == 1)
        #expect(request.logprobs == nil && request.stop.isEmpty && !request.hasSeed)
        #expect(try parse(.completions, #"{"prompt":["one"],"logprobs":2,"stop":"x"}"#).prompt == .text("one"))
        #expect(try parse(.completions, #"{"prompt":[1,2,3]}"#).prompt == .tokens([1, 2, 3]))
        #expect(try parse(.chatCompletions, #"{"messages":[{"role":"user","content":"x"}]}"#).maxTokens == nil)
    }

    /// Every field the README lists as honoured or ignored is accepted, and honoured ones are read.
    @Test func openAIVLLMAndLlamaCppFieldsAreAccepted() throws {
        let chat = try parse(.chatCompletions, """
            {"model":"gpt-4o-mini","messages":[{"role":"developer","content":"Be brief."},{"role":"user","name":"ann","content":[{"type":"text","text":"Hi"}]}],
             "n":3,"presence_penalty":0.5,"frequency_penalty":-0.5,"repetition_penalty":1.1,"logit_bias":{"17":-100,"3":2.5},
             "store":true,"metadata":{"k":"v"},"service_tier":"auto","parallel_tool_calls":false,"stream":false,
             "stream_options":{"include_usage":true},"prediction":{"type":"content","content":"x"},"user":"u","seed":4,
             "tools":[],"tool_choice":"none","modalities":["text"],
             "response_format":{"type":"json_schema","json_schema":{"name":"r","strict":true,"schema":{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}}}}
            """)
        #expect(chat.choicesPerPrompt == 3 && chat.choiceCount == 3)
        #expect(chat.logitProcessing.presencePenalty == 0.5 && chat.logitProcessing.frequencyPenalty == -0.5)
        #expect(chat.logitProcessing.repetitionPenalty == Float(1.1))
        #expect(chat.logitProcessing.bias.map(\.token) == [3, 17])
        #expect(chat.prompt == .chat([ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi", name: "ann")]))
        if case .jsonSchema? = chat.constraint {} else { Issue.record("json_schema not read: \(String(describing: chat.constraint))") }

        // top_p 0 (OpenAI accepts it): the most likely token alone, whatever top_k says.
        let nucleusOfOne = try parse(.completions, #"{"prompt":"x","top_p":0,"top_k":5,"temperature":0.8}"#)
        #expect(nucleusOfOne.sampling.topK == 1 && nucleusOfOne.sampling.topP == 1)

        let list = try parse(.completions, #"{"prompt":["a","b"],"n":2,"echo":true,"best_of":2,"guided_choice":["yes","no"]}"#)
        #expect(list.prompts == [.text("a"), .text("b")] && list.choiceCount == 4 && list.echo)
        #expect(list.constraint == .choice(["yes", "no"]))
        // Echo with logprobs scores the prompt; with max_tokens 0 only the prompt (OpenAI's way to score a text).
        let scoring = try parse(.completions, #"{"prompt":"a b c","echo":true,"logprobs":5,"max_tokens":0}"#)
        #expect(scoring.echo && scoring.logprobs == 5 && scoring.maxTokens == 0)
        #expect(try parse(.completions, #"{"prompt":[[1,2],[3]]}"#).prompts == [.tokens([1, 2]), .tokens([3])])
        #expect(try parse(.completions, #"{"prompt":"x","json_schema":{"type":"integer"}}"#).constraint == .jsonSchema(.object(["type": .string("integer")])))
        #expect(try parse(.completions, #"{"prompt":"x","guided_json":"{\"type\":\"boolean\"}"}"#).constraint == .jsonSchema(.object(["type": .string("boolean")])))
        #expect(try parse(.completions, #"{"prompt":"x","structured_outputs":{"regex":"[0-9]+"}}"#).constraint == .regex("[0-9]+"))
        #expect(try parse(.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#).constraint == .jsonObject)

        let responses = try parse(.responses, """
            {"model":"gpt-4o","input":[{"role":"user","content":[{"type":"input_text","text":"Hello"}]}],"instructions":"Be kind.",
             "max_output_tokens":20,"temperature":0.2,"top_p":0.9,"metadata":{"a":"b"},"store":false,
             "text":{"format":{"type":"json_schema","name":"x","schema":{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]}}}}
            """)
        #expect(responses.prompt == .chat([ChatMessage(role: "system", content: "Be kind."), ChatMessage(role: "user", content: "Hello")]))
        #expect(responses.maxTokens == 20 && responses.sampling.temperature == 0.2)
        if case .jsonSchema? = responses.constraint {} else { Issue.record("text.format not read") }
        #expect(try parse(.responses, #"{"input":"Hi"}"#).prompt == .chat([ChatMessage(role: "user", content: "Hi")]))
    }

    @Test(arguments: [
        (Endpoint.completions, #"{"prompt":"x","n":0}"#, "'n' must be an integer of at least 1"),
        (.completions, #"{"prompt":"x","n":200}"#, "at most 128"),
        (.completions, #"{"prompt":"x","n":2,"best_of":3}"#, "'best_of'"),
        (.completions, #"{"prompt":"x","max_tokens":0}"#, "'max_tokens'"),
        (.completions, #"{"prompt":"x","max_tokens":1.5}"#, "'max_tokens'"),
        (.completions, #"{"prompt":"x","temperature":-1}"#, "'temperature'"),
        (.completions, #"{"prompt":"x","top_p":1.5}"#, "'top_p' must be a number from 0.0 to 1.0"),
        (.completions, #"{"prompt":"x","max_tokens":99999999999999999999}"#, "'max_tokens' must be an integer from 1 to 9223372036854775807"),
        (.completions, #"{"prompt":"x","seed":9223372036854775813}"#, "'seed' must be an integer from -9223372036854775808 to 9223372036854775807"),
        (.completions, #"{"prompt":"x","stream":true}"#, "'stream'"),
        (.completions, #"{"prompt":"x","stop":[1]}"#, "'stop'"),
        (.completions, #"{"prompt":"x","logprobs":true}"#, "'logprobs'"),
        (.completions, #"{"prompt":[]}"#, "must not be empty"),
        (.completions, #"{"prompt":["a",1]}"#, "only strings or only arrays"),
        (.completions, #"{"prompt":"x","frequency_penalty":2.5}"#, "'frequency_penalty' must be a number from -2"),
        (.completions, #"{"prompt":"x","repetition_penalty":0}"#, "'repetition_penalty'"),
        (.completions, #"{"prompt":"x","logit_bias":{"abc":1}}"#, "token ids"),
        (.completions, #"{"prompt":"x","logit_bias":{"5":101}}"#, "from -100 to 100"),
        (.completions, #"{"prompt":"x","echo":false,"max_tokens":0,"logprobs":1}"#, "0 only with 'echo'"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#, "'max_tokens' must be an integer of at least 1"),
        (.completions, #"{"prompt":"x","suffix":"y"}"#, "'suffix'"),
        (.completions, #"{"prompt":"x","grammar":"root ::= \"a\""}"#, "GBNF"),
        (.completions, #"{"prompt":"x","guided_regex":"(?=a)"}"#, "lookaround"),
        (.completions, #"{"prompt":"x","guided_choice":[]}"#, "non-empty array"),
        (.completions, #"{"prompt":"x","guided_json":{"type":"object"},"guided_regex":"a"}"#, "both constrain"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#, "tool calling"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"tool_choice":"auto"}"#, "tool calling"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}"#, "'input_audio' parts are not supported"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"modalities":["text","audio"]}"#, "modalities"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"integer","multipleOf":3}}}}"#, "unsupported JSON Schema keyword 'multipleOf' at #"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"integer","minimum":3,"exclusiveMaximum":3}}}}"#, "no integer lies within the bounds at #"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"a":{"type":"array","uniqueItems":true}}}}}}"#, "'uniqueItems' at #/properties/a"),
        (.chatCompletions, ##"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"$ref":"#/$defs/missing"}}}}"##, "names no definition"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"yaml"}}"#, "type 'yaml' is not supported"),
        (.responses, #"{"input":"x","reasoning":{"effort":"low"}}"#, "'reasoning'"),
        (.responses, #"{"input":"x","previous_response_id":"resp_1"}"#, "each line must carry its whole input"),
        (.responses, #"{"instructions":"x"}"#, "'input'"),
        (.responses, #"{"input":[{"type":"function_call_output","call_id":"1","output":"x"}]}"#, "only messages"),
        (.responses, #"{"input":"x","max_tokens":5}"#, "unrecognized request argument supplied: max_tokens"),
        (.completions, #"{"max_tokens":3}"#, "'prompt'"),
        (.chatCompletions, #"{"messages":"hi"}"#, "'messages' must be a non-empty array"),
        (.chatCompletions, #"{"messages":[{"role":"tool","content":"x"}]}"#, "role 'tool'"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#, "only text"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"top_logprobs":2}"#, "'top_logprobs' needs"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}"#, "'top_logprobs'"),
    ])
    func invalidBodiesAreExplained(endpoint: Endpoint, body: String, fragment: String) {
        let problem = error(endpoint, body)
        #expect(problem?.message.contains(fragment) == true, "\(body): \(problem?.message ?? "accepted")")
        #expect(problem?.body["error"]?["type"]?.stringValue == "invalid_request_error")
    }
}

@Suite(.ownThread)
struct ChatTemplateTests {
    let conversation = [
        ChatMessage(role: "system", content: "Be brief."),
        ChatMessage(role: "user", content: " Hi! "),
        ChatMessage(role: "assistant", content: "Hello."),
        ChatMessage(role: "user", content: "Bye"),
    ]

    @Test func gemma() {
        #expect(ChatTemplate.gemma.render(conversation) ==
            "<start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
            + "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")
    }

    @Test func chatml() {
        #expect(ChatTemplate.chatml.render(conversation) ==
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi! <|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
            + "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
    }

    @Test func llama3() {
        #expect(ChatTemplate.llama3.render([ChatMessage(role: "user", content: "Hi ")]) ==
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    }

    @Test func detection() {
        #expect(ChatTemplate.detect(jinja: "{{ '<start_of_turn>' }}", architecture: "llama", hasToken: { _ in false }) == .gemma)
        #expect(ChatTemplate.detect(jinja: "<|im_start|>", architecture: "llama", hasToken: { _ in false }) == .chatml)
        #expect(ChatTemplate.detect(jinja: "<|start_header_id|>", architecture: "qwen2", hasToken: { _ in false }) == .llama3)
        #expect(ChatTemplate.detect(jinja: nil, architecture: "gemma3", hasToken: { _ in false }) == .gemma)
        #expect(ChatTemplate.detect(jinja: nil, architecture: "qwen2", hasToken: { _ in false }) == .chatml)
        #expect(ChatTemplate.detect(jinja: nil, architecture: "llama", hasToken: { $0 == "<|start_header_id|>" }) == .llama3)
        #expect(ChatTemplate.detect(jinja: nil, architecture: "llama", hasToken: { _ in false }) == nil)
    }
}
