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

/// Quantizes `x` (a multiple of 32 long) into `out` (`x.len() / 32` blocks): d = max|x|/127,
/// q = round(x/d) (the same bits with or without SIMD).
pub fn quantize_activations(x: &[f32], out: &mut [ActBlock]) {
    #[cfg(target_arch = "x86_64")]
    if super::ops::use_avx2() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { super::kernels::avx2::quantize_activations(x, out) };
    }
    quantize_activations_portable(x, out)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The SIMD quantizer gives the portable one's bits: random blocks at many scales, ties
    /// (halves, which both round to even), zeros, blocks of one repeated value, and the
    /// non-finite and subnormal blocks of a hostile file (no overflow, the same bits).
    #[test]
    fn simd_quantization_equals_the_portable_one() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let mut x: Vec<f32> = (0..64 * 32)
            .map(|i| next() * [1.0, 1e-6, 300.0, 3e4][i / 32 % 4])
            .collect();
        // Ties: with max 127, d = 1 and every x·(1/d) is x itself.
        for (i, v) in x[..32].iter_mut().enumerate() {
            *v = if i == 0 { 127.0 } else { i as f32 - 16.5 };
        }
        x[32..64].fill(0.0);
        x[64..96].fill(-2.25);
        // What a hostile file's weights give: NaN, ±∞, huge and subnormal values (the scale's
        // inverse overflows), each in its own block.
        x[96 + 5] = f32::NAN;
        x[128 + 7] = f32::INFINITY;
        x[160 + 1] = f32::NEG_INFINITY;
        x[192..224].fill(f32::MAX);
        x[224..256].fill(1e-43);
        x[256 + 3] = -1e-44;
        let (mut got, mut want) = (vec![ActBlock::default(); 64], vec![ActBlock::default(); 64]);
        quantize_activations(&x, &mut got);
        quantize_activations_portable(&x, &mut want);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                (g.d.to_bits(), g.dsum.to_bits(), g.sums, g.qs),
                (w.d.to_bits(), w.dsum.to_bits(), w.sums, w.qs),
                "block {i}"
            );
        }
    }
}
