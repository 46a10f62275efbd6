#!/usr/bin/env bash
# Seeds fuzz/corpus/<target> for every fuzz target from the test fixtures: small liger files,
# shrunken HF checkpoints, tokenizer vocabularies, server request bodies, state edits.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=fuzz/corpus
mkdir -p $corpus/{gguf_reader,hf_checkpoint,state_restore,tokenizer_gguf,server_request,chat_template,chat_file,lora_adapter,grammar_schema,capi_sequence}

# The converter: $LIGER_BIN where scripts/test.sh names the one its `cargo test` built (a
# `cargo build` of the binary alone resolves the dependencies' features without the tests'
# dev-dependencies and rebuilds much of the tree), else the test profile's build.
liger=${LIGER_BIN:-}
if [[ -z $liger ]]; then
  cargo build -q --locked --profile test -p liger-cli
  liger=target/debug/liger
fi
[[ -x $liger ]] || { echo "fuzz-seed-corpus.sh: no liger binary at $liger" >&2; exit 1; }
for case in liger_gla liger_gsa liger_qwen2_gla; do
  for t in q4_0 q4_k_m f16; do
    "$liger" convert -q "tests/fixtures/liger/$case" -o "$corpus/gguf_reader/$case.$t.gguf" --type "$t" 2>/dev/null
  done
done

python3 scripts/fuzz-seeds.py "$corpus"
for d in $corpus/*; do echo "$(basename "$d"): $(ls "$d" | wc -l) seeds"; done
