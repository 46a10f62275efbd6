//! Rotary position embedding of the base model, applied in the SWA branch only. HF's
//! `rotate_half` layout: feature `i` pairs with `i + d/2`, frequency `θ^(−2i/d)`, optionally
//! rescaled (Llama-3 `rope_scaling`).

use crate::config::{LigerConfig, RopeScaling};

/// Inverse frequencies `[d/2]`, as HF computes them (f32), with scaling applied.
pub fn inverse_frequencies(config: &LigerConfig) -> Vec<f32> {
    let d = config.head_dim;
    let base = config.rope_theta;
    let inv: Vec<f32> = (0..d / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32))
        .collect();
    match config.rope_scaling {
        None => inv,
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        }) => {
            let old = original_context as f32;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            inv.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// `cos` and `sin` of every frequency at position `pos` ([d/2] each), computed once per token
/// and shared by every head of every layer.
pub fn angles(pos: usize, inv_freq: &[f32], cos: &mut [f32], sin: &mut [f32]) {
    for ((f, c), s) in inv_freq.iter().zip(cos.iter_mut()).zip(sin.iter_mut()) {
        // f32 angle, as HF computes it.
        let (sn, cs) = (pos as f32 * f).sin_cos();
        *c = cs;
        *s = sn;
    }
}

/// Rotates each `d`-wide head of `x` in place with the angles of one position.
#[inline]
pub fn apply(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in x.chunks_exact_mut(2 * half) {
        let (lo, hi) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (lo[i], hi[i]);
            lo[i] = a * cos[i] - b * sin[i];
            hi[i] = b * cos[i] + a * sin[i];
        }
    }
}
