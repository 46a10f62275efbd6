//! The GLA / HGRN2 recurrence over a chunk of tokens in the chunkwise-parallel form (docs/MATH.md §1,
//! flash-linear-attention's `chunk_gla`), for prefill. Per KV head, for a chunk of L tokens
//! with per-token decays `a_t` [d] and cumulative log-decays `G_t = Σ_{s≤t} log a_s`:
//! - inter-chunk: `o_t += (φq_t ⊙ e^{G_t})ᵀ · S₀`;
//! - intra-chunk: `o_t += Σ_{s≤t} ((φq_t ⊙ e^{G_t}) · (φk_s ⊙ e^{−G_s})) v_s`;
//! - state carry: `S' = diag(e^{G_L}) S₀ + Σ_s (φk_s ⊙ e^{G_L − G_s}) ⊗ v_s`.
//!
//! `e^{−G_s}` grows as the decays shrink; [`ChunkScratch::prepare`] declines a chunk whose
//! total decay exceeds `e^{-MAX_LOG_DECAY}` in any feature (the caller then runs the token
//! loop, so results never depend on overflow). Letters: L tokens, d head dim.

use crate::config::Variant;
use crate::cpu::linear::dot;
use crate::cpu::ops::{exp_fast, log_sigmoid, sigmoid, softmax};

/// Tokens per chunk.
pub const CHUNK: usize = 32;

/// Largest total log-decay of a chunk the factored form accepts: `e^{80}` and its products
/// with softmax features stay far inside f32.
const MAX_LOG_DECAY: f32 = 80.0;

/// Per-KV-head buffers of one chunk.
#[derive(Clone, Default)]
pub(crate) struct ChunkScratch {
    /// [L, d] keys, then `φk ⊙ e^{−G}`
    kd: Vec<f32>,
    /// [L, d] `φk ⊙ e^{G_L − G}`
    kc: Vec<f32>,
    /// [L, d] `e^{G}`
    eg: Vec<f32>,
    /// [d] `e^{G_L}`
    eg_last: Vec<f32>,
    /// [L, d] values
    pub v: Vec<f32>,
    /// [L, d] one query head's queries, then `φq ⊙ e^{G}`
    pub q: Vec<f32>,
    /// [L, d] that head's output
    pub o: Vec<f32>,
    len: usize,
}

impl ChunkScratch {
    pub(crate) fn new(d: usize) -> Self {
        ChunkScratch {
            kd: vec![0.0; CHUNK * d],
            kc: vec![0.0; CHUNK * d],
            eg: vec![0.0; CHUNK * d],
            eg_last: vec![0.0; d],
            v: vec![0.0; CHUNK * d],
            q: vec![0.0; CHUNK * d],
            o: vec![0.0; CHUNK * d],
            len: 0,
        }
    }

    /// Rows of [`Self::kd`] to fill with the chunk's raw keys before [`Self::prepare`].
    pub(crate) fn keys_mut(&mut self, len: usize, d: usize) -> &mut [f32] {
        &mut self.kd[..len * d]
    }

    /// Turns the raw keys (already in `keys_mut`) into the chunk's features and decays.
    /// False if the chunk decays too fast for the factored form (nothing else changed that
    /// the token loop reads).
    #[inline(always)]
    pub(crate) fn prepare(
        &mut self,
        variant: Variant,
        len: usize,
        d: usize,
        gate_normalizer: f32,
    ) -> bool {
        debug_assert!(matches!(variant, Variant::Gla | Variant::Hgrn2) && len <= CHUNK);
        self.len = len;
        // eg ← G (cumulative log decay), kd ← φk.
        let g = vec_zero(&mut self.eg_last);
        for t in 0..len {
            let (k, gt) = (
                &mut self.kd[t * d..(t + 1) * d],
                &mut self.eg[t * d..(t + 1) * d],
            );
            for (i, (kv, gv)) in k.iter_mut().zip(gt.iter_mut()).enumerate() {
                let log_a = match variant {
                    Variant::Hgrn2 => {
                        let log_a = log_sigmoid(*kv);
                        *kv = 1.0 - sigmoid(*kv);
                        log_a
                    }
                    _ => log_sigmoid(*kv) / gate_normalizer,
                };
                g[i] += log_a;
                *gv = g[i];
            }
            if variant == Variant::Gla {
                softmax(k);
            }
        }
        if g.iter().any(|&v| v.is_nan() || v < -MAX_LOG_DECAY) {
            return false;
        }
        for t in 0..len {
            let r = t * d..(t + 1) * d;
            for i in 0..d {
                let (phi, gt) = (self.kd[r.start + i], self.eg[r.start + i]);
                self.kd[r.start + i] = phi * exp_fast(-gt);
                self.kc[r.start + i] = phi * exp_fast(g[i] - gt);
                self.eg[r.start + i] = exp_fast(gt);
            }
        }
        for v in g.iter_mut() {
            *v = exp_fast(*v);
        }
        true
    }

