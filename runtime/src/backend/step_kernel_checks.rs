//! Op-level checks of the GPU step kernels (`step.wgsl`, `step.cu`): each kernel of the step
//! plan on random data against the CPU's functions (`cpu::ops`, `model::rope`,
//! `model::recurrence`) or, for the window attention and its ring, a scalar oracle written
//! from docs/MATH.md §1. Every GPU backend runs them through its own launcher (`gpu::tests`,
//! `cuda::tests`), so a kernel that drifts from the CPU is named, not only an end-to-end
//! logit.

use super::device_plan::{Grid, Kernel, OpParams, StepWords, THREADS};
use crate::cpu::ops::{adaptive_avg_pool, rms_norm, silu, softmax};
use crate::cpu::recurrence;
use crate::error::Result;
use crate::model::rope;
use crate::testing::values;

/// Runs one kernel on a device: `buffers` uploaded as b2.., `params` as its `Op`, `st` as the
/// step words, over `blocks` blocks of [`THREADS`]; returns the buffers as the kernel left
/// them.
pub(crate) type RunKernel<'a> =
    &'a dyn Fn(Kernel, &OpParams, StepWords, usize, &[Vec<f32>]) -> Result<Vec<Vec<f32>>>;

/// Max |Δ| allowed: f32 in another order, and the GPUs' exp / sqrt.
fn assert_near(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 2e-5 + 2e-4 * w.abs();
        assert!(
            (g - w).abs() <= tol,
            "{what}: first mismatch at {i}: device {g}, cpu {w} (|Δ| {:.2e}, tolerance {tol:.2e})",
            (g - w).abs()
        );
    }
}

/// The shapes of one round: d head dim, H heads, Hkv KV heads, T tokens, W window, M slots, D
/// row width, pos the batch's first position.
struct Shape {
    d: usize,
    heads: usize,
    kv_heads: usize,
    tokens: usize,
    window: usize,
    slots: usize,
    row: usize,
    pos: usize,
}

impl Shape {
    fn params(&self, elements: usize) -> OpParams {
        OpParams {
            elements: elements as u32,
            heads: self.heads as u32,
            kv_heads: self.kv_heads as u32,
            head_dim: self.d as u32,
            group: (self.heads / self.kv_heads) as u32,
            eps: 1e-5,
            gate_normalizer: 16.0,
            mix_swa: 0.3,
            scale: 1.0 / (self.d as f32).sqrt(),
            window: self.window as u32,
            slots: self.slots as u32,
            ..OpParams::default()
        }
    }

    /// The words of a sequence alone (first row 0, logits row 0).
    fn st(&self) -> StepWords {
        let window_len = self.pos.min(self.window);
        let (pos, t) = (self.pos as u32, self.tokens as u32);
        [pos, window_len as u32, 0, t, 0, 0, 0, 0]
    }
}

/// Every step kernel on `device` (named in failures), for two shapes: a small one and one with
/// the window ring wrapping inside the batch and GSA slots that do not divide d.
pub(crate) fn every_step_kernel_matches_the_cpu(device: &str, run: RunKernel) {
    let shapes = [
        Shape {
            d: 16,
            heads: 4,
            kv_heads: 2,
            tokens: 3,
            window: 8,
            slots: 4,
            row: 48,
            pos: 5,
        },
        Shape {
            d: 64,
            heads: 6,
            kv_heads: 2,
            tokens: 5,
            window: 4,
            slots: 10,
            row: 200,
            pos: 9,
        },
    ];
    for (round, s) in shapes.iter().enumerate() {
        let what = |k: &str| format!("{k} on {device}, shape {round}");
        elementwise(s, run, &what);
        rope_rotates_heads(s, run, &what);
        for hgrn2 in [false, true] {
            recurrence_matches(s, hgrn2, run, &what);
        }
        gsa_matches(s, run, &what);
        window_attention_matches(s, run, &what);
        ring_write_keeps_the_last_window(s, run, &what);
        a_sequence_s_own_ops_read_and_write_only_its_rows(s, run, &what);
    }
}

