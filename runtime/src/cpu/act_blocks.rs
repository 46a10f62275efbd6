//! The quantized forms of activations the integer kernels read: blocks of 32 with an f32
//! scale (8-bit, with the sums of each half for the offsets of Q4_K mins and Q6_K's −32;
//! 16-bit for Q8_0 weights), their broadcast layouts, and the portable quantizers (the
//! reference of the SIMD ones).

use super::ops::multiversion;

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

/// The 8 groups of 4 activations of an [`ActBlock`], each repeated in the 8 lanes of a 32-byte
/// register: `groups[g][lane] = qs[4g..4g + 4]` (as one i32). The x86 group kernels
/// ([`crate::cpu::packed`]) read their operands from here whole: a broadcast from memory per
/// group and token costs more than the multiply-add it feeds on some CPUs (Zen 1: a decode of
/// four tokens 1.2–1.5× slower).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
pub struct BroadcastBlock {
    pub groups: [[i32; 8]; 8],
}

/// The 16 pairs of 16-bit activations of an [`ActBlock16`], each repeated in 8 lanes:
/// `pairs[p][lane] = qs[2p..2p + 2]` (as one i32), for the x86 Q8_0 group kernel.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
pub struct BroadcastBlock16 {
    pub pairs: [[i32; 8]; 16],
}

/// `out[b]` = block `b` of `q16` broadcast ([`BroadcastBlock16`]).
pub fn broadcast_pairs(q16: &[ActBlock16], out: &mut [BroadcastBlock16]) {
    for (b, o) in q16.iter().zip(out.iter_mut()) {
        for (p, lanes) in o.pairs.iter_mut().enumerate() {
            let pair = (b.qs[2 * p] as u16 as u32 | (b.qs[2 * p + 1] as u16 as u32) << 16) as i32;
            *lanes = [pair; 8];
        }
    }
}

/// `out[b]` = block `b` of `q8` broadcast ([`BroadcastBlock`]).
pub fn broadcast_groups(q8: &[ActBlock], out: &mut [BroadcastBlock]) {
    for (b, o) in q8.iter().zip(out.iter_mut()) {
        for (g, lanes) in o.groups.iter_mut().enumerate() {
            let group = i32::from_le_bytes(std::array::from_fn(|j| b.qs[4 * g + j] as u8));
            *lanes = [group; 8];
        }
    }
}

/// Round to nearest (ties to even) for |x| < 2²², without a libm call: adding 1.5·2²³ pushes
/// the fraction out of the mantissa.
#[inline]
fn round_fast(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// 16-bit activations, for Q8_0 weights: their own error is that of 8-bit activations, and
/// the two together cost measurable accuracy (the q8_0 bounds of docs/MATH.md §5). `x[i] ≈ d · qs[i]`.
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

/// The portable quantizer (the reference of the SIMD one).
pub fn quantize_activations_portable(x: &[f32], out: &mut [ActBlock]) {
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
