// The element-wise and per-head operations of one model step over a batch of T tokens
// (T = st.tokens: 1 in decode, up to the sequence's batch size in prefill), on f32 buffers of
// T rows. Every entry point reads its sizes from `op` (fixed per call site, made at setup by
// `model::device_plan`, the plan both GPU backends run) and the position and T from `st`
// (written once per step). In a step over several sequences the row-wise entry points run
// once over all their rows (T = every row); the ones that read a sequence's state, window or
// position (recurrence, recurrence_gsa, swa, ring_write, the final rms_norm) run once per
// sequence, on its T rows from st.first_row. Buffers are bound as b2..b7; each entry point documents what it
// expects in them, with shapes (D hidden, F ffn, H heads, Hkv KV heads, d head dim, W window,
// M GSA slots, T tokens; "n per token" means [T, n] with n = op.elements).

// The parameters of every entry point (`model::device_plan::OpParams` on the host): each
// field means one thing wherever it is read; an entry point reads only the fields it names.
struct Op {
    elements: u32,         // values per token row (rms_norm, add, swiglu, mix, ring_write)
    heads: u32,            // heads rotated (rope: H for q, Hkv for k)
    kv_heads: u32,         // Hkv (recurrence, recurrence_gsa, swa)
    head_dim: u32,         // d
    group: u32,            // query heads per KV head, H / Hkv
    hgrn2: u32,            // recurrence: 1 = HGRN2 gates, 0 = GLA
    broadcast: u32,        // add: 1 = b3 is one row added to every token's (a bias)
    last_row: u32,         // rms_norm: 1 = only the last token's row, into b4's first
    eps: f32,              // rms_norm
    gate_normalizer: f32,  // recurrence (GLA), recurrence_gsa: 16
    mix_swa: f32,          // mix: the SWA branch's weight, 0.5
    scale: f32,            // swa: 1/√d
    window: u32,           // W (swa, ring_write)
    slots: u32,            // M, GSA slots
    pad0: u32,
    pad1: u32,
}

// `model::device_plan::StepWords`.
struct Step {
    pos: u32,        // position of the batch's first token
    window_len: u32, // valid entries in the window ring before the batch
    first_row: u32,  // the sequence's first row in the activations (0 alone)
    tokens: u32,     // T
    logits_row: u32, // rms_norm with last_row: the output row (0 alone)
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> op: Op;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;
@group(0) @binding(3) var<storage, read_write> b3: array<f32>;
@group(0) @binding(4) var<storage, read_write> b4: array<f32>;
@group(0) @binding(5) var<storage, read_write> b5: array<f32>;
@group(0) @binding(6) var<storage, read_write> b6: array<f32>;
@group(0) @binding(7) var<storage, read_write> b7: array<f32>;

const WG: u32 = 128u;
var<workgroup> red: array<f32, 128>;
var<workgroup> feat: array<f32, 128>;
var<workgroup> gate: array<f32, 128>;
var<workgroup> probs: array<f32, 128>;

// Sum of `v` over the workgroup (every thread gets it).
fn wg_sum(lid: u32, v: f32) -> f32 {
    workgroupBarrier();
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn wg_max(lid: u32, v: f32) -> f32 {
    workgroupBarrier();
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn log_sigmoid(x: f32) -> f32 {
    return min(x, 0.0) - log(1.0 + exp(-abs(x)));
}

// b4[r] = b2[r] / rms(b2[r]) · b3 for row r = workgroup id: b2 x [T, D], b3 weight [D], b4 out
// [T, D]; with last_row, one workgroup normalizes the sequence's last row into b4's row
// st.logits_row.
@compute @workgroup_size(128)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var row = wid.x;
    var out = wid.x * op.elements;
    if (op.last_row == 1u) {
        row = st.first_row + st.tokens - 1u;
        out = st.logits_row * op.elements;
    }
    let at = row * op.elements;
    var ss = 0.0;
    for (var i = lid; i < op.elements; i = i + WG) {
        ss = ss + b2[at + i] * b2[at + i];
    }
    let inv = 1.0 / sqrt(wg_sum(lid, ss) / f32(op.elements) + op.eps);
    for (var i = lid; i < op.elements; i = i + WG) {
        b4[out + i] = b2[at + i] * inv * b3[i];
    }
}

// b2 += b3 (n per token); with broadcast, b3 is one row [n] added to every token's (a bias).
@compute @workgroup_size(128)
fn add(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i < op.elements * st.tokens) {
        b2[i] = b2[i] + b3[select(i, i % op.elements, op.broadcast == 1u)];
    }
}

// b2 = silu(b2) · b3 (n per token).
@compute @workgroup_size(128)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < op.elements * st.tokens) {
        let g = b2[gid.x];
        b2[gid.x] = g / (1.0 + exp(-g)) * b3[gid.x];
    }
}

