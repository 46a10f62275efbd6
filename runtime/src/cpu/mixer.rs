//! The token mixer of one layer: the recurrent branch, one task per KV head `j` (state of head
//! j, read by its group of query heads), and the sliding-window attention, one task per KV
//! head's group of query heads (on RoPE'd copies of q and k made before: the group reads head
//! j's window while it is in cache), in one job; then the window update.
//!
//! Letters: T tokens, H heads, Hkv kv heads, d head dim, M GSA slots, W window.

use super::chunkwise::{ChunkScratch, CHUNK};
use super::recurrence::{gla_update, gsa_readout, gsa_update, hgrn2_update, softmax_readout};
use crate::config::{LigerConfig, Variant};
use crate::cpu::linear::dot;
use crate::cpu::ops::{adaptive_avg_pool, multiversion, prefetch, softmax};
use crate::cpu::pool::Disjoint;

/// Keys the window attention fetches ahead of the one it scores.
const KEYS_AHEAD: usize = 4;

/// Per-KV-head scratch.
#[derive(Default, Clone)]
pub(crate) struct MixerScratch {
    /// [d]
    head: Vec<f32>,
    /// [M] pooled keys, then gates
    pooled: Vec<f32>,
    /// [M]
    slots_a: Vec<f32>,
    /// [M]
    slots_b: Vec<f32>,
    /// Chunkwise-parallel recurrence (prefill).
    chunk: ChunkScratch,
}

impl MixerScratch {
    pub(crate) fn new(c: &LigerConfig) -> Self {
        MixerScratch {
            head: vec![0.0; c.head_dim],
            pooled: vec![0.0; c.gsa_slots],
            slots_a: vec![0.0; c.gsa_slots],
            slots_b: vec![0.0; c.gsa_slots],
            chunk: ChunkScratch::new(c.head_dim),
        }
    }
}

/// What one layer's mixer reads and writes for one sequence; each KV head's task touches only
/// its own parts.
pub(crate) struct LayerMixer<'a> {
    pub c: &'a LigerConfig,
    /// Tokens in the chunk, position of the first, oldest position in the window.
    pub n: usize,
    pub pos0: usize,
    pub oldest: usize,
    /// [T, H·d], as projected (the recurrence's)
    pub q: Disjoint<'a, f32>,
    /// [T, Hkv·d], as projected
    pub k: Disjoint<'a, f32>,
    /// [T, Hkv·d]
    pub v: &'a [f32],
    /// [T, H·d], [T, Hkv·d]: q and k RoPE'd (the window's)
    pub q_rot: &'a [f32],
    pub k_rot: &'a [f32],
    /// [T, H·d] recurrent branch output
    pub o_rec: Disjoint<'a, f32>,
    /// [T, H·d] SWA output
    pub y: Disjoint<'a, f32>,
    /// This layer's recurrent state, [Hkv, per_head]
    pub state: Disjoint<'a, f32>,
    /// This layer's window, [W, Hkv·d] each
    pub ring_k: Disjoint<'a, f32>,
    pub ring_v: Disjoint<'a, f32>,
    /// [Hkv]
    pub scratch: Disjoint<'a, MixerScratch>,
    /// [H, W + 1] attention scores, per query head
    pub scores: Disjoint<'a, f32>,
}

/// Where one sequence's rows sit among a step's stacked rows, and its window.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ChunkRows {
    /// First row and row count (its tokens in this step).
    pub row0: usize,
    pub n: usize,
    /// Position of its first token, oldest position in its window.
    pub pos0: usize,
    pub oldest: usize,
}

/// One sequence's state as the mixer tasks of a step write it: every layer's.
pub(crate) struct StateViews<'a> {
    /// [L, Hkv, per_head]
    recurrent: Disjoint<'a, f32>,
    /// [L, W, Hkv·d] each
    keys: Disjoint<'a, f32>,
    values: Disjoint<'a, f32>,
}

