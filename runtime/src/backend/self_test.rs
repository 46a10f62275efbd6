//! The load-time self-test of a GPU backend: its logits on a short probe against the CPU's
//! (some mobile Vulkan drivers miscompile compute shaders; a CUDA driver may refuse a PTX).

use super::cpu::CpuSequence;
use super::DecodeMode;
use super::{Backend, Sequence};
use crate::error::{Error, Result};

/// Feeds a 4-token probe on `backend` and on the CPU computing as the GPUs do (weights
/// dequantized, f32 activations): the largest logit difference must stay within 1 % of the
/// CPU logits' range. Computed alike, lavapipe and the CPU agree within 5e-4 at 12 positions
/// of SmolLM2 Q4_0 (logits up to 33); against the CPU's usual 8-bit activations the gap is
/// the CPU's own rounding, up to 1.7 for logits up to 18, which would hide a broken shader or
/// refuse a sound one.
pub fn self_test(backend: &dyn Backend) -> Result<()> {
    let model = backend.model();
    let vocab = model.config.vocab_size;
    let probe: Vec<u32> = (1..=4).map(|i| (i * 7919 % vocab) as u32).collect();
    let mut cpu = CpuSequence::unquantized(model, DecodeMode::Window)?;
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
    if got.len() != want.len() || worst > 0.01 * range {
        return Err(Error::Unsupported(format!(
            "the {} backend ({}) failed its self-test against the CPU: max |Δlogit| {worst:.3e} \
             for logits up to {range:.2}; use the CPU backend",
            backend.kind().name(),
            backend.describe()
        )));
    }
    Ok(())
}
