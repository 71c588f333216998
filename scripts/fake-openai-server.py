#!/usr/bin/env python3
"""A deterministic OpenAI-compatible server for Sluice's tests (Python standard library only).

It answers POST /v1/completions and /v1/chat/completions with content derived from
a hash of the request body, so every run produces the same answers, and it records
every request it receives in a JSONL log: arrival and end time, the request's key
(the X-Sluice-Custom-Id header, else the body hash), how many requests with the same
key were in flight at that moment, and what it answered.

Behaviour (start-up flags, or POST /_control with a JSON object of the same names):
  fail_first N      the first N attempts of every request answer fail_status
  fail_status S     status used by fail_first (default 500)
  retry_after T     Retry-After header value sent with 429/503 answers
  drop_first N      the first N attempts of every request get their connection closed unanswered
  stall true        every request waits without answering until stall is turned off
                    (or the client hangs up)
  delay S           seconds every answer takes
Per request, the body may carry test hints: "x_fake_status": S answers S
(for the first "x_fake_status_attempts" attempts if given, else always), and
"x_fake_malformed": true answers 200 with a body that is not JSON,
"x_fake_redirect": {"status": S, "location": URL} answers the redirect S to URL, and
"x_fake_usage": OBJECT answers 200 with OBJECT as its "usage" (absurd token counts for tests).
Every request to another path, GET included, is logged too (with its method and Authorization
header), so a test can see whether a client followed a redirect here.

GET /_stats returns counters; GET /health answers {"status": "ok"}.
Binds 127.0.0.1 on an ephemeral port and writes the port to --port-file.
Run with --expected INPUT.jsonl to print the answer bodies it would give for a batch file instead.
"""
import argparse
import hashlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ("amber basil cedar delta ember fjord garnet harbor iris juniper kelp lumen "
         "maple nectar onyx pebble quartz river sable thistle umber violet willow "
         "xenon yarrow zephyr").split()


def canonical_hash(body):
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def answer_for(path, body):
    """The deterministic 200 answer for a request body."""
    digest = canonical_hash(body)
    max_tokens = body.get("max_tokens") if isinstance(body.get("max_tokens"), int) else 16
    count = max(1, min(max_tokens, 4 + int(digest[:2], 16) % 12))
    words = [WORDS[int(digest[2 * i:2 * i + 2], 16) % len(WORDS)] for i in range(count)]
    text = " ".join(words)
    if path.endswith("/chat/completions"):
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        kind, prefix = "chat.completion", "chatcmpl-"
    else:
        prompt = str(body.get("prompt", ""))
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
        kind, prefix = "text_completion", "cmpl-"
    prompt_tokens = max(1, len(prompt.split()))
    return {
        "id": prefix + digest[:24],
        "object": kind,
        "created": 1700000000,
        "model": body.get("model", "fake"),
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": count,
                  "total_tokens": prompt_tokens + count},
    }


