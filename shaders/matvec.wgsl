// Products of a weight matrix with T activation rows: y[t] = W·x[t] — `matvec` for one token
// (decode), `matmul` for T > 1 (prefill, 8 tokens per pass over the weights). Weights are in an
// aligned "plane" layout (gpu/weights.rs): ggml's 18/34-byte blocks are repacked at upload
// into 4-byte words (the quants of every block, in order) and a plane of f16 scales packed two
// per u32, so that no shader needs SHADER_F16 or unaligned reads.
//
// The weight type enters through `load32(row, unit)`: 32 consecutive weights of a row,
// dequantized. The host compiles this file once per type, appending a `load32` that calls the
// type's `load32_<type>` below.
//
// One workgroup per row (rows beyond 65535 use the grid's y dimension); 64 threads stride over
// the row's 32-weight units and reduce in workgroup memory. A matrix larger than the adapter's
// storage binding limit comes in parts of whole rows, one dispatch each.

struct Dims {
    rows: u32,
    cols: u32,
    // Workgroups along x in the dispatch grid (row = id.x + id.y · grid_x).
    grid_x: u32,
    // First row of this part of the matrix in y (a matrix larger than one storage binding is
    // uploaded in parts of whole rows; `rows` and the weight indices are the part's).
    row0: u32,
    // Rows of the whole matrix: the stride of y between tokens.
    total_rows: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

// The step's uniform (step.wgsl's `Step`); only the token count is read here.
struct Batch {
    pos: u32,
    window_len: u32,
    pad: u32,
    tokens: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
// Quants (or raw f32 / f16 words) of every row, row-major.
@group(0) @binding(1) var<storage, read> quants: array<u32>;
// One f16 scale per block, two per word (empty for float types).
@group(0) @binding(2) var<storage, read> scales: array<u32>;
// x: [T, cols]; y: [T, total_rows].
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> batch: Batch;

const THREADS: u32 = 64u;
// Tokens per pass of `matmul` over the weights.
const TILE: u32 = 8u;
var<workgroup> partial: array<f32, 512>;

fn scale_at(block: u32) -> f32 {
    let pair = unpack2x16float(scales[block / 2u]);
    return select(pair.x, pair.y, (block & 1u) == 1u);
}

// Signed byte i (0..3) of a word.
fn sbyte(w: u32, i: u32) -> f32 {
    return f32((bitcast<i32>(w << (24u - 8u * i))) >> 24u);
}

// Byte `i` of the words starting at `base`.
fn byte_at(base: u32, i: u32) -> u32 {
    return (quants[base + i / 4u] >> (8u * (i % 4u))) & 0xffu;
}

// Q8_0: 8 words of signed bytes per 32-weight block.
fn load32_q8_0(row: u32, unit: u32) -> array<f32, 32> {
    let block = row * (dims.cols / 32u) + unit;
    let d = scale_at(block);
    var w: array<f32, 32>;
    for (var j = 0u; j < 8u; j = j + 1u) {
        let q = quants[block * 8u + j];
        for (var i = 0u; i < 4u; i = i + 1u) {
            w[4u * j + i] = d * sbyte(q, i);
        }
    }
    return w;
}

// Q4_0: 4 words per block; byte i of the block holds weight i (low nibble) and i + 16 (high),
// each q − 8.
fn load32_q4_0(row: u32, unit: u32) -> array<f32, 32> {
    let block = row * (dims.cols / 32u) + unit;
    let d = scale_at(block);
    var w: array<f32, 32>;
    for (var j = 0u; j < 4u; j = j + 1u) {
        let q = quants[block * 4u + j];
        for (var i = 0u; i < 4u; i = i + 1u) {
            let byte = (q >> (8u * i)) & 0xffu;
            w[4u * j + i] = d * (f32(byte & 0xfu) - 8.0);
            w[4u * j + i + 16u] = d * (f32(byte >> 4u) - 8.0);
        }
    }
    return w;
}

// Q4_K: each 256-weight super-block is its 144 bytes as 36 words (d, dmin, 12 bytes of 6-bit
// scales and mins, 128 bytes of nibbles); weight = d·sc·q − dmin·m per 32-weight sub-block j.
fn load32_q4_k(row: u32, unit: u32) -> array<f32, 32> {
    let base = (row * (dims.cols / 256u) + unit / 8u) * 36u;
    let j = unit % 8u;
    let dd = unpack2x16float(quants[base]);
    var sc: u32;
    var m: u32;
    if (j < 4u) {
        sc = byte_at(base, 4u + j) & 63u;
        m = byte_at(base, 8u + j) & 63u;
    } else {
        sc = (byte_at(base, 8u + j) & 0xfu) | ((byte_at(base, j) >> 6u) << 4u);
        m = (byte_at(base, 8u + j) >> 4u) | ((byte_at(base, 4u + j) >> 6u) << 4u);
    }
    let scale = dd.x * f32(sc);
    let offset = dd.y * f32(m);
    let shift = 4u * (j % 2u);
    let nibbles = base + 4u + (j / 2u) * 8u;
    var w: array<f32, 32>;
    for (var l = 0u; l < 8u; l = l + 1u) {
        let q = quants[nibbles + l] >> shift;
        for (var i = 0u; i < 4u; i = i + 1u) {
            w[4u * l + i] = scale * f32((q >> (8u * i)) & 0xfu) - offset;
        }
    }
    return w;
}

// Q6_K: each super-block's ql, qh and scales (208 bytes) as 52 words, its d in the scale
// plane; weight = d·sc·(q6 − 32) with a signed scale per 16 weights. Unit c = 32 weights.
fn load32_q6_k(row: u32, unit: u32) -> array<f32, 32> {
    let block = row * (dims.cols / 256u) + unit / 8u;
    let base = block * 52u;
    let c = unit % 8u;
    let h = c / 4u;
    let q = c % 4u;
    let d = scale_at(block);
    var w: array<f32, 32>;
    for (var l = 0u; l < 32u; l = l + 1u) {
        let sc = f32((bitcast<i32>(byte_at(base, 192u + h * 8u + 2u * q + l / 16u) << 24u)) >> 24u);
        var low = byte_at(base, h * 64u + (q % 2u) * 32u + l);
        if (q >= 2u) {
            low = low >> 4u;
        }
        let high = (byte_at(base, 128u + h * 32u + l) >> (2u * q)) & 3u;
        w[l] = d * sc * (f32((low & 0xfu) | (high << 4u)) - 32.0);
    }
    return w;
}

// F32: one weight per word; weights past the row's end read as 0.
fn load32_f32(row: u32, unit: u32) -> array<f32, 32> {
    var w: array<f32, 32>;
    for (var l = 0u; l < 32u; l = l + 1u) {
        let k = unit * 32u + l;
        if (k < dims.cols) {
            w[l] = bitcast<f32>(quants[row * dims.cols + k]);
        }
    }
    return w;
}

// F16: two weights per word (the matrix's weights in order); past the row's end read as 0.
fn load32_f16(row: u32, unit: u32) -> array<f32, 32> {
    var w: array<f32, 32>;
    for (var l = 0u; l < 32u; l = l + 1u) {
        let k = unit * 32u + l;
        if (k < dims.cols) {
            let e = row * dims.cols + k;
            let pair = unpack2x16float(quants[e / 2u]);
            w[l] = select(pair.x, pair.y, (e & 1u) == 1u);
        }
    }
    return w;
}

// BF16: two weights per word (the matrix's weights in order), each the top half of an f32.
fn load32_bf16(row: u32, unit: u32) -> array<f32, 32> {
    var w: array<f32, 32>;
    for (var l = 0u; l < 32u; l = l + 1u) {
        let k = unit * 32u + l;
        if (k < dims.cols) {
            let e = row * dims.cols + k;
            w[l] = bitcast<f32>((quants[e / 2u] >> (16u * (e & 1u))) << 16u);
        }
    }
    return w;
}

fn row_of(wid: vec3<u32>) -> u32 {
    return wid.x + wid.y * dims.grid_x;
}

// w · x[at .. at + n] for the first n ≤ 32 weights of a unit.
fn dot32(w: ptr<function, array<f32, 32>>, at: u32, n: u32) -> f32 {
    var s = 0.0;
    for (var l = 0u; l < n; l = l + 1u) {
        s = s + (*w)[l] * x[at + l];
    }
    return s;
}

@compute @workgroup_size(64)
fn matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid);
    if (row >= dims.rows) {
        return;
    }
    let units = (dims.cols + 31u) / 32u;
    var acc = 0.0;
    for (var u = lid; u < units; u = u + THREADS) {
        var w = load32(row, u);
        acc = acc + dot32(&w, u * 32u, min(32u, dims.cols - u * 32u));
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] = partial[lid] + partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        y[dims.row0 + row] = partial[0];
    }
}

