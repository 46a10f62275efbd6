#!/usr/bin/env bash
# Runs the runtime's unit tests that touch raw memory under Miri (nightly toolchain with the
# miri component): the GGUF reader and quantization, the worker pool, and the SIMD kernels
# against the scalar reference — once at the baseline target and once with AVX2/FMA/F16C
# enabled at compile time (Miri cannot detect CPU features at run time, so the x86 kernels
# run only when compiled in).
# Usage: scripts/miri.sh [extra test filters]
set -euo pipefail
cd "$(dirname "$0")/.."
filters=("${@:-gguf:: quant:: cpu::pool:: cpu::kernels::}")
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
# shellcheck disable=SC2086
cargo +nightly miri test -p liger-runtime --lib -- ${filters[*]}
RUSTFLAGS="-Ctarget-feature=+avx2,+fma,+f16c" CARGO_TARGET_DIR=target/miri-avx2 \
  cargo +nightly miri test -p liger-runtime --lib -- cpu::kernels::
