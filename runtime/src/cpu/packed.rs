//! Weights repacked at load for decode on x86 (Q4_0 also on NEON with dot products): rows
//! interleaved in groups of 8 so that a register holds one lane per row and the products of
//! one token need no horizontal sums (the four-row kernel spends most of its instructions on
//! those on AVX2, where it is compute-bound). Same size as the file's blocks; the file's pages
//! of a repacked matrix are then not read again (prefill packs its panels from here).
//!
//! **Q4_0**, per group of 8 rows (the last group padded with zero rows), per block `b` of 32
//! elements, [`GROUP_BLOCK_BYTES`] bytes: the 8 rows' f16 scales, then 4 registers of 32 bytes;
//! in register `k`, byte `4·lane + j` holds `q(lane, 4k + j)` in its low nibble and `q(lane,
//! 16 + 4k + j)` in its high nibble (`weight = d·(q − 8)`). So the low nibbles of register `k`
//! are group `k` (4 elements) of every row, the high nibbles group `k + 4`: the U8 panel form
//! of [`crate::cpu::gemm`], nibble-packed.
//!
//! **Q8_0**, per group of 8 rows, per block of 32, [`Q8_0_GROUP_BLOCK_BYTES`] (8 × 34) bytes:
//! the 8 rows' f16 scales, then 16 registers of 16 bytes; in register `p`, bytes `2·lane` and
//! `2·lane + 1` are `q(lane, 2p)` and `q(lane, 2p + 1)` (i8): sign-extended to i16, one 32-bit
//! lane per row of the pair `pmaddwd` multiplies with the token's two 16-bit activations (the
//! I16 panel form of [`crate::cpu::gemm`], 8-bit).
//!
//! **Q4_K**, per group of 8 rows, per super-block of 256, [`Q4K_GROUP_SUPER_BYTES`] (8 × 148)
//! bytes: the 8 rows' f16 `d`, their f16 `dmin`, then per sub-block `j` of 32 the 8 rows' 6-bit
//! scale and min unpacked (byte `2·lane`: scale, `2·lane + 1`: min; 16 bytes), then per
//! sub-block its nibbles laid out as a Q4_0 block's (`weight = d·scale·q − dmin·min`). The
//! unpacked scales make it 4 bytes per row and super-block larger than the file's 144.
//!
//! **Q6_K**, per group of 8 rows, per super-block of 256 elements, [`Q6K_GROUP_SUPER_BYTES`]
//! (8 × 210) bytes: the 8 rows' f16 `d`, then 8 chunks of 32 elements of
//! [`Q6K_GROUP_CHUNK_BYTES`]: 16 scales (byte `2·lane + h`: the i8 scale of the chunk's
//! elements `16h..16h+16`), 4 registers of low nibbles laid out as Q4_0's, and 2 registers of
//! high bits: in register `i`, bits `2m, 2m+1` of byte `4·lane + j` are the high 2 bits of
//! `q(lane, 4(4i + m) + j)` (`weight = d·scale·(q − 32)`, q = low | high << 4).

use crate::quant::{scale_min_k4, BlockQ4K, BlockQ6K, GgmlType, QK_K};
use half::f16;

