#!/usr/bin/env bash
# Seeds fuzz/corpus/gguf_reader with small liger files converted from the test fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/corpus/gguf_reader
cargo build -q -p liger-cli
for case in tests/fixtures/liger/liger_gla tests/fixtures/liger/liger_gsa tests/fixtures/liger/liger_qwen2_gla; do
  for t in q4_0 q4_k_m f16; do
    target/debug/liger convert -q "$case" -o "fuzz/corpus/gguf_reader/$(basename "$case").$t.gguf" --type "$t" 2>/dev/null
  done
done
ls fuzz/corpus/gguf_reader | wc -l
