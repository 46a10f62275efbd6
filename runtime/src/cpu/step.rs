//! The CPU runs the model's step ([`StepPlan`], `model/plan.rs`) op by op over a chunk of
//! tokens of one sequence or of several (each with its own state; one token each when
//! decoding). The products run once over the stacked rows of every sequence — each weight is
//! read once for all of them, a group of products over one input (q/k/v, gate/up) in one
//! parallel pass — and the token mixer per (sequence, KV head) (`mixer.rs`).
//!
//! Letters: R rows (the tokens of every sequence of the step), S sequences, D hidden, F ffn,
//! V vocab, H heads, Hkv kv heads, d head dim, M GSA slots, W window.

use super::act::{ActForms, ActivationBuffers, Activations};
use super::linear::{matmul_together, WeightMatrix};
use super::mixer::{BatchMixer, ChunkRows, MixerScratch, StateViews};
use super::model::CpuModel;
use super::ops::{multiversion, rms_norm, silu};
use super::pool::{Disjoint, WorkerPool};
use crate::config::LigerConfig;
use crate::model::plan::{Buf, Matrix, Op, StepPlan};
use crate::model::{rope, Model, SequenceState};

/// Buffers of one forward call, grown to the largest step seen and then reused, so that
/// decoding allocates nothing. Rows are the stacked tokens of every sequence of the step.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Rows and sequences the buffers hold.
    capacity: usize,
    sequences: usize,
    /// [S] where each sequence's rows are
    spans: Vec<ChunkRows>,
    /// [logit rows, V] of a step over several sequences, before they are handed out
    logits: Vec<f32>,
    /// The plan's row buffers, in [`Buf::ROWS`]' order: x, h [R, D]; q [R, H·d]; k, v
    /// [R, Hkv·d]; o_rec, y [R, H·d]; proj [R, D]; gate, up [R, F]
    rows: [Vec<f32>; 10],
    /// [T, H·d], [T, Hkv·d]: q and k RoPE'd, for the sliding window (the recurrence reads
    /// them unrotated, at the same time)
    q_rot: Vec<f32>,
    k_rot: Vec<f32>,
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
        for (buf, rows) in Buf::ROWS.iter().zip(&mut self.rows) {
            grow(rows, t * buf.width(c).unwrap_or(0));
        }
        grow(&mut self.q_rot, t * hd);
        grow(&mut self.k_rot, t * kv);
        grow(&mut self.rope_cos, t * c.head_dim / 2);
        grow(&mut self.rope_sin, t * c.head_dim / 2);
        self.capacity = t;
    }
}