/// Rows per group.
pub const GROUP_ROWS: usize = 8;
/// Bytes per Q4_0 group per block: 8 scales + 8 rows × 16 bytes of nibbles.
pub const GROUP_BLOCK_BYTES: usize = 2 * GROUP_ROWS + 16 * GROUP_ROWS;
const Q4_0_BYTES: usize = 18;
/// Bytes per Q8_0 group per block: 8 scales + 8 rows × 32 bytes.
pub const Q8_0_GROUP_BLOCK_BYTES: usize = 2 * GROUP_ROWS + 32 * GROUP_ROWS;
const Q8_0_BYTES: usize = 34;
/// Bytes of a Q4_K group super-block's header: 8 `d`, 8 `dmin`, 8 sub-blocks × 8 rows ×
/// (scale, min).
const Q4K_GROUP_HEADER_BYTES: usize = 4 * GROUP_ROWS + 8 * 2 * GROUP_ROWS;
/// Bytes per Q4_K group per super-block: the header, 8 sub-blocks of nibbles.
pub const Q4K_GROUP_SUPER_BYTES: usize = Q4K_GROUP_HEADER_BYTES + 8 * 16 * GROUP_ROWS;
/// Where a Q4_K group super-block's nibbles start.
pub const Q4K_NIBBLES_AT: usize = Q4K_GROUP_HEADER_BYTES;
/// Bytes per Q6_K group per 32-element chunk: 16 scales, 128 bytes of low nibbles, 64 of
/// high bits.
pub const Q6K_GROUP_CHUNK_BYTES: usize = 2 * GROUP_ROWS + 128 + 64;
/// Bytes per Q6_K group per super-block: 8 f16 `d`, 8 chunks.
pub const Q6K_GROUP_SUPER_BYTES: usize = 2 * GROUP_ROWS + 8 * Q6K_GROUP_CHUNK_BYTES;
const _: () = assert!(Q6K_GROUP_SUPER_BYTES == GROUP_ROWS * size_of::<BlockQ6K>());

/// Whether matrices of `ty` have a repacked layout here (Q4_0, Q6_K), for `cols` elements
/// per row.
pub fn has_layout(ty: GgmlType, cols: usize) -> bool {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q8_0 => cols % 32 == 0,
        GgmlType::Q4_K | GgmlType::Q6_K => cols % QK_K == 0,
        _ => false,
    }
}

/// Bytes of one group of 8 rows of `cols` elements of `ty` repacked (0 for a type without a
/// repacked layout).
pub fn group_bytes(ty: GgmlType, cols: usize) -> usize {
    match ty {
        GgmlType::Q4_0 => cols / 32 * GROUP_BLOCK_BYTES,
        GgmlType::Q8_0 => cols / 32 * Q8_0_GROUP_BLOCK_BYTES,
        GgmlType::Q4_K => cols / QK_K * Q4K_GROUP_SUPER_BYTES,
        GgmlType::Q6_K => cols / QK_K * Q6K_GROUP_SUPER_BYTES,
        _ => 0,
    }
}

/// Bytes of a `[rows, cols]` matrix of `ty` repacked.
pub fn packed_len(ty: GgmlType, rows: usize, cols: usize) -> usize {
    rows.div_ceil(GROUP_ROWS) * group_bytes(ty, cols)
}

/// Repacks a `[rows, cols]` matrix of `ty` (`data`, row-major; [`has_layout`]) into `out`
/// ([`packed_len`] bytes).
pub fn pack(ty: GgmlType, data: &[u8], rows: usize, cols: usize, out: &mut [u8]) {
    match ty {
        GgmlType::Q4_0 => pack_q4_0(data, rows, cols, out),
        GgmlType::Q8_0 => pack_q8_0(data, rows, cols, out),
        GgmlType::Q4_K => pack_q4_k(data, rows, cols, out),
        GgmlType::Q6_K => pack_q6_k(data, rows, cols, out),
        _ => panic!("no repacked layout for {ty}"),
    }
}

/// Repacks a `[rows, cols]` Q4_0 matrix (`data`, row-major, cols a multiple of 32) into
/// `out` ([`packed_len`] bytes), group after group, block after block.
pub fn pack_q4_0(data: &[u8], rows: usize, cols: usize, out: &mut [u8]) {
    let blocks = cols / 32;
    assert!(
        data.len() >= rows * blocks * Q4_0_BYTES,
        "Q4_0 matrix too short"
    );
    assert_eq!(
        out.len(),
        packed_len(GgmlType::Q4_0, rows, cols),
        "packed buffer length"
    );
    for (g, group) in out.chunks_exact_mut(blocks * GROUP_BLOCK_BYTES).enumerate() {
        for (b, dst) in group.chunks_exact_mut(GROUP_BLOCK_BYTES).enumerate() {
            dst.fill(0);
            for lane in 0..GROUP_ROWS {
                let r = g * GROUP_ROWS + lane;
                if r >= rows {
                    break;
                }
                let src = &data[(r * blocks + b) * Q4_0_BYTES..][..Q4_0_BYTES];
                dst[2 * lane..2 * lane + 2].copy_from_slice(&src[..2]);
                // src[2 + i]: element i (low nibble) and 16 + i (high nibble), i < 16.
                for k in 0..4 {
                    for j in 0..4 {
                        let i = 4 * k + j;
                        let (lo, hi) = (src[2 + i] & 0x0f, src[2 + i] >> 4);
                        dst[2 * GROUP_ROWS + 32 * k + 4 * lane + j] = lo | hi << 4;
                    }
                }
            }
        }
    }
}

