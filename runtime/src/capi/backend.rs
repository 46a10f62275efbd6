//! The backends behind a C ABI session: the CPU [`Session`], or (feature `wgpu`) a
//! [`GpuSequence`], which a model gets only after its self-test against the CPU passed.

use super::{CError, CResult};
use crate::model::Model;
#[cfg(feature = "wgpu")]
use crate::sampler::argmax;
use crate::session::{DecodeMode, Session};
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

#[cfg(feature = "wgpu")]
fn unsupported_on_gpu(what: &str) -> CError {
    CError::new(
        super::LIGER_ERROR_UNSUPPORTED,
        format!("{what} is not available on wgpu sessions yet (use LIGER_BACKEND_CPU)"),
    )
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

    #[cfg_attr(not(feature = "wgpu"), allow(unused_variables))]
    fn cpu(&self, what: &str) -> CResult<&Session> {
        match self {
            Sequence::Cpu(s) => Ok(s),
            #[cfg(feature = "wgpu")]
            Sequence::Gpu { .. } => Err(unsupported_on_gpu(what)),
        }
    }

    pub(crate) fn state_size(&self) -> CResult<usize> {
        Ok(self.cpu("state saving")?.state_size())
    }

    pub(crate) fn save_state(&self) -> CResult<Vec<u8>> {
        Ok(self.cpu("state saving")?.save_state())
    }

    pub(crate) fn load_state(&mut self, bytes: &[u8]) -> CResult {
        match self {
            Sequence::Cpu(s) => s
                .load_state(bytes)
                .map_err(|e| CError::new(super::LIGER_ERROR_STATE, e.to_string())),
            #[cfg(feature = "wgpu")]
            Sequence::Gpu { .. } => Err(unsupported_on_gpu("state loading")),
        }
    }

    pub(crate) fn fork(&self) -> CResult<Sequence> {
        Ok(Sequence::Cpu(self.cpu("fork")?.fork()))
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
