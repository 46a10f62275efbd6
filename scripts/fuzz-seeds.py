#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target but gguf_reader (see fuzz/fuzz_targets/*.rs for each input's layout) into
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

# chat_template: template source, NUL, {"messages": [...], "tools": [...]}.
chatml = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
with_tools = ("{% if tools %}{% for t in tools %}{{ t | tojson }}{% endfor %}{% endif %}"
              "{% for m in messages %}{% if m.role == 'tool' %}[{{ m.content }}]{% else %}{{ m.role }}: "
              "{{ m.content | trim }}{% endif %}{% endfor %}{{ raise_exception('x') if messages | length > 9 }}")
loops = "{% for a in range(10) %}{% for b in range(10) %}{{ a * b }}{% endfor %}{% endfor %}{{ messages[0]['content'].strip().upper() }}"
context = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello"}],
           "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                                                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}
for i, source in enumerate([chatml, with_tools, loops]):
    put("chat_template", f"template{i}", source.encode() + b"\0" + json.dumps(context).encode())

# chat_file: flags (bit 0 re-seal, bit 1 raw) | n | tokens | (offset u16, xor)*.
for name, data in {
    "plain": bytes([0, 3, 1, 2, 3]),
    "resealed-json": bytes([1, 2, 1, 2]) + struct.pack("<HB", 20, 0x01),
    "resealed-length": bytes([1, 1, 5]) + struct.pack("<HB", 9, 0x10),
    "raw": bytes([2, 0]) + b"LGCT\x01\x00\x00\x00" + bytes(24),
}.items():
    put("chat_file", name, data)

# lora_adapter: config length (u16 LE), config JSON, safetensors.
lora = "tests/fixtures/liger/liger_gla_lora/adapter"
config = open(os.path.join(lora, "adapter_config.json"), "rb").read()
tensors = open(os.path.join(lora, "adapter_model.safetensors"), "rb").read()
put("lora_adapter", "fixture", struct.pack("<H", len(config)) + config + tensors)
cfg = json.loads(config)
cfg["rank_pattern"] = {"q_proj": 4}
cfg["use_rslora"] = True
c = json.dumps(cfg).encode()
put("lora_adapter", "patterns", struct.pack("<H", len(c)) + c + tensors)

# grammar_schema: kind byte (0 schema, 1 object, 2 lark, 3 regex), then the text.
for i, (kind, text) in enumerate([
    (0, {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "ok": {"type": "boolean"}},
         "required": ["name", "ok"], "additionalProperties": False}),
    (0, {"type": "array", "items": {"enum": ["a", "b", 3, None]}, "minItems": 1, "maxItems": 3}),
    (0, {"anyOf": [{"type": "integer", "minimum": -5, "maximum": 500}, {"type": "string", "pattern": "^[a-z]+$"}]}),
    (0, {"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"}),
    (1, ""),
    (2, 'start: "yes" | "no" | NUMBER\nNUMBER: /[0-9]+/'),
    (3, "[0-9]{3}-[a-z]+"),
]):
    body = text if isinstance(text, str) else json.dumps(text)
    put("grammar_schema", f"grammar{i}", bytes([kind]) + body.encode())

# capi_sequence: (op, arg) pairs: load, sessions, feed, fork, save, restore, free, in turn.
put("capi_sequence", "lifecycle", bytes([0, 0, 2, 0, 4, 0x19, 8, 0, 5, 0, 6, 0, 7, 1, 9, 1, 10, 0x30, 3, 0, 1, 0, 4, 1, 3, 1]))
put("capi_sequence", "corrupt-restore", bytes([0, 1, 2, 2, 4, 0x0a, 6, 2, 7, 0x0a, 7, 0x32, 8, 3, 11, 2]))
put("capi_sequence", "freed-handles", bytes([2, 0, 0, 2, 2, 3, 3, 3, 4, 3, 5, 3, 1, 0, 2, 4, 9, 4]))
