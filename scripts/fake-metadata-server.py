#!/usr/bin/env python3
"""A fake cloud metadata server for preemption-notice tests (loopback only, stdlib only).

aws: PUT /latest/api/token (header X-aws-ec2-metadata-token-ttl-seconds) gives a token;
     GET /latest/meta-data/spot/instance-action needs header X-aws-ec2-metadata-token
     (401 without a valid one); 404 until the notice, then 200 with an instance-action JSON.
gcp: GET /computeMetadata/v1/instance/preempted needs header Metadata-Flavor: Google
     (403 without); body FALSE until the notice, then TRUE.

The notice is "on" once --notice-file exists (the test creates it). Every request is
appended to --log as one JSON line: method, path, and the headers that matter.
"""
import argparse, http.server, json, os, secrets, threading

parser = argparse.ArgumentParser()
parser.add_argument("--style", choices=["aws", "gcp"], required=True)
parser.add_argument("--port-file", required=True)
parser.add_argument("--notice-file", required=True)
parser.add_argument("--log", required=True)
args = parser.parse_args()

tokens = set()
lock = threading.Lock()


def record(handler, status):
    entry = {
        "method": handler.command,
        "path": handler.path,
        "status": status,
        "token_header": handler.headers.get("X-aws-ec2-metadata-token"),
        "ttl_header": handler.headers.get("X-aws-ec2-metadata-token-ttl-seconds"),
        "flavor_header": handler.headers.get("Metadata-Flavor"),
    }
    with lock, open(args.log, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body=b"", content_type="text/plain"):
        record(self, status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if args.style == "aws" and self.path == "/latest/api/token":
            if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return self.reply(400, b"missing ttl header")
            token = secrets.token_hex(16)
            with lock:
                tokens.add(token)
            return self.reply(200, token.encode())
        self.reply(404, b"not found")

    def do_GET(self):
        notice = os.path.exists(args.notice_file)
        if args.style == "aws" and self.path == "/latest/meta-data/spot/instance-action":
            with lock:
                valid = self.headers.get("X-aws-ec2-metadata-token") in tokens
            if not valid:
                return self.reply(401, b"")
            if not notice:
                return self.reply(404, b"Not Found")
            body = json.dumps({"action": "terminate", "time": "2026-11-27T03:00:00Z"}).encode()
            return self.reply(200, body, "application/json")
        if args.style == "gcp" and self.path == "/computeMetadata/v1/instance/preempted":
            if self.headers.get("Metadata-Flavor") != "Google":
                return self.reply(403, b"Missing Metadata-Flavor:Google header.")
            return self.reply(200, b"TRUE" if notice else b"FALSE")
        self.reply(404, b"not found")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(args.port_file + ".tmp", args.port_file)
server.serve_forever()
