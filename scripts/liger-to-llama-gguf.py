#!/usr/bin/env python3
"""Rewrites a liger GGUF (e.g. from `liger synth`) as a llama.cpp `llama` GGUF holding the same
tensor bytes, so that llama.cpp's llama-bench can be timed on exactly the weights liger runs.

Only for speed comparisons: the recurrent variant is dropped (llama.cpp runs the same matrices as
softmax attention), q/k rows are not permuted (random weights have no meaning to preserve), and
the tokenizer is a placeholder SPM vocabulary of the model's size (byte tokens + fillers).

Usage: scripts/liger-to-llama-gguf.py IN.gguf OUT.gguf      (needs `pip install gguf numpy`)
"""
import sys

import gguf
import numpy as np


def field(reader, key):
    f = reader.fields[key]
    value = f.parts[f.data[0]]
    return value.tolist()[0] if value.dtype != np.uint8 else bytes(value).decode()


def main(src, dst):
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, "llama")
    w.add_name("liger-synth (as llama)")
    w.add_block_count(field(r, "liger.block_count"))
    w.add_context_length(131072)
    w.add_embedding_length(field(r, "liger.embedding_length"))
    w.add_feed_forward_length(field(r, "liger.feed_forward_length"))
    w.add_head_count(field(r, "liger.attention.head_count"))
    w.add_head_count_kv(field(r, "liger.attention.head_count_kv"))
    w.add_layer_norm_rms_eps(field(r, "liger.attention.layer_norm_rms_epsilon"))
    w.add_rope_freq_base(field(r, "liger.rope.freq_base"))
    w.add_key_length(field(r, "liger.attention.key_length"))
    w.add_value_length(field(r, "liger.attention.key_length"))
    w.add_rope_dimension_count(field(r, "liger.attention.key_length"))
    vocab = field(r, "liger.vocab_size")
    w.add_vocab_size(vocab)
    tokens = [f"<0x{b:02X}>".encode() for b in range(256)]
    tokens += [f"<t{i}>".encode() for i in range(vocab - len(tokens))]
    types = [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (vocab - 256)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types)
    w.add_bos_token_id(256)
    w.add_eos_token_id(257)
    for t in r.tensors:
        # Quantized data comes as [rows, bytes]: the writer derives the element shape.
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
