//! ggml's 32-element block types: Q4_0, Q4_1, Q8_0.
//!
//! Quantizers reproduce the `gguf` Python package (0.19) byte for byte, rounding quirks
//! included; dequantizers reproduce ggml's floats exactly.

use super::float::f16_from_f32;
use bytemuck::{Pod, Zeroable};
use half::f16;

pub const QK4_0: usize = 32;
pub const QK4_1: usize = 32;
pub const QK8_0: usize = 32;

/// `x[j] = d·(lo(qs[j]) − 8)`, `x[j+16] = d·(hi(qs[j]) − 8)`.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// `x[j] = d·lo(qs[j]) + m`, `x[j+16] = d·hi(qs[j]) + m`.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// `x[j] = d·qs[j]`.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK8_0],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

fn blocks<B: Pod>(src: &[u8]) -> impl Iterator<Item = B> + '_ {
    src.chunks_exact(size_of::<B>())
        .map(bytemuck::pod_read_unaligned::<B>)
}

fn write_block<B: Pod>(dst: &mut [u8], block: &B) {
    dst.copy_from_slice(bytemuck::bytes_of(block));
}

pub(super) fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ4_0>(src).zip(dst.chunks_exact_mut(QK4_0)) {
        let d = b.d.to_f32();
        for (j, q) in b.qs.iter().enumerate() {
            y[j] = d * ((q & 0x0f) as i32 - 8) as f32;
            y[j + QK4_0 / 2] = d * ((q >> 4) as i32 - 8) as f32;
        }
    }
}

pub(super) fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ4_1>(src).zip(dst.chunks_exact_mut(QK4_1)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (j, q) in b.qs.iter().enumerate() {
            y[j] = d * (q & 0x0f) as f32 + m;
            y[j + QK4_1 / 2] = d * (q >> 4) as f32 + m;
        }
    }
}

pub(super) fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ8_0>(src).zip(dst.chunks_exact_mut(QK8_0)) {
        let d = b.d.to_f32();
        for (y, q) in y.iter_mut().zip(b.qs) {
            *y = d * q as f32;
        }
    }
}

/// `d = max|x| / 127`, `q = round_half_away(x / d)`.
pub(super) fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(QK8_0)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ8_0>()))
    {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut block = BlockQ8_0 {
            d: f16_from_f32(d),
            qs: [0; QK8_0],
        };
        for (q, v) in block.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        write_block(out, &block);
    }
}

/// `d = x[argmax|x|] / −8`, `q = trunc(f32(f64(x)·f64(1/d) + 8.5))` clamped to 0..15 (the
/// `gguf` package computes in f64 to match ggml's C code compiled with FMA).
pub(super) fn quantize_q4_0(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(QK4_0)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ4_0>()))
    {
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let q = |v: f32| {
            ((v as f64 * id as f64 + 8.5) as f32)
                .trunc()
                .clamp(0.0, 15.0) as u8
        };
        let mut block = BlockQ4_0 {
            d: f16_from_f32(d),
            qs: [0; QK4_0 / 2],
        };
        for j in 0..QK4_0 / 2 {
            block.qs[j] = q(x[j]) | (q(x[j + QK4_0 / 2]) << 4);
        }
        write_block(out, &block);
    }
}

/// `d = (max − min) / 15`, `m = min`, `q = trunc((x − min)/d + 0.5)` clamped to 0..15.
pub(super) fn quantize_q4_1(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(QK4_1)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ4_1>()))
    {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = x.iter().copied().fold(f32::INFINITY, f32::min);
        let d = (max - min) / 15.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let q = |v: f32| ((v - min) * id + 0.5).trunc().clamp(0.0, 15.0) as u8;
        let mut block = BlockQ4_1 {
            d: f16_from_f32(d),
            m: f16_from_f32(min),
            qs: [0; QK4_1 / 2],
        };
        for j in 0..QK4_1 / 2 {
            block.qs[j] = q(x[j]) | (q(x[j + QK4_1 / 2]) << 4);
        }
        write_block(out, &block);
    }
}
