"""A llama.cpp Llama GGUF (SmolLM2) as HF-named f32 weights and an HF-style config, with gguf-py.

Every tensor is dequantized to f32; the rows of attn_q / attn_k are put back in HF order
(llama.cpp's converter interleaves the two halves of each head's rows for its pairwise RoPE:
HF row i and i + d/2 of a head are GGUF rows 2i and 2i + 1).
"""
from __future__ import annotations

import numpy as np

LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.parts[f.data[0]]
    return v.tobytes().decode() if v.dtype == np.uint8 else v[0].item()


def unpermute_heads(w, n_heads):
    """[n_heads·d, in] in llama.cpp's row order -> HF's."""
    rows, cols = w.shape
    d = rows // n_heads
    return w.reshape(n_heads, d // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def hf_name(gguf_name):
    parts = gguf_name.split(".")
    if parts[0] == "token_embd":
        return "model.embed_tokens.weight"
    if parts[0] == "output_norm":
        return "model.norm.weight"
    if parts[0] == "output":
        return "lm_head.weight"
    if parts[0] == "blk" and parts[2] in LAYER_NAMES:
        return f"model.layers.{parts[1]}.{LAYER_NAMES[parts[2]]}.{parts[3]}"
    raise ValueError(f"unexpected tensor '{gguf_name}' in a Llama GGUF")


def read_llama_gguf(path):
    """-> (config dict, {HF name: f32 ndarray}, chat template or None)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(path)
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: architecture '{arch}', expected a llama GGUF")
    heads = _field(reader, "llama.attention.head_count")
    kv_heads = _field(reader, "llama.attention.head_count_kv", heads)
    state = {}
    for t in reader.tensors:
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape)])
        if ".attn_q." in t.name:
            w = unpermute_heads(w, heads)
        elif ".attn_k." in t.name:
            w = unpermute_heads(w, kv_heads)
        state[hf_name(t.name)] = w
    cfg = {
        "num_hidden_layers": _field(reader, "llama.block_count"),
        "hidden_size": _field(reader, "llama.embedding_length"),
        "intermediate_size": _field(reader, "llama.feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": _field(reader, "llama.attention.layer_norm_rms_epsilon"),
        "rope_theta": _field(reader, "llama.rope.freq_base", 10000.0),
        "tie_word_embeddings": "lm_head.weight" not in state,
    }
    return cfg, state, _field(reader, "tokenizer.chat_template")


def read_vocab(path):
    """The GGUF's token strings (GPT-2 byte-level BPE), for turning ids back into text."""
    from gguf import GGUFReader
    f = GGUFReader(path).fields["tokenizer.ggml.tokens"]
    return [bytes(f.parts[i]).decode() for i in f.data]


def detokenize(vocab, ids):
    """Byte-level BPE ids -> text (GPT-2's printable stand-ins mapped back to bytes)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    byte_of, extra = {}, 0
    for b in range(256):
        if b in printable:
            byte_of[chr(b)] = b
        else:
            byte_of[chr(256 + extra)] = b
            extra += 1
    out = bytearray()
    for i in ids:
        tok = vocab[i]
        if tok.startswith("<|") and tok.endswith("|>"):
            out += tok.encode()
        else:
            out += bytes(byte_of[c] for c in tok)
    return out.decode(errors="replace")
