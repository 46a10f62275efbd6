// Matrix-vector products y = W·x for weights in an aligned "plane" layout (gpu/weights.rs):
// ggml's 18/34-byte blocks are repacked at upload into 4-byte words (the quants of every block,
// in order) and a plane of f16 scales packed two per u32, so that no shader needs SHADER_F16 or
// unaligned reads.
//
// One workgroup per row (rows beyond 65535 use the grid's y dimension); 64 threads stride over
// the row's blocks and reduce in workgroup memory. A matrix larger than the adapter's storage
// binding limit comes in parts of whole rows, one dispatch each.

struct Dims {
    rows: u32,
    cols: u32,
    // Workgroups along x in the dispatch grid (row = id.x + id.y · grid_x).
    grid_x: u32,
    // First row of this part of the matrix in y (a matrix larger than one storage binding is
    // uploaded in parts of whole rows; `rows` and the weight indices are the part's).
    row0: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
// Quants (or raw f32 / f16 words) of every row, row-major.
@group(0) @binding(1) var<storage, read> quants: array<u32>;
// One f16 scale per block, two per word (empty for float types).
@group(0) @binding(2) var<storage, read> scales: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const THREADS: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

fn scale_at(block: u32) -> f32 {
    let pair = unpack2x16float(scales[block / 2u]);
    return select(pair.x, pair.y, (block & 1u) == 1u);
}

// Signed byte i (0..3) of a word.
fn sbyte(w: u32, i: u32) -> f32 {
    return f32((bitcast<i32>(w << (24u - 8u * i))) >> 24u);
}

// Workgroup sum of `v`, written to y[row] by thread 0.
fn finish(row: u32, lid: u32, v: f32) {
    partial[lid] = v;
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

fn row_of(wid: vec3<u32>) -> u32 {
    return wid.x + wid.y * dims.grid_x;
}

// Q8_0: 8 words of signed bytes per 32-element block.
@compute @workgroup_size(64)
fn matvec_q8_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid);
    if (row >= dims.rows) {
        return;
    }
    let blocks = dims.cols / 32u;
    var acc = 0.0;
    for (var b = lid; b < blocks; b = b + THREADS) {
        let block = row * blocks + b;
        var s = 0.0;
        for (var j = 0u; j < 8u; j = j + 1u) {
            let w = quants[block * 8u + j];
            let k = b * 32u + j * 4u;
            s = s + sbyte(w, 0u) * x[k] + sbyte(w, 1u) * x[k + 1u]
                  + sbyte(w, 2u) * x[k + 2u] + sbyte(w, 3u) * x[k + 3u];
        }
        acc = acc + scale_at(block) * s;
    }
    finish(row, lid, acc);
}

// Q4_0: 4 words per block; byte i of the block holds element i (low nibble) and i + 16 (high),
// each q − 8.
@compute @workgroup_size(64)
fn matvec_q4_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid);
    if (row >= dims.rows) {
        return;
    }
    let blocks = dims.cols / 32u;
    var acc = 0.0;
    for (var b = lid; b < blocks; b = b + THREADS) {
        let block = row * blocks + b;
        var s = 0.0;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let w = quants[block * 4u + j];
            for (var i = 0u; i < 4u; i = i + 1u) {
                let byte = (w >> (8u * i)) & 0xffu;
                let k = b * 32u + j * 4u + i;
                s = s + (f32(byte & 0xfu) - 8.0) * x[k] + (f32(byte >> 4u) - 8.0) * x[k + 16u];
            }
        }
        acc = acc + scale_at(block) * s;
    }
    finish(row, lid, acc);
}

@compute @workgroup_size(64)
fn matvec_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid);
    if (row >= dims.rows) {
        return;
    }
    var acc = 0.0;
    for (var k = lid; k < dims.cols; k = k + THREADS) {
        acc = acc + bitcast<f32>(quants[row * dims.cols + k]) * x[k];
    }
    finish(row, lid, acc);
}

