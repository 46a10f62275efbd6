#!/usr/bin/env bash
# Seeds fuzz/corpus/<target> for every fuzz target from the test fixtures: small liger files,
# shrunken HF checkpoints, tokenizer vocabularies, server request bodies, state edits.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=fuzz/corpus
mkdir -p $corpus/{gguf_reader,hf_checkpoint,state_restore,tokenizer_gguf,server_request}

# The test profile's build (target/debug), so that after `cargo test` nothing is rebuilt;
# scripts/test.sh names the features its tests were built with (LIGER_TEST_FEATURES).
if [[ -n ${LIGER_TEST_FEATURES:-} ]]; then
  cargo build -q --locked --profile test --workspace --features "$LIGER_TEST_FEATURES" --bin liger
else
  cargo build -q --locked --profile test -p liger-cli
fi
for case in liger_gla liger_gsa liger_qwen2_gla; do
  for t in q4_0 q4_k_m f16; do
    target/debug/liger convert -q "tests/fixtures/liger/$case" -o "$corpus/gguf_reader/$case.$t.gguf" --type "$t" 2>/dev/null
  done
done

python3 scripts/fuzz-seeds.py "$corpus"
for d in $corpus/*; do echo "$(basename "$d"): $(ls "$d" | wc -l) seeds"; done
