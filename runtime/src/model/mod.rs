//! A loaded liger model, belonging to no device: config, weights read in place from the mapped
//! file, tokenizer, and the step plan every backend runs (`plan.rs`). A backend brings its own
//! resources (the CPU's worker pool and repacked weights: `cpu::model`; a GPU's uploaded
//! weights).

pub mod plan;
pub mod rope;
mod state;

pub use state::SequenceState;

use crate::config::LigerConfig;
use crate::constraint::GrammarEngine;
use crate::cpu::simd::SimdLevel;
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};
use crate::layout::tensor_specs;
use crate::quant::{dequantize, GgmlType};
use crate::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;

/// Where a weight matrix lives in the file: `[rows, cols]` of `ty`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatrixRef {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    offset: usize,
    n_bytes: usize,
}

impl MatrixRef {
    /// Where its bytes start in the file (what names a matrix: a tied LM head is the embedding).
    pub fn offset(&self) -> usize {
        self.offset
    }
}

/// A weight matrix as the file holds it, whatever runs it: `[rows, cols]` of `ty`, row-major
/// ggml blocks (a GPU backend repacks these; the CPU wraps them in its `WeightMatrix`).
#[derive(Clone, Copy, Debug)]
pub struct MatrixView<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl MatrixView<'_> {
    /// Row `r` as f32 into `out` (`cols` long).
    pub fn dequantize_row_into(&self, r: usize, out: &mut [f32]) {
        let n = self.data.len() / self.rows.max(1);
        // Lengths were validated when the model was loaded.
        let _ = crate::quant::dequantize_row(self.ty, &self.data[r * n..(r + 1) * n], out);
    }
}

pub(crate) struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: MatrixRef,
    pub wk: MatrixRef,
    pub wv: MatrixRef,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub wo: MatrixRef,
    pub ffn_norm: Vec<f32>,
    pub w_gate: MatrixRef,
    pub w_up: MatrixRef,
    pub w_down: MatrixRef,
}

pub(crate) struct Weights {
    pub token_embd: MatrixRef,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>,
    /// `output.weight`, or `token_embd` when tied.
    pub output: MatrixRef,
}

impl Weights {
    /// The matrix a product names.
    pub(crate) fn matrix(&self, m: plan::Matrix) -> &MatrixRef {
        match m {
            plan::Matrix::Layer(l, i) => {
                let lw = &self.layers[l];
                [
                    &lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down,
                ][i]
            }
            plan::Matrix::Output => &self.output,
        }
    }

    /// The weight vector an op names (`None` for an activation or a state, or a missing
    /// bias).
    pub(crate) fn vector(&self, buf: plan::Buf) -> Option<&[f32]> {
        use plan::{Buf, Projection};
        let layer = |l: usize| self.layers.get(l);
        match buf {
            Buf::AttnNorm(l) => layer(l).map(|lw| &lw.attn_norm[..]),
            Buf::FfnNorm(l) => layer(l).map(|lw| &lw.ffn_norm[..]),
            Buf::Bias(l, p) => layer(l).and_then(|lw| match p {
                Projection::Q => lw.bq.as_deref(),
                Projection::K => lw.bk.as_deref(),
                Projection::V => lw.bv.as_deref(),
            }),
            Buf::OutputNorm => Some(&self.output_norm),
            _ => None,
        }
    }

    /// The product matrices of every layer, then the LM head.
    pub(crate) fn products(&self) -> impl Iterator<Item = MatrixRef> + '_ {
        self.layers
            .iter()
            .flat_map(|l| [l.wq, l.wk, l.wv, l.wo, l.w_gate, l.w_up, l.w_down])
            .chain(std::iter::once(self.output))
    }
}

/// Options that apply to a loaded model.
/// A sequence's state may always take this much, whatever the file's size (a real model's
/// state is a small fraction of its weights: 4.4 MB for SmolLM2-135M, 34 MB for Llama-3-8B).
const MIN_STATE_BOUND: u64 = 64 << 20;

#[derive(Clone, Debug, Default)]
pub struct ModelOptions {
    /// Worker threads for the CPU kernels (default: the number of cores).
    pub threads: Option<usize>,
    /// SIMD level (default: the best this CPU has, or `LIGER_SIMD`); an unavailable one
    /// falls back to scalar.
    pub simd: Option<SimdLevel>,
    /// Mapped (default) or read into memory (`--no-mmap`).
    pub file_access: crate::gguf::FileAccess,
}

pub struct Model {
    file: GgufFile,
    pub config: LigerConfig,
    pub tokenizer: Option<Tokenizer>,
    pub(crate) weights: Weights,
    pub(crate) inv_freq: Vec<f32>,
    /// Identifies the file's header (metadata + tensor directory): binds saved states.
    pub fingerprint: u64,
    /// What a CPU backend of this model runs with: its worker threads and the SIMD level of its
    /// kernels. The pool and the repacked weights are the CPU backend's (`cpu::model`).
    threads: usize,
    pub simd: SimdLevel,
    /// The grammar compiler of the vocabulary, built on first use (structured output).
    grammars: std::sync::OnceLock<std::result::Result<Arc<GrammarEngine>, String>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .finish()
    }
}

/// FNV-1a, 64 bit: the model fingerprint and the checksum of saved states.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

impl Model {
    pub fn load(path: impl AsRef<Path>, options: &ModelOptions) -> Result<Model> {
        Self::from_file(GgufFile::load(path, options.file_access)?, options)
    }

