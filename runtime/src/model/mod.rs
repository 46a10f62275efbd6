//! A loaded liger model: config, weights read in place from the mapped file, tokenizer, and
//! the CPU thread pool its steps run on.

pub mod plan;
pub mod rope;
mod state;

pub use state::SequenceState;

use crate::config::LigerConfig;
use crate::constraint::GrammarEngine;
use crate::cpu::linear::WeightMatrix;
use crate::cpu::packed;
use crate::cpu::pool::WorkerPool;
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
    ty: GgmlType,
    rows: usize,
    cols: usize,
    offset: usize,
    n_bytes: usize,
    /// Its slot in [`Model::packed`] where the CPU kernels read it repacked (see
    /// `cpu::packed`); the copy is made when a CPU backend first opens the model.
    packed: Option<usize>,
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
    fn products(&self) -> impl Iterator<Item = MatrixRef> + '_ {
        self.layers
            .iter()
            .flat_map(|l| [l.wq, l.wk, l.wv, l.wo, l.w_gate, l.w_up, l.w_down])
            .chain(std::iter::once(self.output))
    }

    /// [`Weights::products`], to change.
    fn products_mut(&mut self) -> impl Iterator<Item = &mut MatrixRef> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    &mut l.wq,
                    &mut l.wk,
                    &mut l.wv,
                    &mut l.wo,
                    &mut l.w_gate,
                    &mut l.w_up,
                    &mut l.w_down,
                ]
            })
            .chain(std::iter::once(&mut self.output))
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
    pub(crate) pool: WorkerPool,
    /// The SIMD kernels the CPU matrix products use.
    pub simd: SimdLevel,
    /// Matrices repacked for the CPU kernels (`MatrixRef::packed` indexes this), made by
    /// [`Model::prepare_cpu`]: a model that runs on a GPU never holds them.
    packed: std::sync::OnceLock<Vec<Vec<u8>>>,
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
                packed: None,
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
        let mut weights = Weights {
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
        let pool = WorkerPool::new(threads)
            .map_err(|e| Error::InvalidArgument(format!("cannot start {threads} threads: {e}")))?;
        let fingerprint = fnv1a(&file.bytes()[..file.data_offset as usize]);
        let simd = options.simd.unwrap_or_else(SimdLevel::detect);
        plan_repack(&mut weights, simd);
        Ok(Model {
            inv_freq: rope::inverse_frequencies(&config),
            config,
            tokenizer,
            weights,
            fingerprint,
            pool,
            file,
            simd,
            packed: std::sync::OnceLock::new(),
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

    pub(crate) fn matrix(&self, m: &MatrixRef) -> WeightMatrix<'_> {
        let data = self.matrix_view(m).data;
        let w = WeightMatrix::new(m.ty, m.rows, m.cols, data, self.simd);
        match (m.packed, self.packed.get()) {
            (Some(i), Some(packed)) => w.with_packed(&packed[i], self.simd),
            _ => w,
        }
    }

    /// Repacks, once, the matrices the CPU kernels of [`Model::simd`] read repacked (on the
    /// worker pool; the file's pages of each are let go). A CPU backend calls it when it
    /// opens; until then (and on a GPU backend) the kernels read the file in place.
    pub(crate) fn prepare_cpu(&self) {
        self.packed
            .get_or_init(|| repack(&self.file, &self.weights, &self.pool));
    }

    /// The file the model was loaded from.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Worker threads of the CPU kernels.
    pub fn threads(&self) -> usize {
        self.pool.threads()
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

    /// Bytes of the matrices repacked for the CPU kernels (held in memory instead of their
    /// pages of the mapped file; 0 where nothing is repacked, or before a CPU backend opened).
    pub fn repacked_bytes(&self) -> u64 {
        self.packed
            .get()
            .map_or(0, |p| p.iter().map(|p| p.len() as u64).sum())
    }

    /// Fixed state bytes per sequence: recurrent state + window cache (f32).
    pub fn state_bytes(&self) -> u64 {
        self.config.recurrent_state_bytes() + self.config.window_cache_bytes(4)
    }
}

/// Gives a slot of [`Model::packed`] to each product matrix whose type the CPU kernels of
/// `simd` read repacked (`cpu::packed`: Q4_0, Q8_0, Q4_K and Q6_K on x86, Q4_0 on NEON with
/// dot products; `LIGER_REPACK=0` keeps them all in place).
fn plan_repack(weights: &mut Weights, simd: SimdLevel) {
    if std::env::var("LIGER_REPACK").is_ok_and(|v| v == "0") {
        return;
    }
    let mut slots = 0;
    for m in weights.products_mut() {
        if WeightMatrix::repacks(m.ty, m.cols, simd) {
            m.packed = Some(slots);
            slots += 1;
        }
    }
}

/// The repacked copies of the matrices [`plan_repack`] gave a slot, in slot order, and lets
/// the file's pages of each go (they are not read again; a tied embedding's rows are gathered
/// from the file, so only the rows of the tokens seen come back).
fn repack(file: &GgufFile, weights: &Weights, pool: &WorkerPool) -> Vec<Vec<u8>> {
    let mut packed = Vec::new();
    // The same order as `plan_repack`'s: slot after slot.
    for m in weights.products().filter(|m| m.packed.is_some()) {
        debug_assert_eq!(m.packed, Some(packed.len()));
        let mut copy = vec![0u8; crate::cpu::packed::packed_len(m.ty, m.rows, m.cols)];
        let data = &file.bytes()[m.offset..m.offset + m.n_bytes];
        // Stretches of groups on the pool's threads.
        let (group_rows, group_bytes) = (packed::GROUP_ROWS, packed::group_bytes(m.ty, m.cols));
        let groups_per_task = m.rows.div_ceil(group_rows).div_ceil(4 * pool.threads());
        let row_bytes = m.n_bytes / m.rows;
        pool.for_each_chunk(&mut copy, groups_per_task * group_bytes, &|i, out| {
            let first = i * groups_per_task * group_rows;
            let rows = (out.len() / group_bytes * group_rows).min(m.rows - first);
            packed::pack(m.ty, &data[first * row_bytes..], rows, m.cols, out);
        });
        file.forget_pages(m.offset, m.n_bytes);
        packed.push(copy);
    }
    packed
}
