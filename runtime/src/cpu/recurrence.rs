//! The recurrent branch, per KV head `j` and token (docs/MATH.md §1 table). States are f32 and kept
//! once per KV head; every query head of the group reads the same state.
//!
//! Letters: d head dim, M GSA slots.

use crate::cpu::ops::{log_sigmoid, sigmoid, softmax};

/// GLA: `φk = softmax(k)`, `a = exp(logσ(k)/norm)`, `S ← diag(a)·S + φk ⊗ v`.
/// `state`: S [d (key feature), d (value feature)]; `k`, `v`: [d]; `scratch`: [d].
#[inline]
pub fn gla_update(
    state: &mut [f32],
    k: &[f32],
    v: &[f32],
    gate_normalizer: f32,
    scratch: &mut [f32],
) {
    let d = v.len();
    scratch.copy_from_slice(k);
    softmax(scratch);
    for (i, row) in state.chunks_exact_mut(d).enumerate() {
        let a = (log_sigmoid(k[i]) / gate_normalizer).exp();
        let w = scratch[i];
        for (s, v) in row.iter_mut().zip(v) {
            *s = a * *s + w * v;
        }
    }
}

/// HGRN2: `a = σ(k)`, `S ← diag(a)·S + (1 − a) ⊗ v`. Shapes as [`gla_update`].
#[inline]
pub fn hgrn2_update(state: &mut [f32], k: &[f32], v: &[f32]) {
    let d = v.len();
    for (i, row) in state.chunks_exact_mut(d).enumerate() {
        let a = sigmoid(k[i]);
        let w = 1.0 - a;
        for (s, v) in row.iter_mut().zip(v) {
            *s = a * *s + w * v;
        }
    }
}

/// GLA / HGRN2 readout: `o = Sᵀ·softmax(q)`. `q` is overwritten with softmax(q). `o`: [d].
#[inline]
pub fn softmax_readout(state: &[f32], q: &mut [f32], o: &mut [f32]) {
    let d = o.len();
    softmax(q);
    o.fill(0.0);
    for (row, &w) in state.chunks_exact(d).zip(q.iter()) {
        for (o, s) in o.iter_mut().zip(row) {
            *o += w * s;
        }
    }
}

/// GSA: `a = exp(g)` with `g = logσ(pooled k)/norm` [M], `s = 1 − a`;
/// `K ← K·diag(a) + k ⊗ s` (K [d, M]), `V ← diag(a)·V + s ⊗ v` (V [M, d]).
/// `pooled`: [M] (overwritten with a); `scratch`: [M].
#[inline]
pub fn gsa_update(
    keys: &mut [f32],
    values: &mut [f32],
    k: &[f32],
    v: &[f32],
    pooled: &mut [f32],
    gate_normalizer: f32,
    s: &mut [f32],
) {
    let (d, m) = (v.len(), pooled.len());
    for (a, s) in pooled.iter_mut().zip(s.iter_mut()) {
        *a = (log_sigmoid(*a) / gate_normalizer).exp();
        *s = 1.0 - *a;
    }
    for (row, &ki) in keys.chunks_exact_mut(m).zip(k) {
        for ((kk, a), s) in row.iter_mut().zip(pooled.iter()).zip(s.iter()) {
            *kk = *kk * a + ki * s;
        }
    }
    for ((row, a), s) in values.chunks_exact_mut(d).zip(pooled.iter()).zip(s.iter()) {
        for (vv, v) in row.iter_mut().zip(v) {
            *vv = a * *vv + s * v;
        }
    }
}

/// GSA readout: `p = softmax(Kᵀ·q)` [M] (raw q, scale 1), `o = Vᵀ·p` [d]. `p`: scratch [M].
#[inline]
pub fn gsa_readout(keys: &[f32], values: &[f32], q: &[f32], p: &mut [f32], o: &mut [f32]) {
    let (d, m) = (o.len(), p.len());
    p.fill(0.0);
    for (row, &qi) in keys.chunks_exact(m).zip(q) {
        for (p, k) in p.iter_mut().zip(row) {
            *p += qi * k;
        }
    }
    softmax(p);
    o.fill(0.0);
    for (row, &w) in values.chunks_exact(d).zip(p.iter()) {
        for (o, v) in o.iter_mut().zip(row) {
            *o += w * v;
        }
    }
}
