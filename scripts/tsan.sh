#!/usr/bin/env bash
# Runs the runtime's concurrency tests under ThreadSanitizer (nightly toolchain with rust-src:
# the standard library is rebuilt instrumented, or TSan reports false races inside it): the
# worker pool, and sessions on one shared model from several threads equal to serial runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1}"
CARGO_TARGET_DIR=target/tsan cargo +nightly test -Zbuild-std --target x86_64-unknown-linux-gnu \
  -p liger-runtime --lib -- cpu::pool:: session::tests::sessions_on_many_threads
