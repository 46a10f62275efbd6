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

/// Rotates each `d`-wide head of `x` in place for position `pos`.
pub fn apply(x: &mut [f32], d: usize, pos: usize, inv_freq: &[f32]) {
    let half = d / 2;
    for head in x.chunks_exact_mut(d) {
        for (i, &f) in inv_freq.iter().enumerate() {
            let angle = pos as f32 * f;
            let (sin, cos) = angle.sin_cos();
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos - b * sin;
            head[i + half] = b * cos + a * sin;
        }
    }
}
