#!/usr/bin/env python3
"""Decode speed from Python against `liger bench` on the same model, interleaved rounds.

Usage: scripts/python-decode-speed.py MODEL [ROUNDS] [N_GEN]   (LIGER_BIN: the CLI, default
target/release/liger; the `liger` Python package installed: pip install ./python)

Each round runs, one after the other: `liger bench -p 0 -n N_GEN -r 1` (tg: N_GEN tokens fed one
by one), then in this process `Session.feed([t])` N_GEN times (the bindings' cost per call),
then `Model.generate(..., temperature=0, ignore_eos=True)` for N_GEN tokens (the generation
loop: sampling, detokenizing, one Python iteration per piece). Prints the medians and the
ratios to `liger bench`.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import liger


def main() -> None:
    model_path = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    n_gen = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    liger_bin = os.environ.get("LIGER_BIN", "target/release/liger")
    model = liger.Model(model_path, backend="cpu")
    vocab = model.n_vocab
    ids = [(i * 7919 + 104_729 + 13) % vocab for i in range(n_gen)]  # as liger bench's tokens
    bench, feed, generate = [], [], []
    for r in range(rounds):
        out = subprocess.run([liger_bin, "bench", "-m", model_path, "-p", "0", "-n", str(n_gen),
                              "-r", "1", "-o", "json", "--backend", "cpu"],
                             capture_output=True, text=True, check=True).stdout
        bench.append(json.loads(out)[0]["avg_ts"])
        s = model.session()
        s.feed([ids[0]])
        start = time.perf_counter()
        for t in ids:
            s.feed([t])
        feed.append(n_gen / (time.perf_counter() - start))
        g = model.generate([ids[0]], max_tokens=n_gen, temperature=0, ignore_eos=True)
        next(g)  # the prompt fed and the first token out: as tg, time the decode only
        start = time.perf_counter()
        count = 1 + sum(1 for _ in g)
        generate.append((g.completion_tokens - 1) / (time.perf_counter() - start))
        print(f"round {r + 1}: bench {bench[-1]:.1f}, feed {feed[-1]:.1f}, generate {generate[-1]:.1f} tok/s"
              f" ({count} pieces)", file=sys.stderr)
    b = statistics.median(bench)
    print(f"liger bench tg{n_gen}: {b:.2f} tok/s (median of {rounds})")
    for name, xs in (("Session.feed per token", feed), ("Model.generate", generate)):
        m = statistics.median(xs)
        print(f"{name}: {m:.2f} tok/s = {m / b:.3f} x liger bench")


if __name__ == "__main__":
    main()
