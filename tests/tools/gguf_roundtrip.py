#!/usr/bin/env python3
"""Reads a GGUF written by liger's writer with ggml's own `gguf` Python package and checks
every metadata value and every tensor (dequantized by gguf.quants) against what the Rust
test expected. Usage: gguf_roundtrip.py FILE EXPECTED.json   (exit 1 with the first mismatch)"""
import json
import math
import sys

import numpy as np
import gguf

path, expected_path = sys.argv[1], sys.argv[2]
expected = json.load(open(expected_path))
reader = gguf.GGUFReader(path)

def fail(msg):
    print(f"MISMATCH: {msg}")
    sys.exit(1)

def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b

for key, (type_name, value) in expected["metadata"].items():
    field = reader.fields.get(key)
    if field is None:
        fail(f"metadata '{key}' missing")
    if field.types[0].name != type_name:
        fail(f"metadata '{key}': type {field.types[0].name}, want {type_name}")
    got = field.contents()
    if isinstance(got, np.generic):
        got = got.item()
    if not same(got, value):
        fail(f"metadata '{key}': {got!r}, want {value!r}")

tensors = {t.name: t for t in reader.tensors}
if len(tensors) != len(expected["tensors"]):
    fail(f"{len(tensors)} tensors, want {len(expected['tensors'])}")
for want in expected["tensors"]:
    t = tensors.get(want["name"])
    if t is None:
        fail(f"tensor {want['name']} missing")
    if t.tensor_type.name != want["type"]:
        fail(f"tensor {t.name}: type {t.tensor_type.name}, want {want['type']}")
    if [int(d) for d in t.shape] != want["dims"]:
        fail(f"tensor {t.name}: dims {list(t.shape)}, want {want['dims']}")
    values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
    ref = np.array(want["values"], dtype=np.float32)
    if values.shape != ref.shape or not np.array_equal(values.view(np.uint32), ref.view(np.uint32)):
        i = int(np.argmax(values.view(np.uint32) != ref.view(np.uint32))) if values.shape == ref.shape else -1
        fail(f"tensor {t.name}: dequantized values differ (first at {i})")
print(f"OK: {len(expected['metadata'])} metadata values and {len(tensors)} tensors read back by gguf {gguf.__version__ if hasattr(gguf, '__version__') else ''}")
