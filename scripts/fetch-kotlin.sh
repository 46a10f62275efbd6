#!/usr/bin/env bash
# A Kotlin compiler and kotlinx.coroutines for the Kotlin API's host test, from PyPI: the
# kotlin-jupyter-kernel wheel ships kotlin-stdlib 2.3 and a fat jar holding the compiler
# (org.jetbrains.kotlin.cli.jvm.K2JVMCompiler) and kotlinx.coroutines (flows included).
# Debian's kotlin (1.3) is too old for the API's Flow. Unpacks the jars into the cache and
# prints its path; tests/jni.rs finds them there (or in $LIGER_KOTLIN).
# Usage: scripts/fetch-kotlin.sh [CACHE_DIR]   (default ~/.cache/liger-kotlin)
set -euo pipefail
VERSION=0.19.0.944
CACHE=${1:-${LIGER_KOTLIN:-$HOME/.cache/liger-kotlin}}
if [[ -f $CACHE/kotlin-stdlib.jar && -f $CACHE/kotlin-all.jar ]]; then echo "$CACHE"; exit 0; fi
mkdir -p "$CACHE"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps -d "$tmp" "kotlin-jupyter-kernel==$VERSION" >&2
wheel=$(ls "$tmp"/kotlin_jupyter_kernel-*.whl)
python3 - "$wheel" "$CACHE" <<'PY'
import re, sys, zipfile
wheel, cache = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = name.rsplit("/", 1)[-1]
        if re.fullmatch(r"kotlin-stdlib-[0-9.]+(-RC)?\.jar", base):
            out = "kotlin-stdlib.jar"
        elif re.fullmatch(r"kotlin-jupyter-kernel-.*-all\.jar", base):
            out = "kotlin-all.jar"
        else:
            continue
        with z.open(name) as src, open(f"{cache}/{out}", "wb") as dst:
            dst.write(src.read())
PY
[[ -f $CACHE/kotlin-stdlib.jar && -f $CACHE/kotlin-all.jar ]] || { echo "the wheel lacks the jars" >&2; exit 1; }
echo "$CACHE"
