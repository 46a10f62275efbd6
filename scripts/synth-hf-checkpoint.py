#!/usr/bin/env python3
"""Writes a random-weight Liger-GLA HF checkpoint (config.json + sharded bf16 safetensors +
index) of a real model's shape, tensor by tensor, to measure the converter on realistic sizes.
Usage: synth-hf-checkpoint.py OUT_DIR [--like llama-3.2-1b|llama-3-8b|smollm2-135m] [--shard-gb 2]
Needs numpy."""
import argparse, json, os, struct
import numpy as np

SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                         rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)),
    "llama-3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
}

def tensors(c):
    d, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = d // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    yield "model.embed_tokens.weight", (v, d)
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        yield p + "input_layernorm.weight", (d,)
        yield p + "self_attn.q_proj.weight", (q, d)
        yield p + "self_attn.k_proj.weight", (kv, d)
        yield p + "self_attn.v_proj.weight", (kv, d)
        yield p + "self_attn.o_proj.weight", (d, q)
        yield p + "post_attention_layernorm.weight", (d,)
        yield p + "mlp.gate_proj.weight", (f, d)
        yield p + "mlp.up_proj.weight", (f, d)
        yield p + "mlp.down_proj.weight", (d, f)
    yield "model.norm.weight", (d,)
    if not c["tie_word_embeddings"]:
        yield "lm_head.weight", (v, d)

def bf16_random(shape, rng, std):
    x = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
    return (x.view(np.uint32) >> 16).astype(np.uint16)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--like", default="llama-3.2-1b", choices=sorted(SHAPES))
    ap.add_argument("--shard-gb", type=float, default=2.0)
    a = ap.parse_args()
    c = dict(SHAPES[a.like], model_type="liger_gla", architectures=["LigerGLAForCausalLM"], rms_norm_eps=1e-5,
             max_position_embeddings=131072, bos_token_id=0, eos_token_id=1, torch_dtype="bfloat16")
    os.makedirs(a.out, exist_ok=True)
    json.dump(c, open(os.path.join(a.out, "config.json"), "w"), indent=1)
    rng = np.random.default_rng(0)
    shards, current, size = [], [], 0
    for name, shape in tensors(c):
        n = int(np.prod(shape)) * 2
        if current and size + n > a.shard_gb * 2**30:
            shards.append(current); current, size = [], 0
        current.append((name, shape)); size += n
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {}, 0
        for name, shape in shard:
            n = int(np.prod(shape)) * 2
            header[name] = dict(dtype="BF16", shape=list(shape), data_offsets=[off, off + n]); off += n
            weight_map[name] = fname
        h = json.dumps(header).encode(); h += b" " * ((8 - len(h) % 8) % 8)
        with open(os.path.join(a.out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(h))); f.write(h)
            for name, shape in shard:
                std = 1.0 if name.endswith("norm.weight") else 0.02
                data = bf16_random(shape, rng, std) if not name.endswith("norm.weight") else np.full(shape, 0x3f80, np.uint16)
                f.write(data.tobytes())
        print(fname, flush=True)
    json.dump(dict(metadata={}, weight_map=weight_map), open(os.path.join(a.out, "model.safetensors.index.json"), "w"))

main()
