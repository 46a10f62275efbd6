//! The model step, written once for every variant, base and weight type: a chunk of tokens of
//! one sequence or of several (each with its own state; one token each when decoding) through
//! every layer. The linear layers run once over the stacked rows of every sequence — each
//! weight is read once for all of them — and the token mixer per sequence.
//!
//! Letters: R rows (the tokens of every sequence of the step), S sequences, D hidden, F ffn,
//! V vocab, H heads, Hkv kv heads, d head dim, M GSA slots, W window.

use super::mixer::{BatchMixer, MixerScratch, Span, StateViews};
use super::{Model, SequenceState};
use crate::cpu::linear::{matmul_together, ActivationBuffers, Activations, WeightMatrix};
use crate::cpu::ops::{multiversion, rms_norm, silu};
use crate::cpu::pool::{Disjoint, WorkerPool};

/// Buffers of one forward call, grown to the largest step seen and then reused, so that
/// decoding allocates nothing. Rows are the stacked tokens of every sequence of the step.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Rows and sequences the buffers hold.
    capacity: usize,
    sequences: usize,
    /// [S] where each sequence's rows are
    spans: Vec<Span>,
    /// [logit rows, V] of a step over several sequences, before they are handed out
    logits: Vec<f32>,
    /// [T, D] residual stream
    x: Vec<f32>,
    /// [T, D] normalized input of a sub-block
    h: Vec<f32>,
    /// [T, H·d]
    q: Vec<f32>,
    /// [T, Hkv·d]
    k: Vec<f32>,
    /// [T, Hkv·d]
    v: Vec<f32>,
    /// [T, H·d], [T, Hkv·d]: q and k RoPE'd, for the sliding window (the recurrence reads
    /// them unrotated, at the same time)
    q_rot: Vec<f32>,
    k_rot: Vec<f32>,
    /// [T, H·d] recurrent branch output
    o_rec: Vec<f32>,
    /// [T, H·d] SWA output, then the mixed attention output
    y: Vec<f32>,
    /// [T, D]
    proj: Vec<f32>,
    /// [T, F]
    gate: Vec<f32>,
    /// [T, F]
    up: Vec<f32>,
    /// [S, Hkv] per-KV-head scratch of the token mixer
    mixers: Vec<MixerScratch>,
    /// [S, H, W + 1]
    scores: Vec<f32>,
    /// [T, d/2] RoPE cos / sin per position of the chunk
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    /// Quantized blocks of the input of the current matrix products
    acts: ActivationBuffers,
    /// Every product with f32 activations (each weight dequantized), as the GPU backends
    /// compute: the reference of their self-test. Kept by `release`.
    pub(crate) exact: bool,
}

impl Scratch {
    /// Frees the buffers a multi-token chunk grew, so that a session's memory after a long
    /// prompt is what it is before (decode steps then regrow them to one token, once).
    pub(crate) fn release(&mut self) {
        if self.capacity > 1 {
            *self = Scratch {
                exact: self.exact,
                ..Scratch::default()
            };
        }
    }

    fn ensure(&mut self, model: &Model, t: usize, sequences: usize) {
        let c = &model.config;
        if sequences > self.sequences {
            self.mixers
                .resize(sequences * c.n_kv_heads, MixerScratch::new(c));
            self.scores
                .resize(sequences * c.n_heads * (c.window as usize + 1), 0.0);
            self.spans.reserve(sequences);
            self.sequences = sequences;
        }
        if t <= self.capacity {
            return;
        }
        let (hd, kv) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        let grow = |v: &mut Vec<f32>, n: usize| v.resize(n, 0.0);
        grow(&mut self.x, t * c.hidden);
        grow(&mut self.h, t * c.hidden);
        grow(&mut self.q, t * hd);
        grow(&mut self.k, t * kv);
        grow(&mut self.v, t * kv);
        grow(&mut self.q_rot, t * hd);
        grow(&mut self.k_rot, t * kv);
        grow(&mut self.o_rec, t * hd);
        grow(&mut self.y, t * hd);
        grow(&mut self.proj, t * c.hidden);
        grow(&mut self.gate, t * c.ffn);
        grow(&mut self.up, t * c.ffn);
        grow(&mut self.rope_cos, t * c.head_dim / 2);
        grow(&mut self.rope_sin, t * c.head_dim / 2);
        self.capacity = t;
    }
}

/// One sequence's part of a step.
pub(crate) struct Segment<'a> {
    pub state: &'a mut SequenceState,
    /// Its tokens (ids checked against the vocabulary), in order; may be empty.
    pub tokens: &'a [u32],
    /// Empty the window first (hf-compat: each call sees only its own tokens).
    pub fresh_window: bool,
    /// The logits of every token ([T, V]) into `logits`, rather than the last one's ([V]).
    pub all_logits: bool,
    pub logits: &'a mut Vec<f32>,
}

