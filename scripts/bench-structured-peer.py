#!/usr/bin/env python3
"""llama.cpp's side of scripts/bench-structured: the same job through llama-server.

Sends `--sequences` concurrent /completion requests (Gemma chat prompt, `--max-tokens` sampled
tokens each, end of generation ignored) with and without the benchmark's `json_schema`, in
alternating rounds, and prints the wall time of each batch and the constrained/unconstrained ratio.
Usage: bench-structured-peer.py --url http://127.0.0.1:PORT --schema FILE [--sequences 32] [--max-tokens 64] [--rounds 3]
"""
import argparse
import concurrent.futures
import json
import statistics
import time
import urllib.request


def complete(url, body):
    request = urllib.request.Request(url + "/completion", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=3600) as response:
        return json.loads(response.read())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    schema = json.load(open(args.schema))

    def job(constrained, offset):
        bodies = []
        for i in range(args.sequences):
            body = {"prompt": f"<start_of_turn>user\nWrite a news item number {i} about a city, as JSON.<end_of_turn>\n<start_of_turn>model\n",
                    "n_predict": args.max_tokens, "temperature": 0.8, "seed": offset + i, "ignore_eos": True, "cache_prompt": False}
            if constrained:
                body["json_schema"] = schema
            bodies.append(body)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.sequences) as pool:
            answers = list(pool.map(lambda b: complete(args.url, b), bodies))
        elapsed = time.monotonic() - started
        tokens = sum(a.get("tokens_predicted", 0) for a in answers)
        return elapsed, tokens

    job(True, 1000)  # warm-up (grammar parsing, caches), as on the Sluice side
    times = {False: [], True: []}
    tokens = {}
    for round_ in range(args.rounds):
        for constrained in ([False, True] if round_ % 2 == 0 else [True, False]):
            elapsed, count = job(constrained, round_ * args.sequences)
            times[constrained].append(elapsed)
            tokens[constrained] = count
    plain, constrained = statistics.median(times[False]), statistics.median(times[True])
    print(f"llama.cpp server: unconstrained {plain:.2f} s ({tokens[False]} tokens), constrained {constrained:.2f} s "
          f"({tokens[True]} tokens): step time ratio {constrained / plain:.3f}x; grammar cost "
          f"{1e6 * (constrained - plain) / max(tokens[True], 1):.0f} us/token")
    print(json.dumps({"tool": "llama-server", "sequences": args.sequences, "max_tokens": args.max_tokens,
                      "unconstrained_s": plain, "constrained_s": constrained, "ratio": constrained / plain}))


main()
