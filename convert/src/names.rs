//! Tensor names: the liger file uses llama.cpp's GGUF names; HF checkpoints use
//! `model.layers.N.self_attn.q_proj.weight` and friends. One table maps between them.

use liger::{LigerConfig, Result};

/// What a tensor is, by its GGUF name.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    pub name: String,
    /// Rows-first (PyTorch) shape: `[out_features, in_features]` for matrices, `[n]` for vectors.
    pub shape: Vec<usize>,
    /// Layer index for `blk.N.*` tensors.
    pub layer: Option<usize>,
}

impl PlannedTensor {
    pub fn is_matrix(&self) -> bool {
        self.shape.len() == 2
    }
    pub fn row_len(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
    pub fn n_rows(&self) -> usize {
        self.shape.iter().rev().skip(1).product()
    }
    /// ggml dims (row length first).
    pub fn ggml_dims(&self) -> Vec<u64> {
        self.shape.iter().rev().map(|&d| d as u64).collect()
    }
}

/// Every tensor a liger file of `config` holds, in file order, with its expected shape.
pub fn plan(config: &LigerConfig) -> Result<Vec<PlannedTensor>> {
    let (d_model, v, f) = (config.hidden, config.vocab_size, config.ffn);
    let q_dim = config.n_heads * config.head_dim;
    let kv_dim = config.n_kv_heads * config.head_dim;
    let global = |name: &str, shape: Vec<usize>| PlannedTensor {
        name: name.into(),
        shape,
        layer: None,
    };
    let mut out = vec![global("token_embd.weight", vec![v, d_model])];
    for l in 0..config.n_layers {
        let t = |suffix: &str, shape: Vec<usize>| PlannedTensor {
            name: format!("blk.{l}.{suffix}"),
            shape,
            layer: Some(l),
        };
        out.push(t("attn_norm.weight", vec![d_model]));
        out.push(t("attn_q.weight", vec![q_dim, d_model]));
        out.push(t("attn_k.weight", vec![kv_dim, d_model]));
        out.push(t("attn_v.weight", vec![kv_dim, d_model]));
        if config.attention_bias {
            out.push(t("attn_q.bias", vec![q_dim]));
            out.push(t("attn_k.bias", vec![kv_dim]));
            out.push(t("attn_v.bias", vec![kv_dim]));
        }
        out.push(t("attn_output.weight", vec![d_model, q_dim]));
        out.push(t("ffn_norm.weight", vec![d_model]));
        out.push(t("ffn_gate.weight", vec![f, d_model]));
        out.push(t("ffn_up.weight", vec![f, d_model]));
        out.push(t("ffn_down.weight", vec![d_model, f]));
    }
    out.push(global("output_norm.weight", vec![d_model]));
    if !config.tie_embeddings {
        out.push(global("output.weight", vec![v, d_model]));
    }
    Ok(out)
}

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
