//! Scalar reference kernels: the oracle for every SIMD kernel. Integer parts of the quantized
//! dots are exact; each block's integer sum is scaled in f32.

use crate::cpu::act_blocks::{ActBlock, ActBlock16};
use crate::quant::{bf16_to_f32, scale_min_k4, BlockQ4K, BlockQ4_0, BlockQ6K, BlockQ8_0, QK_K};
use half::f16;

fn blocks<B: bytemuck::Pod>(row: &[u8]) -> impl Iterator<Item = B> + '_ {
    row.chunks_exact(size_of::<B>())
        .map(bytemuck::pod_read_unaligned::<B>)
}

pub fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(4)
        .zip(x)
        .map(|(w, x)| f32::from_le_bytes([w[0], w[1], w[2], w[3]]) * x)
        .sum()
}

pub fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(2)
        .zip(x)
        .map(|(w, x)| f16::from_le_bytes([w[0], w[1]]).to_f32() * x)
        .sum()
}

pub fn dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(2)
        .zip(x)
        .map(|(w, x)| bf16_to_f32(u16::from_le_bytes([w[0], w[1]])) * x)
        .sum()
}

fn int_dot(w: impl Iterator<Item = i32>, a: &[i8]) -> i32 {
    w.zip(a).map(|(w, &a)| w * a as i32).sum()
}

/// Σ_blocks d_w · d_a · Σ q_w·q_a, with 16-bit activations.
pub fn dot_q8_0(row: &[u8], x: &[ActBlock16]) -> f32 {
    blocks::<BlockQ8_0>(row)
        .zip(x)
        .map(|(b, a)| {
            let dot: i32 =
                b.qs.iter()
                    .zip(&a.qs)
                    .map(|(&w, &q)| w as i32 * q as i32)
                    .sum();
            b.d.to_f32() * a.d * dot as f32
        })
        .sum()
}

/// Nibbles are 0..15 with an offset of 8: Σ (q − 8)·q_a = Σ q·q_a − 8·Σ q_a.
pub fn dot_q4_0(row: &[u8], x: &[ActBlock]) -> f32 {
    blocks::<BlockQ4_0>(row)
        .zip(x)
        .map(|(b, a)| {
            let lo = int_dot(b.qs.iter().map(|&q| (q & 0x0f) as i32), &a.qs[..16]);
            let hi = int_dot(b.qs.iter().map(|&q| (q >> 4) as i32), &a.qs[16..]);
            b.d.to_f32() * a.d * (lo + hi - 8 * (a.sums[0] + a.sums[1])) as f32
        })
        .sum()
}

/// Per sub-block j of 32: `d·sc_j·d_a·Σ q·q_a − dmin·m_j·d_a·Σ q_a`.
pub fn dot_q4_k(row: &[u8], x: &[ActBlock]) -> f32 {
    let mut sum = 0f32;
    for (b, acts) in blocks::<BlockQ4K>(row).zip(x.chunks_exact(QK_K / 32)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (j, a) in acts.iter().enumerate() {
            let (sc, m) = scale_min_k4(j, &b.scales);
            let qs = &b.qs[(j / 2) * 32..(j / 2) * 32 + 32];
            let shift = 4 * (j % 2);
            let dot = int_dot(qs.iter().map(|&q| ((q >> shift) & 0x0f) as i32), &a.qs);
            sum += d * sc as f32 * a.d * dot as f32
                - dmin * m as f32 * a.d * (a.sums[0] + a.sums[1]) as f32;
        }
    }
    sum
}

/// Per 32-element chunk (half h, quarter q) with two 16-element scales:
/// `d·d_a·Σ_halves sc·(Σ q6·q_a − 32·Σ q_a)`.
pub fn dot_q6_k(row: &[u8], x: &[ActBlock]) -> f32 {
    let mut sum = 0f32;
    for (b, acts) in blocks::<BlockQ6K>(row).zip(x.chunks_exact(QK_K / 32)) {
        let d = b.d.to_f32();
        for (c, a) in acts.iter().enumerate() {
            let (h, q) = (c / 4, c % 4);
            let q6 = |l: usize| -> i32 {
                let ql = b.ql[h * 64 + (q % 2) * 32 + l];
                let low = if q < 2 { ql & 0x0f } else { ql >> 4 };
                let high = (b.qh[h * 32 + l] >> (2 * q)) & 3;
                (low | (high << 4)) as i32
            };
            let mut total = 0i32;
            for half in 0..2 {
                let dot: i32 = (16 * half..16 * half + 16)
                    .map(|l| q6(l) * a.qs[l] as i32)
                    .sum();
                total += b.scales[h * 8 + 2 * q + half] as i32 * (dot - 32 * a.sums[half]);
            }
            sum += d * a.d * total as f32;
        }
    }
    sum
}
