//! Tensor names: the liger file uses llama.cpp's GGUF names; HF checkpoints use
//! `model.layers.N.self_attn.q_proj.weight` and friends. One table maps between them.

pub use liger::layout::TensorSpec as PlannedTensor;

/// HF name → GGUF name, for the tensors a liger file holds.
pub fn hf_to_gguf(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let gguf = match rest {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{gguf}"))
}

/// HF tensors a Liger model does not use, dropped on conversion (with the reason).
pub fn hf_ignored(hf: &str) -> Option<&'static str> {
    if hf.ends_with("self_attn.q_norm.weight") || hf.ends_with("self_attn.k_norm.weight") {
        return Some("Qwen3 q_norm/k_norm: Liger-Qwen3 never applies them");
    }
    if hf.ends_with("rotary_emb.inv_freq") {
        return Some("RoPE frequencies are recomputed from the config");
    }
    None
}
