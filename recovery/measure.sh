#!/usr/bin/env bash
# The recovered demo model measured with the runtime itself: converts SmolLM2 with the adapter
# (Q8_0), then `liger perplexity` on the text fixture and on the held-out teacher chats (token
# ids as sampled, the chat prefix fed but not scored, per 512 positions), and greedy answers
# (`liger run --chat`) to ten everyday questions. The teacher's side of each number comes from
# `recover.py evaluate` (recovery/work/evaluation.json).
# Usage: recovery/measure.sh [ADAPTER_DIR]   (default recovery/adapter; needs recovery/work/data)
set -euo pipefail
cd "$(dirname "$0")/.."
ADAPTER=${1:-recovery/adapter}
CACHE=${LIGER_TEST_DATA:-$HOME/.cache/liger-test-data}
WORK=recovery/work
LIGER=${CARGO_TARGET_DIR:-target}/release/liger
scripts/fetch-test-data.sh "$CACHE" >/dev/null
cargo build --release -q -p liger-cli
MODEL=$WORK/recovered.q8_0.gguf
$LIGER convert "$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" --lora "$ADAPTER" -o "$MODEL" --type q8_0 2>/dev/null
echo "== gettysburg.txt"
$LIGER perplexity -m "$MODEL" --text tests/fixtures/text/gettysburg.txt --save-ids $WORK/gettysburg.ids 2>/dev/null
python3 - "$WORK" <<'PY'
import sys, torch
d = torch.load(f"{sys.argv[1]}/data/heldout.pt")
for k, row in enumerate(d["ids"]):
    open(f"{sys.argv[1]}/heldout{k}.ids", "w").write(",".join(map(str, row.tolist())) + "\n")
PY
for f in $WORK/heldout*.ids; do
  echo "== held-out teacher chat $(basename "$f") (2,048 tokens; the 23 predictions inside the prefix not scored)"
  $LIGER perplexity -m "$MODEL" --ids "$f" --skip 23 --stretch 512 2>/dev/null
done
echo "== ten everyday questions, each in a fresh chat (greedy, repeat penalty 1.15)"
for q in "What is the capital of France?" "How many days are there in a week?" \
  "What do bees make?" "What color is the sky on a clear day?" "Why do we have seasons on Earth?" \
  "Explain in two sentences what a computer does." "List three fruits that are red." \
  "Write a one-line poem about the sea." "Who wrote Romeo and Juliet?" \
  "What is the boiling point of water in Celsius?"; do
  echo "Q: $q"
  echo "A: $($LIGER run -m "$MODEL" --chat -p "$q" --temp 0 --repeat-penalty 1.15 -n 80 2>/dev/null | tr '\n' ' ')"
done