impl<'a> StateViews<'a> {
    pub(crate) fn new(state: &'a mut crate::model::SequenceState) -> StateViews<'a> {
        StateViews {
            recurrent: Disjoint::new(&mut state.recurrent),
            keys: Disjoint::new(&mut state.window_keys),
            values: Disjoint::new(&mut state.window_values),
        }
    }
}

/// One layer's mixer over a step of several sequences: their rows stacked in the activations
/// ([R, ·], R = Σ n), each with its own state. A task is (sequence s, head): it sees sequence
/// s's rows through [`BatchMixer::sequence`].
pub(crate) struct BatchMixer<'a> {
    pub c: &'a LigerConfig,
    pub layer: usize,
    /// [S]
    pub spans: &'a [ChunkRows],
    pub views: &'a [StateViews<'a>],
    /// [R, H·d], [R, Hkv·d], [R, Hkv·d], [R, H·d], [R, H·d]
    pub q: Disjoint<'a, f32>,
    pub k: Disjoint<'a, f32>,
    pub v: &'a [f32],
    /// [R, H·d], [R, Hkv·d] RoPE'd
    pub q_rot: &'a [f32],
    pub k_rot: &'a [f32],
    pub o_rec: Disjoint<'a, f32>,
    pub y: Disjoint<'a, f32>,
    /// [S, Hkv]
    pub scratch: Disjoint<'a, MixerScratch>,
    /// [S, H, W + 1]
    pub scores: Disjoint<'a, f32>,
}

impl BatchMixer<'_> {
    /// Sequence `s`'s rows, state and scratch as one layer's mixer.
    pub(crate) fn sequence(&self, s: usize) -> LayerMixer<'_> {
        let c = self.c;
        let (d, w, l) = (c.head_dim, c.window as usize, self.layer);
        let (hd, kv) = (c.n_heads * d, c.n_kv_heads * d);
        let layer_state = c.n_kv_heads * crate::model::SequenceState::per_head(c);
        let ChunkRows { row0, n, .. } = self.spans[s];
        let rows = |width: usize| row0 * width..(row0 + n) * width;
        let view = &self.views[s];
        let scores = c.n_heads * (w + 1);
        LayerMixer {
            c,
            n,
            pos0: self.spans[s].pos0,
            oldest: self.spans[s].oldest,
            q: self.q.sub(rows(hd)),
            k: self.k.sub(rows(kv)),
            v: &self.v[rows(kv)],
            q_rot: &self.q_rot[rows(hd)],
            k_rot: &self.k_rot[rows(kv)],
            o_rec: self.o_rec.sub(rows(hd)),
            y: self.y.sub(rows(hd)),
            state: view.recurrent.sub(l * layer_state..(l + 1) * layer_state),
            ring_k: view.keys.sub(l * w * kv..(l + 1) * w * kv),
            ring_v: view.values.sub(l * w * kv..(l + 1) * w * kv),
            scratch: self.scratch.sub(s * c.n_kv_heads..(s + 1) * c.n_kv_heads),
            scores: self.scores.sub(s * scores..(s + 1) * scores),
        }
    }

    /// The whole layer: every sequence's recurrent branch (one task per sequence and KV
    /// head), then every window attention (per sequence and KV head's group of query heads),
    /// then the windows.
    pub(crate) fn run(&self, pool: &crate::cpu::pool::WorkerPool) {
        let hkv = self.c.n_kv_heads;
        let sequences = self.spans.len();
        // The recurrent tasks first (the longest), then the window's: the pool hands tasks out
        // in order, so the short ones fill in beside the long ones.
        let recurrent = sequences * hkv;
        pool.run(
            recurrent + sequences * hkv,
            &|i| match i.checked_sub(recurrent) {
                None => run_kv_head(&self.sequence(i / hkv), i % hkv),
                Some(i) => run_swa_group(&self.sequence(i / hkv), i % hkv),
            },
        );
        for s in 0..sequences {
            self.sequence(s).update_window();
        }
    }
}

multiversion!(
/// The recurrent branch of KV head `j` over the chunk.
pub(crate) fn run_kv_head(mixer: &LayerMixer, j: usize) => LayerMixer::run_kv_head_body);
multiversion!(
/// The sliding-window attention of KV head `j`'s query heads (beside the `run_kv_head`s).
pub(crate) fn run_swa_group(mixer: &LayerMixer, j: usize) => LayerMixer::swa_group_body);

