//! Activations quantized to 8 bits once per matrix-vector product (as ggml does), so that
//! quantized weights are dotted with integer arithmetic: blocks of 32 with an f32 scale and
//! the sums of each half (for the offsets of Q4_K mins and Q6_K's −32).

/// `x[i] ≈ d · qs[i]`; `sums[h] = Σ qs[16h .. 16h+16]`; `dsum = d · Σ qs` (the block's
/// sum, for weight offsets and mins, computed once and shared by every weight row).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ActBlock {
    pub d: f32,
    pub dsum: f32,
    pub sums: [i32; 2],
    pub qs: [i8; 32],
}

pub const ACT_BLOCK: usize = 32;

use super::ops::multiversion;

/// Round to nearest (ties to even) for |x| < 2²², without a libm call: adding 1.5·2²³ pushes
/// the fraction out of the mantissa.
#[inline]
fn round_fast(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// 16-bit activations, for Q8_0 weights: their own error is that of 8-bit activations, and
/// the two together cost measurable accuracy (DESIGN §5 bar at q8_0). `x[i] ≈ d · qs[i]`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct ActBlock16 {
    pub d: f32,
    pub qs: [i16; 32],
}

impl Default for ActBlock16 {
    fn default() -> Self {
        ActBlock16 {
            d: 0.0,
            qs: [0; 32],
        }
    }
}

/// max |x| over a block, in 8 lanes (vectorizes).
#[inline(always)]
fn amax(xs: &[f32]) -> f32 {
    let mut m = [0f32; 8];
    for c in xs.chunks_exact(8) {
        for k in 0..8 {
            m[k] = m[k].max(c[k].abs());
        }
    }
    m.iter().fold(0f32, |a, &b| a.max(b))
}

multiversion!(
/// Quantizes `x` (a multiple of 32 long) into 16-bit blocks: d = max|x|/32767.
pub fn quantize_activations16(x: &[f32], out: &mut [ActBlock16]) => quantize16_body);

#[inline(always)]
fn quantize16_body(x: &[f32], out: &mut [ActBlock16]) {
    for (xs, b) in x.chunks_exact(ACT_BLOCK).zip(out.iter_mut()) {
        let amax = amax(xs);
        let d = amax / 32767.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (q, v) in b.qs.iter_mut().zip(xs) {
            *q = round_fast(v * id) as i16;
        }
        b.d = d;
    }
}

multiversion!(
/// Quantizes `x` (a multiple of 32 long) into `out` (`x.len() / 32` blocks): d = max|x|/127,
/// q = round(x/d).
pub fn quantize_activations(x: &[f32], out: &mut [ActBlock]) => quantize8_body);

#[inline(always)]
fn quantize8_body(x: &[f32], out: &mut [ActBlock]) {
    for (xs, b) in x.chunks_exact(ACT_BLOCK).zip(out.iter_mut()) {
        let amax = amax(xs);
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (q, v) in b.qs.iter_mut().zip(xs) {
            *q = round_fast(v * id) as i8;
        }
        b.d = d;
        b.sums[0] = b.qs[..16].iter().map(|&q| q as i32).sum();
        b.sums[1] = b.qs[16..].iter().map(|&q| q as i32).sum();
        b.dsum = d * (b.sums[0] + b.sums[1]) as f32;
    }
}
