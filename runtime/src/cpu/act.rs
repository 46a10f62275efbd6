//! Activations quantized once per matrix product (as ggml does), so that quantized weights are
//! dotted with integer arithmetic: [`Activations`] holds a product's input in every form its
//! kernels read ([`ActForms`]), made into reusable [`ActivationBuffers`].

pub use super::act_blocks::{
    broadcast_groups, broadcast_pairs, quantize_activations16, quantize_activations_portable,
    ActBlock, ActBlock16, BroadcastBlock, BroadcastBlock16, ACT_BLOCK,
};
use super::kernels::{RowDot, TypeKernels, GROUP_KERNELS_READ_BROADCAST};
use super::pool::{WorkerPool, TASKS_PER_THREAD};

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

    /// The forms rows with `kernels` are dotted with (`groups`: by their group kernel,
    /// repacked): 8-bit blocks for a type whose row kernel reads them, 16-bit for one whose
    /// reads those (Q8_0), none for float rows.
    pub fn of(kernels: &TypeKernels, groups: bool) -> ActForms {
        let (q8, q16) = match kernels.row {
            Some(RowDot::Quant(_)) => (true, false),
            Some(RowDot::Quant16(_)) => (false, true),
            Some(RowDot::Float(_)) | None => (false, false),
        };
        let broadcast = groups && GROUP_KERNELS_READ_BROADCAST;
        ActForms {
            q8,
            q16,
            broadcast: broadcast && q8,
            broadcast16: broadcast && q16,
        }
    }

    pub fn or(self, other: ActForms) -> ActForms {
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

    /// As [`Self::new`], in only the given forms (those the products of this input read:
    /// a model whose LM head alone is Q8_0 then quantizes its layers' inputs once, not twice).
    pub fn with_forms(
        x: &'a [f32],
        buffers: &'a mut ActivationBuffers,
        pool: &WorkerPool,
        forms: ActForms,
    ) -> Activations<'a> {
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