/// In a step over several sequences, a sequence's own ops (`PlanOp::per_sequence`) run on its
/// rows of shared activations from its first row: each, run on activations padded with other
/// rows before and after (first row 2), leaves the padding as it was and its rows (and the
/// state / ring) as the same op on the sequence's rows alone; the final norm writes the
/// sequence's last row into its logits row.
fn a_sequence_s_own_ops_read_and_write_only_its_rows(
    s: &Shape,
    run: RunKernel,
    what: &dyn Fn(&str) -> String,
) {
    const BEFORE: usize = 2;
    let (d, t_len, hkv, h) = (s.d, s.tokens, s.kv_heads, s.heads);
    let (kv, hd) = (hkv * d, h * d);
    // Each op with its buffers, and the row width of those that are activations.
    let state = values(20, hkv * d * d, 0.5);
    let gsa_state = values(21, hkv * 2 * d * s.slots, 0.5);
    let ring = (
        values(22, s.window * kv, 1.0),
        values(23, s.window * kv, 1.0),
    );
    let (k, v, q) = recurrence_inputs(s);
    let o = vec![0.0; q.len()];
    let recurrence = OpParams {
        hgrn2: 0,
        ..s.params(0)
    };
    let ops: [(Kernel, OpParams, Grid, Vec<(Vec<f32>, Option<usize>)>); 4] = [
        (
            Kernel::Recurrence,
            recurrence,
            Grid::Fixed(hkv),
            vec![
                (state, None),
                (k.clone(), Some(kv)),
                (v.clone(), Some(kv)),
                (q.clone(), Some(hd)),
                (o.clone(), Some(hd)),
            ],
        ),
        (
            Kernel::RecurrenceGsa,
            s.params(0),
            Grid::Fixed(hkv),
            vec![
                (gsa_state, None),
                (k.clone(), Some(kv)),
                (v.clone(), Some(kv)),
                (q.clone(), Some(hd)),
                (o.clone(), Some(hd)),
            ],
        ),
        (
            Kernel::Swa,
            s.params(0),
            Grid::PerToken(h),
            vec![
                (q.clone(), Some(hd)),
                (k.clone(), Some(kv)),
                (v.clone(), Some(kv)),
                (ring.0.clone(), None),
                (ring.1.clone(), None),
                (o, Some(hd)),
            ],
        ),
        (
            Kernel::RingWrite,
            s.params(kv),
            Grid::Elements(kv),
            vec![(k, Some(kv)), (v, Some(kv)), (ring.0, None), (ring.1, None)],
        ),
    ];
    let mut st = s.st();
    st[2] = BEFORE as u32;
    for (kernel, params, grid, bufs) in ops {
        let name = kernel.entry_point();
        let alone: Vec<Vec<f32>> = bufs.iter().map(|(b, _)| b.clone()).collect();
        let want = launch(run, kernel, &params, s.st(), grid, &alone);
        // Padded: BEFORE rows before the sequence's, one after, of other values.
        let padded: Vec<Vec<f32>> = bufs
            .iter()
            .enumerate()
            .map(|(i, (b, width))| match width {
                Some(w) => {
                    let mut p = values(30 + i as u64, BEFORE * w, 1.0);
                    p.extend_from_slice(b);
                    p.extend(values(40 + i as u64, *w, 1.0));
                    p
                }
                None => b.clone(),
            })
            .collect();
        let got = launch(run, kernel, &params, st, grid, &padded);
        for (i, (((g, w), p), (_, width))) in
            got.iter().zip(&want).zip(&padded).zip(&bufs).enumerate()
        {
            let what = what(&format!("{name} from row {BEFORE}, b{}", i + 2));
            match width {
                Some(rw) => {
                    let rows = BEFORE * rw..(BEFORE + t_len) * rw;
                    assert_near(&what, &g[rows.clone()], w);
                    assert_eq!(
                        &g[..rows.start],
                        &p[..rows.start],
                        "{what}: rows before it changed"
                    );
                    assert_eq!(
                        &g[rows.end..],
                        &p[rows.end..],
                        "{what}: rows after it changed"
                    );
                }
                None => assert_near(&what, g, w),
            }
        }
    }
    // The final norm: the sequence's last row (row BEFORE + T − 1) into logits row 1.
    let x = values(24, (BEFORE + t_len + 1) * s.row, 2.0);
    let weight = values(25, s.row, 1.0);
    let out = vec![0.0; 3 * s.row];
    let last = OpParams {
        last_row: 1,
        ..s.params(s.row)
    };
    st[4] = 1;
    let got = launch(
        run,
        Kernel::RmsNorm,
        &last,
        st,
        Grid::Fixed(1),
        &[x.clone(), weight.clone(), out],
    );
    let at = (BEFORE + t_len - 1) * s.row;
    let mut want = vec![0.0; 3 * s.row];
    rms_norm(
        &x[at..at + s.row],
        &weight,
        1e-5,
        &mut want[s.row..2 * s.row],
    );
    assert_near(
        &what("rms_norm (a sequence's last row into its logits row)"),
        &got[2],
        &want,
    );
}