    pub fn from_file(file: GgufFile, options: &ModelOptions) -> Result<Model> {
        let config = LigerConfig::from_gguf(&file)?;
        for spec in tensor_specs(&config) {
            let t = file.tensor(&spec.name).ok_or_else(|| {
                Error::Tensor(format!("'{}' is missing from the file", spec.name))
            })?;
            if t.dims != spec.ggml_dims() {
                return Err(Error::Tensor(format!(
                    "'{}' has dims {:?}, the config implies {:?}",
                    spec.name,
                    t.dims,
                    spec.ggml_dims()
                )));
            }
            if !t.ggml_type.can_dequantize() || (!spec.is_matrix() && t.ggml_type != GgmlType::F32)
            {
                return Err(Error::Unsupported(format!(
                    "'{}' of type {}",
                    spec.name, t.ggml_type
                )));
            }
        }
        // A sequence's state is allocated per session: a hostile file must not size it from
        // dims its weights do not pay for (head_dim² per head needs no matching weight bytes).
        let state = config.recurrent_state_bytes() + config.window_cache_bytes(4);
        let bound = file.file_size().max(MIN_STATE_BOUND);
        if state > bound {
            return Err(Error::Config(format!(
                "a sequence's state would take {state} bytes, more than the file's own size \
                 ({} bytes): refused",
                file.file_size()
            )));
        }
        // Every tensor below was checked present with the right dims and type above.
        let tensor = |name: &str| -> Result<&TensorInfo> {
            file.tensor(name)
                .ok_or_else(|| Error::Tensor(format!("'{name}' is missing from the file")))
        };
        let matrix = |name: &str| -> Result<MatrixRef> {
            let t = tensor(name)?;
            Ok(MatrixRef {
                ty: t.ggml_type,
                rows: t.n_rows(),
                cols: t.row_len(),
                offset: t.offset as usize,
                n_bytes: t.n_bytes as usize,
            })
        };
        let vector = |name: &str| -> Result<Vec<f32>> {
            let t = tensor(name)?;
            dequantize(t.ggml_type, file.tensor_data(t))
        };
        let optional = |name: &str| -> Result<Option<Vec<f32>>> {
            if config.attention_bias {
                vector(name).map(Some)
            } else {
                Ok(None)
            }
        };
        let mut layers = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            layers.push(LayerWeights {
                attn_norm: vector(&n("attn_norm.weight"))?,
                wq: matrix(&n("attn_q.weight"))?,
                wk: matrix(&n("attn_k.weight"))?,
                wv: matrix(&n("attn_v.weight"))?,
                bq: optional(&n("attn_q.bias"))?,
                bk: optional(&n("attn_k.bias"))?,
                bv: optional(&n("attn_v.bias"))?,
                wo: matrix(&n("attn_output.weight"))?,
                ffn_norm: vector(&n("ffn_norm.weight"))?,
                w_gate: matrix(&n("ffn_gate.weight"))?,
                w_up: matrix(&n("ffn_up.weight"))?,
                w_down: matrix(&n("ffn_down.weight"))?,
            });
        }
        let weights = Weights {
            token_embd: matrix("token_embd.weight")?,
            output_norm: vector("output_norm.weight")?,
            output: matrix(if config.tie_embeddings {
                "token_embd.weight"
            } else {
                "output.weight"
            })?,
            layers,
        };
        let tokenizer = Tokenizer::from_gguf(&file, config.vocab_size)?;
        let threads = match options.threads {
            Some(0) => return Err(Error::InvalidArgument("threads must be at least 1".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let fingerprint = fnv1a(&file.bytes()[..file.data_offset as usize]);
        let simd = options.simd.unwrap_or_else(SimdLevel::detect);
        Ok(Model {
            inv_freq: rope::inverse_frequencies(&config),
            config,
            tokenizer,
            weights,
            fingerprint,
            file,
            threads,
            simd,
            grammars: std::sync::OnceLock::new(),
        })
    }

    /// A matrix as the file holds it.
    pub(crate) fn matrix_view(&self, m: &MatrixRef) -> MatrixView<'_> {
        MatrixView {
            ty: m.ty,
            rows: m.rows,
            cols: m.cols,
            data: &self.file.bytes()[m.offset..m.offset + m.n_bytes],
        }
    }

    /// The file the model was loaded from.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Worker threads a CPU backend of this model runs (`ModelOptions::threads`).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Bytes of weight matrices one decode step reads: every layer's and the LM head (the
    /// embedding is only gathered, a row per token).
    pub fn weight_bytes_per_token(&self) -> u64 {
        self.weights.products().map(|m| m.n_bytes as u64).sum()
    }

    /// The grammar compiler of this model's vocabulary (built on the first call; an error if
    /// the file has no tokenizer or no stop id).
    pub fn grammars(&self) -> Result<Arc<GrammarEngine>> {
        self.grammars
            .get_or_init(|| {
                let stops = crate::tokenizer::stop_ids(&self.file, self.config.vocab_size)
                    .map_err(|e| e.to_string())?;
                GrammarEngine::from_gguf(&self.file, self.config.vocab_size, stops)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::InvalidArgument)
    }

    /// Fixed state bytes per sequence: recurrent state + window cache (f32).
    pub fn state_bytes(&self) -> u64 {
        self.config.recurrent_state_bytes() + self.config.window_cache_bytes(4)
    }
}
