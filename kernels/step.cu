// The element-wise and per-head operations of one model step over a batch of T tokens
// (T = st[3]: 1 in decode, up to the sequence's batch size in prefill), on f32 buffers of T
// rows — the CUDA twin of shaders/step.wgsl, with the same entry points and arguments, run in
// the order of `model::device_plan` (the plan both GPU backends run). Sizes come in `op` (fixed
// per call site); the position, window fill and T in `st`, a device buffer written once per
// step, so that a captured CUDA graph replays with new values. In a step over several sequences
// the row-wise kernels run once over all their rows (T = every row); the ones that read a
// sequence's state, window or position (recurrence, recurrence_gsa, swa, ring_write, the final
// rms_norm) once per sequence, on its T rows from FIRST_ROW(st). Buffers are b2..b7; each kernel
// documents what it expects in them, with shapes (D hidden, H heads, Hkv KV heads, d head dim,
// W window, M GSA slots, T tokens; "n per token" means [T, n] with n = op.elements).
//
// Compiled at run time by NVRTC (no headers).

typedef unsigned int u32;

// The parameters of every kernel (`model::device_plan::OpParams` on the host, step.wgsl's
// `Op`): each field means one thing wherever it is read.
struct Op {
    u32 elements;          // values per token row (rms_norm, add, swiglu, mix, ring_write)
    u32 heads;             // heads rotated (rope: H for q, Hkv for k)
    u32 kv_heads;          // Hkv (recurrence, recurrence_gsa, swa)
    u32 head_dim;          // d
    u32 group;             // query heads per KV head, H / Hkv
    u32 hgrn2;             // recurrence: 1 = HGRN2 gates, 0 = GLA
    u32 broadcast;         // add: 1 = b3 is one row added to every token's (a bias)
    u32 last_row;          // rms_norm: 1 = only the last token's row, into b4's first
    float eps;             // rms_norm
    float gate_normalizer; // recurrence (GLA), recurrence_gsa: 16
    float mix_swa;         // mix: the SWA branch's weight, 0.5
    float scale;           // swa: 1/sqrt(d)
    u32 window;            // W (swa, ring_write)
    u32 slots;             // M, GSA slots
    u32 pad0;
    u32 pad1;
};

// st (`model::device_plan::StepWords`): [pos of the batch's first token, valid window entries
// before the batch, the sequence's first row in the activations (0 alone), T, the final norm's
// output row (0 alone), 0, 0, 0].
#define POS(st) (st[0])
#define WINDOW_LEN(st) (st[1])
#define FIRST_ROW(st) (st[2])
#define TOKENS(st) (st[3])
#define LOGITS_ROW(st) (st[4])

#define WG 128
#define WARP 32
#define NEG_BIG -3.4e38f

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum / max of `v` over the block of WG threads (every thread gets it).
__device__ float block_sum(float v) {
    __shared__ float red[WG / WARP];
    v = warp_sum(v);
    __syncthreads();
    if (threadIdx.x % WARP == 0) red[threadIdx.x / WARP] = v;
    __syncthreads();
    float r = 0.0f;
#pragma unroll
    for (int i = 0; i < WG / WARP; i++) r += red[i];
    return r;
}

__device__ float block_max(float v) {
    __shared__ float red[WG / WARP];
    v = warp_max(v);
    __syncthreads();
    if (threadIdx.x % WARP == 0) red[threadIdx.x / WARP] = v;
    __syncthreads();
    float r = red[0];
#pragma unroll
    for (int i = 1; i < WG / WARP; i++) r = fmaxf(r, red[i]);
    return r;
}

__device__ __forceinline__ float log_sigmoid(float x) {
    return fminf(x, 0.0f) - log1pf(expf(-fabsf(x)));
}

__device__ __forceinline__ u32 global_id() { return blockIdx.x * blockDim.x + threadIdx.x; }