// F16: two elements per word (cols is even).
@compute @workgroup_size(64)
fn matvec_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid);
    if (row >= dims.rows) {
        return;
    }
    let words = dims.cols / 2u;
    var acc = 0.0;
    for (var k = lid; k < words; k = k + THREADS) {
        let pair = unpack2x16float(quants[row * words + k]);
        acc = acc + pair.x * x[2u * k] + pair.y * x[2u * k + 1u];
    }
    finish(row, lid, acc);
}

// Byte `i` of the words starting at `base`.
fn byte_at(base: u32, i: u32) -> u32 {
    return (quants[base + i / 4u] >> (8u * (i % 4u))) & 0xffu;
}

// Q4_K: each 256-element super-block is its 144 bytes as 36 words (d, dmin, 12 bytes of 6-bit
// scales and mins, 128 bytes of nibbles); weight = d·sc·q − dmin·m per 32-element sub-block.
@compute @workgroup_size(64)
fn matvec_q4_k(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid);
    if (row >= dims.rows) {
        return;
    }
    let blocks = dims.cols / 256u;
    var acc = 0.0;
    for (var b = lid; b < blocks; b = b + THREADS) {
        let base = (row * blocks + b) * 36u;
        let dd = unpack2x16float(quants[base]);
        for (var j = 0u; j < 8u; j = j + 1u) {
            var sc: u32;
            var m: u32;
            if (j < 4u) {
                sc = byte_at(base, 4u + j) & 63u;
                m = byte_at(base, 8u + j) & 63u;
            } else {
                sc = (byte_at(base, 8u + j) & 0xfu) | ((byte_at(base, j) >> 6u) << 4u);
                m = (byte_at(base, 8u + j) >> 4u) | ((byte_at(base, 4u + j) >> 6u) << 4u);
            }
            let shift = 4u * (j % 2u);
            var s = 0.0;
            var xs = 0.0;
            for (var l = 0u; l < 32u; l = l + 1u) {
                let q = (byte_at(base, 16u + (j / 2u) * 32u + l) >> shift) & 0xfu;
                let xv = x[b * 256u + j * 32u + l];
                s = s + f32(q) * xv;
                xs = xs + xv;
            }
            acc = acc + dd.x * f32(sc) * s - dd.y * f32(m) * xs;
        }
    }
    finish(row, lid, acc);
}

// Q6_K: each super-block's ql, qh and scales (208 bytes) as 52 words, its d in the scale plane;
// weight = d·sc·(q6 − 32) with a signed scale per 16 elements.
@compute @workgroup_size(64)
fn matvec_q6_k(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid);
    if (row >= dims.rows) {
        return;
    }
    let blocks = dims.cols / 256u;
    var acc = 0.0;
    for (var b = lid; b < blocks; b = b + THREADS) {
        let block = row * blocks + b;
        let base = block * 52u;
        var s = 0.0;
        for (var c = 0u; c < 8u; c = c + 1u) {
            let h = c / 4u;
            let q = c % 4u;
            for (var half = 0u; half < 2u; half = half + 1u) {
                let sc = f32((bitcast<i32>(byte_at(base, 192u + h * 8u + 2u * q + half) << 24u)) >> 24u);
                var part = 0.0;
                for (var l = half * 16u; l < half * 16u + 16u; l = l + 1u) {
                    var low = byte_at(base, h * 64u + (q % 2u) * 32u + l);
                    if (q >= 2u) {
                        low = low >> 4u;
                    }
                    let high = (byte_at(base, 128u + h * 32u + l) >> (2u * q)) & 3u;
                    let q6 = f32((low & 0xfu) | (high << 4u)) - 32.0;
                    part = part + q6 * x[b * 256u + c * 32u + l];
                }
                s = s + sc * part;
            }
        }
        acc = acc + scale_at(block) * s;
    }
    finish(row, lid, acc);
}
