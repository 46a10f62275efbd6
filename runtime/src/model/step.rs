//! The model step, written once for every variant, base and weight type: a chunk of `T`
//! tokens (T = 1 when decoding) through every layer, updating the sequence state.
//!
//! Letters: T tokens, D hidden, F ffn, V vocab, H heads, Hkv kv heads, d head dim,
//! M GSA slots, W window.

use super::recurrence::{gla_update, gsa_readout, gsa_update, hgrn2_update, softmax_readout};
use super::{rope, Model, SequenceState};
use crate::config::Variant;
use crate::cpu::linear::{dot, ActivationBuffers, Activations};
use crate::cpu::ops::{adaptive_avg_pool, rms_norm, silu, softmax};

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
    /// [d]
    head: Vec<f32>,
    /// [Hkv·M] pooled keys (GSA)
    pooled: Vec<f32>,
    /// [M]
    slots_a: Vec<f32>,
    /// [M]
    slots_b: Vec<f32>,
    /// [W + 1] attention scores
    scores: Vec<f32>,
    /// Quantized blocks of the input of the current matrix products
    acts: ActivationBuffers,
}

impl Scratch {
    fn ensure(&mut self, model: &Model, t: usize) {
        let c = &model.config;
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
        grow(&mut self.head, c.head_dim);
        grow(&mut self.pooled, c.n_kv_heads * c.gsa_slots);
        grow(&mut self.slots_a, c.gsa_slots);
        grow(&mut self.slots_b, c.gsa_slots);
        grow(&mut self.scores, c.window as usize + 1);
        self.capacity = t;
    }
}