// b4[r] = b2[r] / rms(b2[r]) · b3 for row r = block id: b2 x [T, D], b3 weight [D], b4 out
// [T, D]; with last_row, one block normalizes the sequence's last row into b4's row LOGITS_ROW.
extern "C" __global__ void rms_norm(Op op, const u32* st, const float* b2, const float* b3, float* b4) {
    u32 row = blockIdx.x, out = blockIdx.x * op.elements;
    if (op.last_row == 1) {
        row = FIRST_ROW(st) + TOKENS(st) - 1;
        out = LOGITS_ROW(st) * op.elements;
    }
    const float* x = b2 + (size_t)row * op.elements;
    float ss = 0.0f;
    for (u32 i = threadIdx.x; i < op.elements; i += WG) ss += x[i] * x[i];
    const float inv = rsqrtf(block_sum(ss) / (float)op.elements + op.eps);
    for (u32 i = threadIdx.x; i < op.elements; i += WG) b4[out + i] = x[i] * inv * b3[i];
}

// b2 += b3 (n per token); with broadcast, b3 is one row [n] added to every token's (a bias).
extern "C" __global__ void add(Op op, const u32* st, float* b2, const float* b3) {
    const u32 i = global_id();
    if (i < op.elements * TOKENS(st)) b2[i] += b3[op.broadcast == 1 ? i % op.elements : i];
}

// b2 = silu(b2) · b3 (n per token).
extern "C" __global__ void swiglu(Op op, const u32* st, float* b2, const float* b3) {
    const u32 i = global_id();
    if (i < op.elements * TOKENS(st)) {
        const float g = b2[i];
        b2[i] = g / (1.0f + expf(-g)) * b3[i];
    }
}

// b2 = mix_swa · b2 + (1 − mix_swa) · b3: y [T, H·d] and o_rec [T, H·d].
extern "C" __global__ void mix(Op op, const u32* st, float* b2, const float* b3) {
    const u32 i = global_id();
    if (i < op.elements * TOKENS(st)) b2[i] = op.mix_swa * b2[i] + (1.0f - op.mix_swa) * b3[i];
}

// Rotate-half RoPE of `heads` heads per token of b2 [T, heads·d] in place; b3 [T, d] = per token
// [cos (d/2), sin (d/2)] of its position.
extern "C" __global__ void rope(Op op, const u32* st, float* b2, const float* b3) {
    const u32 half = op.head_dim / 2, per_token = op.heads * half, gid = global_id();
    if (gid >= per_token * TOKENS(st)) return;
    const u32 t = gid / per_token, head = (gid % per_token) / half, i = gid % half;
    const size_t lo = (size_t)t * op.heads * op.head_dim + head * op.head_dim + i;
    const float a = b2[lo], b = b2[lo + half];
    const float c = b3[t * op.head_dim + i], s = b3[t * op.head_dim + half + i];
    b2[lo] = a * c - b * s;
    b2[lo + half] = b * c + a * s;
}

