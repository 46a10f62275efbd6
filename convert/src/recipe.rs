//! Which ggml type each tensor gets for a `--type`.
//!
//! Norm weights and biases are always F32. An untied `token_embd` is only gathered (one row
//! per token), never streamed through a matmul, so its precision costs disk space but no
//! speed: it is kept one step above the file's type (F16 for `q8_0`, Q8_0 for `q4_0` and
//! `q4_k_m`). A tied one is also the output head and follows the head's rule: for `q4_0` and
//! `q4_k_m` the output head (or the tied embedding) is Q6_K, as llama.cpp makes it — at 4 bits
//! it costs SmolLM2 a KL divergence of several nats per token. For `q4_k_m` (in the spirit of
//! llama.cpp's Q4_K_M):
//! `attn_v` and `ffn_down` are Q6_K in the first and last eighth of the layers and every
//! third layer between, Q4_K elsewhere; everything else is Q4_K. A matrix whose rows are not
//! a whole number of the chosen type's blocks falls back to a type of at least the same
//! quality that fits (llama.cpp does the same): K-quants (256) → Q8_0 (32) → F16.

use crate::names::PlannedTensor;
use liger::{Error, GgmlType, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4KM,
}

impl std::str::FromStr for OutType {
    type Err = Error;
    fn from_str(s: &str) -> Result<OutType> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "bf16" => OutType::BF16,
            "q8_0" => OutType::Q8_0,
            "q4_0" => OutType::Q4_0,
            "q4_k_m" => OutType::Q4KM,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "--type '{other}' (choose f32, f16, bf16, q8_0, q4_0 or q4_k_m)"
                )))
            }
        })
    }
}

impl OutType {
    pub fn name(self) -> &'static str {
        match self {
            OutType::F32 => "f32",
            OutType::F16 => "f16",
            OutType::BF16 => "bf16",
            OutType::Q8_0 => "q8_0",
            OutType::Q4_0 => "q4_0",
            OutType::Q4KM => "q4_k_m",
        }
    }

    /// llama.cpp's `llama_ftype` for `general.file_type`.
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Q4_0 => 2,
            OutType::Q8_0 => 7,
            OutType::Q4KM => 15,
            OutType::BF16 => 32,
        }
    }
}

/// llama.cpp's `use_more_bits`: first and last eighth of the layers, and every third between.
fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2
}

/// The type of `t`, and why it differs from the recipe's choice when it had to fall back.
pub fn choose(
    out: OutType,
    t: &PlannedTensor,
    n_layers: usize,
    tied: bool,
) -> (GgmlType, Option<String>) {
    if !t.is_matrix() {
        return (GgmlType::F32, None);
    }
    let gathered_only = t.name == "token_embd.weight" && !tied;
    let is_head = t.name == "output.weight" || (tied && t.name == "token_embd.weight");
    let wanted = match out {
        OutType::Q8_0 if gathered_only => GgmlType::F16,
        OutType::Q4_0 | OutType::Q4KM if gathered_only => GgmlType::Q8_0,
        OutType::F32 => GgmlType::F32,
        OutType::F16 => GgmlType::F16,
        OutType::BF16 => GgmlType::BF16,
        OutType::Q8_0 => GgmlType::Q8_0,
        OutType::Q4_0 if is_head => GgmlType::Q6_K,
        OutType::Q4_0 => GgmlType::Q4_0,
        OutType::Q4KM => {
            let sensitive =
                t.name.ends_with(".attn_v.weight") || t.name.ends_with(".ffn_down.weight");
            if is_head || (sensitive && t.layer.is_some_and(|l| use_more_bits(l, n_layers))) {
                GgmlType::Q6_K
            } else {
                GgmlType::Q4_K
            }
        }
    };
    let mut ty = wanted;
    for fallback in [GgmlType::Q8_0, GgmlType::F16] {
        if t.row_len() % ty.block_size() == 0 {
            break;
        }
        ty = fallback;
    }
    let note = (ty != wanted).then(|| {
        format!(
            "{wanted} wanted; rows of {} are not whole {}-blocks",
            t.row_len(),
            wanted.block_size()
        )
    });
    (ty, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(name: &str, layer: Option<usize>, row_len: usize) -> PlannedTensor {
        PlannedTensor {
            name: name.into(),
            shape: vec![64, row_len],
            layer,
        }
    }

    #[test]
    fn q4_k_m_recipe_and_fallbacks() {
        let n = 16;
        let pick =
            |name: &str, layer, row| choose(OutType::Q4KM, &matrix(name, layer, row), n, false).0;
        assert_eq!(pick("output.weight", None, 512), GgmlType::Q6_K);
        assert_eq!(pick("token_embd.weight", None, 512), GgmlType::Q8_0);
        assert_eq!(
            choose(
                OutType::Q8_0,
                &matrix("token_embd.weight", None, 512),
                n,
                false
            )
            .0,
            GgmlType::F16
        );
        assert_eq!(
            choose(
                OutType::Q8_0,
                &matrix("token_embd.weight", None, 512),
                n,
                true
            )
            .0,
            GgmlType::Q8_0
        );
        assert_eq!(
            choose(
                OutType::Q4KM,
                &matrix("token_embd.weight", None, 512),
                n,
                true
            )
            .0,
            GgmlType::Q6_K
        );
        assert_eq!(pick("blk.0.attn_v.weight", Some(0), 512), GgmlType::Q6_K);
        assert_eq!(pick("blk.3.attn_v.weight", Some(3), 512), GgmlType::Q4_K);
        assert_eq!(pick("blk.4.ffn_down.weight", Some(4), 512), GgmlType::Q6_K); // (4 - 2) % 3 == 2
        assert_eq!(
            pick("blk.15.ffn_down.weight", Some(15), 512),
            GgmlType::Q6_K
        );
        assert_eq!(pick("blk.5.attn_q.weight", Some(5), 512), GgmlType::Q4_K);
        let (ty, note) = choose(
            OutType::Q4KM,
            &matrix("blk.5.attn_q.weight", Some(5), 128),
            n,
            false,
        );
        assert_eq!(ty, GgmlType::Q8_0);
        assert!(note.unwrap().contains("Q4_K wanted"));
        assert_eq!(pick("blk.5.attn_q.weight", Some(5), 100), GgmlType::F16);
        let norm = PlannedTensor {
            name: "blk.0.attn_norm.weight".into(),
            shape: vec![512],
            layer: Some(0),
        };
        assert_eq!(choose(OutType::Q4_0, &norm, n, false).0, GgmlType::F32);
        // q4_0: the head (or the tied embedding) is Q6_K, other matrices Q4_0.
        let q4_0 = |name: &str, tied| choose(OutType::Q4_0, &matrix(name, None, 512), n, tied).0;
        assert_eq!(q4_0("output.weight", false), GgmlType::Q6_K);
        assert_eq!(q4_0("token_embd.weight", true), GgmlType::Q6_K);
        assert_eq!(q4_0("token_embd.weight", false), GgmlType::Q8_0);
        assert_eq!(q4_0("blk.1.attn_q.weight", false), GgmlType::Q4_0);
    }
}