multiversion!(
/// Runs every segment's tokens through the model as one step, each on its own state; writes
/// each segment's logits (of every token, or of its last) into its `logits`. A segment
/// without tokens is left as it is.
///
/// (The element-wise loops of the step — norms, SwiGLU, residuals, activation quantization —
/// are portable Rust, built for AVX2 as well and run in the widest build the CPU has.)
pub(crate) fn forward(model: &Model, segments: &mut [Segment<'_>], scratch: &mut Scratch)
    => forward_body);

/// `out[t] = RMSNorm(x[t]) · w` for every row of `x` ([T, dm], dm = `w.len()`).
#[inline(always)]
fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    for (xs, os) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        rms_norm(xs, w, eps, os);
    }
}

/// The activations `matrices` read from `x`: quantized as their kernels want them, or in f32
/// only when `exact`.
#[inline(always)]
fn inputs<'a>(
    model: &Model,
    x: &'a [f32],
    acts: &'a mut ActivationBuffers,
    matrices: &[&WeightMatrix],
    exact: bool,
) -> Activations<'a> {
    if exact {
        Activations::unquantized(x)
    } else {
        Activations::for_matrices(x, acts, &model.pool, matrices)
    }
}

/// Fewest rows for which the step's element-wise loops run on the pool (a prefill chunk; a
/// decode step's few rows cost less than a fork/join).
const PARALLEL_ROWS_MIN: usize = 16;

/// `f(first_row, rows)` over `out` (`[n, row]`): on the pool in runs of rows when `n` is large,
/// else at once.
#[inline(always)]
fn by_rows(pool: &WorkerPool, out: &mut [f32], row: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    let n = out.len() / row;
    if n < PARALLEL_ROWS_MIN || pool.threads() == 1 {
        return f(0, out);
    }
    let per_task = n.div_ceil(4 * pool.threads());
    pool.for_each_chunk(out, per_task * row, &|i, part| f(i * per_task, part));
}

