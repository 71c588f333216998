import Foundation
import SluiceCore
@testable import SluiceRemote
import SluiceTestSupport
import Testing

/// The remote engine reaches its server through the proxy the environment names, as curl (and the
/// FoundationNetworking client Sluice used before) does.
@Suite(.serialized) struct ProxyTests {
    @Test func theEnvironmentNamesTheProxyAsCurlReadsIt() {
        let http = URL(string: "http://api.internal:8000")!, https = URL(string: "https://api.openai.com")!
        typealias Proxy = OpenAIEngineConfiguration.Proxy
        #expect(OpenAIEngineConfiguration.proxy(for: http, environment: ["http_proxy": "proxy.corp:3128"])
            == Proxy(kind: .http, host: "proxy.corp", port: 3128, user: nil, password: nil))
        // Upper-case HTTP_PROXY is not read for http (curl: a CGI's HTTP_PROXY comes from a header).
        #expect(OpenAIEngineConfiguration.proxy(for: http, environment: ["HTTP_PROXY": "proxy.corp:3128"]) == nil)
        #expect(OpenAIEngineConfiguration.proxy(for: https, environment: ["HTTPS_PROXY": "http://u:p%40ss@proxy.corp"])
            == Proxy(kind: .http, host: "proxy.corp", port: 1080, user: "u", password: "p@ss"))
        #expect(OpenAIEngineConfiguration.proxy(for: https, environment: ["ALL_PROXY": "socks5h://127.0.0.1:9050"])?.kind == .socks5)
        for noProxy in ["*", "api.openai.com", ".openai.com", "openai.com", "other, openai.com:443"] {
            #expect(OpenAIEngineConfiguration.proxy(for: https, environment: ["https_proxy": "p:1", "NO_PROXY": noProxy]) == nil, "\(noProxy)")
        }
        #expect(OpenAIEngineConfiguration.proxy(for: https, environment: ["https_proxy": "p:1", "no_proxy": "penai.com"]) != nil)
        #expect(OpenAIEngineConfiguration.proxy(for: https, environment: ["https_proxy": "ftp://p:1"]) == nil)
        #expect(OpenAIEngineConfiguration.proxy(for: https, environment: [:]) == nil)
    }

    /// A CONNECT proxy (an inline Python one) between the engine and the fake server: requests go
    /// through it, and answers come back unchanged.
    @Test func requestsGoThroughTheProxy() async throws {
        let server = try FakeServer()
        defer { server.stop() }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-proxy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let portFile = folder.appendingPathComponent("port").path, log = folder.appendingPathComponent("connects").path
        let script = """
            import socket, sys, threading
            def pipe(a, b):
                try:
                    while True:
                        data = a.recv(65536)
                        if not data: break
                        b.sendall(data)
                except OSError: pass
                finally:
                    for s in (a, b):
                        try: s.shutdown(socket.SHUT_RDWR)
                        except OSError: pass
            def serve(client):
                head = b""
                while b"\\r\\n\\r\\n" not in head:
                    chunk = client.recv(4096)
                    if not chunk: return
                    head += chunk
                line = head.split(b"\\r\\n")[0].decode()
                method, target = line.split(" ")[:2]
                with open(sys.argv[2], "a") as f: f.write(line + "\\n")
                if method != "CONNECT":
                    client.sendall(b"HTTP/1.1 405 Method Not Allowed\\r\\nContent-Length: 0\\r\\n\\r\\n"); client.close(); return
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                client.sendall(b"HTTP/1.1 200 Connection established\\r\\n\\r\\n")
                threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
                pipe(client, upstream)
            listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(64)
            with open(sys.argv[1], "w") as f: f.write(str(listener.getsockname()[1]))
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=serve, args=(conn,), daemon=True).start()
            """
        let proxy = try ChildProcess(executable: "/usr/bin/env", arguments: ["python3", "-c", script, portFile, log],
                                     standardOutput: .null, standardError: .file(folder.appendingPathComponent("err").path))
        defer {
            proxy.send(SIGKILL)
            proxy.waitUntilExit()
        }
        let deadline = Date().addingTimeInterval(15)
        var port: Int?
        while port == nil, Date() < deadline, proxy.isRunning {
            port = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap(Int.init)
            if port == nil { usleep(10_000) }
        }
        let proxyPort = try #require(port, "the proxy did not start")
        let engine = OpenAIEngine(configuration: OpenAIEngineConfiguration(baseURL: server.baseURL, capacity: 2, requestTimeout: 30),
                                  environment: ["http_proxy": "http://127.0.0.1:\(proxyPort)"])
        let events = EventLog(engine)
        engine.submit(chatRequest(1))
        let event = try await events.wait(for: 1)
        await engine.shutdown()
        guard case .response(200, _, _) = event.outcome else { Issue.record("\(event)"); return }
        let connects = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(connects.contains("CONNECT 127.0.0.1:\(server.port)"), "\(connects)")
    }
}
