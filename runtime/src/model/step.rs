//! The model step, written once for every variant, base and weight type: a chunk of `T`
//! tokens (T = 1 when decoding) through every layer, updating the sequence state.
//!
//! Letters: T tokens, D hidden, F ffn, V vocab, H heads, Hkv kv heads, d head dim,
//! M GSA slots, W window.

use super::mixer::{run_kv_head, run_swa_head, LayerMixer, MixerScratch};
use super::{Model, SequenceState};
use crate::cpu::linear::{ActivationBuffers, Activations};
use crate::cpu::ops::{multiversion, rms_norm, silu};
use crate::cpu::pool::Disjoint;

/// Buffers of one forward call, grown to the largest chunk seen and then reused, so that
/// decoding allocates nothing.
#[derive(Default)]
pub(crate) struct Scratch {
    capacity: usize,
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
    /// [Hkv] per-KV-head scratch of the token mixer
    mixers: Vec<MixerScratch>,
    /// [H, W + 1]
    scores: Vec<f32>,
    /// [T, d/2] RoPE cos / sin per position of the chunk
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    /// Quantized blocks of the input of the current matrix products
    acts: ActivationBuffers,
}

impl Scratch {
    /// Frees the buffers a multi-token chunk grew, so that a session's memory after a long
    /// prompt is what it is before (decode steps then regrow them to one token, once).
    pub(crate) fn release(&mut self) {
        if self.capacity > 1 {
            *self = Scratch::default();
        }
    }

    fn ensure(&mut self, model: &Model, t: usize) {
        let c = &model.config;
        (self.acts.want_q8, self.acts.want_q16) = model.activation_forms;
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
        grow(&mut self.o_rec, t * hd);
        grow(&mut self.y, t * hd);
        grow(&mut self.proj, t * c.hidden);
        grow(&mut self.gate, t * c.ffn);
        grow(&mut self.up, t * c.ffn);
        self.mixers.resize(c.n_kv_heads, MixerScratch::new(c));
        grow(&mut self.scores, c.n_heads * (c.window as usize + 1));
        grow(&mut self.rope_cos, t * c.head_dim / 2);
        grow(&mut self.rope_sin, t * c.head_dim / 2);
        self.capacity = t;
    }
}

multiversion!(
/// Runs `tokens` (ids already checked against the vocabulary) through the model as one
/// chunk. `fresh_window` empties the SWA window first (hf-compat: each call sees only its
/// own tokens). Writes the logits of every token (`all_logits`, [T, V]) or of the last
/// one ([V]) into `logits`.
///
/// (The element-wise loops of the step — norms, SwiGLU, residuals, activation quantization —
/// are portable Rust, built for AVX2 as well and run in the widest build the CPU has.)
pub(crate) fn forward(
    model: &Model,
    state: &mut SequenceState,
    tokens: &[u32],
    fresh_window: bool,
    all_logits: bool,
    scratch: &mut Scratch,
    logits: &mut Vec<f32>
) => forward_body);

/// `out[t] = RMSNorm(x[t]) · w` for every row of `x` ([T, dm], dm = `w.len()`).
#[inline(always)]
fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    for (xs, os) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        rms_norm(xs, w, eps, os);
    }
}

