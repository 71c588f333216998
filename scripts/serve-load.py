#!/usr/bin/env python3
"""Load on one `sluice serve` over loopback: POLLERS clients polling while UPLOADERS clients each
upload a LINES-line file and create a batch from it, for a bounded time. Prints the server's
resident memory over time (VmRSS from /proc, sampled every 0.5 s), request counts, errors and
latencies. Exit status 1 if any request failed.

Usage: scripts/serve-load.py --sluice .build/release/sluice [--pollers 50] [--uploaders 10]
       [--lines 100000] [--seconds 60]
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import openai


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def make_input(path, lines, seed):
    with open(path, "w") as f:
        for i in range(1, lines + 1):
            f.write(json.dumps({"custom_id": f"u{seed}-{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": "m", "messages": [{"role": "user", "content": f"load {seed} line {i}"}],
                                         "max_tokens": 8}}) + "\n")


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--uploaders", type=int, default=10)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="sluice-serve-load-")
    serve = None
    try:
        inputs = []
        for u in range(args.uploaders):
            path = os.path.join(work, f"input-{u}.jsonl")
            make_input(path, args.lines, u)
            inputs.append(path)
        size_mb = os.path.getsize(inputs[0]) / 1e6
        port_file = os.path.join(work, "port")
        serve = subprocess.Popen([args.sluice, "serve", "--db", os.path.join(work, "q.db"), "--port", "0",
                                  "--port-file", port_file, "--quiet"], stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(work, "serve.log"), "wb"))
        deadline = time.monotonic() + 60
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if serve.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("sluice serve did not start")
            time.sleep(0.05)
        port = int(open(port_file).read())
        base = f"http://127.0.0.1:{port}/v1"

        lock = threading.Lock()
        stats = {"poll_ok": 0, "poll_err": 0, "upload_ok": 0, "upload_err": 0, "batches": 0, "errors": []}
        latencies = []
        upload_seconds = []
        batch_ids = []
        stop = threading.Event()

        def note_error(kind, message):
            with lock:
                stats[kind] += 1
                if len(stats["errors"]) < 10:
                    stats["errors"].append(message)

        def poller(index):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            n = 0
            while not stop.is_set():
                with lock:
                    ids = list(batch_ids)
                path = f"/v1/batches/{ids[n % len(ids)]}" if ids and n % 3 else "/v1/batches?limit=20"
                n += 1
                start = time.monotonic()
                try:
                    connection.request("GET", path)
                    response = connection.getresponse()
                    body = response.read()
                    if response.status != 200:
                        note_error("poll_err", f"GET {path}: {response.status} {body[:200]!r}")
                    else:
                        json.loads(body)
                        with lock:
                            stats["poll_ok"] += 1
                            latencies.append(time.monotonic() - start)
                except Exception as error:  # noqa: BLE001 - any failure is an error to report
                    note_error("poll_err", f"GET {path}: {error!r}")
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                time.sleep(0.01)

        def uploader(index):
            client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=300)
            try:
                start = time.monotonic()
                with open(inputs[index], "rb") as f:
                    uploaded = client.files.create(file=f, purpose="batch")
                with lock:
                    upload_seconds.append(time.monotonic() - start)
                    stats["upload_ok"] += 1
                batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                              completion_window="24h")
                with lock:
                    batch_ids.append(batch.id)
                    stats["batches"] += 1
            except Exception as error:  # noqa: BLE001
                note_error("upload_err", f"upload {index}: {error!r}")

        memory = []
        started = time.monotonic()

        def sampler():
            while not stop.is_set():
                memory.append((time.monotonic() - started, rss_kib(serve.pid)))
                time.sleep(0.5)

        threads = [threading.Thread(target=sampler)]
        threads += [threading.Thread(target=poller, args=(i,)) for i in range(args.pollers)]
        uploaders = [threading.Thread(target=uploader, args=(i,)) for i in range(args.uploaders)]
        for t in threads + uploaders:
            t.start()
        for t in uploaders:
            t.join(timeout=max(1, args.seconds - (time.monotonic() - started)))
        # Keep polling until the time is up (the batches load into the queue meanwhile).
        while time.monotonic() - started < args.seconds:
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join()
        still_uploading = sum(t.is_alive() for t in uploaders)

        # Where the batches got to.
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=60)
        statuses = {}
        for batch_id in batch_ids:
            b = client.batches.retrieve(batch_id)
            statuses[b.status] = statuses.get(b.status, 0) + 1

        rss = [kib for _, kib in memory if kib]
        print(f"serve-load: {args.pollers} pollers, {args.uploaders} uploaders of {args.lines}-line files "
              f"({size_mb:.1f} MB each), {args.seconds:.0f} s on loopback")
        print(f"  uploads: {stats['upload_ok']} ok, {stats['upload_err']} failed, {still_uploading} unfinished; "
              f"upload time p50 {percentile(upload_seconds, 50):.2f} s, max {max(upload_seconds or [0]):.2f} s")
        print(f"  batches created: {stats['batches']}; statuses at the end: {statuses}")
        print(f"  polls: {stats['poll_ok']} ok, {stats['poll_err']} failed; latency p50 "
              f"{percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms")
        if rss:
            quarter = max(1, len(rss) // 4)
            print(f"  server RSS: start {rss[0] / 1024:.1f} MiB, peak {max(rss) / 1024:.1f} MiB, "
                  f"last quarter mean {sum(rss[-quarter:]) / quarter / 1024:.1f} MiB, end {rss[-1] / 1024:.1f} MiB")
            step = max(1, len(memory) // 12)
            print("  RSS over time (s: MiB): " + ", ".join(f"{t:.0f}: {kib / 1024:.0f}" for t, kib in memory[::step] if kib))
        for message in stats["errors"]:
            print(f"  error: {message}")
        failed = stats["poll_err"] + stats["upload_err"] + still_uploading
        sys.exit(1 if failed else 0)
    finally:
        if serve is not None and serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                serve.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
