//! Weights on the GPU, in the plane layout of [`crate::quant::planes`], which the shaders read
//! with aligned loads and `unpack2x16float`.

use super::GpuContext;
use crate::error::{Error, Result};
use crate::quant::planes::to_planes;
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