/// One sequence's chunk of tokens in a step.
pub(crate) struct SequenceChunk<'a> {
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
/// Runs every chunk's tokens through the model's step `plan` as one step, each on its own
/// state; writes each chunk's logits (of every token, or of its last) into its `logits`. A
/// chunk without tokens is left as it is.
///
/// (The element-wise loops of the step — norms, SwiGLU, residuals, activation quantization —
/// are portable Rust, built for AVX2 as well and run in the widest build the CPU has.)
pub(crate) fn forward(cpu: &CpuModel, plan: &StepPlan, chunks: &mut [SequenceChunk<'_>], scratch: &mut Scratch)
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
    cpu: &CpuModel,
    x: &'a [f32],
    acts: &'a mut ActivationBuffers,
    matrices: &[&WeightMatrix],
    exact: bool,
) -> Activations<'a> {
    if exact {
        Activations::unquantized(x)
    } else {
        let tokens = |m: &WeightMatrix| x.len() / m.cols.max(1);
        let forms = matrices.iter().fold(ActForms::default(), |f, m| {
            f.or(m.activation_forms(tokens(m)))
        });
        Activations::with_forms(x, acts, &cpu.pool, forms)
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

/// The row buffers `bufs` (distinct) over the step's first `n` rows.
#[inline(always)]
fn rows_of<'a, const N: usize>(
    rows: &'a mut [Vec<f32>; 10],
    c: &LigerConfig,
    bufs: [Buf; N],
    n: usize,
) -> [&'a mut [f32]; N] {
    let at = bufs.map(|b| b.row_index().expect("the plan names a row buffer"));
    let mut widths = bufs.map(|b| b.width(c).unwrap_or(0)).into_iter();
    let found = rows
        .get_disjoint_mut(at)
        .expect("an op's buffers are distinct");
    found.map(|v| &mut v[..n * widths.next().unwrap_or(0)])
}

/// A weight vector the plan names.
#[inline(always)]
fn vector(model: &Model, buf: Buf) -> &[f32] {
    model
        .weights
        .vector(buf)
        .expect("the plan names the model's weight vectors")
}

/// `y_i = W_i · x` for the step's `n` rows: one product, or a group over one input in one
/// parallel pass.
#[inline(always)]
fn products<const N: usize>(
    cpu: &CpuModel,
    rows: &mut [Vec<f32>; 10],
    acts: &mut ActivationBuffers,
    exact: bool,
    n: usize,
    x: Buf,
    outputs: [(Matrix, Buf); N],
) {
    let c = &cpu.model.config;
    let at = x.row_index().expect("the plan names a row buffer");
    // The input, taken out while the outputs are written (no copy).
    let input_rows = std::mem::take(&mut rows[at]);
    let xs = &input_rows[..n * x.width(c).unwrap_or(0)];
    let matrices = outputs.map(|(m, _)| cpu.matrix(cpu.model.weights.matrix(m)));
    let refs = matrices.each_ref();
    let input = inputs(cpu, xs, acts, &refs, exact);
    {
        let mut ys = rows_of(rows, c, outputs.map(|(_, y)| y), n).into_iter();
        if N == 1 {
            if let (Some(w), Some(y)) = (refs.first(), ys.next()) {
                w.matmul(&cpu.pool, &input, n, y);
            }
        } else {
            let pairs = refs.map(|w| (w, ys.next().unwrap_or_default()));
            matmul_together(&cpu.pool, &input, n, pairs);
        }
    }
    rows[at] = input_rows;
}

#[inline(always)]
fn forward_body(
    cpu: &CpuModel,
    plan: &StepPlan,
    chunks: &mut [SequenceChunk<'_>],
    scratch: &mut Scratch,
) {
    let model = &*cpu.model;
    let c = &model.config;
    let n: usize = chunks.iter().map(|s| s.tokens.len()).sum();
    if n == 0 {
        return;
    }
    scratch.ensure(model, n, chunks.len());
    let (dm, d) = (c.hidden, c.head_dim);
    let (hd, kv) = (c.n_heads * d, c.n_kv_heads * d);
    let w = c.window as usize;
    let half = d / 2;
    let Scratch {
        spans,
        rows,
        q_rot,
        k_rot,
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
    let (q_rot, k_rot) = (&mut q_rot[..n * hd], &mut k_rot[..n * kv]);

    // Each sequence's rows: its embeddings, and RoPE angles of its positions.
    let embd = model.matrix_view(&model.weights.token_embd);
    spans.clear();
    {
        let [x] = rows_of(rows, c, [Buf::X], n);
        for chunk in chunks.iter_mut() {
            let row0 = spans.last().map_or(0, |s: &ChunkRows| s.row0 + s.n);
            if chunk.fresh_window && !chunk.tokens.is_empty() {
                chunk.state.window_len = 0;
            }
            let (pos0, count) = (chunk.state.pos, chunk.tokens.len());
            for (t, &tok) in chunk.tokens.iter().enumerate() {
                let r = row0 + t;
                embd.dequantize_row_into(tok as usize, &mut x[r * dm..(r + 1) * dm]);
                let a = r * half..(r + 1) * half;
                rope::angles(
                    pos0 + t,
                    &model.inv_freq,
                    &mut rope_cos[a.clone()],
                    &mut rope_sin[a],
                );
            }
            spans.push(ChunkRows {
                row0,
                n: count,
                pos0,
                oldest: pos0 - chunk.state.window_len,
            });
        }
    }
    let (rope_cos, rope_sin) = (&rope_cos[..n * half], &rope_sin[..n * half]);

    {
        // Every sequence's state, as the mixer tasks write it (one view without allocating
        // when decoding a single sequence).
        let single: StateViews;
        let many: Vec<StateViews>;
        let views: &[StateViews] = match chunks {
            [only] => {
                single = StateViews::new(only.state);
                std::slice::from_ref(&single)
            }
            _ => {
                many = chunks
                    .iter_mut()
                    .map(|s| StateViews::new(s.state))
                    .collect();
                &many
            }
        };
        let pool = &cpu.pool;
        for op in plan.layers() {
            match *op {
                Op::RmsNorm { x, weight, out } => {
                    let [x, out] = rows_of(rows, c, [x, out], n);
                    let (x, weight) = (&*x, vector(model, weight));
                    by_rows(pool, out, dm, &|r, out| {
                        rms_norm_rows(&x[r * dm..][..out.len()], weight, c.rms_eps, out)
                    });
                }
                Op::Products { x, ref outputs } => match outputs[..] {
                    [one] => products(cpu, rows, acts, exact, n, x, [one]),
                    [a, b] => products(cpu, rows, acts, exact, n, x, [a, b]),
                    [a, b, q] => products(cpu, rows, acts, exact, n, x, [a, b, q]),
                    _ => {
                        for &one in outputs {
                            products(cpu, rows, acts, exact, n, x, [one]);
                        }
                    }
                },
                Op::AddBias { out, bias } => {
                    let [out] = rows_of(rows, c, [out], n);
                    let bias = vector(model, bias);
                    for row in out.chunks_exact_mut(bias.len()) {
                        row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
                    }
                }
                // RoPE'd copies of q and k for the sliding window, then the token mixer, per
                // sequence: recurrent branch per KV head and sliding window per query head in
                // one job, then the window update.
                Op::TokenMixer { layer } => {
                    let [q, k, v, o_rec, y] =
                        rows_of(rows, c, [Buf::Q, Buf::K, Buf::V, Buf::ORec, Buf::Y], n);
                    let q_in = &*q;
                    by_rows(pool, q_rot, hd, &|r, out| {
                        let rows = out.len() / hd;
                        out.copy_from_slice(&q_in[r * hd..(r + rows) * hd]);
                        for (t, row) in out.chunks_exact_mut(hd).enumerate() {
                            let a = (r + t) * half..(r + t + 1) * half;
                            rope::apply(row, &rope_cos[a.clone()], &rope_sin[a]);
                        }
                    });
                    k_rot.copy_from_slice(k);
                    for (t, row) in k_rot.chunks_exact_mut(kv).enumerate() {
                        let a = t * half..(t + 1) * half;
                        rope::apply(row, &rope_cos[a.clone()], &rope_sin[a]);
                    }
                    BatchMixer {
                        c,
                        layer,
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
                    .run(pool);
                }
                Op::Mix { window, recurrent } => {
                    let [y, rec] = rows_of(rows, c, [window, recurrent], n);
                    for (yv, r) in y.iter_mut().zip(rec.iter()) {
                        *yv = c.mix_swa * *yv + (1.0 - c.mix_swa) * r;
                    }
                }
                Op::Add { x, y } => {
                    let [x, y] = rows_of(rows, c, [x, y], n);
                    let (y, width) = (&*y, y.len() / n);
                    by_rows(pool, x, width, &|r, out| {
                        let p = &y[r * width..][..out.len()];
                        out.iter_mut().zip(p).for_each(|(x, p)| *x += p)
                    });
                }
                Op::Swiglu { gate, up } => {
                    let [gate, up] = rows_of(rows, c, [gate, up], n);
                    let (up, width) = (&*up, up.len() / n);
                    by_rows(pool, gate, width, &|r, out| {
                        let u = &up[r * width..][..out.len()];
                        out.iter_mut().zip(u).for_each(|(g, u)| *g = silu(*g) * u)
                    });
                }
                Op::OutputNorm | Op::Logits => {}
            }
        }
    }

    // Each sequence moves past its chunk.
    for (chunk, span) in chunks.iter_mut().zip(spans.iter()) {
        chunk.state.window_len = (chunk.state.window_len + span.n).min(w);
        chunk.state.pos += span.n;
    }

    // The head: the final norm of the rows whose logits are wanted (every token's, or each
    // sequence's last), packed into h, then the LM head over them.
    let mut wanted = 0;
    for op in &plan.ops[plan.head_from..] {
        match op {
            Op::OutputNorm => {
                let [x, h] = rows_of(rows, c, [Buf::X, Buf::H], n);
                for (chunk, span) in chunks.iter().zip(spans.iter()) {
                    let first = if chunk.all_logits {
                        0
                    } else {
                        span.n.max(1) - 1
                    };
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
            }
            Op::Logits => {
                let vocab = c.vocab_size;
                let [h] = rows_of(rows, c, [Buf::H], n);
                let head = cpu.matrix(&model.weights.output);
                let input = inputs(cpu, &h[..wanted * dm], acts, &[&head], exact);
                if let [only] = chunks {
                    only.logits.resize(wanted * vocab, 0.0);
                    head.matmul(&cpu.pool, &input, wanted, only.logits);
                    continue;
                }
                batch_logits.resize(wanted * vocab, 0.0);
                head.matmul(&cpu.pool, &input, wanted, batch_logits);
                let mut rest = &batch_logits[..];
                for (chunk, span) in chunks.iter_mut().zip(spans.iter()) {
                    if span.n == 0 {
                        continue;
                    }
                    let rows = if chunk.all_logits { span.n } else { 1 };
                    let (mine, others) = rest.split_at(rows * vocab);
                    chunk.logits.clear();
                    chunk.logits.extend_from_slice(mine);
                    rest = others;
                }
            }
            _ => {}
        }
    }
}