#[inline(always)]
fn forward_body(model: &Model, segments: &mut [Segment<'_>], scratch: &mut Scratch) {
    let c = &model.config;
    let n: usize = segments.iter().map(|s| s.tokens.len()).sum();
    if n == 0 {
        return;
    }
    scratch.ensure(model, n, segments.len());
    let (dm, d) = (c.hidden, c.head_dim);
    let (hd, kv) = (c.n_heads * d, c.n_kv_heads * d);
    let w = c.window as usize;
    let half = d / 2;
    let Scratch {
        spans,
        x,
        h,
        q,
        k,
        v,
        q_rot,
        k_rot,
        o_rec,
        y,
        proj,
        gate,
        up,
        mixers,
        scores,
        acts,
        rope_cos,
        rope_sin,
        logits: batch_logits,
        exact,
        ..
    } = scratch;
    let exact = *exact;
    let (x, h, q, k, v) = (
        &mut x[..n * dm],
        &mut h[..n * dm],
        &mut q[..n * hd],
        &mut k[..n * kv],
        &mut v[..n * kv],
    );
    let (o_rec, y, proj) = (&mut o_rec[..n * hd], &mut y[..n * hd], &mut proj[..n * dm]);
    let (q_rot, k_rot) = (&mut q_rot[..n * hd], &mut k_rot[..n * kv]);
    let (gate, up) = (&mut gate[..n * c.ffn], &mut up[..n * c.ffn]);

    // Each sequence's rows: its embeddings, and RoPE angles of its positions.
    let embd = model.matrix(&model.weights.token_embd);
    spans.clear();
    for seg in segments.iter_mut() {
        let row0 = spans.last().map_or(0, |s: &Span| s.row0 + s.n);
        if seg.fresh_window && !seg.tokens.is_empty() {
            seg.state.window_len = 0;
        }
        let (pos0, count) = (seg.state.pos, seg.tokens.len());
        for (t, &tok) in seg.tokens.iter().enumerate() {
            let r = row0 + t;
            embd.dequantize_row_into(tok as usize, &mut x[r * dm..(r + 1) * dm]);
            let a = r * half..(r + 1) * half;
            super::rope::angles(
                pos0 + t,
                &model.inv_freq,
                &mut rope_cos[a.clone()],
                &mut rope_sin[a],
            );
        }
        spans.push(Span {
            row0,
            n: count,
            pos0,
            oldest: pos0 - seg.state.window_len,
        });
    }
    let (rope_cos, rope_sin) = (&rope_cos[..n * half], &rope_sin[..n * half]);

    {
        // Every sequence's state, as the mixer tasks write it (one view without allocating
        // when decoding a single sequence).
        let single: StateViews;
        let many: Vec<StateViews>;
        let views: &[StateViews] = match segments {
            [only] => {
                single = StateViews::new(only.state);
                std::slice::from_ref(&single)
            }
            _ => {
                many = segments
                    .iter_mut()
                    .map(|s| StateViews::new(s.state))
                    .collect();
                &many
            }
        };
        for (l, lw) in model.weights.layers.iter().enumerate() {
            // Front end: q, k, v = W·RMSNorm(x) (+ b).
            by_rows(&model.pool, h, dm, &|r, out| {
                rms_norm_rows(&x[r * dm..][..out.len()], &lw.attn_norm, c.rms_eps, out)
            });
            let (wq, wk, wv) = (
                model.matrix(&lw.wq),
                model.matrix(&lw.wk),
                model.matrix(&lw.wv),
            );
            let input = inputs(model, h, acts, &[&wq, &wk, &wv], exact);
            matmul_together(&model.pool, &input, n, [(&wq, q), (&wk, k), (&wv, v)]);
            for (out, bias) in [(&mut *q, &lw.bq), (&mut *k, &lw.bk), (&mut *v, &lw.bv)] {
                if let Some(b) = bias {
                    for row in out.chunks_exact_mut(b.len()) {
                        row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
                    }
                }
            }

            // RoPE'd copies of q and k for the sliding window, then the token mixer, per
            // sequence: recurrent branch per KV head and sliding window per query head in one
            // job, then the window update.
            by_rows(&model.pool, q_rot, hd, &|r, out| {
                let rows = out.len() / hd;
                out.copy_from_slice(&q[r * hd..(r + rows) * hd]);
                for (t, row) in out.chunks_exact_mut(hd).enumerate() {
                    let a = (r + t) * half..(r + t + 1) * half;
                    super::rope::apply(row, &rope_cos[a.clone()], &rope_sin[a]);
                }
            });
            k_rot.copy_from_slice(k);
            for (t, row) in k_rot.chunks_exact_mut(kv).enumerate() {
                let a = t * half..(t + 1) * half;
                super::rope::apply(row, &rope_cos[a.clone()], &rope_sin[a]);
            }
            BatchMixer {
                c,
                layer: l,
                spans,
                views,
                q: Disjoint::new(q),
                k: Disjoint::new(k),
                v,
                q_rot,
                k_rot,
                o_rec: Disjoint::new(o_rec),
                y: Disjoint::new(y),
                scratch: Disjoint::new(mixers),
                scores: Disjoint::new(scores),
            }
            .run(&model.pool);

            // Mix, output projection, residual.
            for (yv, r) in y.iter_mut().zip(o_rec.iter()) {
                *yv = c.mix_swa * *yv + (1.0 - c.mix_swa) * r;
            }
            let wo = model.matrix(&lw.wo);
            wo.matmul(&model.pool, &inputs(model, y, acts, &[&wo], exact), n, proj);
            by_rows(&model.pool, x, dm, &|r, out| {
                let p = &proj[r * dm..][..out.len()];
                out.iter_mut().zip(p).for_each(|(x, p)| *x += p)
            });

            // SwiGLU MLP.
            by_rows(&model.pool, h, dm, &|r, out| {
                rms_norm_rows(&x[r * dm..][..out.len()], &lw.ffn_norm, c.rms_eps, out)
            });
            let (w_gate, w_up) = (model.matrix(&lw.w_gate), model.matrix(&lw.w_up));
            let input = inputs(model, h, acts, &[&w_gate, &w_up], exact);
            matmul_together(&model.pool, &input, n, [(&w_gate, gate), (&w_up, up)]);
            by_rows(&model.pool, gate, c.ffn, &|r, out| {
                let u = &up[r * c.ffn..][..out.len()];
                out.iter_mut().zip(u).for_each(|(g, u)| *g = silu(*g) * u)
            });
            let w_down = model.matrix(&lw.w_down);
            w_down.matmul(
                &model.pool,
                &inputs(model, gate, acts, &[&w_down], exact),
                n,
                proj,
            );
            by_rows(&model.pool, x, dm, &|r, out| {
                let p = &proj[r * dm..][..out.len()];
                out.iter_mut().zip(p).for_each(|(x, p)| *x += p)
            });
        }
    }

    // Final norm of the rows whose logits are wanted (every token's, or each sequence's
    // last), packed into h.
    let mut wanted = 0;
    for (seg, span) in segments.iter_mut().zip(spans.iter()) {
        if span.n == 0 {
            continue;
        }
        seg.state.window_len = (seg.state.window_len + span.n).min(w);
        seg.state.pos += span.n;
        let first = if seg.all_logits { 0 } else { span.n - 1 };
        for t in first..span.n {
            let r = span.row0 + t;
            rms_norm(
                &x[r * dm..(r + 1) * dm],
                &model.weights.output_norm,
                c.rms_eps,
                &mut h[wanted * dm..(wanted + 1) * dm],
            );
            wanted += 1;
        }
    }

    // The LM head over them, straight into a single sequence's logits.
    let vocab = c.vocab_size;
    let head = model.matrix(&model.weights.output);
    let input = inputs(model, &h[..wanted * dm], acts, &[&head], exact);
    if let [only] = segments {
        only.logits.resize(wanted * vocab, 0.0);
        head.matmul(&model.pool, &input, wanted, only.logits);
        return;
    }
    batch_logits.resize(wanted * vocab, 0.0);
    head.matmul(&model.pool, &input, wanted, batch_logits);
    let mut rest = &batch_logits[..];
    for (seg, span) in segments.iter_mut().zip(spans.iter()) {
        if span.n == 0 {
            continue;
        }
        let rows = if seg.all_logits { span.n } else { 1 };
        let (mine, others) = rest.split_at(rows * vocab);
        seg.logits.clear();
        seg.logits.extend_from_slice(mine);
        rest = others;
    }
}
