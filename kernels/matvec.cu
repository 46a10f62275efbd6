// Products of a weight matrix with T activation rows: y[t] = W·x[t] — `matvec_<type>` for one
// token (decode), `matmul_<type>` for T > 1 (prefill, 8 tokens per pass over the weights; T is
// the fourth word of the step buffer `st`, as in step.cu).
//
// Weights are in the aligned "plane" layout of `quant::planes` (the same as the wgpu backend's):
// ggml's 18/34-byte blocks repacked at upload into 32-bit words (the quants of every block, in
// order) and a plane of f16 scales two per word, so that every block's quants are 16-byte
// aligned (Q4_0: one uint4 per block; Q8_0: two) and read with vector loads. Q4_K super-blocks
// (144 bytes) and float types stay as they are in the file.
//
// Four warps per block. In `matvec` each warp owns ROWS_PER_WARP consecutive rows: each lane
// strides over the rows' 32-weight units, loads a unit of x into registers once and dots it with
// every row's unit (x is read once per ROWS_PER_WARP rows), and the warp reduces with shuffles.
// `matmul` has one warp per row. The grid is 1-D (2^31 − 1 blocks). ROWS_PER_WARP is a tuning
// knob the host passes as -D (LIGER_CUDA_ROWS_PER_WARP), 1 unless set.
//
// Compiled at run time by NVRTC (no headers: f16 goes through PTX's cvt).

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define WARP 32
#define WARPS_PER_BLOCK 4
#ifndef ROWS_PER_WARP
#define ROWS_PER_WARP 1
#endif
// Tokens per pass of `matmul` over the weights.
#define TILE 8

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ float scale_at(const u32* __restrict__ scales, u32 block) {
    return f16_to_f32((u16)(scales[block >> 1] >> (16 * (block & 1))));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Byte i of the words starting at `base`.
__device__ __forceinline__ u32 byte_at(const u32* __restrict__ words, u32 i) {
    return (words[i >> 2] >> (8 * (i & 3))) & 0xffu;
}

// Signed byte i (0..3) of a word.
__device__ __forceinline__ float sbyte(u32 w, u32 i) {
    return (float)((int)(w << (24 - 8 * i)) >> 24);
}

// Each weight type: `load32(q, s, row, unit, cols, w)` writes the 32 weights of unit `unit`
// of row `row`, dequantized (units past the row's end of float types read as 0).
struct Q8_0 {
    static __device__ __forceinline__ void load32(const u32* __restrict__ q, const u32* __restrict__ s,
                                                  u32 row, u32 unit, u32 cols, float* w) {
        const u32 block = row * (cols / 32) + unit;
        const float d = scale_at(s, block);
        const uint4* p = reinterpret_cast<const uint4*>(q + block * 8);
        const uint4 a = p[0], b = p[1];
        const u32 words[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) w[4 * j + i] = d * sbyte(words[j], i);
    }
};

// Q4_0: byte i of the block holds weight i (low nibble) and i + 16 (high), each q − 8.
struct Q4_0 {
    static __device__ __forceinline__ void load32(const u32* __restrict__ q, const u32* __restrict__ s,
                                                  u32 row, u32 unit, u32 cols, float* w) {
        const u32 block = row * (cols / 32) + unit;
        const float d = scale_at(s, block);
        const uint4 a = *reinterpret_cast<const uint4*>(q + block * 4);
        const u32 words[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const u32 byte = (words[j] >> (8 * i)) & 0xffu;
                w[4 * j + i] = d * ((float)(byte & 0xfu) - 8.0f);
                w[4 * j + i + 16] = d * ((float)(byte >> 4) - 8.0f);
            }
    }
};

// Q4_K: 256-weight super-blocks of 36 words (d, dmin, 12 bytes of 6-bit scales and mins, 128
// bytes of nibbles); weight = d·sc·q − dmin·m per 32-weight sub-block j.
struct Q4_K {
    static __device__ __forceinline__ void load32(const u32* __restrict__ q, const u32* __restrict__ s,
                                                  u32 row, u32 unit, u32 cols, float* w) {
        const u32* base = q + (row * (cols / 256) + unit / 8) * 36;
        const u32 j = unit % 8;
        const float d = f16_to_f32((u16)(base[0] & 0xffffu));
        const float dmin = f16_to_f32((u16)(base[0] >> 16));
        u32 sc, m;
        if (j < 4) {
            sc = byte_at(base, 4 + j) & 63;
            m = byte_at(base, 8 + j) & 63;
        } else {
            sc = (byte_at(base, 8 + j) & 0xf) | ((byte_at(base, j) >> 6) << 4);
            m = (byte_at(base, 8 + j) >> 4) | ((byte_at(base, 4 + j) >> 6) << 4);
        }
        const float scale = d * (float)sc, offset = dmin * (float)m;
        const u32 shift = 4 * (j % 2);
        const uint4* p = reinterpret_cast<const uint4*>(base + 4 + (j / 2) * 8);
        const uint4 a = p[0], b = p[1];
        const u32 words[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
        for (int l = 0; l < 8; l++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                w[4 * l + i] = scale * (float)((words[l] >> (shift + 8 * i)) & 0xfu) - offset;
    }
};

// Q6_K: each super-block's ql, qh and scales (208 bytes) as 52 words, its d in the scale
// plane; weight = d·sc·(q6 − 32) with a signed scale per 16 weights.
struct Q6_K {
    static __device__ __forceinline__ void load32(const u32* __restrict__ q, const u32* __restrict__ s,
                                                  u32 row, u32 unit, u32 cols, float* w) {
        const u32 block = row * (cols / 256) + unit / 8;
        const u32* base = q + block * 52;
        const u32 c = unit % 8, h = c / 4, qi = c % 4;
        const float d = scale_at(s, block);
#pragma unroll
        for (u32 l = 0; l < 32; l++) {
            const float sc = (float)((int)(byte_at(base, 192 + h * 8 + 2 * qi + l / 16) << 24) >> 24);
            u32 low = byte_at(base, h * 64 + (qi % 2) * 32 + l);
            if (qi >= 2) low >>= 4;
            const u32 high = (byte_at(base, 128 + h * 32 + l) >> (2 * qi)) & 3;
            w[l] = d * sc * ((float)((low & 0xf) | (high << 4)) - 32.0f);
        }
    }
};

struct F32 {
    static __device__ __forceinline__ void load32(const u32* __restrict__ q, const u32* __restrict__ s,
                                                  u32 row, u32 unit, u32 cols, float* w) {
#pragma unroll
        for (u32 l = 0; l < 32; l++) {
            const u32 k = unit * 32 + l;
            w[l] = k < cols ? __uint_as_float(q[(size_t)row * cols + k]) : 0.0f;
        }
    }
};

// F16 / BF16: two weights per word, the matrix's weights in order.
struct F16 {
    static __device__ __forceinline__ void load32(const u32* __restrict__ q, const u32* __restrict__ s,
                                                  u32 row, u32 unit, u32 cols, float* w) {
#pragma unroll
        for (u32 l = 0; l < 32; l++) {
            const u32 k = unit * 32 + l;
            const size_t e = (size_t)row * cols + k;
            w[l] = k < cols ? f16_to_f32((u16)(q[e / 2] >> (16 * (e & 1)))) : 0.0f;
        }
    }
};

struct BF16 {
    static __device__ __forceinline__ void load32(const u32* __restrict__ q, const u32* __restrict__ s,
                                                  u32 row, u32 unit, u32 cols, float* w) {
#pragma unroll
        for (u32 l = 0; l < 32; l++) {
            const u32 k = unit * 32 + l;
            const size_t e = (size_t)row * cols + k;
            w[l] = k < cols ? __uint_as_float((q[e / 2] >> (16 * (e & 1))) << 16) : 0.0f;
        }
    }
};

// x[0 .. n] for n ≤ 32 into registers (zeros past n); 16-byte loads when whole and aligned.
__device__ __forceinline__ void load_x32(const float* __restrict__ x, u32 n, float* xs) {
    if (n == 32 && (reinterpret_cast<size_t>(x) & 15) == 0) {
        const float4* x4 = reinterpret_cast<const float4*>(x);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const float4 v = x4[i];
            xs[4 * i] = v.x;
            xs[4 * i + 1] = v.y;
            xs[4 * i + 2] = v.z;
            xs[4 * i + 3] = v.w;
        }
    } else {
#pragma unroll
        for (u32 l = 0; l < 32; l++) xs[l] = l < n ? x[l] : 0.0f;
    }
}

__device__ __forceinline__ float dot32(const float* w, const float* xs) {
    float s = 0.0f;
#pragma unroll
    for (int l = 0; l < 32; l++) s += w[l] * xs[l];
    return s;
}

// y[row] = W[row] · x for rows·cols weights; x: [cols], y: [rows].
template <typename T>
__device__ void matvec(const u32* __restrict__ q, const u32* __restrict__ s, const float* __restrict__ x,
                       float* __restrict__ y, u32 rows, u32 cols) {
    const u32 row0 = (blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / WARP) * ROWS_PER_WARP;
    const u32 lane = threadIdx.x % WARP;
    if (row0 >= rows) return;
    const u32 units = (cols + 31) / 32;
    float acc[ROWS_PER_WARP];
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++) acc[r] = 0.0f;
    for (u32 u = lane; u < units; u += WARP) {
        float xs[32];
        load_x32(x + u * 32, min(32u, cols - u * 32), xs);
#pragma unroll
        for (u32 r = 0; r < ROWS_PER_WARP; r++) {
            if (row0 + r < rows) {
                float w[32];
                T::load32(q, s, row0 + r, u, cols, w);
                acc[r] += dot32(w, xs);
            }
        }
    }
#pragma unroll
    for (u32 r = 0; r < ROWS_PER_WARP; r++) {
        const float v = warp_sum(acc[r]);
        if (lane == 0 && row0 + r < rows) y[row0 + r] = v;
    }
}

// y[t, row] = W[row] · x[t] for t < tokens; x: [tokens, cols], y: [tokens, rows]. Each unit of
// weights is dequantized once per tile of TILE tokens.
template <typename T>
__device__ void matmul(const u32* __restrict__ q, const u32* __restrict__ s, const float* __restrict__ x,
                       float* __restrict__ y, u32 rows, u32 cols, u32 tokens) {
    const u32 row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / WARP;
    const u32 lane = threadIdx.x % WARP;
    if (row >= rows) return;
    const u32 units = (cols + 31) / 32;
    for (u32 t0 = 0; t0 < tokens; t0 += TILE) {
        const u32 n_t = min((u32)TILE, tokens - t0);
        float acc[TILE];
#pragma unroll
        for (int t = 0; t < TILE; t++) acc[t] = 0.0f;
        for (u32 u = lane; u < units; u += WARP) {
            float w[32];
            T::load32(q, s, row, u, cols, w);
            const u32 n = min(32u, cols - u * 32);
#pragma unroll
            for (u32 t = 0; t < TILE; t++) {
                if (t < n_t) {
                    float xs[32];
                    load_x32(x + (size_t)(t0 + t) * cols + u * 32, n, xs);
                    acc[t] += dot32(w, xs);
                }
            }
        }
#pragma unroll
        for (u32 t = 0; t < TILE; t++) {
            const float v = warp_sum(acc[t]);
            if (lane == 0 && t < n_t) y[(size_t)(t0 + t) * rows + row] = v;
        }
    }
}

#define KERNELS(name, T)                                                                        \
    extern "C" __global__ void matvec_##name(const u32* q, const u32* s, const float* x, float* y, \
                                             u32 rows, u32 cols) {                             \
        matvec<T>(q, s, x, y, rows, cols);                                                      \
    }                                                                                           \
    extern "C" __global__ void matmul_##name(const u32* q, const u32* s, const float* x, float* y, \
                                             u32 rows, u32 cols, const u32* st) {              \
        matmul<T>(q, s, x, y, rows, cols, st[3]);                                               \
    }

KERNELS(q8_0, Q8_0)
KERNELS(q4_0, Q4_0)
KERNELS(q4_k, Q4_K)
KERNELS(q6_k, Q6_K)
KERNELS(f32, F32)
KERNELS(f16, F16)
KERNELS(bf16, BF16)
