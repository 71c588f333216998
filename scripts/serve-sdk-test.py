#!/usr/bin/env python3
"""`sluice serve` driven by the official `openai` Python package, unchanged but for base_url.

Starts the fake OpenAI server (scripts/fake-openai-server.py) as the workers' engine and a real
`sluice serve --workers 1` over a fresh database, then checks, through the SDK:
  - files.create / batches.create / batches.retrieve until completed / files.content, with the
    worker killed (SIGKILL) in the middle: every result line equals the engine's answer, once;
  - batches.cancel: cancelling -> cancelled, partial results in the output, the rest in the error file;
  - batches.list and files.list pagination (limit/after, has_more);
  - an input file with bad lines: failed, errors.data naming the lines;
  - an expired completion_window: expired, unfinished requests in the error file;
  - a second key sees none of the first key's files and batches (404); no key -> 401;
  - body limits and the idle timeout for stalled clients;
  - the server refuses a non-loopback --host without --api-keys.
Usage: serve-sdk-test.py --sluice PATH/TO/sluice   (exit status 0: every check passed)
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import urllib.error

import openai

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = os.path.join(REPO, "scripts", "fake-openai-server.py")


def wait_until(what, condition, seconds=60.0, interval=0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def read_port(path, process):
    def ready():
        if process.poll() is not None:
            raise AssertionError(f"process {process.args[:3]} exited with {process.returncode} before listening")
        try:
            text = open(path).read().strip()
            return int(text) if text else None
        except (FileNotFoundError, ValueError):
            return None
    return wait_until(f"a port in {path}", ready, seconds=60)


def batch_lines(prefix, count, url="/v1/chat/completions"):
    lines = []
    for i in range(1, count + 1):
        if url == "/v1/chat/completions":
            body = {"model": "fake", "messages": [{"role": "user", "content": f"{prefix} question {i}"}], "max_tokens": 16}
        else:
            body = {"model": "fake", "prompt": f"{prefix} prompt {i}", "max_tokens": 16}
        lines.append(json.dumps({"custom_id": f"{prefix}-{i}", "method": "POST", "url": url, "body": body}))
    return "\n".join(lines) + "\n"


class Harness:
    def __init__(self, sluice, workdir):
        self.sluice = sluice
        self.dir = workdir
        self.children = []

    def spawn(self, args, name, env=None):
        out = open(os.path.join(self.dir, name + ".log"), "wb")
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.children.append(process)
        return process

    def stop_all(self):
        for process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.children:
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)
        return self.path(name)

    def expected(self, input_path):
        out = subprocess.run([sys.executable, FAKE, "--expected", input_path], check=True, capture_output=True, text=True)
        answers = {}
        for line in out.stdout.splitlines():
            entry = json.loads(line)
            answers[entry["custom_id"]] = entry["body"]
        return answers


def poll(client, batch_id, statuses, seconds=120):
    def done():
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status in statuses else None
    return wait_until(f"batch {batch_id} to reach {statuses}", done, seconds=seconds, interval=0.1)


def content_lines(client, file_id):
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def worker_pids(serve_pid):
    """Children of every thread of `serve` (a child is listed under the thread that started it)."""
    pids = []
    for task in os.listdir(f"/proc/{serve_pid}/task"):
        try:
            with open(f"/proc/{serve_pid}/task/{task}/children") as f:
                pids.extend(int(p) for p in f.read().split())
        except FileNotFoundError:
            pass
    return pids


def other_works(client):
    try:
        client.files.list()
        return True
    except openai.AuthenticationError:
        return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="sluice-serve-sdk-")
    h = Harness(os.path.abspath(args.sluice), workdir)
    try:
        run_checks(h)
        print("serve-sdk-test: all checks passed")
    finally:
        h.stop_all()
        if not args.keep:
            subprocess.run(["rm", "-rf", workdir])
        else:
            print(f"serve-sdk-test: scratch kept in {workdir}")


def run_checks(h):
    # The engine the workers call: slow enough (delay) that a batch is mid-way when the worker dies.
    fake = h.spawn([sys.executable, FAKE, "--port-file", h.path("fake.port"), "--delay", "0.02"], "fake")
    fake_port = read_port(h.path("fake.port"), fake)

    key_a, key_b = "sk-test-project-a-0123456789", "sk-test-project-b-9876543210"
    keys = h.write("keys.txt", f"# key project\n{key_a} alpha\n{key_b} beta\n")
    db = h.path("queue.db")
    env = dict(os.environ, OPENAI_API_KEY="unused-by-the-fake-server")
    serve_command = [h.sluice, "serve", "--db", db, "--port", "0", "--port-file", h.path("serve.port"),
                     "--api-keys", keys, "--workers", "1", "--idle-timeout", "2", "--",
                     "--engine", "openai", "--base-url", f"http://127.0.0.1:{fake_port}",
                     "--lease", "2", "--concurrency", "4", "--no-progress", "--quiet"]
    serve = h.spawn(serve_command, "serve", env=env)
    port = read_port(h.path("serve.port"), serve)
    base = f"http://127.0.0.1:{port}/v1"
    client = openai.OpenAI(base_url=base, api_key=key_a, max_retries=0, timeout=30)
    other = openai.OpenAI(base_url=base, api_key=key_b, max_retries=0, timeout=30)

    # 1. The whole round trip, with the worker killed mid-way.
    input_path = h.write("main.jsonl", batch_lines("main", 300))
    answers = h.expected(input_path)
    uploaded = client.files.create(file=open(input_path, "rb"), purpose="batch")
    assert uploaded.object == "file" and uploaded.purpose == "batch" and uploaded.bytes == os.path.getsize(input_path), uploaded
    assert uploaded.filename == "main.jsonl", uploaded.filename
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"purpose": "sdk test"})
    assert batch.status == "validating" and batch.metadata == {"purpose": "sdk test"}, batch
    assert batch.expires_at - batch.created_at == 86400, batch

    def some_done():
        b = client.batches.retrieve(batch.id)
        return b if b.request_counts and 30 <= b.request_counts.completed < 300 else None
    wait_until("a third of the batch", some_done, seconds=120, interval=0.05)
    victims = worker_pids(serve.pid)
    assert victims, "serve --workers 1 has no worker child"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    print(f"serve-sdk-test: killed worker(s) {victims} mid-batch")
    done = poll(client, batch.id, {"completed", "failed", "expired", "cancelled"}, seconds=240)
    assert done.status == "completed", done
    assert done.request_counts.total == 300 and done.request_counts.completed == 300 and done.request_counts.failed == 0, done
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None, done
    lines = content_lines(client, done.output_file_id)
    assert [line["custom_id"] for line in lines] == [f"main-{i}" for i in range(1, 301)], "output order or duplicates"
    for line in lines:
        assert line["error"] is None and line["response"]["status_code"] == 200, line
        assert line["response"]["body"] == answers[line["custom_id"]], line["custom_id"]
    output_file = client.files.retrieve(done.output_file_id)
    assert output_file.purpose == "batch_output", output_file
    print("serve-sdk-test: round trip with a killed worker: 300/300 results match")

    # 1a. The operator's view: the status page lists the batch and links its report; /metrics counts it.
    def get(path, key):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    status, page = get("/", key_a)
    assert status == 200 and batch.id in page and f"/batches/{batch.id}/report" in page, page[:500]
    status, report = get(f"/batches/{batch.id}/report", key_a)
    assert status == 200 and "<html" in report.lower(), report[:200]
    status, metrics = get("/metrics", key_a)
    assert 'sluice_serve_batches_ended_total{status="completed"} 1' in metrics, metrics
    assert batch.id not in get("/", key_b)[1]
    try:
        get(f"/batches/{batch.id}/report", key_b)
        raise AssertionError("the second key read the first key's report")
    except urllib.error.HTTPError as error:
        assert error.code == 404, error.code
    print("serve-sdk-test: status page, report page and /metrics answer (and hide other projects' batches)")

    # 1b. `serve` itself killed (SIGKILL) mid-batch and started again on the same database: the batch
    # carries on (its job is in the queue) and ends once, with every result.
    restart_path = h.write("restart.jsonl", batch_lines("restart", 200))
    restart_answers = h.expected(restart_path)
    restart_file = client.files.create(file=open(restart_path, "rb"), purpose="batch")
    restarted = client.batches.create(input_file_id=restart_file.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
    wait_until("part of the batch", lambda: 20 <= (client.batches.retrieve(restarted.id).request_counts.completed or 0),
               seconds=120, interval=0.05)
    orphans = worker_pids(serve.pid)
    serve.kill()
    serve.wait()
    os.unlink(h.path("serve.port"))
    serve = h.spawn(serve_command, "serve-2", env=env)
    port = read_port(h.path("serve.port"), serve)
    base = f"http://127.0.0.1:{port}/v1"
    client = openai.OpenAI(base_url=base, api_key=key_a, max_retries=0, timeout=30)
    other = openai.OpenAI(base_url=base, api_key=key_b, max_retries=0, timeout=30)
    after = poll(client, restarted.id, {"completed", "failed", "expired", "cancelled"}, seconds=240)
    assert after.status == "completed" and after.request_counts.completed == 200, after
    lines = content_lines(client, after.output_file_id)
    assert [line["custom_id"] for line in lines] == [f"restart-{i}" for i in range(1, 201)]
    assert all(line["response"]["body"] == restart_answers[line["custom_id"]] for line in lines)
    for pid in orphans:  # the first server's workers, if they are still draining
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    print("serve-sdk-test: serve SIGKILLed mid-batch and restarted: 200/200 results match")

    # 2. Isolation between projects, and authentication.
    for call in (lambda: other.files.retrieve(uploaded.id), lambda: other.batches.retrieve(batch.id),
                 lambda: other.files.content(done.output_file_id), lambda: other.batches.cancel(batch.id),
                 lambda: other.files.delete(uploaded.id)):
        try:
            call()
            raise AssertionError("the second key reached the first key's object")
        except openai.NotFoundError:
            pass
    assert other.files.list().data == [] and other.batches.list().data == []
    try:
        other.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        raise AssertionError("the second key made a batch of the first key's file")
    except openai.NotFoundError:
        pass
    for headers in ({}, {"Authorization": "Bearer sk-wrong-key-000000000000"}):
        request = urllib.request.Request(f"{base}/files", headers=headers)
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("a request without a valid key was answered")
        except urllib.error.HTTPError as error:
            assert error.code == 401, error.code
            assert json.loads(error.read())["error"]["code"] == "invalid_api_key"
    print("serve-sdk-test: second key sees nothing of the first (404); no key or a wrong key: 401")
    # SIGHUP rereads the key file: a new key works, a removed one gets 401.
    key_c = "sk-test-project-c-5555555555"
    h.write("keys.txt", f"{key_a} alpha\n{key_c} gamma\n")
    os.kill(serve.pid, signal.SIGHUP)
    third = openai.OpenAI(base_url=base, api_key=key_c, max_retries=0, timeout=30)

    def reloaded():
        try:
            return third.batches.list().data == []
        except openai.AuthenticationError:
            return False
    wait_until("the new key to work after SIGHUP", reloaded, seconds=20, interval=0.1)
    try:
        other.files.list()
        raise AssertionError("a key removed from the file still works after SIGHUP")
    except openai.AuthenticationError:
        pass
    h.write("keys.txt", f"{key_a} alpha\n{key_b} beta\n")
    os.kill(serve.pid, signal.SIGHUP)
    wait_until("the old keys after SIGHUP", lambda: other_works(other), seconds=20, interval=0.1)
    print("serve-sdk-test: SIGHUP reloads the key file (new key accepted, removed key 401)")

    # 3. Bad lines: failed, errors.data with line numbers.
    bad = batch_lines("bad", 5).splitlines()
    bad[1] = '{"custom_id": "bad-2", "method": "POST", "url": "/v1/chat/completions"}'  # no body
    bad[3] = "not json at all"
    bad.append(batch_lines("other", 1, url="/v1/completions").strip())  # another endpoint
    bad_file = client.files.create(file=("bad.jsonl", ("\n".join(bad) + "\n").encode()), purpose="batch")
    failed = client.batches.create(input_file_id=bad_file.id, endpoint="/v1/chat/completions", completion_window="24h")
    failed = poll(client, failed.id, {"failed", "in_progress", "completed"})
    assert failed.status == "failed" and failed.failed_at, failed
    lines_named = sorted(error.line for error in failed.errors.data)
    assert lines_named == [2, 4, 6], lines_named
    assert all(error.code and error.message for error in failed.errors.data), failed.errors
    print(f"serve-sdk-test: bad lines -> failed, errors.data lines {lines_named}")

    # 4. Cancel: cancelling, then cancelled with partial results.
    subprocess.run(["curl", "-s", "-X", "POST", f"http://127.0.0.1:{fake_port}/_control", "-d", '{"delay": 0.2}'],
                   check=True, capture_output=True)
    slow_file = client.files.create(file=("slow.jsonl", batch_lines("slow", 200).encode()), purpose="batch")
    slow = client.batches.create(input_file_id=slow_file.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_until("a few results", lambda: (client.batches.retrieve(slow.id).request_counts.completed or 0) >= 4,
               seconds=120, interval=0.05)
    cancelling = client.batches.cancel(slow.id)
    assert cancelling.status in ("cancelling", "cancelled"), cancelling
    cancelled = poll(client, slow.id, {"cancelled"})
    assert cancelled.cancelling_at and cancelled.cancelled_at, cancelled
    counts = cancelled.request_counts
    assert counts.total == 200 and counts.completed >= 4 and counts.completed + counts.failed == 200, counts
    outputs = content_lines(client, cancelled.output_file_id)
    errors = content_lines(client, cancelled.error_file_id)
    assert len(outputs) == counts.completed and len(errors) == counts.failed, (len(outputs), len(errors), counts)
    assert all(line["error"]["code"] == "batch_cancelled" for line in errors), errors[0]
    assert sorted(l["custom_id"] for l in outputs + errors) == sorted(f"slow-{i}" for i in range(1, 201))
    print(f"serve-sdk-test: cancel -> cancelled with {counts.completed} results and {counts.failed} cancelled")

    # 5. Expired completion window: unfinished requests in the error file.
    late_file = client.files.create(file=("late.jsonl", batch_lines("late", 200).encode()), purpose="batch")
    late = client.batches.create(input_file_id=late_file.id, endpoint="/v1/chat/completions", completion_window="3s")
    expired = poll(client, late.id, {"expired", "completed"}, seconds=60)
    assert expired.status == "expired" and expired.expired_at, expired
    errors = content_lines(client, expired.error_file_id)
    assert errors and all(line["error"]["code"] == "batch_expired" for line in errors), errors[:1]
    outputs = content_lines(client, expired.output_file_id) if expired.output_file_id else []
    assert len(outputs) + len(errors) == 200 == expired.request_counts.total, (len(outputs), len(errors))
    print(f"serve-sdk-test: 3s window -> expired, {len(errors)} unfinished in the error file, {len(outputs)} done")
    subprocess.run(["curl", "-s", "-X", "POST", f"http://127.0.0.1:{fake_port}/_control", "-d", '{"delay": 0}'],
                   check=True, capture_output=True)

    # 6. Pagination: the SDK's cursor pages walk every batch and file once, newest first.
    page = client.batches.list(limit=2)
    assert len(page.data) == 2 and page.has_more, page
    ids = []
    for p in client.batches.list(limit=2).iter_pages():
        ids.extend(b.id for b in p.data)
    assert ids == [late.id, slow.id, failed.id, restarted.id, batch.id], ids
    file_ids = [f.id for f in client.files.list(limit=3)]  # auto-pagination over every page
    assert len(file_ids) == len(set(file_ids)) and {uploaded.id, bad_file.id, slow_file.id, late_file.id} <= set(file_ids)
    assert done.output_file_id in file_ids and cancelled.error_file_id in file_ids
    print(f"serve-sdk-test: list pagination: {len(ids)} batches in pages of 2, {len(file_ids)} files in pages of 3")

    # 7. Delete a file; content and retrieve are 404 afterwards.
    deleted = client.files.delete(bad_file.id)
    assert deleted.deleted and deleted.id == bad_file.id
    try:
        client.files.content(bad_file.id)
        raise AssertionError("deleted file still readable")
    except openai.NotFoundError:
        pass

    # 8. Limits: an oversized JSON body is refused (413), and a client that stalls mid-request is cut off.
    request = urllib.request.Request(f"{base}/batches", data=b"{" + b" " * (2 << 20) + b"}", method="POST",
                                     headers={"Authorization": f"Bearer {key_a}", "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("a 2 MiB JSON body was accepted")
    except urllib.error.HTTPError as error:
        assert error.code == 413, error.code
    import socket
    stalled = socket.create_connection(("127.0.0.1", port), timeout=30)
    stalled.sendall(b"GET /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and then nothing
    started = time.monotonic()
    assert stalled.recv(1024) == b"", "the stalled connection got an answer"
    waited = time.monotonic() - started
    assert 1 <= waited < 20, waited
    stalled.close()
    print(f"serve-sdk-test: 2 MiB JSON body -> 413; a stalled client was disconnected after {waited:.1f} s")

    # 9. Without keys, a non-loopback host is refused.
    refused = subprocess.run([h.sluice, "serve", "--db", h.path("other.db"), "--host", "0.0.0.0", "--port", "0"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "--api-keys" in refused.stderr, (refused.returncode, refused.stderr)
    print("serve-sdk-test: non-loopback --host without --api-keys refused")


if __name__ == "__main__":
    main()