/// Runs `tokens` (ids already checked against the vocabulary) through the model as one
/// chunk. `fresh_window` empties the SWA window first (hf-compat: each call sees only its
/// own tokens). Writes the logits of every token (`all_logits`, [T, V]) or of the last
/// one ([V]) into `logits`.
pub(crate) fn forward(
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
    let group = c.n_heads / c.n_kv_heads;
    let w = c.window as usize;
    let pos0 = state.pos;
    let per_head = SequenceState::per_head(c);
    let m = c.gsa_slots;
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
        head,
        pooled,
        slots_a,
        slots_b,
        scores,
        acts,
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

    for (l, lw) in model.weights.layers.iter().enumerate() {
        // Front end: q, k, v = W·RMSNorm(x) (+ b).
        for t in 0..n {
            rms_norm(
                &x[t * dm..(t + 1) * dm],
                &lw.attn_norm,
                c.rms_eps,
                &mut h[t * dm..(t + 1) * dm],
            );
        }
        let input = Activations::new(h, acts);
        model.matrix(&lw.wq).matmul(&input, n, q);
        model.matrix(&lw.wk).matmul(&input, n, k);
        model.matrix(&lw.wv).matmul(&input, n, v);
        for (out, bias) in [(&mut *q, &lw.bq), (&mut *k, &lw.bk), (&mut *v, &lw.bv)] {
            if let Some(b) = bias {
                for row in out.chunks_exact_mut(b.len()) {
                    row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
                }
            }
        }

        // Recurrent branch, token by token, state per KV head (no RoPE, scale 1).
        let layer_state =
            &mut state.recurrent[l * c.n_kv_heads * per_head..(l + 1) * c.n_kv_heads * per_head];
        for t in 0..n {
            let (kt, vt) = (&k[t * kv..(t + 1) * kv], &v[t * kv..(t + 1) * kv]);
            if c.variant == Variant::Gsa {
                adaptive_avg_pool(kt, &mut pooled[..c.n_kv_heads * m]);
            }
            for j in 0..c.n_kv_heads {
                let s = &mut layer_state[j * per_head..(j + 1) * per_head];
                let (kj, vj) = (&kt[j * d..(j + 1) * d], &vt[j * d..(j + 1) * d]);
                match c.variant {
                    Variant::Gla => gla_update(s, kj, vj, c.gate_normalizer, head),
                    Variant::Hgrn2 => hgrn2_update(s, kj, vj),
                    Variant::Gsa => {
                        let (keys, values) = s.split_at_mut(d * m);
                        gsa_update(
                            keys,
                            values,
                            kj,
                            vj,
                            &mut pooled[j * m..(j + 1) * m],
                            c.gate_normalizer,
                            slots_a,
                        );
                    }
                }
                for hh in j * group..(j + 1) * group {
                    let qh = &q[t * hd + hh * d..t * hd + (hh + 1) * d];
                    let oh = &mut o_rec[t * hd + hh * d..t * hd + (hh + 1) * d];
                    match c.variant {
                        Variant::Gla | Variant::Hgrn2 => {
                            head.copy_from_slice(qh);
                            softmax_readout(s, head, oh);
                        }
                        Variant::Gsa => {
                            let (keys, values) = s.split_at(d * m);
                            gsa_readout(keys, values, qh, slots_b, oh);
                        }
                    }
                }
            }
        }

        // Sliding-window branch: RoPE'd q·k over the last W keys and the current one.
        for t in 0..n {
            rope::apply(&mut q[t * hd..(t + 1) * hd], d, pos0 + t, &model.inv_freq);
            rope::apply(&mut k[t * kv..(t + 1) * kv], d, pos0 + t, &model.inv_freq);
        }
        let ring = l * w * kv..(l + 1) * w * kv;
        let (ring_k, ring_v) = (
            &mut state.window_keys[ring.clone()],
            &mut state.window_values[ring],
        );
        let oldest = pos0 - state.window_len;
        let scale = 1.0 / (d as f32).sqrt();
        for t in 0..n {
            let p = pos0 + t;
            let lo = p.saturating_sub(w).max(oldest);
            let key_at = |kp: usize, j: usize| -> (&[f32], &[f32]) {
                let (src_k, src_v, row) = if kp >= pos0 {
                    (&k[..], &v[..], kp - pos0)
                } else {
                    (&ring_k[..], &ring_v[..], kp % w)
                };
                (
                    &src_k[row * kv + j * d..row * kv + (j + 1) * d],
                    &src_v[row * kv + j * d..row * kv + (j + 1) * d],
                )
            };
            for hh in 0..c.n_heads {
                let j = hh / group;
                let qh = &q[t * hd + hh * d..t * hd + (hh + 1) * d];
                let sc = &mut scores[..p - lo + 1];
                for (i, kp) in (lo..=p).enumerate() {
                    sc[i] = dot(qh, key_at(kp, j).0) * scale;
                }
                softmax(sc);
                let yh = &mut y[t * hd + hh * d..t * hd + (hh + 1) * d];
                yh.fill(0.0);
                for (i, kp) in (lo..=p).enumerate() {
                    let (pw, vk) = (sc[i], key_at(kp, j).1);
                    yh.iter_mut().zip(vk).for_each(|(o, v)| *o += pw * v);
                }
            }
        }
        for t in n.saturating_sub(w)..n {
            let slot = (pos0 + t) % w;
            ring_k[slot * kv..(slot + 1) * kv].copy_from_slice(&k[t * kv..(t + 1) * kv]);
            ring_v[slot * kv..(slot + 1) * kv].copy_from_slice(&v[t * kv..(t + 1) * kv]);
        }

        // Mix, output projection, residual.
        for (yv, r) in y.iter_mut().zip(o_rec.iter()) {
            *yv = c.mix_swa * *yv + (1.0 - c.mix_swa) * r;
        }
        model
            .matrix(&lw.wo)
            .matmul(&Activations::new(y, acts), n, proj);
        x.iter_mut().zip(proj.iter()).for_each(|(x, p)| *x += p);

        // SwiGLU MLP.
        for t in 0..n {
            rms_norm(
                &x[t * dm..(t + 1) * dm],
                &lw.ffn_norm,
                c.rms_eps,
                &mut h[t * dm..(t + 1) * dm],
            );
        }
        let input = Activations::new(h, acts);
        model.matrix(&lw.w_gate).matmul(&input, n, gate);
        model.matrix(&lw.w_up).matmul(&input, n, up);
        gate.iter_mut()
            .zip(up.iter())
            .for_each(|(g, u)| *g = silu(*g) * u);
        model
            .matrix(&lw.w_down)
            .matmul(&Activations::new(gate, acts), n, proj);
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
    let input = Activations::new(&h[rows.start * dm..rows.end * dm], acts);
    model
        .matrix(&model.weights.output)
        .matmul(&input, rows.len(), logits);
}