// b2 = mix_swa · b2 + (1 − mix_swa) · b3: y [T, H·d] and o_rec [T, H·d].
@compute @workgroup_size(128)
fn mix(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < op.elements * st.tokens) {
        b2[gid.x] = op.mix_swa * b2[gid.x] + (1.0 - op.mix_swa) * b3[gid.x];
    }
}

// Rotate-half RoPE of `heads` heads per token of b2 [T, heads·d] in place; b3 [T, d] = per token
// [cos (d/2), sin (d/2)] of its position.
@compute @workgroup_size(128)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = op.head_dim / 2u;
    let per_token = op.heads * half;
    if (gid.x >= per_token * st.tokens) {
        return;
    }
    let t = gid.x / per_token;
    let head = (gid.x % per_token) / half;
    let i = gid.x % half;
    let lo = t * op.heads * op.head_dim + head * op.head_dim + i;
    let a = b2[lo];
    let b = b2[lo + half];
    let c = b3[t * op.head_dim + i];
    let s = b3[t * op.head_dim + half + i];
    b2[lo] = a * c - b * s;
    b2[lo + half] = b * c + a * s;
}

// GLA / HGRN2 for KV head j = workgroup id, the batch's tokens in order: state b2 [Hkv, d, d]
// updated with k = b3, v = b4 (Hkv·d per token), then the readout of each query head of the
// group, q = b5 [T, H·d], into b6 = o_rec [T, H·d]. Thread c owns value column c.
@compute @workgroup_size(128)
fn recurrence(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) c: u32) {
    let j = wid.x;
    let d = op.head_dim;
    let on = c < d;
    let kv_row = op.kv_heads * d;
    let q_row = kv_row * op.group;
    let base = j * d * d;
    for (var tok = 0u; tok < st.tokens; tok = tok + 1u) {
        let t = st.first_row + tok;
        workgroupBarrier();
        // Features and gates of the key, per key feature i = c.
        var kc = -3.4e38;
        if (on) {
            kc = b3[t * kv_row + j * d + c];
        }
        if (op.hgrn2 == 0u) {
            let m = wg_max(c, kc);
            var e = 0.0;
            if (on) {
                e = exp(kc - m);
            }
            let total = wg_sum(c, e);
            if (on) {
                feat[c] = e / total;
                gate[c] = exp(log_sigmoid(kc) / op.gate_normalizer);
            }
        } else if (on) {
            let a = 1.0 / (1.0 + exp(-kc));
            gate[c] = a;
            feat[c] = 1.0 - a;
        }
        workgroupBarrier();
        if (on) {
            let vc = b4[t * kv_row + j * d + c];
            for (var i = 0u; i < d; i = i + 1u) {
                let at = base + i * d + c;
                b2[at] = gate[i] * b2[at] + feat[i] * vc;
            }
        }
        for (var g = 0u; g < op.group; g = g + 1u) {
            let h = j * op.group + g;
            var qc = -3.4e38;
            if (on) {
                qc = b5[t * q_row + h * d + c];
            }
            let m = wg_max(c, qc);
            var e = 0.0;
            if (on) {
                e = exp(qc - m);
            }
            let total = wg_sum(c, e);
            workgroupBarrier();
            if (on) {
                feat[c] = e / total;
            }
            workgroupBarrier();
            if (on) {
                var o = 0.0;
                for (var i = 0u; i < d; i = i + 1u) {
                    o = o + feat[i] * b2[base + i * d + c];
                }
                b6[t * q_row + h * d + c] = o;
            }
        }
    }
}

