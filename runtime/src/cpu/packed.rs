//! Q4_0 weights repacked at load for decode on AVX2: rows interleaved in groups of 8 so that a
//! register holds one lane per row and the products of one token need no horizontal sums
//! (the four-row kernel spends most of its instructions on those on AVX2, where it is
//! compute-bound). Same size as the file's Q4_0 (18 bytes per row per 32 elements); the file's
//! pages of a repacked matrix are then not read again (prefill packs its panels from here).
//!
//! Layout, per group of 8 rows (the last group padded with zero rows), per block `b` of 32
//! elements, [`GROUP_BLOCK_BYTES`] bytes: the 8 rows' f16 scales, then 4 registers of 32 bytes;
//! in register `k`, byte `4·lane + j` holds `q(lane, 4k + j)` in its low nibble and `q(lane,
//! 16 + 4k + j)` in its high nibble (`weight = d·(q − 8)`). So the low nibbles of register `k`
//! are group `k` (4 elements) of every row, the high nibbles group `k + 4`: the U8 panel form
//! of [`crate::cpu::gemm`], nibble-packed.

use half::f16;

/// Rows per group.
pub const GROUP_ROWS: usize = 8;
/// Bytes per group per block: 8 scales + 8 rows × 16 bytes of nibbles.
pub const GROUP_BLOCK_BYTES: usize = 2 * GROUP_ROWS + 16 * GROUP_ROWS;
const Q4_0_BYTES: usize = 18;

/// Bytes of a `[rows, cols]` Q4_0 matrix repacked.
pub fn packed_len(rows: usize, cols: usize) -> usize {
    rows.div_ceil(GROUP_ROWS) * (cols / 32) * GROUP_BLOCK_BYTES
}

/// Repacks a `[rows, cols]` Q4_0 matrix (`data`, row-major, cols a multiple of 32) into
/// `out` ([`packed_len`] bytes), group after group, block after block.
pub fn pack_q4_0(data: &[u8], rows: usize, cols: usize, out: &mut [u8]) {
    let blocks = cols / 32;
    assert!(
        data.len() >= rows * blocks * Q4_0_BYTES,
        "Q4_0 matrix too short"
    );
    assert_eq!(out.len(), packed_len(rows, cols), "packed buffer length");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, quantize, GgmlType};
    use crate::testing::values;

    /// Every lane of every group block unpacks to its row's weights; padding rows are zero.
    #[test]
    fn a_repacked_matrix_holds_every_row() {
        let (rows, cols) = (13, 96);
        let w = values(3, rows * cols, 1.0);
        let data = quantize(GgmlType::Q4_0, &w).unwrap();
        let want = dequantize(GgmlType::Q4_0, &data).unwrap();
        let mut packed = vec![0u8; packed_len(rows, cols)];
        pack_q4_0(&data, rows, cols, &mut packed);
        let blocks = cols / 32;
        for r in 0..rows.next_multiple_of(GROUP_ROWS) {
            for b in 0..blocks {
                let (d, q) = unpack_lane(group_block(&packed, blocks, r / 8, b), r % 8);
                for (i, &qi) in q.iter().enumerate() {
                    let got = d * (qi as f32 - 8.0);
                    let want = if r < rows {
                        want[r * cols + b * 32 + i]
                    } else {
                        0.0
                    };
                    assert_eq!(got, want, "row {r} block {b} element {i}");
                }
            }
        }
    }
}