#[inline(always)]
fn forward_body(
    model: &Model,
    state: &mut SequenceState,
    tokens: &[u32],
    fresh_window: bool,
    all_logits: bool,
    scratch: &mut Scratch,
    logits: &mut Vec<f32>,
) {
    let c = &model.config;
    let n = tokens.len();
    if n == 0 {
        return;
    }
    scratch.ensure(model, n);
    if fresh_window {
        state.window_len = 0;
    }
    let (dm, d) = (c.hidden, c.head_dim);
    let (hd, kv) = (c.n_heads * d, c.n_kv_heads * d);
    let w = c.window as usize;
    let pos0 = state.pos;
    let per_head = SequenceState::per_head(c);
    let Scratch {
        x,
        h,
        q,
        k,
        v,
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
        ..
    } = scratch;
    let (x, h, q, k, v) = (
        &mut x[..n * dm],
        &mut h[..n * dm],
        &mut q[..n * hd],
        &mut k[..n * kv],
        &mut v[..n * kv],
    );
    let (o_rec, y, proj) = (&mut o_rec[..n * hd], &mut y[..n * hd], &mut proj[..n * dm]);
    let (gate, up) = (&mut gate[..n * c.ffn], &mut up[..n * c.ffn]);

    let embd = model.matrix(&model.weights.token_embd);
    for (t, &tok) in tokens.iter().enumerate() {
        embd.dequantize_row_into(tok as usize, &mut x[t * dm..(t + 1) * dm]);
    }

    let half = d / 2;
    for t in 0..n {
        let r = t * half..(t + 1) * half;
        super::rope::angles(
            pos0 + t,
            &model.inv_freq,
            &mut rope_cos[r.clone()],
            &mut rope_sin[r],
        );
    }
    let (rope_cos, rope_sin) = (&rope_cos[..n * half], &rope_sin[..n * half]);

    for (l, lw) in model.weights.layers.iter().enumerate() {
        // Front end: q, k, v = W·RMSNorm(x) (+ b).
        rms_norm_rows(x, &lw.attn_norm, c.rms_eps, h);
        let input = Activations::new(h, acts, &model.pool);
        model.matrix(&lw.wq).matmul(&model.pool, &input, n, q);
        model.matrix(&lw.wk).matmul(&model.pool, &input, n, k);
        model.matrix(&lw.wv).matmul(&model.pool, &input, n, v);
        for (out, bias) in [(&mut *q, &lw.bq), (&mut *k, &lw.bk), (&mut *v, &lw.bv)] {
            if let Some(b) = bias {
                for row in out.chunks_exact_mut(b.len()) {
                    row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
                }
            }
        }

        // Token mixer: recurrent branch per KV head, sliding window per query head.
        let layer_state =
            &mut state.recurrent[l * c.n_kv_heads * per_head..(l + 1) * c.n_kv_heads * per_head];
        let ring = l * w * kv..(l + 1) * w * kv;
        let mixer = LayerMixer {
            c,
            rope_cos,
            rope_sin,
            n,
            pos0,
            oldest: pos0 - state.window_len,
            q: Disjoint::new(q),
            k: Disjoint::new(k),
            v,
            o_rec: Disjoint::new(o_rec),
            y: Disjoint::new(y),
            state: Disjoint::new(layer_state),
            ring_k: Disjoint::new(&mut state.window_keys[ring.clone()]),
            ring_v: Disjoint::new(&mut state.window_values[ring]),
            scratch: Disjoint::new(mixers),
            scores: Disjoint::new(scores),
        };
        model.pool.run(c.n_kv_heads, &|j| run_kv_head(&mixer, j));
        model.pool.run(c.n_heads, &|h| run_swa_head(&mixer, h));
        mixer.update_window();

        // Mix, output projection, residual.
        for (yv, r) in y.iter_mut().zip(o_rec.iter()) {
            *yv = c.mix_swa * *yv + (1.0 - c.mix_swa) * r;
        }
        model.matrix(&lw.wo).matmul(
            &model.pool,
            &Activations::new(y, acts, &model.pool),
            n,
            proj,
        );
        x.iter_mut().zip(proj.iter()).for_each(|(x, p)| *x += p);

        // SwiGLU MLP.
        rms_norm_rows(x, &lw.ffn_norm, c.rms_eps, h);
        let input = Activations::new(h, acts, &model.pool);
        model
            .matrix(&lw.w_gate)
            .matmul(&model.pool, &input, n, gate);
        model.matrix(&lw.w_up).matmul(&model.pool, &input, n, up);
        gate.iter_mut()
            .zip(up.iter())
            .for_each(|(g, u)| *g = silu(*g) * u);
        model.matrix(&lw.w_down).matmul(
            &model.pool,
            &Activations::new(gate, acts, &model.pool),
            n,
            proj,
        );
        x.iter_mut().zip(proj.iter()).for_each(|(x, p)| *x += p);
    }
    state.window_len = (state.window_len + n).min(w);
    state.pos += n;

    // Final norm and LM head, for every token or only the last.
    let rows = if all_logits { 0..n } else { n - 1..n };
    for t in rows.clone() {
        rms_norm(
            &x[t * dm..(t + 1) * dm],
            &model.weights.output_norm,
            c.rms_eps,
            &mut h[t * dm..(t + 1) * dm],
        );
    }
    logits.resize(rows.len() * c.vocab_size, 0.0);
    let input = Activations::new(&h[rows.start * dm..rows.end * dm], acts, &model.pool);
    model
        .matrix(&model.weights.output)
        .matmul(&model.pool, &input, rows.len(), logits);
}