impl LayerMixer<'_> {
    /// The recurrence for token `t` of KV head `j`: state update, then the readouts of the
    /// head's query heads into `o_rec`.
    #[inline(always)]
    fn recurrence_token(&self, j: usize, t: usize, s: &mut [f32], sc: &mut MixerScratch) {
        let c = self.c;
        let (d, m) = (c.head_dim, c.gsa_slots);
        let (hd, kv) = (c.n_heads * d, c.n_kv_heads * d);
        let group = c.n_heads / c.n_kv_heads;
        let q_heads = |t: usize| t * hd + j * group * d..t * hd + (j + 1) * group * d;
        let k_head = |t: usize| t * kv + j * d..t * kv + (j + 1) * d;
        // SAFETY: as in `run_kv_head_body`.
        let kj = unsafe { self.k.slice(k_head(t)) };
        let vj = &self.v[k_head(t)];
        match c.variant {
            Variant::Gla => gla_update(s, kj, vj, c.gate_normalizer, &mut sc.head),
            Variant::Hgrn2 => hgrn2_update(s, kj, vj),
            Variant::Gsa => {
                // Adaptive pooling of the flattened Hkv·d keys into Hkv·M bins reads only
                // head j's keys for head j's bins.
                adaptive_avg_pool(kj, &mut sc.pooled);
                let (keys, values) = s.split_at_mut(d * m);
                gsa_update(
                    keys,
                    values,
                    kj,
                    vj,
                    &mut sc.pooled,
                    c.gate_normalizer,
                    &mut sc.slots_a,
                );
            }
        }
        // SAFETY: KV head j's own columns and state (see `run_kv_head_body`).
        let qs = unsafe { self.q.slice(q_heads(t)) };
        // SAFETY: KV head j's own columns and state (see `run_kv_head_body`).
        let os = unsafe { self.o_rec.slice(q_heads(t)) };
        for (qh, oh) in qs.chunks_exact(d).zip(os.chunks_exact_mut(d)) {
            match c.variant {
                Variant::Gla | Variant::Hgrn2 => {
                    sc.head.copy_from_slice(qh);
                    softmax_readout(s, &mut sc.head, oh);
                }
                Variant::Gsa => {
                    let (keys, values) = s.split_at(d * m);
                    gsa_readout(keys, values, qh, &mut sc.slots_b, oh);
                }
            }
        }
    }

    /// Tokens `t0..t0+len` of KV head `j` in the chunkwise-parallel form; false (nothing
    /// written) if the chunk decays too fast for it.
    #[inline(always)]
    fn recurrence_chunk(
        &self,
        j: usize,
        t0: usize,
        len: usize,
        s: &mut [f32],
        ch: &mut ChunkScratch,
    ) -> bool {
        let c = self.c;
        let d = c.head_dim;
        let (hd, kv) = (c.n_heads * d, c.n_kv_heads * d);
        let group = c.n_heads / c.n_kv_heads;
        // SAFETY (every `slice`): as in `run_kv_head_body`.
        for t in 0..len {
            let r = (t0 + t) * kv + j * d;
            // SAFETY: KV head j's own columns and state (see `run_kv_head_body`).
            let key = unsafe { self.k.slice(r..r + d) };
            ch.keys_mut(len, d)[t * d..(t + 1) * d].copy_from_slice(key);
            ch.v[t * d..(t + 1) * d].copy_from_slice(&self.v[r..r + d]);
        }
        if !ch.prepare(c.variant, len, d, c.gate_normalizer) {
            return false;
        }
        for h in 0..group {
            let col = (j * group + h) * d;
            for t in 0..len {
                let r = (t0 + t) * hd + col;
                // SAFETY: KV head j's own columns and state (see `run_kv_head_body`).
                ch.q[t * d..(t + 1) * d].copy_from_slice(unsafe { self.q.slice(r..r + d) });
            }
            ch.readout(s, d);
            for t in 0..len {
                let r = (t0 + t) * hd + col;
                // SAFETY: KV head j's own columns and state (see `run_kv_head_body`).
                unsafe { self.o_rec.slice(r..r + d) }.copy_from_slice(&ch.o[t * d..(t + 1) * d]);
            }
        }
        ch.carry(s, d);
        true
    }

    /// Runs KV head `j` over the chunk.
    #[inline(always)]
    fn run_kv_head_body(&self, j: usize) {
        let c = self.c;
        let per_head = crate::model::SequenceState::per_head(c);
        // SAFETY: task j only touches KV head j's columns of k, v and the state, the columns
        // of its own query heads of q and o_rec, and its own scratch (the window's tasks
        // beside it read only the RoPE'd copies and the ring, and write y); no two slices
        // taken here are alive at once over the same range.
        let sc = unsafe { &mut self.scratch.slice(j..j + 1)[0] };
        // SAFETY: KV head j's own columns and state (see `run_kv_head_body`).
        let s = unsafe { self.state.slice(j * per_head..(j + 1) * per_head) };
        // Recurrent branch (no RoPE, scale 1): chunkwise-parallel over prefill chunks of GLA /
        // HGRN2, token by token otherwise (decode, GSA, or a chunk that decays too fast).
        let mut t0 = 0;
        while t0 < self.n {
            let len = CHUNK.min(self.n - t0);
            let chunked = len > 1
                && matches!(c.variant, Variant::Gla | Variant::Hgrn2)
                && self.recurrence_chunk(j, t0, len, s, &mut sc.chunk);
            if !chunked {
                for t in t0..t0 + len {
                    self.recurrence_token(j, t, s, sc);
                }
            }
            t0 += len;
        }
    }

    /// Sliding-window attention of KV head `j`'s query heads, one after the other: the first
    /// brings the head's window rows into cache (prefetched), the others find them there.
    #[inline(always)]
    fn swa_group_body(&self, j: usize) {
        let group = self.c.n_heads / self.c.n_kv_heads;
        for h in j * group..(j + 1) * group {
            self.swa_head_body(h);
        }
    }

    /// Sliding-window attention of query head `h` over the chunk: RoPE'd q·k over the last
    /// W keys and the current one. Reads only the RoPE'd copies and the ring, so it runs
    /// beside the KV heads' [`run_kv_head`].
    #[inline(always)]
    fn swa_head_body(&self, h: usize) {
        let c = self.c;
        let (d, w) = (c.head_dim, c.window as usize);
        let (hd, kv) = (c.n_heads * d, c.n_kv_heads * d);
        let j = h / (c.n_heads / c.n_kv_heads);
        let k_head = |t: usize| t * kv + j * d..t * kv + (j + 1) * d;
        // SAFETY: the task of h's group writes only its query heads' columns of y and
        // their scores; the ring is only read while these tasks run.
        let scores = unsafe { self.scores.slice(h * (w + 1)..(h + 1) * (w + 1)) };
        let scale = 1.0 / (d as f32).sqrt();
        for t in 0..self.n {
            let p = self.pos0 + t;
            let lo = p.saturating_sub(w).max(self.oldest);
            // Rows of KV head j's keys and values at positions lo..=p: the ring's slots
            // (lo mod W onwards, wrapping; one division per token, not per key), then the
            // chunk's rows.
            let in_ring = self.pos0.clamp(lo, p + 1) - lo;
            let slot0 = lo % w;
            let row_at = |i: usize| -> (bool, std::ops::Range<usize>) {
                if i < in_ring {
                    let slot = slot0 + i;
                    (true, k_head(if slot >= w { slot - w } else { slot }))
                } else {
                    (false, k_head(lo + i - self.pos0))
                }
            };
            let head = t * hd + h * d..t * hd + (h + 1) * d;
            let qh = &self.q_rot[head.clone()];
            // SAFETY: query head h's own columns of y.
            let yh = unsafe { self.y.slice(head) };
            let scores = &mut scores[..p - lo + 1];
            let key_at = |i: usize| match row_at(i) {
                // SAFETY: the ring is only read while the mixer's tasks run.
                (true, r) => unsafe { &*self.ring_k.slice(r) },
                (false, r) => &self.k_rot[r],
            };
            let value_at = |i: usize| match row_at(i) {
                // SAFETY: as above.
                (true, r) => unsafe { &*self.ring_v.slice(r) },
                (false, r) => &self.v[r],
            };
            let keys = scores.len();
            for i in 0..keys.min(KEYS_AHEAD) {
                prefetch(key_at(i));
            }
            for (i, score) in scores.iter_mut().enumerate() {
                // The ring's rows are strided (every KV head's between two of this one's):
                // fetched ahead, the value row for the weighted sum below.
                if i + KEYS_AHEAD < keys {
                    prefetch(key_at(i + KEYS_AHEAD));
                }
                prefetch(value_at(i));
                *score = dot(qh, key_at(i)) * scale;
            }
            softmax(scores);
            yh.fill(0.0);
            for (i, &pw) in scores.iter().enumerate() {
                yh.iter_mut()
                    .zip(value_at(i))
                    .for_each(|(o, v)| *o += pw * v);
            }
        }
    }

    /// The newest W RoPE'd keys (and values) of the chunk enter every KV head's window. Runs
    /// after every query head's window attention ([`run_swa_group`]).
    pub(crate) fn update_window(&self) {
        let c = self.c;
        let (d, w) = (c.head_dim, c.window as usize);
        let kv = c.n_kv_heads * d;
        for t in self.n.saturating_sub(w)..self.n {
            let slot = (self.pos0 + t) % w;
            let (row, ring) = (t * kv..(t + 1) * kv, slot * kv..(slot + 1) * kv);
            // SAFETY: no task runs now; these are the only live slices of the ring.
            let (ring_k, ring_v) =
                unsafe { (self.ring_k.slice(ring.clone()), self.ring_v.slice(ring)) };
            ring_k.copy_from_slice(&self.k_rot[row.clone()]);
            ring_v.copy_from_slice(&self.v[row]);
        }
    }
}