fn launch(
    run: RunKernel,
    k: Kernel,
    p: &OpParams,
    st: StepWords,
    g: Grid,
    b: &[Vec<f32>],
) -> Vec<Vec<f32>> {
    run(k, p, st, g.blocks(st[3] as usize), b)
        .unwrap_or_else(|e| panic!("{} failed to run: {e}", k.entry_point()))
}

fn elementwise(s: &Shape, run: RunKernel, what: &dyn Fn(&str) -> String) {
    let (t, n) = (s.tokens, s.row);
    let x = values(1, t * n, 2.0);
    let w = values(2, n, 1.0);
    let st = s.st();
    // rms_norm over every row, then of the last row only into the first.
    let p = s.params(n);
    let out = launch(
        run,
        Kernel::RmsNorm,
        &p,
        st,
        Grid::PerToken(1),
        &[x.clone(), w.clone(), vec![0.0; t * n]],
    );
    let mut want = vec![0.0; t * n];
    for (row, o) in x.chunks_exact(n).zip(want.chunks_exact_mut(n)) {
        rms_norm(row, &w, 1e-5, o);
    }
    assert_near(&what("rms_norm"), &out[2], &want);
    let last = OpParams { last_row: 1, ..p };
    let out = launch(
        run,
        Kernel::RmsNorm,
        &last,
        st,
        Grid::Fixed(1),
        &[x.clone(), w.clone(), vec![0.0; t * n]],
    );
    assert_near(
        &what("rms_norm (last row)"),
        &out[2][..n],
        &want[(t - 1) * n..],
    );
    // add: rows, and a broadcast bias.
    let b = values(3, t * n, 1.0);
    let out = launch(
        run,
        Kernel::Add,
        &p,
        st,
        Grid::Elements(n),
        &[x.clone(), b.clone()],
    );
    let want: Vec<f32> = x.iter().zip(&b).map(|(a, b)| a + b).collect();
    assert_near(&what("add"), &out[0], &want);
    let bias = OpParams { broadcast: 1, ..p };
    let out = launch(
        run,
        Kernel::Add,
        &bias,
        st,
        Grid::Elements(n),
        &[x.clone(), w.clone()],
    );
    let want: Vec<f32> = x.iter().enumerate().map(|(i, a)| a + w[i % n]).collect();
    assert_near(&what("add (broadcast)"), &out[0], &want);
    // swiglu and the mix.
    let out = launch(
        run,
        Kernel::Swiglu,
        &p,
        st,
        Grid::Elements(n),
        &[x.clone(), b.clone()],
    );
    let want: Vec<f32> = x.iter().zip(&b).map(|(g, u)| silu(*g) * u).collect();
    assert_near(&what("swiglu"), &out[0], &want);
    let out = launch(
        run,
        Kernel::Mix,
        &p,
        st,
        Grid::Elements(n),
        &[x.clone(), b.clone()],
    );
    let want: Vec<f32> = x.iter().zip(&b).map(|(y, o)| 0.3 * y + 0.7 * o).collect();
    assert_near(&what("mix"), &out[0], &want);
}

