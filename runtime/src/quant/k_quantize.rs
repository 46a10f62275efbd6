//! Q4_K and Q6_K quantizers, following ggml's reference algorithm (`quantize_row_q4_K_ref`,
//! `quantize_row_q6_K_ref`, no importance matrix): per sub-block a weighted least-squares
//! search for scale (and min), then the sub-block scales quantized to 6 / 8 bits, then every
//! element requantized with the scales the file actually stores.

use super::float::f16_from_f32;
use super::k_dequant::{scale_min_k4, BlockQ4K, BlockQ6K, K_SCALE_SIZE, QK_K};
use super::nearest_int;
use half::f16;

/// Below this a group is treated as all zeros (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Asymmetric `x ≈ scale·L − min_out` with `L` in 0..=nmax, minimizing the weighted squared
/// error over `nstep + 1` candidate scales around `nmax / (max − min)`. Returns the scale and
/// writes `L` and `min_out` (the positive offset that is subtracted).
fn search_scale_min(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    levels: &mut [u8],
    min_out: &mut f32,
) -> f32 {
    const RMIN: f32 = -1.0;
    const RDELTA: f32 = 0.1;
    const NSTEP: i32 = 20;
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = min.min(x[i]);
        max = max.max(x[i]);
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        *min_out = -min;
        return 0.0;
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * diff * diff;
    }
    let mut candidate = [0u8; 32];
    for step in 0..=NSTEP {
        iscale = (RMIN + RDELTA * step as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            candidate[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut error = 0f32;
            for i in 0..n {
                let diff = this_scale * candidate[i] as f32 + this_min - x[i];
                error += weights[i] * diff * diff;
            }
            if error < best_error {
                levels[..n].copy_from_slice(&candidate[..n]);
                best_error = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *min_out = -min;
    scale
}

pub(super) fn quantize_q4_k(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ4K>()))
    {
        let mut levels = [0u8; QK_K];
        let mut scales = [0f32; QK_K / 32];
        let mut mins = [0f32; QK_K / 32];
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..QK_K / 32 {
            let xs = &x[32 * j..32 * j + 32];
            let sum_x2: f32 = xs.iter().map(|v| v * v).sum();
            let av_x = (sum_x2 / 32.0).sqrt();
            let weights: [f32; 32] = std::array::from_fn(|l| av_x + xs[l].abs());
            scales[j] = search_scale_min(
                xs,
                &weights,
                15,
                &mut levels[32 * j..32 * j + 32],
                &mut mins[j],
            );
            max_scale = max_scale.max(scales[j]);
            max_min = max_min.max(mins[j]);
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let mut packed = [0u8; K_SCALE_SIZE];
        for j in 0..QK_K / 32 {
            let ls = nearest_int(inv_scale * scales[j]).min(63) as u8;
            let lm = nearest_int(inv_min * mins[j]).min(63) as u8;
            if j < 4 {
                packed[j] = ls;
                packed[j + 4] = lm;
            } else {
                packed[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
                packed[j - 4] |= (ls >> 4) << 6;
                packed[j] |= (lm >> 4) << 6;
            }
        }
        let d = f16_from_f32(max_scale / 63.0);
        let dmin = f16_from_f32(max_min / 63.0);
        for j in 0..QK_K / 32 {
            let (sc, m) = scale_min_k4(j, &packed);
            let dj = d.to_f32() * sc as f32;
            if dj == 0.0 {
                continue;
            }
            let mj = dmin.to_f32() * m as f32;
            for i in 32 * j..32 * j + 32 {
                levels[i] = nearest_int((x[i] + mj) / dj).clamp(0, 15) as u8;
            }
        }
        let mut block = BlockQ4K {
            d,
            dmin,
            scales: packed,
            qs: [0; QK_K / 2],
        };
        for (chunk, qs) in levels.chunks_exact(64).zip(block.qs.chunks_exact_mut(32)) {
            for l in 0..32 {
                qs[l] = chunk[l] | (chunk[l + 32] << 4);
            }
        }
        out.copy_from_slice(bytemuck::bytes_of(&block));
    }
}

/// Symmetric `x ≈ scale·(L − nmax)` with `L − nmax` in −nmax..nmax−1, weights `x²`, trying
/// 19 scales around `−nmax / x[argmax|x|]`. Returns the scale and writes `L`.
fn search_scale_symmetric(x: &[f32], nmax: i32, levels: &mut [u8]) -> f32 {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let quantize_with = |iscale: f32| -> (f32, f32) {
        let (mut sum_lx, mut sum_l2) = (0f32, 0f32);
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sum_lx += w * v * l;
            sum_l2 += w * l * l;
        }
        (sum_lx, sum_l2)
    };
    let store = |iscale: f32, levels: &mut [u8]| {
        for (q, &v) in levels.iter_mut().zip(x) {
            *q = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as u8;
        }
    };
    let iscale = -(nmax as f32) / max;
    let (sum_lx, sum_l2) = quantize_with(iscale);
    store(iscale, levels);
    let mut scale = if sum_l2 != 0.0 { sum_lx / sum_l2 } else { 0.0 };
    let mut best = scale * sum_lx;
    for step in -9..=9 {
        if step == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * step as f32) / max;
        let (sum_lx, sum_l2) = quantize_with(iscale);
        if sum_l2 > 0.0 && sum_lx * sum_lx > best * sum_l2 {
            store(iscale, levels);
            scale = sum_lx / sum_l2;
            best = scale * sum_lx;
        }
    }
    scale
}

pub(super) fn quantize_q6_k(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ6K>()))
    {
        let mut levels = [0u8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..QK_K / 16 {
            let range = 16 * ib..16 * ib + 16;
            scales[ib] = search_scale_symmetric(&x[range.clone()], 32, &mut levels[range]);
            if scales[ib].abs() > max_abs_scale {
                max_abs_scale = scales[ib].abs();
                max_scale = scales[ib];
            }
        }
        let mut block = BlockQ6K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: f16::ZERO,
        };
        if max_abs_scale < GROUP_MAX_EPS {
            out.copy_from_slice(bytemuck::bytes_of(&block));
            continue;
        }
        let iscale = -128.0 / max_scale;
        block.d = f16_from_f32(1.0 / iscale);
        for ib in 0..QK_K / 16 {
            block.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        for j in 0..QK_K / 16 {
            let d = block.d.to_f32() * block.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for i in 16 * j..16 * j + 16 {
                levels[i] = (nearest_int(x[i] / d).clamp(-32, 31) + 32) as u8;
            }
        }
        for (half, chunk) in levels.chunks_exact(128).enumerate() {
            let ql = &mut block.ql[half * 64..half * 64 + 64];
            for l in 0..32 {
                ql[l] = (chunk[l] & 0x0f) | ((chunk[l + 64] & 0x0f) << 4);
                ql[l + 32] = (chunk[l + 32] & 0x0f) | ((chunk[l + 96] & 0x0f) << 4);
                block.qh[half * 32 + l] = (chunk[l] >> 4)
                    | ((chunk[l + 32] >> 4) << 2)
                    | ((chunk[l + 64] >> 4) << 4)
                    | ((chunk[l + 96] >> 4) << 6);
            }
        }
        out.copy_from_slice(bytemuck::bytes_of(&block));
    }
}
