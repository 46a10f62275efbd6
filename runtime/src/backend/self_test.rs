//! The load-time self-test of a GPU backend: its logits on a short probe against the CPU's
//! (some mobile Vulkan drivers miscompile compute shaders; a CUDA driver may refuse a PTX).

use super::cpu::CpuSequence;
use super::{Backend, Sequence};
use crate::error::{Error, Result};
use crate::sampler::argmax;
use crate::session::DecodeMode;
use std::sync::Arc;

/// Feeds a 4-token probe on `backend` and on the CPU: the largest logit difference must stay
/// within 5 % of the CPU logits' range (the CPU quantizes activations to 8 bits for quantized
/// weights, the GPUs do not) and the argmax must agree.
pub fn self_test(backend: &dyn Backend) -> Result<()> {
    let model = backend.model();
    let vocab = model.config.vocab_size;
    let probe: Vec<u32> = (1..=4).map(|i| (i * 7919 % vocab) as u32).collect();
    let mut cpu = CpuSequence::new(Arc::clone(model), DecodeMode::Window);
    cpu.feed(&probe, None)?;
    let want = cpu.logits();
    let mut seq = backend.new_sequence(DecodeMode::Window)?;
    seq.feed(&probe, None)?;
    let got = seq.logits();
    let range = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(
            0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        );
    if got.len() != want.len() || worst > 0.05 * range || argmax(got) != argmax(want) {
        return Err(Error::Unsupported(format!(
            "the {} backend ({}) failed its self-test against the CPU: max |Δlogit| {worst:.3e} \
             for logits up to {range:.2}; use the CPU backend",
            backend.kind().name(),
            backend.describe()
        )));
    }
    Ok(())
}
