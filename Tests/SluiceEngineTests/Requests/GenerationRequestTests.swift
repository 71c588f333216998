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

    @Test(arguments: [
        (Endpoint.completions, #"{"prompt":"x","n":3}"#, "'n' must be 1"),
        (.completions, #"{"prompt":"x","best_of":2}"#, "unrecognized request argument supplied: best_of"),
        (.completions, #"{"prompt":"x","max_tokens":0}"#, "'max_tokens'"),
        (.completions, #"{"prompt":"x","max_tokens":1.5}"#, "'max_tokens'"),
        (.completions, #"{"prompt":"x","temperature":-1}"#, "'temperature'"),
        (.completions, #"{"prompt":"x","top_p":0}"#, "'top_p'"),
        (.completions, #"{"prompt":"x","stream":true}"#, "'stream'"),
        (.completions, #"{"prompt":"x","stop":[1]}"#, "'stop'"),
        (.completions, #"{"prompt":"x","logprobs":true}"#, "'logprobs'"),
        (.completions, #"{"prompt":["a","b"]}"#, "one prompt per request"),
        (.completions, #"{"prompt":[]}"#, "must not be empty"),
        (.completions, #"{"max_tokens":3}"#, "'prompt'"),
        (.completions, #"{"prompt":"x","frequency_penalty":0.5}"#, "'frequency_penalty'"),
        (.chatCompletions, #"{"messages":"hi"}"#, "'messages' must be a non-empty array"),
        (.chatCompletions, #"{"messages":[{"role":"tool","content":"x"}]}"#, "role 'tool'"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#, "only text"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"top_logprobs":2}"#, "'top_logprobs' needs"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}"#, "'top_logprobs'"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#, "response_format"),
        (.chatCompletions, #"{"messages":[{"role":"user","content":"x"}],"tools":[]}"#, "tools"),
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
