#!/usr/bin/env bash
# Instructions, and Advanced SIMD / FP instructions, that liger and llama.cpp execute per decoded
# token and per prompt token on AArch64, counted under qemu-user by scripts/qemu-insn-count.c: a
# proxy for NEON speed where no ARM machine is at hand. Both run 1 thread (no spin loops counted),
# the same weights (LIGER_GGUF and its llama rewrite, scripts/liger-to-llama-gguf.py), and each
# count is the difference of two runs of different lengths divided by the tokens between them,
# so loading and warm-up cancel. What it predicts: relative work per token on an in-order or
# narrow core; what it does not: memory stalls, instruction latencies and issue width (a 4-wide
# Cortex-A76 runs many more of these per cycle than a Cortex-A53), nor llama.cpp's attention
# beside liger's recurrence (different mixers on the same matrices).
#
# Usage: scripts/neon-insn-count.sh LIGER_GGUF LLAMA_GGUF
#   QEMU_CPU (default max: dotprod, i8mm, ...); llama.cpp is built for ARCH (default
#   armv8.2-a+dotprod) from the source ../shared/scripts/llamacpp-baseline.sh unpacks (LLAMA_SRC).
# Needs qemu-user (with plugin support: Debian's qemu-user, not -static), gcc/g++-aarch64-linux-gnu,
# cmake, and the aarch64-unknown-linux-gnu Rust target.
set -euo pipefail
liger_model=$1 llama_model=$2
root=$(cd "$(dirname "$0")/.." && pwd)
cpu=${QEMU_CPU:-max}
arch=${ARCH:-armv8.2-a+dotprod}
src=${LLAMA_SRC:-$HOME/.cache/liger-baseline/llama.cpp}
work=${LLAMA_AARCH64_BUILD:-$HOME/.cache/liger-baseline-aarch64/${arch//+/-}}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

gcc -shared -fPIC -O2 -o "$tmp/count.so" "$root/scripts/qemu-insn-count.c"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
(cd "$root" && cargo build --release --locked --target aarch64-unknown-linux-gnu -p liger-cli >&2)
liger=$root/target/aarch64-unknown-linux-gnu/release/liger
if [[ ! -x $work/bin/llama-bench ]]; then
  [[ -d $src ]] || { echo "no llama.cpp source at $src: run ../shared/scripts/llamacpp-baseline.sh" >&2; exit 1; }
  cmake -S "$src" -B "$work" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_SYSTEM_NAME=Linux \
    -DCMAKE_SYSTEM_PROCESSOR=aarch64 -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc \
    -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH="$arch" \
    -DGGML_OPENMP=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$work/bin" >&2
  cmake --build "$work" --target llama-bench -j"$(nproc)" >&2
fi
llama=$work/bin/llama-bench

# count PROGRAM ARGS… → "instructions simd-instructions" of one run.
count() {
  qemu-aarch64 -cpu "$cpu" -plugin "$tmp/count.so" -L /usr/aarch64-linux-gnu "$@" 2>"$tmp/err" >/dev/null
  awk '/^insns/ {print $2, $4}' "$tmp/err"
}
# per NAME SHORT LONG PROGRAM-ARGS-WITH-@N@ → per-token counts between runs of SHORT and LONG tokens.
per() {
  local name=$1 short=$2 long=$3; shift 3
  local a b
  a=$(count "${@//@N@/$short}") b=$(count "${@//@N@/$long}")
  python3 - "$name" "$short" "$long" "$a" "$b" <<'PY'
import sys
name, short, long, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(), sys.argv[5].split()
n = long - short
insns, simd = (int(b[0]) - int(a[0])) / n, (int(b[1]) - int(a[1])) / n
print(f"{name:<34} {insns / 1e6:10.2f} M insns/token {simd / 1e6:10.2f} M SIMD/FP ({100 * simd / insns:.0f} %)")
PY
}
echo "qemu -cpu $cpu; llama.cpp built for $arch; 1 thread"
per "liger decode"      4 12 "$liger" bench -m "$liger_model" -t 1 -r 1 -p 0 -n @N@
per "llama.cpp decode"  4 12 "$llama" -m "$llama_model" -t 1 -r 1 -p 0 -n @N@
per "liger prefill"     64 128 "$liger" bench -m "$liger_model" -t 1 -r 1 -p @N@ -n 0
per "llama.cpp prefill" 64 128 "$llama" -m "$llama_model" -t 1 -r 1 -p @N@ -n 0
