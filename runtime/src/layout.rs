//! The tensors a liger file holds for a config, with their names (llama.cpp's) and shapes.
//! The converter writes exactly these; the model loader expects exactly these.

use crate::config::LigerConfig;

/// What a tensor is, by its GGUF name.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    /// Rows-first (PyTorch) shape: `[out_features, in_features]` for matrices, `[n]` for vectors.
    pub shape: Vec<usize>,
    /// Layer index for `blk.N.*` tensors.
    pub layer: Option<usize>,
}

impl TensorSpec {
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
pub fn tensor_specs(config: &LigerConfig) -> Vec<TensorSpec> {
    let (d_model, v, f) = (config.hidden, config.vocab_size, config.ffn);
    let q_dim = config.n_heads * config.head_dim;
    let kv_dim = config.n_kv_heads * config.head_dim;
    let global = |name: &str, shape: Vec<usize>| TensorSpec {
        name: name.into(),
        shape,
        layer: None,
    };
    let mut out = vec![global("token_embd.weight", vec![v, d_model])];
    for l in 0..config.n_layers {
        let t = |suffix: &str, shape: Vec<usize>| TensorSpec {
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
    out
}