/// Block `b` of group `g` (of a matrix of `blocks` blocks per row): the 8 scales and the 128
/// bytes of nibbles.
pub fn group_block(packed: &[u8], blocks: usize, g: usize, b: usize) -> &[u8] {
    &packed[(g * blocks + b) * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES]
}

/// Lane `lane`'s scale and unsigned nibbles (element order) of a group block.
pub fn unpack_lane(block: &[u8], lane: usize) -> (f32, [u8; 32]) {
    let d = f16::from_le_bytes([block[2 * lane], block[2 * lane + 1]]).to_f32();
    let mut q = [0u8; 32];
    for k in 0..4 {
        for j in 0..4 {
            let byte = block[2 * GROUP_ROWS + 32 * k + 4 * lane + j];
            q[4 * k + j] = byte & 0x0f;
            q[16 + 4 * k + j] = byte >> 4;
        }
    }
    (d, q)
}

/// Repacks a `[rows, cols]` Q8_0 matrix (`data`, row-major, cols a multiple of 32) into
/// `out` ([`packed_len`] bytes), group after group, block after block.
pub fn pack_q8_0(data: &[u8], rows: usize, cols: usize, out: &mut [u8]) {
    let blocks = cols / 32;
    assert!(
        data.len() >= rows * blocks * Q8_0_BYTES,
        "Q8_0 matrix too short"
    );
    assert_eq!(
        out.len(),
        packed_len(GgmlType::Q8_0, rows, cols),
        "packed buffer length"
    );
    for (g, group) in out
        .chunks_exact_mut(blocks * Q8_0_GROUP_BLOCK_BYTES)
        .enumerate()
    {
        for (b, dst) in group.chunks_exact_mut(Q8_0_GROUP_BLOCK_BYTES).enumerate() {
            dst.fill(0);
            for lane in 0..GROUP_ROWS.min(rows.saturating_sub(g * GROUP_ROWS)) {
                let r = g * GROUP_ROWS + lane;
                let src = &data[(r * blocks + b) * Q8_0_BYTES..][..Q8_0_BYTES];
                dst[2 * lane..2 * lane + 2].copy_from_slice(&src[..2]);
                for p in 0..16 {
                    let at = 2 * GROUP_ROWS + 16 * p + 2 * lane;
                    dst[at..at + 2].copy_from_slice(&src[2 + 2 * p..4 + 2 * p]);
                }
            }
        }
    }
}

/// Lane `lane`'s scale and 32 weights (element order) of a Q8_0 group block.
pub fn unpack_lane_q8_0(block: &[u8], lane: usize) -> (f32, [i8; 32]) {
    let d = f16::from_le_bytes([block[2 * lane], block[2 * lane + 1]]).to_f32();
    let q = std::array::from_fn(|i| block[2 * GROUP_ROWS + 16 * (i / 2) + 2 * lane + i % 2] as i8);
    (d, q)
}