class State:
    def __init__(self, behavior, log_path):
        self.lock = threading.Lock()
        self.behavior = behavior
        self.attempts = {}
        self.in_flight = {}
        self.total_in_flight = 0
        self.max_in_flight = 0
        self.received = 0
        self.log = open(log_path, "a", buffering=1) if log_path else None

    def record(self, entry):
        if self.log:
            with self.lock:
                self.log.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def get(self, name, default=None):
        with self.lock:
            return self.behavior.get(name, default)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-openai/1"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, payload, headers=None):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def client_gone(self):
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
        return False

    def do_GET(self):
        state = self.server.state
        if self.path == "/health":
            self.send_json(200, {"status": "ok"})
        elif self.path == "/_stats":
            with state.lock:
                stats = {"received": state.received, "in_flight": state.total_in_flight,
                         "max_in_flight": state.max_in_flight, "behavior": state.behavior}
            self.send_json(200, stats)
        else:
            with state.lock:
                state.received += 1
            state.record({"key": None, "method": "GET", "path": self.path, "outcome": "404",
                          "authorization": self.headers.get("Authorization")})
            self.send_json(404, {"error": {"message": "no such path " + self.path}})

    def do_POST(self):
        state = self.server.state
        raw = self.read_body()
        if self.path == "/_control":
            update = json.loads(raw or b"{}")
            with state.lock:
                state.behavior.update(update)
            self.send_json(200, {"behavior": state.behavior})
            return
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            with state.lock:
                state.received += 1
            state.record({"key": None, "method": "POST", "path": self.path, "outcome": "404",
                          "authorization": self.headers.get("Authorization")})
            self.send_json(404, {"error": {"message": "unknown endpoint " + self.path, "type": "invalid_request_error"}})
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as error:
            self.send_json(400, {"error": {"message": "invalid body: %s" % error, "type": "invalid_request_error"}})
            return
        key = self.headers.get("X-Sluice-Custom-Id") or canonical_hash(body)
        with state.lock:
            state.received += 1
            attempt = state.attempts.get(key, 0) + 1
            state.attempts[key] = attempt
            same = state.in_flight.get(key, 0) + 1
            state.in_flight[key] = same
            state.total_in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.total_in_flight)
            total = state.total_in_flight
        started = time.time()
        outcome = "error"
        try:
            outcome = self.answer(state, body, attempt)
        finally:
            with state.lock:
                state.in_flight[key] -= 1
                state.total_in_flight -= 1
            state.record({"key": key, "path": self.path, "attempt": attempt, "start": started,
                          "end": time.time(), "same_key_in_flight": same, "in_flight": total,
                          "outcome": outcome, "authorization": self.headers.get("Authorization")})

    def answer(self, state, body, attempt):
        forced = body.get("x_fake_status")
        forced_attempts = body.get("x_fake_status_attempts")
        if isinstance(forced, int) and (not isinstance(forced_attempts, int) or attempt <= forced_attempts):
            headers = {"Retry-After": str(state.get("retry_after"))} if forced in (429, 503) and state.get("retry_after") is not None else {}
            self.send_json(forced, {"error": {"message": "forced status %d" % forced, "type": "test_error", "code": forced}}, headers)
            return str(forced)
        if attempt <= int(state.get("drop_first", 0)):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return "dropped"
        if attempt <= int(state.get("fail_first", 0)):
            status = int(state.get("fail_status", 500))
            headers = {}
            if state.get("retry_after") is not None:
                headers["Retry-After"] = str(state.get("retry_after"))
            self.send_json(status, {"error": {"message": "injected failure %d" % status, "type": "server_error"}}, headers)
            return str(status)
        while state.get("stall", False):
            if self.client_gone():
                self.close_connection = True
                return "abandoned"
            time.sleep(0.02)
        delay = float(state.get("delay", 0)) + float(body.get("x_fake_delay", 0) or 0)
        deadline = time.time() + delay
        while time.time() < deadline:
            if self.client_gone():
                self.close_connection = True
                return "abandoned"
            time.sleep(min(0.02, max(0, deadline - time.time())))
        redirect = body.get("x_fake_redirect")
        if isinstance(redirect, dict):
            self.send_json(int(redirect.get("status", 307)), {"redirected": True},
                           {"Location": str(redirect.get("location", "/"))})
            return "redirect"
        if body.get("x_fake_malformed"):
            self.send_json(200, b"<html>this is not json</html>")
            return "malformed"
        answer = answer_for(self.path, body)
        if isinstance(body.get("x_fake_usage"), dict):
            answer["usage"] = body["x_fake_usage"]
        self.send_json(200, answer, {"X-Request-Id": "req-" + canonical_hash(body)[:16]})
        return "200"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


def expected(input_path):
    with open(input_path, "rb") as handle:
        for raw in handle:
            line = json.loads(raw)
            print(json.dumps({"custom_id": line["custom_id"], "body": answer_for(line["url"], line["body"])},
                             separators=(",", ":"), ensure_ascii=False))


def main():
    # A parent may have left signals blocked (threads of many runtimes block them, and children inherit
    # the mask); unblock them so SIGTERM and SIGINT stop this server as they should.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
    parser = argparse.ArgumentParser(description="Deterministic OpenAI-compatible test server.")
    parser.add_argument("--port-file")
    parser.add_argument("--log")
    parser.add_argument("--expected", help="print the answers for a batch file and exit")
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--fail-status", type=int, default=500)
    parser.add_argument("--retry-after")
    parser.add_argument("--drop-first", type=int, default=0)
    parser.add_argument("--stall", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    if args.expected:
        expected(args.expected)
        return
    behavior = {"fail_first": args.fail_first, "fail_status": args.fail_status, "retry_after": args.retry_after,
                "drop_first": args.drop_first, "stall": args.stall, "delay": args.delay}
    server = Server(("127.0.0.1", 0), Handler)
    server.state = State(behavior, args.log)
    port = server.server_address[1]
    if args.port_file:
        temporary = args.port_file + ".tmp"
        with open(temporary, "w") as handle:
            handle.write(str(port))
        os.replace(temporary, args.port_file)
    else:
        print(port, flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