// T = batch.tokens rows of x, TILE at a time: each unit of weights is dequantized once per
// tile and dotted with every token of it.
@compute @workgroup_size(64)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid);
    if (row >= dims.rows) {
        return;
    }
    let units = (dims.cols + 31u) / 32u;
    let tokens = batch.tokens;
    for (var t0 = 0u; t0 < tokens; t0 = t0 + TILE) {
        let n_t = min(TILE, tokens - t0);
        var acc: array<f32, 8>;
        for (var u = lid; u < units; u = u + THREADS) {
            var w = load32(row, u);
            let n = min(32u, dims.cols - u * 32u);
            for (var t = 0u; t < n_t; t = t + 1u) {
                acc[t] = acc[t] + dot32(&w, (t0 + t) * dims.cols + u * 32u, n);
            }
        }
        for (var t = 0u; t < TILE; t = t + 1u) {
            partial[t * THREADS + lid] = acc[t];
        }
        workgroupBarrier();
        for (var stride = THREADS / 2u; stride > 0u; stride = stride / 2u) {
            if (lid < stride) {
                for (var t = 0u; t < TILE; t = t + 1u) {
                    let at = t * THREADS + lid;
                    partial[at] = partial[at] + partial[at + stride];
                }
            }
            workgroupBarrier();
        }
        if (lid < n_t) {
            y[(t0 + lid) * dims.total_rows + dims.row0 + row] = partial[lid * THREADS];
        }
        workgroupBarrier();
    }
}