/// Repacks a `[rows, cols]` Q4_K matrix (`data`, row-major, cols a multiple of 256) into
/// `out` ([`packed_len`] bytes), group after group, super-block after super-block.
pub fn pack_q4_k(data: &[u8], rows: usize, cols: usize, out: &mut [u8]) {
    const BYTES: usize = size_of::<BlockQ4K>();
    let supers = cols / QK_K;
    assert!(data.len() >= rows * supers * BYTES, "Q4_K matrix too short");
    assert_eq!(
        out.len(),
        packed_len(GgmlType::Q4_K, rows, cols),
        "packed buffer length"
    );
    for (g, group) in out
        .chunks_exact_mut(supers * Q4K_GROUP_SUPER_BYTES)
        .enumerate()
    {
        for (sb, dst) in group.chunks_exact_mut(Q4K_GROUP_SUPER_BYTES).enumerate() {
            dst.fill(0);
            for lane in 0..GROUP_ROWS.min(rows.saturating_sub(g * GROUP_ROWS)) {
                let r = g * GROUP_ROWS + lane;
                let block: BlockQ4K =
                    bytemuck::pod_read_unaligned(&data[(r * supers + sb) * BYTES..][..BYTES]);
                dst[2 * lane..2 * lane + 2].copy_from_slice(&block.d.to_le_bytes());
                let at = 2 * GROUP_ROWS + 2 * lane;
                dst[at..at + 2].copy_from_slice(&block.dmin.to_le_bytes());
                for j in 0..8 {
                    let (scale, min) = scale_min_k4(j, &block.scales);
                    let at = 4 * GROUP_ROWS + 16 * j + 2 * lane;
                    dst[at] = scale;
                    dst[at + 1] = min;
                    // Sub-block j: low (j even) or high (j odd) nibbles of qs[32(j / 2)..].
                    let q = |l: usize| (block.qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0f;
                    let nibbles = Q4K_NIBBLES_AT + 128 * j;
                    for k in 0..4 {
                        for i in 0..4 {
                            dst[nibbles + 32 * k + 4 * lane + i] =
                                q(4 * k + i) | q(16 + 4 * k + i) << 4;
                        }
                    }
                }
            }
        }
    }
}

/// Lane `lane` of a Q4_K group super-block: `d`, `dmin`, the 8 sub-blocks' (scale, min) and
/// the 256 nibbles (element order; `weight = d·scale[i / 32]·q[i] − dmin·min[i / 32]`).
pub fn unpack_lane_q4_k(block: &[u8], lane: usize) -> (f32, f32, [(u8, u8); 8], [u8; QK_K]) {
    let f16_at = |at: usize| f16::from_le_bytes([block[at], block[at + 1]]).to_f32();
    let (d, dmin) = (f16_at(2 * lane), f16_at(2 * GROUP_ROWS + 2 * lane));
    let scales = std::array::from_fn(|j| {
        let at = 4 * GROUP_ROWS + 16 * j + 2 * lane;
        (block[at], block[at + 1])
    });
    let q = std::array::from_fn(|e| {
        let (j, l) = (e / 32, e % 32);
        let byte = block[Q4K_NIBBLES_AT + 128 * j + 32 * (l % 16 / 4) + 4 * lane + l % 4];
        if l < 16 {
            byte & 0x0f
        } else {
            byte >> 4
        }
    });
    (d, dmin, scales, q)
}

/// Repacks a `[rows, cols]` Q6_K matrix (`data`, row-major, cols a multiple of 256) into
/// `out` ([`packed_len`] bytes), group after group, super-block after super-block.
pub fn pack_q6_k(data: &[u8], rows: usize, cols: usize, out: &mut [u8]) {
    const BYTES: usize = size_of::<BlockQ6K>();
    let supers = cols / QK_K;
    assert!(data.len() >= rows * supers * BYTES, "Q6_K matrix too short");
    assert_eq!(
        out.len(),
        packed_len(GgmlType::Q6_K, rows, cols),
        "packed buffer length"
    );
    for (g, group) in out
        .chunks_exact_mut(supers * Q6K_GROUP_SUPER_BYTES)
        .enumerate()
    {
        for (sb, dst) in group.chunks_exact_mut(Q6K_GROUP_SUPER_BYTES).enumerate() {
            // The 8 rows' d, scales and 6-bit values (padding rows: zero).
            let mut q = [[0u8; QK_K]; GROUP_ROWS];
            let mut scales = [[0u8; 16]; GROUP_ROWS];
            dst[..2 * GROUP_ROWS].fill(0);
            for lane in 0..GROUP_ROWS.min(rows.saturating_sub(g * GROUP_ROWS)) {
                let r = g * GROUP_ROWS + lane;
                let src = &data[(r * supers + sb) * BYTES..][..BYTES];
                q[lane] = q6_values(src);
                scales[lane].copy_from_slice(&src[192..208]);
                dst[2 * lane..2 * lane + 2].copy_from_slice(&src[208..210]);
            }
            for (c, chunk) in dst[2 * GROUP_ROWS..]
                .chunks_exact_mut(Q6K_GROUP_CHUNK_BYTES)
                .enumerate()
            {
                let (scale_bytes, rest) = chunk.split_at_mut(2 * GROUP_ROWS);
                let (nibbles, bits) = rest.split_at_mut(128);
                for lane in 0..GROUP_ROWS {
                    // The file's scales are in element order: chunk c has 2c and 2c + 1.
                    scale_bytes[2 * lane..2 * lane + 2]
                        .copy_from_slice(&scales[lane][2 * c..2 * c + 2]);
                    let q = &q[lane][32 * c..32 * c + 32];
                    for j in 0..4 {
                        for k in 0..4 {
                            nibbles[32 * k + 4 * lane + j] =
                                q[4 * k + j] & 0x0f | (q[16 + 4 * k + j] & 0x0f) << 4;
                        }
                        for i in 0..2 {
                            bits[32 * i + 4 * lane + j] = (0..4)
                                .map(|m| (q[4 * (4 * i + m) + j] >> 4) << (2 * m))
                                .fold(0, |a, b| a | b);
                        }
                    }
                }
            }
        }
    }
}

/// A Q6_K block's 256 unsigned 6-bit values in element order (ggml's `dequantize_row_q6_K`:
/// element `128h + 32q + l` takes its low 4 bits from `ql[64h + 32(q % 2) + l]`, low or high
/// nibble as q < 2, and its high 2 from bits `2q` of `qh[32h + l]`).
fn q6_values(block: &[u8]) -> [u8; QK_K] {
    let (ql, qh) = (&block[..128], &block[128..192]);
    let mut q = [0u8; QK_K];
    for h in 0..2 {
        let (ql, qh, q) = (&ql[64 * h..], &qh[32 * h..], &mut q[128 * h..]);
        for l in 0..32 {
            let (a, b, high) = (ql[l], ql[32 + l], qh[l]);
            q[l] = a & 0x0f | (high & 3) << 4;
            q[32 + l] = b & 0x0f | (high >> 2 & 3) << 4;
            q[64 + l] = a >> 4 | (high >> 4 & 3) << 4;
            q[96 + l] = b >> 4 | (high >> 6) << 4;
        }
    }
    q
}

/// Lane `lane` of a Q6_K group super-block: its `d`, 16 scales and 256 unsigned 6-bit
/// values (element order; `weight = d·scale[i / 16]·(q[i] − 32)`).
pub fn unpack_lane_q6_k(block: &[u8], lane: usize) -> (f32, [i8; 16], [u8; QK_K]) {
    let d = f16::from_le_bytes([block[2 * lane], block[2 * lane + 1]]).to_f32();
    let (mut scales, mut q) = ([0i8; 16], [0u8; QK_K]);
    for c in 0..8 {
        let chunk = &block[2 * GROUP_ROWS + c * Q6K_GROUP_CHUNK_BYTES..][..Q6K_GROUP_CHUNK_BYTES];
        scales[2 * c] = chunk[2 * lane] as i8;
        scales[2 * c + 1] = chunk[2 * lane + 1] as i8;
        for l in 0..32 {
            let (group4, j) = (l / 4, l % 4);
            let nibble = chunk[2 * GROUP_ROWS + 32 * (group4 % 4) + 4 * lane + j];
            let low = if group4 < 4 {
                nibble & 0x0f
            } else {
                nibble >> 4
            };
            let bits = chunk[2 * GROUP_ROWS + 128 + 32 * (group4 / 4) + 4 * lane + j];
            q[32 * c + l] = low | ((bits >> (2 * (group4 % 4))) & 3) << 4;
        }
    }
    (d, scales, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, quantize, GgmlType};
    use crate::testing::values;

    /// Packs `rows × cols` weights of `ty` and checks that `lane_weights(block, lane)` of every
    /// group block (`block_elems` weights of a row, `block_bytes` for the group's 8 rows) are
    /// its row's weights, and zeros for the padding rows.
    fn assert_every_row_in_its_lane(
        ty: GgmlType,
        (rows, cols): (usize, usize),
        (block_elems, block_bytes): (usize, usize),
        lane_weights: impl Fn(&[u8], usize) -> Vec<f32>,
    ) {
        let w = values(ty as u64, rows * cols, 1.0);
        let data = quantize(ty, &w).unwrap();
        let want = dequantize(ty, &data).unwrap();
        let mut packed = vec![0u8; packed_len(ty, rows, cols)];
        pack(ty, &data, rows, cols, &mut packed);
        let blocks = cols / block_elems;
        for r in 0..rows.next_multiple_of(GROUP_ROWS) {
            for b in 0..blocks {
                let at = ((r / GROUP_ROWS) * blocks + b) * block_bytes;
                let got = lane_weights(&packed[at..at + block_bytes], r % GROUP_ROWS);
                assert_eq!(got.len(), block_elems);
                for (i, &got) in got.iter().enumerate() {
                    let want = if r < rows {
                        want[r * cols + b * block_elems + i]
                    } else {
                        0.0
                    };
                    assert_eq!(got, want, "{ty} row {r} block {b} element {i}");
                }
            }
        }
    }

    #[test]
    fn a_repacked_q4_0_matrix_holds_every_row() {
        assert_every_row_in_its_lane(
            GgmlType::Q4_0,
            (13, 96),
            (32, GROUP_BLOCK_BYTES),
            |block, lane| {
                let (d, q) = unpack_lane(block, lane);
                q.iter().map(|&q| d * (q as f32 - 8.0)).collect()
            },
        );
    }

    #[test]
    fn a_repacked_q8_0_matrix_holds_every_row() {
        assert_every_row_in_its_lane(
            GgmlType::Q8_0,
            (13, 96),
            (32, Q8_0_GROUP_BLOCK_BYTES),
            |block, lane| {
                let (d, q) = unpack_lane_q8_0(block, lane);
                q.iter().map(|&q| d * q as f32).collect()
            },
        );
    }

    #[test]
    fn a_repacked_q4_k_matrix_holds_every_row() {
        assert_every_row_in_its_lane(
            GgmlType::Q4_K,
            (11, 512),
            (QK_K, Q4K_GROUP_SUPER_BYTES),
            |block, lane| {
                let (d, dmin, scales, q) = unpack_lane_q4_k(block, lane);
                let weight = |(i, &q): (usize, &u8)| {
                    let (scale, min) = scales[i / 32];
                    d * scale as f32 * q as f32 - dmin * min as f32
                };
                q.iter().enumerate().map(weight).collect()
            },
        );
    }

    #[test]
    fn a_repacked_q6_k_matrix_holds_every_row() {
        assert_every_row_in_its_lane(
            GgmlType::Q6_K,
            (11, 512),
            (QK_K, Q6K_GROUP_SUPER_BYTES),
            |block, lane| {
                let (d, scales, q) = unpack_lane_q6_k(block, lane);
                let weight =
                    |(i, &q): (usize, &u8)| d * scales[i / 16] as f32 * (q as i32 - 32) as f32;
                q.iter().enumerate().map(weight).collect()
            },
        );
    }
}