fn rope_rotates_heads(s: &Shape, run: RunKernel, what: &dyn Fn(&str) -> String) {
    let (t, d) = (s.tokens, s.d);
    let inv_freq: Vec<f32> = (0..d / 2)
        .map(|i| 10000f32.powf(-2.0 * i as f32 / d as f32))
        .collect();
    let (mut cos, mut sin) = (vec![0.0; d / 2], vec![0.0; d / 2]);
    let mut angles = Vec::new();
    for p in s.pos..s.pos + t {
        rope::angles(p, &inv_freq, &mut cos, &mut sin);
        angles.extend_from_slice(&cos);
        angles.extend_from_slice(&sin);
    }
    for heads in [s.heads, s.kv_heads] {
        let q = values(4 + heads as u64, t * heads * d, 1.5);
        let p = OpParams {
            heads: heads as u32,
            ..s.params(0)
        };
        let grid = Grid::Elements(heads * d / 2);
        let out = launch(
            run,
            Kernel::Rope,
            &p,
            s.st(),
            grid,
            &[q.clone(), angles.clone()],
        );
        let mut want = q.clone();
        for (i, row) in want.chunks_exact_mut(heads * d).enumerate() {
            let a = &angles[i * d..(i + 1) * d];
            rope::apply(row, &a[..d / 2], &a[d / 2..]);
        }
        assert_near(&what(&format!("rope of {heads} heads")), &out[0], &want);
    }
}

/// The inputs of a recurrence: k, v [T, Hkv·d], q [T, H·d].
fn recurrence_inputs(s: &Shape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let kv = s.tokens * s.kv_heads * s.d;
    (
        values(7, kv, 3.0),
        values(8, kv, 1.0),
        values(9, s.tokens * s.heads * s.d, 2.0),
    )
}

fn recurrence_matches(s: &Shape, hgrn2: bool, run: RunKernel, what: &dyn Fn(&str) -> String) {
    let (d, hkv, group) = (s.d, s.kv_heads, s.heads / s.kv_heads);
    let state = values(6, hkv * d * d, 0.5);
    let (k, v, q) = recurrence_inputs(s);
    let p = OpParams {
        hgrn2: u32::from(hgrn2),
        ..s.params(0)
    };
    let o = vec![0.0; q.len()];
    let bufs = [state.clone(), k.clone(), v.clone(), q.clone(), o];
    let out = launch(run, Kernel::Recurrence, &p, s.st(), Grid::Fixed(hkv), &bufs);
    let (mut want_state, mut want_o) = (state, vec![0.0; q.len()]);
    let mut scratch = vec![0.0; d];
    for t in 0..s.tokens {
        for j in 0..hkv {
            let sj = &mut want_state[j * d * d..(j + 1) * d * d];
            let at = (t * hkv + j) * d;
            let (kj, vj) = (&k[at..at + d], &v[at..at + d]);
            if hgrn2 {
                recurrence::hgrn2_update(sj, kj, vj);
            } else {
                recurrence::gla_update(sj, kj, vj, 16.0, &mut scratch);
            }
            for h in j * group..(j + 1) * group {
                let at = (t * s.heads + h) * d;
                let mut qh = q[at..at + d].to_vec();
                recurrence::softmax_readout(sj, &mut qh, &mut want_o[at..at + d]);
            }
        }
    }
    let name = if hgrn2 {
        "recurrence (HGRN2)"
    } else {
        "recurrence (GLA)"
    };
    assert_near(&what(&format!("{name} state")), &out[0], &want_state);
    assert_near(&what(&format!("{name} readout")), &out[4], &want_o);
}

fn gsa_matches(s: &Shape, run: RunKernel, what: &dyn Fn(&str) -> String) {
    let (d, m, hkv, group) = (s.d, s.slots, s.kv_heads, s.heads / s.kv_heads);
    let per_head = 2 * d * m;
    let state = values(10, hkv * per_head, 0.5);
    let (k, v, q) = recurrence_inputs(s);
    let o = vec![0.0; q.len()];
    let bufs = [state.clone(), k.clone(), v.clone(), q.clone(), o];
    let out = launch(
        run,
        Kernel::RecurrenceGsa,
        &s.params(0),
        s.st(),
        Grid::Fixed(hkv),
        &bufs,
    );
    let (mut want_state, mut want_o) = (state, vec![0.0; q.len()]);
    let (mut pooled, mut scratch) = (vec![0.0; m], vec![0.0; m]);
    for t in 0..s.tokens {
        for j in 0..hkv {
            let (keys, values) = want_state[j * per_head..(j + 1) * per_head].split_at_mut(d * m);
            let at = (t * hkv + j) * d;
            let (kj, vj) = (&k[at..at + d], &v[at..at + d]);
            adaptive_avg_pool(kj, &mut pooled);
            recurrence::gsa_update(keys, values, kj, vj, &mut pooled, 16.0, &mut scratch);
            for h in j * group..(j + 1) * group {
                let at = (t * s.heads + h) * d;
                let o = &mut want_o[at..at + d];
                recurrence::gsa_readout(keys, values, &q[at..at + d], &mut scratch, o);
            }
        }
    }
    assert_near(&what("recurrence_gsa state"), &out[0], &want_state);
    assert_near(&what("recurrence_gsa readout"), &out[4], &want_o);
}