// GSA for KV head j = workgroup id, the batch's tokens in order: state b2 = [Hkv, keys K
// (d × M), values V (M × d)] updated with k = b3, v = b4 through M pooled gates; then per
// query head of the group (q = b5 [T, H·d], raw), p = softmax(Kᵀq), o = Vᵀp into b6 [T, H·d].
@compute @workgroup_size(128)
fn recurrence_gsa(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let j = wid.x;
    let d = op.head_dim;
    let m = op.slots;
    let keys = j * 2u * d * m;
    let values = keys + d * m;
    let kv_row = op.kv_heads * d;
    let q_row = kv_row * op.group;
    for (var n = 0u; n < st.tokens; n = n + 1u) {
        let tok = st.first_row + n;
        let k = tok * kv_row + j * d;
        workgroupBarrier();
        // Gates of the slots: adaptive average pooling of the key's d features into M bins.
        if (t < m) {
            let start = t * d / m;
            let end = ((t + 1u) * d + m - 1u) / m;
            var s = 0.0;
            for (var i = start; i < end; i = i + 1u) {
                s = s + b3[k + i];
            }
            let a = exp(log_sigmoid(s / f32(end - start)) / op.gate_normalizer);
            gate[t] = a;
            feat[t] = 1.0 - a;
        }
        workgroupBarrier();
        if (t < d) {
            let kt = b3[k + t];
            let vt = b4[k + t];
            for (var s = 0u; s < m; s = s + 1u) {
                let ka = keys + t * m + s;
                b2[ka] = b2[ka] * gate[s] + kt * feat[s];
                let va = values + s * d + t;
                b2[va] = gate[s] * b2[va] + feat[s] * vt;
            }
        }
        // The scores read keys other threads wrote.
        storageBarrier();
        for (var g = 0u; g < op.group; g = g + 1u) {
            let h = j * op.group + g;
            let q = tok * q_row + h * d;
            workgroupBarrier();
            var score = -3.4e38;
            if (t < m) {
                var s = 0.0;
                for (var i = 0u; i < d; i = i + 1u) {
                    s = s + b2[keys + i * m + t] * b5[q + i];
                }
                score = s;
            }
            let mx = wg_max(t, score);
            var e = 0.0;
            if (t < m) {
                e = exp(score - mx);
            }
            let total = wg_sum(t, e);
            probs[t] = e / total;
            workgroupBarrier();
            if (t < d) {
                var o = 0.0;
                for (var s = 0u; s < m; s = s + 1u) {
                    o = o + probs[s] * b2[values + s * d + t];
                }
                b6[q + t] = o;
            }
        }
        // The next token's update writes keys this token's scores read.
        storageBarrier();
    }
}

// Sliding-window attention of token t, query head h (workgroup id = t·H + h): q = b2
// (RoPE'd, H·d per token), the batch's k = b3 (RoPE'd) and v = b4 (Hkv·d per token), the
// layer's ring keys b5 and values b6 [W, Hkv·d] holding the window_len positions before the
// batch; output b7 (H·d per token), scaled by op.scale = 1/√d. Token t sees the min(window_len + t, W)
// positions before it (oldest first), then itself.
@compute @workgroup_size(128)
fn swa(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let d = op.head_dim;
    let heads = op.kv_heads * op.group; // op.kv_heads = KV heads
    let t = wid.x / heads;
    let h = wid.x % heads;
    let j = h / op.group;
    let kv = op.kv_heads * d;
    // The sequence's rows of q, k, v, y start at st.first_row.
    let r0 = st.first_row;
    let q = (r0 + t) * heads * d + h * d;
    let count = min(st.window_len + t, op.window) + 1u;
    let first = st.pos + t + 1u - count;
    // Thread l scores the key at position first + l: in the ring before the batch, else in it.
    var score = -3.4e38;
    if (lid < count) {
        let p = first + lid;
        var s = 0.0;
        if (p >= st.pos) {
            let row = (r0 + p - st.pos) * kv + j * d;
            for (var i = 0u; i < d; i = i + 1u) {
                s = s + b2[q + i] * b3[row + i];
            }
        } else {
            let row = (p % op.window) * kv + j * d;
            for (var i = 0u; i < d; i = i + 1u) {
                s = s + b2[q + i] * b5[row + i];
            }
        }
        score = s * op.scale;
    }
    let m = wg_max(lid, score);
    var e = 0.0;
    if (lid < count) {
        e = exp(score - m);
    }
    let total = wg_sum(lid, e);
    feat[lid] = e / total;
    workgroupBarrier();
    if (lid < d) {
        var y = 0.0;
        for (var l = 0u; l < count; l = l + 1u) {
            let p = first + l;
            if (p >= st.pos) {
                y = y + feat[l] * b4[(r0 + p - st.pos) * kv + j * d + lid];
            } else {
                y = y + feat[l] * b6[(p % op.window) * kv + j * d + lid];
            }
        }
        b7[q + lid] = y;
    }
}

// The batch's last W RoPE'd keys b2 and values b3 (n = Hkv·d per token) into the ring slots
// of their positions in b4 / b5.
@compute @workgroup_size(128)
fn ring_write(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x / op.elements;
    if (t >= st.tokens || t + op.window < st.tokens) {
        return;
    }
    let slot = (st.pos + t) % op.window;
    let i = gid.x % op.elements;
    let src = st.first_row * op.elements + gid.x;
    b4[slot * op.elements + i] = b2[src];
    b5[slot * op.elements + i] = b3[src];
}
