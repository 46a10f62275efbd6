// The element-wise and per-head operations of one decode step (one token), on f32 buffers.
// Every entry point reads its sizes from `op` (fixed per call site, made at setup) and the
// position from `st` (written once per step). Buffers are bound as b2..b7; each entry point
// documents what it expects in them.

struct Op {
    n: u32,      // elements, or heads
    d: u32,      // head dim
    group: u32,  // query heads per KV head
    flag: u32,   // recurrence: 0 = GLA, 1 = HGRN2
    f0: f32,     // eps / gate normalizer / mix / scale
    f1: f32,
    window: u32, // W
    slots: u32,  // GSA slots M
}

struct Step {
    pos: u32,        // position of this token
    window_len: u32, // valid entries in the window ring before this token
    slot: u32,       // ring slot of this token (pos % W)
    pad: u32,
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

// b4 = b2 / rms(b2) · b3 (one workgroup; n = length, f0 = eps).
@compute @workgroup_size(128)
fn rms_norm(@builtin(local_invocation_index) lid: u32) {
    var ss = 0.0;
    for (var i = lid; i < op.n; i = i + WG) {
        ss = ss + b2[i] * b2[i];
    }
    let inv = 1.0 / sqrt(wg_sum(lid, ss) / f32(op.n) + op.f0);
    for (var i = lid; i < op.n; i = i + WG) {
        b4[i] = b2[i] * inv * b3[i];
    }
}

// b2 += b3 (n elements).
@compute @workgroup_size(128)
fn add(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < op.n) {
        b2[gid.x] = b2[gid.x] + b3[gid.x];
    }
}

// b2 = silu(b2) · b3.
@compute @workgroup_size(128)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < op.n) {
        let g = b2[gid.x];
        b2[gid.x] = g / (1.0 + exp(-g)) * b3[gid.x];
    }
}

// b2 = f0 · b2 + (1 − f0) · b3 (the SWA / recurrent mix).
@compute @workgroup_size(128)
fn mix(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < op.n) {
        b2[gid.x] = op.f0 * b2[gid.x] + (1.0 - op.f0) * b3[gid.x];
    }
}

// Rotate-half RoPE of n heads of b2 in place; b3 = [cos (d/2), sin (d/2)] of this position.
@compute @workgroup_size(128)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = op.d / 2u;
    if (gid.x >= op.n * half) {
        return;
    }
    let head = gid.x / half;
    let i = gid.x % half;
    let lo = head * op.d + i;
    let a = b2[lo];
    let b = b2[lo + half];
    let c = b3[i];
    let s = b3[half + i];
    b2[lo] = a * c - b * s;
    b2[lo + half] = b * c + a * s;
}

// GLA / HGRN2 for KV head j = workgroup id: state b2 [Hkv, d, d] updated with k = b3, v = b4,
// then the readout of each query head of the group, q = b5, into b6 = o_rec [H·d]. Thread c
// owns value column c. f0 = gate normalizer (GLA).
@compute @workgroup_size(128)
fn recurrence(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) c: u32) {
    let j = wid.x;
    let d = op.d;
    let on = c < d;
    // Features and gates of the key, per key feature i = c.
    var kc = -3.4e38;
    if (on) {
        kc = b3[j * d + c];
    }
    if (op.flag == 0u) {
        let m = wg_max(c, kc);
        var e = 0.0;
        if (on) {
            e = exp(kc - m);
        }
        let total = wg_sum(c, e);
        if (on) {
            feat[c] = e / total;
            gate[c] = exp(log_sigmoid(kc) / op.f0);
        }
    } else if (on) {
        let a = 1.0 / (1.0 + exp(-kc));
        gate[c] = a;
        feat[c] = 1.0 - a;
    }
    workgroupBarrier();
    let base = j * d * d;
    if (on) {
        let vc = b4[j * d + c];
        for (var i = 0u; i < d; i = i + 1u) {
            let at = base + i * d + c;
            b2[at] = gate[i] * b2[at] + feat[i] * vc;
        }
    }
    for (var g = 0u; g < op.group; g = g + 1u) {
        let h = j * op.group + g;
        var qc = -3.4e38;
        if (on) {
            qc = b5[h * d + c];
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
            b6[h * d + c] = o;
        }
    }
}

