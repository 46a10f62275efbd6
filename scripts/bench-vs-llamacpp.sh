#!/usr/bin/env bash
# Side-by-side speed of liger and llama.cpp on the same weights, interleaved so that the noise
# of a shared machine hits both alike: ROUNDS rounds of (llama-bench, liger bench), each
# `-r 3`; prints every round and the median tokens/s of each test with the ratio.
#
# Usage: scripts/bench-vs-llamacpp.sh LLAMA_GGUF LIGER_GGUF [ROUNDS] [extra bench args...]
#   e.g. scripts/bench-vs-llamacpp.sh smollm2.Q4_0.gguf smollm2-liger.Q4_0.gguf 5 -p 512 -n 128
# Needs the llama.cpp baseline (../shared/scripts/llamacpp-baseline.sh; LLAMA_BIN overrides
# its bin directory) and `cargo build --release -p liger-cli`.
set -euo pipefail
llama_model=$1 liger_model=$2 rounds=${3:-5}
shift $(( $# >= 3 ? 3 : $# ))
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(-p 512 -n 128)
bin=${LLAMA_BIN:-$HOME/.cache/liger-baseline/llama.cpp/build/bin}
root=$(cd "$(dirname "$0")/.." && pwd)
liger=$root/target/release/liger
threads=${THREADS:-2}
out=$(mktemp -d)
for r in $(seq "$rounds"); do
  LD_LIBRARY_PATH=$bin "$bin/llama-bench" -m "$llama_model" -t "$threads" -r 3 -o json "${args[@]}" \
    > "$out/llama.$r.json" 2>/dev/null
  "$liger" bench -m "$liger_model" -t "$threads" -r 3 -o json "${args[@]}" > "$out/liger.$r.json"
done
python3 - "$out" "$rounds" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def tests(name):
    runs = {}
    for r in range(1, rounds + 1):
        for t in json.load(open(f"{out}/{name}.{r}.json")):
            key = f"pp{t['n_prompt']}" if t["n_gen"] == 0 else f"tg{t['n_gen']}@d{t.get('n_depth', 0)}"
            runs.setdefault(key, []).append(t["avg_ts"])
    return runs
llama, liger = tests("llama"), tests("liger")
print(f"{'test':<14} {'llama.cpp t/s (median)':>24} {'liger t/s (median)':>20} {'ratio':>7}  rounds")
for key in liger:
    if key not in llama:
        continue
    a, b = statistics.median(llama[key]), statistics.median(liger[key])
    rounds_str = " ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(llama[key], liger[key]))
    print(f"{key:<14} {a:>24.2f} {b:>20.2f} {b / a:>7.2f}  {rounds_str}")
EOF
rm -rf "$out"
