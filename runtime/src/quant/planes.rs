//! The GPU backends' weight layout: ggml's blocks (18 / 34 / 210 bytes, not 4-byte aligned)
//! repacked once at upload into two planes of u32 words — the quants of every block in order,
//! and the blocks' f16 scales two per word — so that kernels read every block with aligned
//! (vector) loads. Q4_K super-blocks (144 bytes) and float types are already whole words and
//! stay as they are.

use super::GgmlType;
use crate::error::{Error, Result};

/// The weight types the plane layout takes (and both GPU backends have a product kernel
/// for), with the name their kernels carry (`load32_<name>` in WGSL, `matvec_<name>` in CUDA).
pub const PLANE_TYPES: [(GgmlType, &str); 7] = [
    (GgmlType::Q8_0, "q8_0"),
    (GgmlType::Q4_0, "q4_0"),
    (GgmlType::Q4_K, "q4_k"),
    (GgmlType::Q6_K, "q6_k"),
    (GgmlType::F32, "f32"),
    (GgmlType::F16, "f16"),
    (GgmlType::BF16, "bf16"),
];

/// The two planes of a ggml tensor: (quant words, scale words). Errors name what does not fit.
pub fn to_planes(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: &[u8],
) -> Result<(Vec<u32>, Vec<u32>)> {
    let block = ty.block_size();
    if cols % block != 0 || cols % 2 != 0 {
        return Err(Error::Unsupported(format!(
            "GPU matrix of {ty} with {cols} columns: not whole blocks"
        )));
    }
    let want = rows * cols / block * ty.type_size();
    if data.len() != want {
        return Err(Error::Tensor(format!(
            "GPU upload of a {rows}x{cols} {ty} matrix: {} bytes, expected {want}",
            data.len()
        )));
    }
    let words = |bytes: &[u8]| -> Vec<u32> {
        bytes
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect()
    };
    // (block bytes, offset of the quants in a block) of the block types.
    let (bytes, quant_at) = match ty {
        // 144-byte super-blocks are already whole words: d and dmin stay inside.
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q4_K => {
            return Ok((words(data), vec![0]))
        }
        GgmlType::Q8_0 => (34, 2),
        GgmlType::Q4_0 => (18, 2),
        GgmlType::Q6_K => (210, 0),
        _ => {
            return Err(Error::Unsupported(format!(
                "the GPU backends have no {ty} kernel yet"
            )))
        }
    };
    let n_blocks = data.len() / bytes;
    let mut quants = Vec::with_capacity(n_blocks * (bytes - quant_at) / 4);
    let mut scales = vec![0u32; n_blocks.div_ceil(2)];
    for (i, b) in data.chunks_exact(bytes).enumerate() {
        // The f16 scale: first in the legacy blocks, last in Q6_K (after ql, qh, scales).
        let (d, q) = if ty == GgmlType::Q6_K {
            (&b[208..210], &b[..208])
        } else {
            (&b[..2], &b[quant_at..])
        };
        scales[i / 2] |= (u16::from_le_bytes([d[0], d[1]]) as u32) << (16 * (i % 2));
        quants.extend(words(q));
    }
    Ok((quants, scales))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize;
    use crate::testing::values;

    #[test]
    fn planes_keep_every_quant_and_scale() {
        let w = values(1, 64, 1.0);
        let q = quantize(GgmlType::Q4_0, &w).unwrap();
        let (quants, scales) = to_planes(GgmlType::Q4_0, 1, 64, &q).unwrap();
        assert_eq!(quants.len(), 8);
        assert_eq!(scales.len(), 1);
        assert_eq!(scales[0] & 0xffff, u16::from_le_bytes([q[0], q[1]]) as u32);
        assert_eq!(scales[0] >> 16, u16::from_le_bytes([q[18], q[19]]) as u32);
        assert_eq!(quants[4].to_le_bytes(), [q[20], q[21], q[22], q[23]]);
        let err = to_planes(GgmlType::Q4_0, 2, 64, &q)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected"), "{err}");
    }
}