/// Window attention, docs/MATH.md §1: token t of the batch attends to the min(window_len + t, W)
/// positions before it (the ring holds those before the batch at slot p mod W) and itself.
fn window_attention_matches(s: &Shape, run: RunKernel, what: &dyn Fn(&str) -> String) {
    let (d, t_len, w, group) = (s.d, s.tokens, s.window, s.heads / s.kv_heads);
    let kv = s.kv_heads * d;
    let q = values(11, t_len * s.heads * d, 1.0);
    let k = values(12, t_len * kv, 1.0);
    let v = values(13, t_len * kv, 1.0);
    let ring_k = values(14, w * kv, 1.0);
    let ring_v = values(15, w * kv, 1.0);
    let y = vec![0.0; q.len()];
    let st = s.st();
    let bufs = [
        q.clone(),
        k.clone(),
        v.clone(),
        ring_k.clone(),
        ring_v.clone(),
        y,
    ];
    let out = launch(
        run,
        Kernel::Swa,
        &s.params(0),
        st,
        Grid::PerToken(s.heads),
        &bufs,
    );
    let (pos, window_len) = (s.pos, st[1] as usize);
    let mut want = vec![0.0; q.len()];
    for t in 0..t_len {
        let count = (window_len + t).min(w) + 1;
        let first = pos + t + 1 - count;
        for h in 0..s.heads {
            let j = h / group;
            let qh = &q[(t * s.heads + h) * d..][..d];
            let row = |p: usize, batch: &[f32], ring: &[f32]| -> Vec<f32> {
                let (src, r) = if p >= pos {
                    (batch, p - pos)
                } else {
                    (ring, p % w)
                };
                src[r * kv + j * d..][..d].to_vec()
            };
            let mut scores: Vec<f32> = (first..=pos + t)
                .map(|p| {
                    let key = row(p, &k, &ring_k);
                    qh.iter().zip(&key).map(|(a, b)| a * b).sum::<f32>() / (d as f32).sqrt()
                })
                .collect();
            softmax(&mut scores);
            let yh = &mut want[(t * s.heads + h) * d..][..d];
            for (p, weight) in (first..=pos + t).zip(&scores) {
                for (o, x) in yh.iter_mut().zip(row(p, &v, &ring_v)) {
                    *o += weight * x;
                }
            }
        }
    }
    assert_near(&what("swa"), &out[5], &want);
}

fn ring_write_keeps_the_last_window(s: &Shape, run: RunKernel, what: &dyn Fn(&str) -> String) {
    let (t_len, w, kv) = (s.tokens, s.window, s.kv_heads * s.d);
    let k = values(16, t_len * kv, 1.0);
    let v = values(17, t_len * kv, 1.0);
    let ring = (values(18, w * kv, 1.0), values(19, w * kv, 1.0));
    let bufs = [k.clone(), v.clone(), ring.0.clone(), ring.1.clone()];
    let out = launch(
        run,
        Kernel::RingWrite,
        &s.params(kv),
        s.st(),
        Grid::Elements(kv),
        &bufs,
    );
    let (mut want_k, mut want_v) = ring;
    for t in t_len.saturating_sub(w)..t_len {
        let slot = (s.pos + t) % w;
        want_k[slot * kv..(slot + 1) * kv].copy_from_slice(&k[t * kv..(t + 1) * kv]);
        want_v[slot * kv..(slot + 1) * kv].copy_from_slice(&v[t * kv..(t + 1) * kv]);
    }
    assert_near(&what("ring_write keys"), &out[2], &want_k);
    assert_near(&what("ring_write values"), &out[3], &want_v);
    assert!(THREADS >= s.d && THREADS > w);
}