// GLA / HGRN2 for KV head j = block id, the batch's tokens in order: state b2 [Hkv, d, d]
// updated with k = b3, v = b4 (Hkv·d per token), then the readout of each query head of the
// group, q = b5 [T, H·d], into b6 = o_rec [T, H·d]. Thread c owns value column c.
extern "C" __global__ void recurrence(Op op, const u32* st, float* b2, const float* b3, const float* b4,
                                      const float* b5, float* b6) {
    __shared__ float feat[WG], gate[WG];
    const u32 j = blockIdx.x, c = threadIdx.x, d = op.head_dim;
    const bool on = c < d;
    const u32 kv_row = op.kv_heads * d, q_row = kv_row * op.group;
    float* state = b2 + (size_t)j * d * d;
    const u32 tokens = TOKENS(st), r0 = FIRST_ROW(st);
    // The sequence's rows of k, v, q and o_rec.
    b3 += (size_t)r0 * kv_row;
    b4 += (size_t)r0 * kv_row;
    b5 += (size_t)r0 * q_row;
    b6 += (size_t)r0 * q_row;
    for (u32 t = 0; t < tokens; t++) {
        __syncthreads();
        // Features and gates of the key, per key feature i = c.
        const float kc = on ? b3[(size_t)t * kv_row + j * d + c] : NEG_BIG;
        if (op.hgrn2 == 0) {
            const float m = block_max(kc);
            const float e = on ? expf(kc - m) : 0.0f;
            const float total = block_sum(e);
            if (on) {
                feat[c] = e / total;
                gate[c] = expf(log_sigmoid(kc) / op.gate_normalizer);
            }
        } else if (on) {
            const float a = 1.0f / (1.0f + expf(-kc));
            gate[c] = a;
            feat[c] = 1.0f - a;
        }
        __syncthreads();
        if (on) {
            const float vc = b4[(size_t)t * kv_row + j * d + c];
            for (u32 i = 0; i < d; i++) {
                float* at = state + i * d + c;
                *at = gate[i] * *at + feat[i] * vc;
            }
        }
        for (u32 g = 0; g < op.group; g++) {
            const u32 h = j * op.group + g;
            const float qc = on ? b5[(size_t)t * q_row + h * d + c] : NEG_BIG;
            const float m = block_max(qc);
            const float e = on ? expf(qc - m) : 0.0f;
            const float total = block_sum(e);
            __syncthreads();
            if (on) feat[c] = e / total;
            __syncthreads();
            if (on) {
                float o = 0.0f;
                for (u32 i = 0; i < d; i++) o += feat[i] * state[i * d + c];
                b6[(size_t)t * q_row + h * d + c] = o;
            }
        }
    }
}

// GSA for KV head j = block id, the batch's tokens in order: state b2 = [Hkv, keys K (d × M),
// values V (M × d)] updated with k = b3, v = b4 through M pooled gates; then per query head of
// the group (q = b5 [T, H·d], raw), p = softmax(Kᵀq), o = Vᵀp into b6 [T, H·d].
extern "C" __global__ void recurrence_gsa(Op op, const u32* st, float* b2, const float* b3,
                                          const float* b4, const float* b5, float* b6) {
    __shared__ float feat[WG], gate[WG], probs[WG];
    const u32 j = blockIdx.x, t = threadIdx.x, d = op.head_dim, m = op.slots;
    float* keys = b2 + (size_t)j * 2 * d * m;
    float* values = keys + d * m;
    const u32 kv_row = op.kv_heads * d, q_row = kv_row * op.group;
    const u32 tokens = TOKENS(st), r0 = FIRST_ROW(st);
    b3 += (size_t)r0 * kv_row;
    b4 += (size_t)r0 * kv_row;
    b5 += (size_t)r0 * q_row;
    b6 += (size_t)r0 * q_row;
    for (u32 tok = 0; tok < tokens; tok++) {
        const float* k = b3 + (size_t)tok * kv_row + j * d;
        const float* v = b4 + (size_t)tok * kv_row + j * d;
        __syncthreads();
        // Gates of the slots: adaptive average pooling of the key's d features into M bins.
        if (t < m) {
            const u32 start = t * d / m, end = ((t + 1) * d + m - 1) / m;
            float s = 0.0f;
            for (u32 i = start; i < end; i++) s += k[i];
            const float a = expf(log_sigmoid(s / (float)(end - start)) / op.gate_normalizer);
            gate[t] = a;
            feat[t] = 1.0f - a;
        }
        __syncthreads();
        if (t < d) {
            const float kt = k[t], vt = v[t];
            for (u32 s = 0; s < m; s++) {
                float* ka = keys + t * m + s;
                *ka = *ka * gate[s] + kt * feat[s];
                float* va = values + s * d + t;
                *va = gate[s] * *va + feat[s] * vt;
            }
        }
        // The scores read keys other threads wrote (a block barrier orders global memory too).
        __syncthreads();
        for (u32 g = 0; g < op.group; g++) {
            const u32 h = j * op.group + g;
            const float* q = b5 + (size_t)tok * q_row + h * d;
            float score = NEG_BIG;
            if (t < m) {
                float s = 0.0f;
                for (u32 i = 0; i < d; i++) s += keys[i * m + t] * q[i];
                score = s;
            }
            const float mx = block_max(score);
            const float e = t < m ? expf(score - mx) : 0.0f;
            const float total = block_sum(e);
            probs[t] = e / total;
            __syncthreads();
            if (t < d) {
                float o = 0.0f;
                for (u32 s = 0; s < m; s++) o += probs[s] * values[s * d + t];
                b6[(size_t)tok * q_row + h * d + t] = o;
            }
            __syncthreads();
        }
    }
}

