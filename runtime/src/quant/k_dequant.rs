//! ggml's K-quant super-blocks (256 elements) and their scalar dequantization, bit-exact
//! with ggml's `dequantize_row_q*_K` and the `gguf` package.

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and mins in Q4_K / Q5_K (and 6-bit scales in Q3_K).
pub const K_SCALE_SIZE: usize = 12;

/// 16 sub-blocks of 16: `x = d·(sc&15)·q − dmin·(sc>>4)`, q 2 bits.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}
const _: () = assert!(size_of::<BlockQ2K>() == 84);

/// 16 sub-blocks of 16: `x = d·(sc−32)·(q − 4·!hbit)`, q 2 bits + 1 high bit, sc 6 bits.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; K_SCALE_SIZE],
    pub d: f16,
}
const _: () = assert!(size_of::<BlockQ3K>() == 110);

/// 8 sub-blocks of 32: `x = d·sc·q − dmin·m`, q 4 bits, sc/m 6 bits packed in `scales`.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

/// As Q4_K with a fifth bit per element in `qh`.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ5K>() == 176);

/// 16 sub-blocks of 16: `x = d·sc·(q − 32)`, q 6 bits (4 in `ql`, 2 in `qh`), sc i8.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

fn blocks<B: Pod>(src: &[u8]) -> impl Iterator<Item = B> + '_ {
    src.chunks_exact(size_of::<B>())
        .map(bytemuck::pod_read_unaligned::<B>)
}

/// Scale and min of sub-block `j` (0..8) from the 12-byte packed 6-bit table of Q4_K / Q5_K.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

pub(super) fn dequantize_q2_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ2K>(src).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (e, y) in y.iter_mut().enumerate() {
            let sc = b.scales[e / 16];
            let dl = d * (sc & 0x0f) as f32;
            let ml = dmin * (sc >> 4) as f32;
            let (half, shift, l) = (e / 128, 2 * ((e % 128) / 32), e % 32);
            let q = (b.qs[half * 32 + l] >> shift) & 3;
            *y = dl * q as f32 - ml;
        }
    }
}

pub(super) fn dequantize_q3_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ3K>(src).zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let scale = |s: usize| -> f32 {
            let low = (b.scales[s % 8] >> (4 * (s / 8))) & 0x0f;
            let high = (b.scales[8 + s % 4] >> (2 * (s / 4))) & 3;
            ((low | (high << 4)) as i32 - 32) as f32
        };
        for (e, y) in y.iter_mut().enumerate() {
            let dl = d * scale(e / 16);
            let (half, j, l) = (e / 128, (e % 128) / 32, e % 32);
            let q = ((b.qs[half * 32 + l] >> (2 * j)) & 3) as i32;
            let high_bit = b.hmask[l] & (1 << (half * 4 + j)) != 0;
            *y = dl * (q - if high_bit { 0 } else { 4 }) as f32;
        }
    }
}

pub(super) fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ4K>(src).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (j, y) in y.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(j, &b.scales);
            let (d1, m1) = (d * sc as f32, dmin * m as f32);
            let qs = &b.qs[(j / 2) * 32..(j / 2) * 32 + 32];
            let shift = 4 * (j % 2);
            for (y, q) in y.iter_mut().zip(qs) {
                *y = d1 * ((q >> shift) & 0x0f) as f32 - m1;
            }
        }
    }
}

pub(super) fn dequantize_q5_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ5K>(src).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (j, y) in y.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(j, &b.scales);
            let (d1, m1) = (d * sc as f32, dmin * m as f32);
            let qs = &b.qs[(j / 2) * 32..(j / 2) * 32 + 32];
            let shift = 4 * (j % 2);
            for (l, y) in y.iter_mut().enumerate() {
                let high = if b.qh[l] & (1 << j) != 0 { 16 } else { 0 };
                *y = d1 * (((qs[l] >> shift) & 0x0f) + high) as f32 - m1;
            }
        }
    }
}

pub(super) fn dequantize_q6_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ6K>(src).zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (e, y) in y.iter_mut().enumerate() {
            // e = 128·half + 32·quarter + l
            let (half, quarter, l) = (e / 128, (e % 128) / 32, e % 32);
            let ql = b.ql[half * 64 + (quarter % 2) * 32 + l];
            let low = if quarter < 2 { ql & 0x0f } else { ql >> 4 };
            let high = (b.qh[half * 32 + l] >> (2 * quarter)) & 3;
            let q = (low | (high << 4)) as i32 - 32;
            let sc = b.scales[half * 8 + quarter * 2 + l / 16] as f32;
            *y = d * sc * q as f32;
        }
    }
}
