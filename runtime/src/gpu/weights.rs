//! Weights on the GPU: ggml's blocks (18 / 34 bytes, not 4-byte aligned) repacked once at
//! upload into two planes of u32 words — the quants of every block in order, and the blocks'
//! f16 scales two per word — which the shaders read with aligned loads and `unpack2x16float`.

use super::GpuContext;
use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// A `[rows, cols]` weight matrix on the GPU, in parts of whole rows that each fit one storage
/// binding of the adapter (one part unless the matrix is larger than that).
pub struct GpuMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub parts: Vec<MatrixPart>,
}

/// Rows `row0 .. row0 + rows` of a matrix.
pub struct MatrixPart {
    pub row0: usize,
    pub rows: usize,
    /// Quant words (or the raw F32 / F16 / BF16 words), row-major.
    pub quants: wgpu::Buffer,
    /// f16 scales, two per word, one per block in row-major block order (4 bytes of zeros for
    /// types without a scale plane).
    pub scales: wgpu::Buffer,
}

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
                "the wgpu backend has no {ty} kernel yet"
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

impl GpuMatrix {
    /// Uploads a matrix in the plane layout, split into parts of whole rows where it exceeds
    /// the adapter's storage binding limit.
    pub fn upload(
        ctx: &GpuContext,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<GpuMatrix> {
        if rows == 0 || data.len() % rows != 0 {
            return Err(Error::Tensor(format!(
                "GPU upload of a {rows}x{cols} {ty} matrix: {} bytes",
                data.len()
            )));
        }
        let row_bytes = data.len() / rows;
        // Planes are never larger than the file's bytes plus 4 per row (padding of scales).
        let rows_per_part = (ctx.max_binding_bytes / (row_bytes as u64 + 4)) as usize;
        if rows_per_part == 0 {
            return Err(Error::Unsupported(format!(
                "one row of a {rows}x{cols} {ty} matrix ({row_bytes} bytes) exceeds the \
                 adapter's storage binding limit ({} bytes)",
                ctx.max_binding_bytes
            )));
        }
        let storage = wgpu::BufferUsages::STORAGE;
        let mut parts = Vec::new();
        for row0 in (0..rows).step_by(rows_per_part) {
            let n = rows_per_part.min(rows - row0);
            let bytes = &data[row0 * row_bytes..(row0 + n) * row_bytes];
            let (quants, scales) = to_planes(ty, n, cols, bytes)?;
            parts.push(MatrixPart {
                row0,
                rows: n,
                quants: ctx.upload("weights", bytemuck::cast_slice(&quants), storage),
                scales: ctx.upload("scales", bytemuck::cast_slice(&scales), storage),
            });
        }
        Ok(GpuMatrix {
            ty,
            rows,
            cols,
            parts,
        })
    }

    /// Bytes of the GPU copy (what one product reads).
    pub fn bytes(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| p.quants.size() + p.scales.size())
            .sum()
    }
}
