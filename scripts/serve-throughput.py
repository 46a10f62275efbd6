#!/usr/bin/env python3
"""Aggregate generation speed of `liger serve` with 1 client and with N concurrent streaming
clients (greedy, the same max_tokens), interleaved for ROUNDS rounds; checks each client's
text equals what it gets alone.

usage: scripts/serve-throughput.py BASE_URL [CLIENTS=4] [MAX_TOKENS=64] [ROUNDS=3]
e.g.   liger serve -m model.gguf --parallel 4 --port 8080 &
       scripts/serve-throughput.py http://127.0.0.1:8080 4 64 3
"""
import json, sys, threading, time, urllib.request

base = sys.argv[1]
clients = int(sys.argv[2]) if len(sys.argv) > 2 else 4
max_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 64
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
prompts = ["The capital of France is", "Once upon a time", "1, 2, 3, 4,", "Water is",
           "The best way to learn", "In the morning I", "My favourite food", "The river"]


def stream(prompt):
    """(text, completion tokens) of a streamed greedy completion that ignores stop tokens."""
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(base + "/v1/completions", body, {"Content-Type": "application/json"})
    text, tokens = "", 0
    with urllib.request.urlopen(req) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            v = json.loads(line[6:])
            if v.get("usage"):
                tokens = v["usage"]["completion_tokens"]
            for c in v.get("choices", []):
                text += c.get("text", "")
    return text, tokens


def together(ps):
    out = [None] * len(ps)
    def run(i):
        out[i] = stream(ps[i])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(ps))]
    t = time.time()
    [th.start() for th in threads]
    [th.join() for th in threads]
    return out, time.time() - t


ps = [prompts[i % len(prompts)] for i in range(clients)]
alone_text = [stream(p)[0] for p in ps]  # warm-up, and each prompt's text alone
one, many = [], []
for _ in range(rounds):
    (r,), dt = together(ps[:1])
    one.append(r[1] / dt)
    rs, dt = together(ps)
    many.append(sum(t for _, t in rs) / dt)
    counts = [t for _, t in rs]
    for i, (text, _) in enumerate(rs):
        if text != alone_text[i]:
            sys.exit(f"client {i}: {text!r} != alone {alone_text[i]!r}")
one.sort(); many.sort()
m1, mn = one[len(one) // 2], many[len(many) // 2]
print(f"1 client: {m1:.1f} tok/s; {clients} clients: {mn:.1f} tok/s in all "
      f"({mn / clients:.1f} each) = {mn / m1:.2f}x (medians of {rounds} interleaved rounds); "
      f"every client's text equals its text alone; tokens per client {counts}")
