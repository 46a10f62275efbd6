#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, from the seed corpus (growing it),
# with the target's dictionary where it has one (fuzz/dict/<target>.dict); fails on the first
# crash, leak, timeout (10 s per input) or out-of-memory (2 GiB), leaving the input in
# fuzz/artifacts/<target>/, and prints each target's executions and coverage.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (SECONDS per target)
#        scripts/fuzz.sh --minutes N [TARGET...] (a campaign of N minutes in all, shared out)
# Installs cargo-fuzz 0.13.2 if missing; `RUSTC_BOOTSTRAP=1` lets the stable toolchain take the
# sanitizer flags cargo-fuzz passes. Builds with debug assertions (overflow checks on).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=
if [[ ${1:-} == --minutes ]]; then minutes=$2; shift 2; seconds=0; else seconds=${1:-60}; shift || true; fi
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(gguf_reader hf_checkpoint state_restore tokenizer_gguf server_request
  chat_template chat_file lora_adapter grammar_schema capi_sequence)
[[ -z $minutes ]] || seconds=$(( minutes * 60 / ${#targets[@]} ))
# The pinned version: one installed by hand at another version is replaced.
cargo fuzz --version 2>/dev/null | grep -q '0\.13\.2' || cargo install -q --locked --force cargo-fuzz@0.13.2
[[ -n $(ls -A fuzz/corpus/capi_sequence 2>/dev/null) ]] || scripts/fuzz-seed-corpus.sh
export RUSTC_BOOTSTRAP=1
(cd fuzz && cargo fuzz build -a)
bin=fuzz/target/x86_64-unknown-linux-gnu/release
for t in "${targets[@]}"; do
  mkdir -p "fuzz/artifacts/$t"
  echo "fuzzing $t for ${seconds}s"
  log=fuzz/artifacts/$t/last-run.log
  status=0
  dict=()
  [[ -f fuzz/dict/$t.dict ]] && dict=(-dict="fuzz/dict/$t.dict")
  "$bin/$t" "fuzz/corpus/$t" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1 || status=$?
  execs=$(grep -E "^stat::number_of_executed_units" "$log" | awk '{print $2}')
  cov=$(grep -oE "cov: [0-9]+" "$log" | tail -1)
  echo "$t: ${execs:-0} executions in ${seconds}s, ${cov:-cov: ?}, corpus $(ls "fuzz/corpus/$t" | wc -l)"
  if [[ $status -ne 0 ]]; then
    grep -E -A30 "^==[0-9]+==|panicked|SUMMARY" "$log" | head -60 >&2 || tail -40 "$log" >&2
    echo "fuzz target $t failed (exit $status); the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
