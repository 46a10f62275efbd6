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

use super::kernels::GROUP_KERNELS_READ_BROADCAST;
use super::linear::{WeightMatrix, TASKS_PER_THREAD};
use super::ops::multiversion;
use super::pool::WorkerPool;

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

/// Activation rows `[t, cols]` in f32, and in the quantized forms the products read.
#[derive(Clone, Copy)]
pub struct Activations<'a> {
    pub f32: &'a [f32],
    /// `[t, cols / 32]`, or empty.
    pub q8: &'a [ActBlock],
    /// `[t, cols / 32]`, or empty.
    pub q16: &'a [ActBlock16],
    /// `[t, cols / 32]`: `q8` broadcast for the x86 group kernels, or empty (then they
    /// broadcast as they go).
    pub broadcast: &'a [BroadcastBlock],
    /// `[t, cols / 32]`: `q16` broadcast (the x86 Q8_0 group kernel), or empty.
    pub broadcast16: &'a [BroadcastBlock16],
}

/// Reusable buffers for [`Activations`].
#[derive(Default)]
pub struct ActivationBuffers {
    q8: Vec<ActBlock>,
    q16: Vec<ActBlock16>,
    broadcast: Vec<BroadcastBlock>,
    broadcast16: Vec<BroadcastBlock16>,
}

/// Which quantized forms of the activations a product reads.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ActForms {
    pub q8: bool,
    pub q16: bool,
    pub broadcast: bool,
    pub broadcast16: bool,
}

impl ActForms {
    pub const ALL: ActForms = ActForms {
        q8: true,
        q16: true,
        broadcast: true,
        broadcast16: true,
    };

    /// The forms rows of `ty` are dotted with (`groups`: by a group kernel, repacked).
    pub fn of(ty: crate::GgmlType, groups: bool) -> ActForms {
        use crate::GgmlType::*;
        let broadcast = groups && GROUP_KERNELS_READ_BROADCAST;
        ActForms {
            q8: matches!(ty, Q4_0 | Q4_K | Q6_K),
            q16: ty == Q8_0,
            broadcast: broadcast && ty != Q8_0,
            broadcast16: broadcast && ty == Q8_0,
        }
    }

    fn or(self, other: ActForms) -> ActForms {
        ActForms {
            q8: self.q8 || other.q8,
            q16: self.q16 || other.q16,
            broadcast: self.broadcast || other.broadcast,
            broadcast16: self.broadcast16 || other.broadcast16,
        }
    }
}

/// Activations at least this long are quantized in parallel.
const PARALLEL_QUANTIZE_MIN: usize = 8192;

/// The broadcast forms are made for at most this many bytes (16 tokens of an 8192-wide input
/// in 8-bit blocks); a longer input (prefill) is read from `q8` / `q16` as it is.
const BROADCAST_MAX_BYTES: usize = 1 << 20;

impl<'a> Activations<'a> {
    /// Quantizes `x` (`[t, cols]`) into `buffers` in every form if `cols` is a multiple of
    /// 32, on the pool's threads when `x` is long (prefill).
    pub fn new(
        x: &'a [f32],
        buffers: &'a mut ActivationBuffers,
        pool: &WorkerPool,
    ) -> Activations<'a> {
        Self::quantized(x, buffers, pool, ActForms::ALL)
    }

    /// As [`Self::new`], in only the forms that `matrices` read (a model whose LM head alone is
    /// Q8_0 then quantizes its layers' inputs once, not twice).
    pub fn for_matrices(
        x: &'a [f32],
        buffers: &'a mut ActivationBuffers,
        pool: &WorkerPool,
        matrices: &[&WeightMatrix],
    ) -> Activations<'a> {
        let forms = matrices.iter().fold(ActForms::default(), |f, m| {
            f.or(m.activation_forms(x.len() / m.cols.max(1)))
        });
        Self::quantized(x, buffers, pool, forms)
    }

    /// `x` in f32 only: every product then dequantizes its weights and dots them in f32, as
    /// the GPU backends compute (the reference of their self-test; slower).
    pub fn unquantized(x: &'a [f32]) -> Activations<'a> {
        Activations {
            f32: x,
            q8: &[],
            q16: &[],
            broadcast: &[],
            broadcast16: &[],
        }
    }

    fn quantized(
        x: &'a [f32],
        buffers: &'a mut ActivationBuffers,
        pool: &WorkerPool,
        forms: ActForms,
    ) -> Activations<'a> {
        if x.len() % ACT_BLOCK != 0 {
            return Self::unquantized(x);
        }
        let n = x.len() / ACT_BLOCK;
        // Blocks per task: one task per block run on one thread for a short x (decode).
        let per_task = if x.len() >= PARALLEL_QUANTIZE_MIN {
            n.div_ceil(pool.threads() * TASKS_PER_THREAD)
        } else {
            n
        };
        buffers.q8.clear();
        if forms.q8 || forms.broadcast {
            buffers.q8.resize(n, ActBlock::default());
            pool.for_each_chunk(&mut buffers.q8, per_task, &|i, out| {
                let at = i * per_task * ACT_BLOCK;
                quantize_activations(&x[at..at + out.len() * ACT_BLOCK], out);
            });
        }
        buffers.q16.clear();
        if forms.q16 || forms.broadcast16 {
            buffers.q16.resize(n, ActBlock16::default());
            pool.for_each_chunk(&mut buffers.q16, per_task, &|i, out| {
                let at = i * per_task * ACT_BLOCK;
                quantize_activations16(&x[at..at + out.len() * ACT_BLOCK], out);
            });
        }
        buffers.broadcast.clear();
        if forms.broadcast && n * size_of::<BroadcastBlock>() <= BROADCAST_MAX_BYTES {
            buffers.broadcast.resize(n, BroadcastBlock::default());
            broadcast_groups(&buffers.q8, &mut buffers.broadcast);
        }
        buffers.broadcast16.clear();
        if forms.broadcast16 && n * size_of::<BroadcastBlock16>() <= BROADCAST_MAX_BYTES {
            buffers.broadcast16.resize(n, BroadcastBlock16::default());
            broadcast_pairs(&buffers.q16, &mut buffers.broadcast16);
        }
        Activations {
            f32: x,
            q8: &buffers.q8,
            q16: &buffers.q16,
            broadcast: &buffers.broadcast,
            broadcast16: &buffers.broadcast16,
        }
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
