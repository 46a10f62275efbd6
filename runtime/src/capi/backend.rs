//! The backends behind a C ABI session: the CPU [`Session`], or (feature `wgpu`) a
//! [`GpuSequence`], which a model gets only after its self-test against the CPU passed. Both
//! save, load and fork states in the CPU's format, so a state moves between them.

use super::{CError, CResult};
use crate::model::Model;
#[cfg(feature = "wgpu")]
use crate::sampler::argmax;
use crate::session::{DecodeMode, Session};
#[cfg(feature = "wgpu")]
use crate::{
    model::SequenceState,
    session::{decode_state, encode_state},
};
use std::sync::Arc;

#[cfg(feature = "wgpu")]
use crate::gpu::{GpuContext, GpuModel, GpuSequence};

/// Where a model's sessions run.
pub(crate) enum Backend {
    Cpu,
    #[cfg(feature = "wgpu")]
    Gpu(Arc<GpuModel>),
}

/// One sequence on one backend.
pub(crate) enum Sequence {
    Cpu(Session),
    #[cfg(feature = "wgpu")]
    Gpu {
        seq: GpuSequence,
        hf_compat: bool,
    },
}

impl Sequence {
    pub(crate) fn new(model: &Arc<Model>, mode: DecodeMode, backend: &Backend) -> CResult<Self> {
        Ok(match backend {
            Backend::Cpu => Sequence::Cpu(Session::new(Arc::clone(model), mode)),
            #[cfg(feature = "wgpu")]
            Backend::Gpu(g) => Sequence::Gpu {
                seq: GpuSequence::new(g)?,
                hf_compat: mode == DecodeMode::HfCompat,
            },
        })
    }

    pub(crate) fn feed(&mut self, tokens: &[u32]) -> CResult {
        match self {
            Sequence::Cpu(s) => s.feed(tokens).map(|_| ())?,
            #[cfg(feature = "wgpu")]
            Sequence::Gpu { seq, hf_compat } => seq.feed(tokens, *hf_compat).map(|_| ())?,
        }
        Ok(())
    }

    pub(crate) fn logits(&self) -> &[f32] {
        match self {
            Sequence::Cpu(s) => s.logits(),
            #[cfg(feature = "wgpu")]
            Sequence::Gpu { seq, .. } => seq.logits(),
        }
    }

    pub(crate) fn position(&self) -> usize {
        match self {
            Sequence::Cpu(s) => s.position(),
            #[cfg(feature = "wgpu")]
            Sequence::Gpu { seq, .. } => seq.position(),
        }
    }

    pub(crate) fn reset(&mut self) -> CResult {
        match self {
            Sequence::Cpu(s) => s.reset(),
            #[cfg(feature = "wgpu")]
            Sequence::Gpu { seq, .. } => *seq = GpuSequence::with_batch(seq.model(), seq.batch())?,
        }
        Ok(())
    }

    /// The state as the bytes a CPU session saves (a GPU's is read back in the same layout),
    /// so a state moves between backends.
    pub(crate) fn save_state(&self) -> CResult<Vec<u8>> {
        Ok(match self {
            Sequence::Cpu(s) => s.save_state(),
            #[cfg(feature = "wgpu")]
            Sequence::Gpu { seq, hf_compat } => {
                encode_state(&seq.model().model, mode_of(*hf_compat), &seq.state()?)
            }
        })
    }

    pub(crate) fn state_size(&self) -> CResult<usize> {
        Ok(match self {
            Sequence::Cpu(s) => s.state_size(),
            #[cfg(feature = "wgpu")]
            Sequence::Gpu { seq, .. } => SequenceState::byte_len_for(&seq.model().model.config),
        })
    }

    pub(crate) fn load_state(&mut self, bytes: &[u8]) -> CResult {
        let state_error = |e: crate::Error| CError::new(super::LIGER_ERROR_STATE, e.to_string());
        match self {
            Sequence::Cpu(s) => s.load_state(bytes).map_err(state_error),
            #[cfg(feature = "wgpu")]
            Sequence::Gpu { seq, hf_compat } => {
                let model = &seq.model().model;
                let state = decode_state(model, mode_of(*hf_compat), bytes).map_err(state_error)?;
                Ok(seq.set_state(&state)?)
            }
        }
    }

    pub(crate) fn fork(&self) -> CResult<Sequence> {
        Ok(match self {
            Sequence::Cpu(s) => Sequence::Cpu(s.fork()),
            #[cfg(feature = "wgpu")]
            Sequence::Gpu { seq, hf_compat } => {
                let mut copy = GpuSequence::with_batch(seq.model(), seq.batch())?;
                copy.set_state(&seq.state()?)?;
                Sequence::Gpu {
                    seq: copy,
                    hf_compat: *hf_compat,
                }
            }
        })
    }
}

#[cfg(feature = "wgpu")]
fn mode_of(hf_compat: bool) -> DecodeMode {
    if hf_compat {
        DecodeMode::HfCompat
    } else {
        DecodeMode::Window
    }
}

/// The wgpu backend for `model`, after checking its logits against the CPU's on a short
/// probe (some mobile Vulkan drivers miscompile compute shaders): the largest difference must
/// stay within 5 % of the CPU logits' range (the CPU quantizes activations to 8 bits for
/// quantized weights, the GPU does not) and the argmax must agree.
#[cfg(feature = "wgpu")]
pub(crate) fn gpu_backend(model: &Arc<Model>, mode: DecodeMode) -> CResult<Backend> {
    let gpu = Arc::new(GpuModel::new(GpuContext::new()?, Arc::clone(model))?);
    let vocab = model.config.vocab_size;
    let probe: Vec<u32> = (1..=4).map(|i| (i * 7919 % vocab) as u32).collect();
    let mut cpu = Session::new(Arc::clone(model), mode);
    let want = cpu.feed(&probe)?.to_vec();
    let mut seq = GpuSequence::new(&gpu)?;
    let got = seq.feed(&probe, mode == DecodeMode::HfCompat)?;
    let range = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(
            0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        );
    if got.len() != want.len() || worst > 0.05 * range || argmax(got) != argmax(&want) {
        return Err(CError::new(
            super::LIGER_ERROR_UNSUPPORTED,
            format!(
                "the GPU ({}) failed its self-test against the CPU: max |Δlogit| {worst:.3e} \
                 for logits up to {range:.2}; use LIGER_BACKEND_CPU",
                gpu.ctx.describe()
            ),
        ));
    }
    Ok(Backend::Gpu(gpu))
}