    /// One query head: `o` [L, d] from the queries in `q` [L, d] (overwritten) and the state
    /// S₀ [d, d] at the start of the chunk.
    #[inline(always)]
    pub(crate) fn readout(&mut self, state: &[f32], d: usize) {
        let len = self.len;
        for t in 0..len {
            let r = t * d..(t + 1) * d;
            let q = &mut self.q[r.clone()];
            softmax(q);
            q.iter_mut()
                .zip(&self.eg[r.clone()])
                .for_each(|(q, e)| *q *= e);
            let o = &mut self.o[r.clone()];
            o.fill(0.0);
            for (row, &w) in state.chunks_exact(d).zip(q.iter()) {
                o.iter_mut().zip(row).for_each(|(o, s)| *o += w * s);
            }
            for s in 0..=t {
                let w = dot(q, &self.kd[s * d..(s + 1) * d]);
                o.iter_mut()
                    .zip(&self.v[s * d..(s + 1) * d])
                    .for_each(|(o, v)| *o += w * v);
            }
        }
    }

    /// `S ← diag(e^{G_L}) S + Σ_s (φk_s ⊙ e^{G_L − G_s}) ⊗ v_s`; state [d, d].
    #[inline(always)]
    pub(crate) fn carry(&self, state: &mut [f32], d: usize) {
        for (i, row) in state.chunks_exact_mut(d).enumerate() {
            let decay = self.eg_last[i];
            row.iter_mut().for_each(|s| *s *= decay);
            for s in 0..self.len {
                let w = self.kc[s * d + i];
                row.iter_mut()
                    .zip(&self.v[s * d..(s + 1) * d])
                    .for_each(|(o, v)| *o += w * v);
            }
        }
    }
}

/// Zeroes `v` and returns it.
fn vec_zero(v: &mut [f32]) -> &mut [f32] {
    v.fill(0.0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::recurrence::{gla_update, hgrn2_update, softmax_readout};
    use crate::testing::values;

    /// Token loop and chunked form over `len` tokens from the same state: outputs [len, d]
    /// and final states of both.
    fn both(variant: Variant, len: usize, d: usize, key_scale: f32) -> [(Vec<f32>, Vec<f32>); 2] {
        let (k, v, q) = (
            values(1, len * d, key_scale),
            values(2, len * d, 1.0),
            values(3, len * d, 3.0),
        );
        let state0 = values(4, d * d, 0.5);
        let norm = 16.0;
        // Token loop.
        let (mut s, mut out, mut scratch) = (state0.clone(), vec![0.0; len * d], vec![0.0; d]);
        for t in 0..len {
            let r = t * d..(t + 1) * d;
            match variant {
                Variant::Gla => {
                    gla_update(&mut s, &k[r.clone()], &v[r.clone()], norm, &mut scratch)
                }
                _ => hgrn2_update(&mut s, &k[r.clone()], &v[r.clone()]),
            }
            scratch.copy_from_slice(&q[r.clone()]);
            softmax_readout(&s, &mut scratch, &mut out[r]);
        }
        // Chunked.
        let mut ch = ChunkScratch::new(d);
        let (mut s2, mut out2) = (state0, vec![0.0; len * d]);
        assert!(len <= CHUNK);
        ch.keys_mut(len, d).copy_from_slice(&k);
        let accepted = ch.prepare(variant, len, d, norm);
        if accepted {
            ch.v[..len * d].copy_from_slice(&v);
            ch.q[..len * d].copy_from_slice(&q);
            ch.readout(&s2, d);
            out2.copy_from_slice(&ch.o[..len * d]);
            ch.carry(&mut s2, d);
        } else {
            out2.fill(f32::NAN);
        }
        [(out, s), (out2, s2)]
    }

    fn assert_close(what: &str, want: &[f32], got: &[f32], tol: f32) {
        for (i, (a, b)) in want.iter().zip(got).enumerate() {
            assert!(
                (a - b).abs() <= tol * (1.0 + a.abs()),
                "{what}: first mismatch at {i}: token loop {a}, chunked {b} (tolerance {tol:e})"
            );
        }
    }

    #[test]
    fn chunked_form_equals_the_token_loop_within_1e_4() {
        for variant in [Variant::Gla, Variant::Hgrn2] {
            for len in [2, 7, CHUNK] {
                for d in [16, 64] {
                    let [(out, s), (out2, s2)] = both(variant, len, d, 4.0);
                    let what = format!("{variant:?} L={len} d={d}");
                    assert_close(&format!("{what} outputs"), &out, &out2, 1e-4);
                    assert_close(&format!("{what} state"), &s, &s2, 1e-4);
                }
            }
        }
    }

    #[test]
    fn a_chunk_that_decays_too_fast_is_declined() {
        // HGRN2 keys of −200: log σ(k) ≈ −200 per token, far past the factored form's range.
        let [_, (out2, _)] = both(Variant::Hgrn2, 4, 16, 0.0);
        assert!(
            out2.iter().all(|v| v.is_finite()),
            "mild keys must be accepted"
        );
        let mut ch = ChunkScratch::new(16);
        ch.keys_mut(4, 16).fill(-200.0);
        assert!(!ch.prepare(Variant::Hgrn2, 4, 16, 16.0));
    }
}