// Sliding-window attention of token t, query head h (block id = t·H + h): q = b2 (RoPE'd,
// H·d per token), the batch's k = b3 (RoPE'd) and v = b4 (Hkv·d per token), the layer's ring
// keys b5 and values b6 [W, Hkv·d] holding the window_len positions before the batch; output
// b7 (H·d per token), scaled by op.scale = 1/√d. Token t sees the min(window_len + t, W) positions before it
// (oldest first), then itself.
extern "C" __global__ void swa(Op op, const u32* st, const float* b2, const float* b3, const float* b4,
                               const float* b5, const float* b6, float* b7) {
    __shared__ float probs[WG];
    const u32 d = op.head_dim, heads = op.kv_heads * op.group; // op.kv_heads = KV heads
    const u32 t = blockIdx.x / heads, h = blockIdx.x % heads, j = h / op.group;
    const u32 kv = op.kv_heads * d, lid = threadIdx.x, pos = POS(st), r0 = FIRST_ROW(st);
    // The sequence's rows of q, k, v and y.
    b2 += (size_t)r0 * heads * d;
    b3 += (size_t)r0 * kv;
    b4 += (size_t)r0 * kv;
    b7 += (size_t)r0 * heads * d;
    const float* q = b2 + (size_t)t * heads * d + h * d;
    const u32 count = min(WINDOW_LEN(st) + t, op.window) + 1;
    const u32 first = pos + t + 1 - count;
    // Thread l scores the key at position first + l: in the ring before the batch, else in it.
    float score = NEG_BIG;
    if (lid < count) {
        const u32 p = first + lid;
        const float* key = p >= pos ? b3 + (size_t)(p - pos) * kv + j * d : b5 + (size_t)(p % op.window) * kv + j * d;
        float s = 0.0f;
        for (u32 i = 0; i < d; i++) s += q[i] * key[i];
        score = s * op.scale;
    }
    const float m = block_max(score);
    const float e = lid < count ? expf(score - m) : 0.0f;
    const float total = block_sum(e);
    probs[lid] = e / total;
    __syncthreads();
    if (lid < d) {
        float y = 0.0f;
        for (u32 l = 0; l < count; l++) {
            const u32 p = first + l;
            const float* value = p >= pos ? b4 + (size_t)(p - pos) * kv : b6 + (size_t)(p % op.window) * kv;
            y += probs[l] * value[j * d + lid];
        }
        b7[(size_t)t * heads * d + h * d + lid] = y;
    }
}

// The batch's last W RoPE'd keys b2 and values b3 (n = Hkv·d per token) into the ring slots
// of their positions in b4 / b5.
extern "C" __global__ void ring_write(Op op, const u32* st, const float* b2, const float* b3, float* b4,
                                      float* b5) {
    const u32 gid = global_id(), t = gid / op.elements, tokens = TOKENS(st);
    if (t >= tokens || t + op.window < tokens) return;
    const u32 slot = (POS(st) + t) % op.window, i = gid % op.elements;
    const size_t from = (size_t)FIRST_ROW(st) * op.elements + gid;
    b4[slot * op.elements + i] = b2[from];
    b5[slot * op.elements + i] = b3[from];
}
