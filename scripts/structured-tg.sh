#!/usr/bin/env bash
# Decode speed with and without a JSON schema, interleaved on the same model and prompt:
# `liger run --json-schema` with each schema of scripts/schemas/, then the same prompt
# unconstrained (--ignore-eos), ROUNDS times; prints each pair and the ratio of the medians.
# Usage: scripts/structured-tg.sh MODEL.gguf [ROUNDS=3] [THREADS=2]
set -euo pipefail
model=$1 rounds=${2:-3} threads=${3:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
liger=$root/target/release/liger
tps() { grep -o "generated: [0-9]* tokens in [0-9.]*s ([0-9.]* tok/s)" | grep -o "([0-9.]*" | tr -d '('; }
with=() without=()
for r in $(seq "$rounds"); do
  for schema in "$root"/scripts/schemas/*.json; do
    prompt="Answer as JSON: $(basename "$schema" .json)"
    a=$("$liger" run -m "$model" -p "$prompt" --chat --json-schema "$schema" -n 128 -t "$threads" 2>&1 >/dev/null | tps)
    b=$("$liger" run -m "$model" -p "$prompt" --chat --ignore-eos -n 128 -t "$threads" 2>&1 >/dev/null | tps)
    echo "$(basename "$schema"): with schema $a tok/s, without $b tok/s"
    with+=("$a") without+=("$b")
  done
done
python3 - "${with[*]}" "${without[*]}" <<'PY'
import statistics, sys
w, wo = (list(map(float, a.split())) for a in sys.argv[1:3])
print(f"median tg: with schema {statistics.median(w):.1f}, without {statistics.median(wo):.1f}, "
      f"ratio {statistics.median(w) / statistics.median(wo):.2f}")
PY
