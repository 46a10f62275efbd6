//! A Llama-architecture GGUF (as llama.cpp's tools write them) as a conversion source. Its
//! tensors are dequantized to f32, and `attn_q` / `attn_k` rows are un-permuted: llama.cpp's
//! converter interleaves the two halves of each head (HF row `i` → GGUF row `2i`, row
//! `i + d/2` → `2i + 1`) for its interleaved RoPE, while liger uses HF's `rotate_half`
//! RoPE. The result is a Liger-GLA model over that base *without* Liger training or LoRA
//! recovery (the paper's "no LoRA" ablation): correct to the math, poor at answering.

use crate::source::WeightSource;
use liger::config::{
    meta_f32, meta_opt, meta_str, meta_usize, DEFAULT_GATE_NORMALIZER, DEFAULT_MIX_SWA,
    DEFAULT_WINDOW,
};
use liger::gguf::{GgufFile, TensorInfo};
use liger::quant::dequantize_row;
use liger::{Base, Error, LigerConfig, Result, Variant};
use std::ops::Range;
use std::path::Path;

pub struct LlamaGgufSource {
    pub file: GgufFile,
    pub config: LigerConfig,
}

impl LlamaGgufSource {
    pub fn open(path: &Path) -> Result<LlamaGgufSource> {
        let file = GgufFile::open(path)?;
        let arch = meta_str(&file, "general.architecture")?;
        if arch != "llama" {
            return Err(Error::Unsupported(format!(
                "{}: GGUF architecture '{arch}' (only 'llama' GGUFs convert; '{}' files are already liger files)",
                path.display(),
                liger::config::ARCHITECTURE
            )));
        }
        if file.tensor("rope_freqs.weight").is_some() {
            return Err(Error::Unsupported(format!(
                "{}: Llama-3.1-style rope_freqs tensor; convert the HF checkpoint instead (its rope_scaling is read)",
                path.display()
            )));
        }
        let n_heads = meta_usize(&file, "llama.attention.head_count")?;
        let hidden = meta_usize(&file, "llama.embedding_length")?;
        if n_heads == 0 {
            return Err(Error::Config("llama.attention.head_count is 0".into()));
        }
        let head_dim =
            meta_opt(&file, "llama.attention.key_length", meta_usize)?.unwrap_or(hidden / n_heads);
        let vocab_size = match meta_opt(&file, "llama.vocab_size", meta_usize)? {
            Some(v) => v,
            None => file
                .tensor("token_embd.weight")
                .map(|t| t.n_rows())
                .ok_or_else(|| Error::Tensor("token_embd.weight is missing".into()))?,
        };
        let config = LigerConfig {
            variant: Variant::Gla,
            base: Base::Llama,
            n_layers: meta_usize(&file, "llama.block_count")?,
            hidden,
            ffn: meta_usize(&file, "llama.feed_forward_length")?,
            n_heads,
            n_kv_heads: meta_opt(&file, "llama.attention.head_count_kv", meta_usize)?
                .unwrap_or(n_heads),
            head_dim,
            vocab_size,
            rms_eps: meta_f32(&file, "llama.attention.layer_norm_rms_epsilon")?,
            rope_theta: meta_opt(&file, "llama.rope.freq_base", meta_f32)?.unwrap_or(10000.0),
            rope_scaling: None,
            context_length: meta_opt(&file, "llama.context_length", meta_usize)?.unwrap_or(0)
                as u32,
            window: DEFAULT_WINDOW,
            mix_swa: DEFAULT_MIX_SWA,
            gate_normalizer: DEFAULT_GATE_NORMALIZER,
            gsa_slots: head_dim,
            tie_embeddings: file.tensor("output.weight").is_none(),
            attention_bias: file.tensor("blk.0.attn_q.bias").is_some(),
            untrained: true,
        };
        if let Some(kind) = file.get("llama.rope.scaling.type").and_then(|v| v.as_str()) {
            if kind != "none" {
                return Err(Error::Unsupported(format!(
                    "llama.rope.scaling.type '{kind}' in a GGUF source"
                )));
            }
        }
        config.validate()?;
        Ok(LlamaGgufSource { file, config })
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.file
            .tensor(name)
            .ok_or_else(|| Error::Tensor(format!("tensor '{name}' is missing")))
    }

    /// Heads whose rows llama.cpp permuted: `Some(n_heads)` for attn_q / attn_k.
    fn permuted_heads(&self, name: &str) -> Option<usize> {
        if name.ends_with(".attn_q.weight") {
            Some(self.config.n_heads)
        } else if name.ends_with(".attn_k.weight") {
            Some(self.config.n_kv_heads)
        } else {
            None
        }
    }
}

/// Undoes llama.cpp's q/k row permutation within each head of `d` rows of `row_len`.
/// `rows` holds whole heads.
pub fn unpermute_heads(rows: &[f32], row_len: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows.len()];
    let head = d * row_len;
    for (src, dst) in rows.chunks_exact(head).zip(out.chunks_exact_mut(head)) {
        for i in 0..d / 2 {
            dst[i * row_len..(i + 1) * row_len]
                .copy_from_slice(&src[2 * i * row_len..(2 * i + 1) * row_len]);
            dst[(i + d / 2) * row_len..(i + d / 2 + 1) * row_len]
                .copy_from_slice(&src[(2 * i + 1) * row_len..(2 * i + 2) * row_len]);
        }
    }
    out
}

impl WeightSource for LlamaGgufSource {
    fn config(&self) -> &LigerConfig {
        &self.config
    }

    fn names(&self) -> Vec<String> {
        self.file.tensors().iter().map(|t| t.name.clone()).collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.file
            .tensor(name)
            .map(|t| t.shape_rows_first().iter().map(|&d| d as usize).collect())
    }

    fn read_rows(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        let (row_len, n_rows) = (info.row_len(), info.n_rows());
        if rows.end > n_rows || rows.start > rows.end {
            return Err(Error::Tensor(format!(
                "tensor '{name}': rows {rows:?} of {n_rows}"
            )));
        }
        let row_bytes = info.ggml_type.row_bytes(row_len)?;
        let data = self.file.tensor_data(info);
        let mut out = vec![0f32; rows.len() * row_len];
        dequantize_row(
            info.ggml_type,
            &data[rows.start * row_bytes..rows.end * row_bytes],
            &mut out,
        )
        .map_err(|e| Error::Tensor(format!("tensor '{name}': {e}")))?;
        if self.permuted_heads(name).is_some() {
            let d = self.config.head_dim;
            if rows.start % d != 0 || rows.len() % d != 0 {
                return Err(Error::InvalidArgument(format!(
                    "tensor '{name}': rows {rows:?} split a head of {d}"
                )));
            }
            out = unpermute_heads(&out, row_len, d);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::unpermute_heads;

    #[test]
    fn unpermute_inverts_llama_cpp_order() {
        // One head of d = 4 rows of length 1: HF rows [a, b, c, d] are stored by llama.cpp
        // as [a, c, b, d] (row i -> 2i, row i + d/2 -> 2i + 1).
        let gguf = [10.0, 30.0, 20.0, 40.0, 11.0, 31.0, 21.0, 41.0];
        assert_eq!(
            unpermute_heads(&gguf, 1, 4),
            [10.0, 20.0, 30.0, 40.0, 11.0, 21.0, 31.0, 41.0]
        );
    }
}
