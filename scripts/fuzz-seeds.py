#!/usr/bin/env python3
"""Writes the seed inputs of the hf_checkpoint, state_restore, tokenizer_gguf and
server_request fuzz targets (see fuzz/fuzz_targets/*.rs for each input's layout) into
CORPUS/<target>/. Usage: fuzz-seeds.py CORPUS. Needs numpy; the binary GGUF seed needs gguf."""
import glob, json, os, struct, sys
import numpy as np

corpus = sys.argv[1]
rng = np.random.default_rng(7)


def put(target, name, data):
    with open(os.path.join(corpus, target, name), "wb") as f:
        f.write(data)


# hf_checkpoint: each fixture checkpoint shrunk to hidden 64, 2 heads of 32, 1 KV head,
# FFN 64, vocab 16, one layer, its tensors stored as F32, F16 or BF16 in turn.
SHRINK = {128: 64, 64: 32, 32: 32, 256: 64, 512: 16}
for i, case in enumerate(sorted(glob.glob("tests/fixtures/liger/*/"))):
    if os.path.exists(os.path.join(case, "adapter_config.json")):
        continue
    cfg = json.load(open(os.path.join(case, "config.json")))
    cfg.update(hidden_size=64, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
               vocab_size=16, num_hidden_layers=1, bos_token_id=0, eos_token_id=1)
    if cfg.get("head_dim"):
        cfg["head_dim"] = 32
    raw = open(os.path.join(case, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    dtype = ["F32", "F16", "BF16"][i % 3]
    out_header, blobs, offset = {}, [], 0
    for name, info in sorted(header.items()):
        if name == "__metadata__" or ".layers." in name and ".layers.0." not in name:
            continue
        shape = [SHRINK[d] for d in info["shape"]]
        x = rng.uniform(-0.2, 0.2, size=shape).astype(np.float32)
        if name.endswith("norm.weight"):
            x[...] = 1.0
        if dtype == "F16":
            b = x.astype(np.float16).tobytes()
        elif dtype == "BF16":
            b = (x.view(np.uint32) >> 16).astype(np.uint16).tobytes()
        else:
            b = x.tobytes()
        out_header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(out_header).encode()
    h += b" " * (-len(h) % 8)
    st = struct.pack("<Q", len(h)) + h + b"".join(blobs)
    c = json.dumps(cfg).encode()
    put("hf_checkpoint", os.path.basename(case.rstrip("/")), struct.pack("<H", len(c)) + c + st)

# state_restore: flags | n | tokens | (offset u16, xor)*.
for name, data in {
    "gla-window": bytes([0, 3, 1, 2, 3]),
    "hgrn2-hf": bytes([1 | 4 | 8, 2, 5, 6]),
    "gsa": bytes([2, 4, 1, 2, 3, 4]),
    "resealed-position": bytes([16, 1, 7]) + struct.pack("<HB", 24, 0xff),
    "resealed-window-len": bytes([16 | 1, 5, 1, 2, 3, 4, 5]) + struct.pack("<HB", 32, 0x07),
    "resealed-mode": bytes([16 | 2, 1, 1]) + struct.pack("<HB", 16, 0x01),
    "resealed-float": bytes([16, 2, 1, 2]) + struct.pack("<HB", 100, 0x7f),
    "other-mode": bytes([4, 1, 9]),
    "raw": bytes([32, 0]) + b"LGST\x01\x00\x00\x00" + bytes(40),
}.items():
    put("state_restore", name, data)

# tokenizer_gguf: text descriptions (type score text; `--` then merges).
gpt2 = ["gpt2 smollm", "3 0 <|im_start|>", "3 0 <|im_end|>", "1 0 <|endoftext|>"]
gpt2 += [f"1 0 {t}" for t in ["H", "e", "l", "o", "Ġ", "w", "r", "d", "1", "2", "He", "ll", "llo", "Ġw", "Hello"]]
gpt2 += ["--", "H e", "l l", "ll o", "Ġ w", "He llo"]
put("tokenizer_gguf", "gpt2.txt", "\n".join(gpt2).encode())
put("tokenizer_gguf", "gpt2-llama3.txt", "\n".join(gpt2).replace("smollm", "llama-bpe").encode())
llama = ["llama", "2 0 <unk>", "3 0 <s>", "3 0 </s>", "1 -1 ▁", "1 -2 a", "1 -3 b", "1 -0.5 ab",
         "1 -0.1 ▁ab", "6 0 <0x41>", "6 0 <0x0A>", "4 0 <tool>"]
put("tokenizer_gguf", "llama.txt", "\n".join(llama).encode())
try:
    import gguf
    path = os.path.join(corpus, "tokenizer_gguf", "llama.gguf")
    w = gguf.GGUFWriter(path, "llama")
    toks = [line.split(" ", 2) for line in llama[1:]]
    w.add_tokenizer_model("llama")
    w.add_token_list([t[2] for t in toks])
    w.add_token_scores([float(t[1]) for t in toks])
    w.add_token_types([int(t[0]) for t in toks])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
except ImportError:
    print("gguf not installed: no binary tokenizer seed", file=sys.stderr)

# server_request: first byte bit 0 = chat.
bodies = [
    (1, {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}),
    (1, {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello"}, {"role": "developer", "content": "x"}],
         "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.7, "top_p": 0.9,
         "max_tokens": 16, "seed": 3, "top_k": 40, "min_p": 0.05, "n": 1}),
    (1, {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
         "max_completion_tokens": 4}),
    (0, {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}),
    (0, {"prompt": ["one"], "stream": False}),
    (1, {"messages": []}),
]
for i, (chat, body) in enumerate(bodies):
    put("server_request", f"body{i}", bytes([chat]) + json.dumps(body).encode())