// GSA for KV head j = workgroup id: state b2 = [Hkv, keys K (d × M), values V (M × d)]
// updated with k = b3, v = b4 through M pooled gates; then per query head of the group
// (q = b5, raw), p = softmax(Kᵀq), o = Vᵀp into b6. f0 = gate normalizer, slots = M.
@compute @workgroup_size(128)
fn recurrence_gsa(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let j = wid.x;
    let d = op.d;
    let m = op.slots;
    let keys = j * 2u * d * m;
    let values = keys + d * m;
    // Gates of the slots: adaptive average pooling of the key's d features into M bins.
    if (t < m) {
        let start = t * d / m;
        let end = ((t + 1u) * d + m - 1u) / m;
        var s = 0.0;
        for (var i = start; i < end; i = i + 1u) {
            s = s + b3[j * d + i];
        }
        let a = exp(log_sigmoid(s / f32(end - start)) / op.f0);
        gate[t] = a;
        feat[t] = 1.0 - a;
    }
    workgroupBarrier();
    if (t < d) {
        let kt = b3[j * d + t];
        let vt = b4[j * d + t];
        for (var s = 0u; s < m; s = s + 1u) {
            let ka = keys + t * m + s;
            b2[ka] = b2[ka] * gate[s] + kt * feat[s];
            let va = values + s * d + t;
            b2[va] = gate[s] * b2[va] + feat[s] * vt;
        }
    }
    for (var g = 0u; g < op.group; g = g + 1u) {
        let h = j * op.group + g;
        workgroupBarrier();
        var score = -3.4e38;
        if (t < m) {
            var s = 0.0;
            for (var i = 0u; i < d; i = i + 1u) {
                s = s + b2[keys + i * m + t] * b5[h * d + i];
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
            b6[h * d + t] = o;
        }
    }
}

// Sliding-window attention of query head h = workgroup id: q = b2 (RoPE'd), this token's
// k = b3 (RoPE'd) and v = b4, the layer's ring keys b5 and values b6 [W, Hkv·d]; output b7
// [H·d]. f0 = 1/√d. Keys: the window_len newest ring entries (oldest first) and this token.
@compute @workgroup_size(128)
fn swa(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let d = op.d;
    let j = h / op.group;
    let kv = op.n * d; // op.n = KV heads
    let count = min(st.window_len, op.window) + 1u;
    // Thread t scores key t: t < count − 1 → ring position pos − (count − 1) + t; else current.
    var score = -3.4e38;
    if (lid < count) {
        var s = 0.0;
        if (lid + 1u == count) {
            for (var i = 0u; i < d; i = i + 1u) {
                s = s + b2[h * d + i] * b3[j * d + i];
            }
        } else {
            let p = st.pos - (count - 1u) + lid;
            let row = (p % op.window) * kv + j * d;
            for (var i = 0u; i < d; i = i + 1u) {
                s = s + b2[h * d + i] * b5[row + i];
            }
        }
        score = s * op.f0;
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
        for (var t = 0u; t + 1u < count; t = t + 1u) {
            let p = st.pos - (count - 1u) + t;
            y = y + feat[t] * b6[(p % op.window) * kv + j * d + lid];
        }
        y = y + feat[count - 1u] * b4[j * d + lid];
        b7[h * d + lid] = y;
    }
}

// This token's RoPE'd key b2 and value b3 (n = Hkv·d values) into ring slot st.slot of
// b4 / b5.
@compute @workgroup_size(128)
fn ring_write(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < op.n) {
        b4[st.slot * op.n + gid.x] = b2[gid.x];
        b5[st.slot * op.n + gid.x] = b3[gid.x];
    }
}
