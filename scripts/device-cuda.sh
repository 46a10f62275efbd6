#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in two halves (the GPU machine cannot build: nothing can
# be downloaded there).
#
#   scripts/device-cuda.sh prepare   # here: builds the test binaries and `liger` with the cuda
#                                    # and wgpu backends into .device/ (git-ignored, stripped)
#   scripts/device-cuda.sh run       # there, with .device carried: every CUDA test with
#                                    # LIGER_REQUIRE_CUDA=1 (a missing device fails), then
#                                    # `liger bench --backend cuda` (and wgpu where a Vulkan
#                                    # loader is found) on an 8B-shaped Q4_0 model; logs in
#                                    # $OUT when set
set -euo pipefail
cd "$(dirname "$0")/.."
out=.device
case ${1:-} in
prepare)
  mkdir -p $out
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
  features=liger-tests/cuda,liger-tests/wgpu,liger-cli/cuda,liger-cli/wgpu
  # The test executables cargo reports (the runtime's unit tests, the integration tests).
  cargo test --locked --no-run --workspace --features "$features" --message-format=json |
    python3 -c '
import json, sys, shutil
for line in sys.stdin:
    m = json.loads(line)
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe and m["target"]["name"] in ("liger", "integration"):
        shutil.copy(exe, ".device/" + ("runtime-tests" if m["target"]["name"] == "liger" else "integration-tests"))
'
  cargo build --locked --release -p liger-cli --features cuda,wgpu
  cp target/release/liger $out/liger
  strip $out/*
  ls -la $out
  du -sh $out
  ;;
run)
  log=${OUT:-/tmp}
  # The test binaries were built elsewhere: the fixtures are in this checkout.
  export LIGER_REQUIRE_CUDA=1 LIGER_REPO_ROOT=$PWD
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$log/gpu.txt" || true
  # NVRTC comes with the toolkit there (cudarc looks for libnvrtc.so, .so.12, ...: the
  # toolkit's unversioned link finds NVRTC 13).
  for d in /usr/local/nvidia/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
    if [[ -e $d ]]; then export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
  done
  status=0
  $out/runtime-tests cuda:: --test-threads 1 2>&1 | tee "$log/runtime-tests.log" || status=1
  $out/integration-tests cuda:: backends:: --test-threads 1 2>&1 | tee "$log/integration-tests.log" || status=1
  # The bar: an 8B-shaped Q4_0 model, tg at depth 0 and 32768 (flat), pp4096; first the
  # matvec tuning knob (rows per warp) on tg alone.
  $out/liger synth --like llama-3-8b -t q4_0 -o /tmp/s8b.gguf 2>&1 | tail -2
  for rows in 1 2 4; do
    echo "LIGER_CUDA_ROWS_PER_WARP=$rows" | tee -a "$log/bench-rows.log"
    LIGER_CUDA_ROWS_PER_WARP=$rows $out/liger bench -m /tmp/s8b.gguf --backend cuda -p 0 -n 64 \
      -r 2 2>&1 | tee -a "$log/bench-rows.log" || status=1
  done
  $out/liger bench -m /tmp/s8b.gguf --backend cuda -p 4096 -n 128 -d 0,32768 -r 2 2>&1 |
    tee "$log/bench-cuda.log" || status=1
  if ldconfig -p | grep -q libvulkan; then
    $out/liger synth --like llama-3.2-1b -t q4_0 -o /tmp/s1b.gguf 2>&1 | tail -2
    $out/liger bench -m /tmp/s1b.gguf --backend wgpu -p 512 -n 128 -r 2 2>&1 |
      tee "$log/bench-wgpu.log" || status=1
  fi
  exit $status
  ;;
*)
  echo "usage: $0 prepare|run" >&2
  exit 2
  ;;
esac
