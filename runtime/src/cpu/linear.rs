//! Products with weight matrices stored in any ggml type, read in place from the mapping.
//! A row is dequantized block by block into a small buffer and dotted in f32.

use crate::quant::{dequantize_row, GgmlType};
use rayon::prelude::*;

/// A `[rows, cols]` row-major weight matrix of type `ty` inside a byte buffer.
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

/// Largest block of any type (elements); dequantization works one block at a time.
const MAX_BLOCK: usize = 256;
/// Rows per parallel task in a matvec: enough work to amortize scheduling.
const ROWS_PER_TASK: usize = 32;

impl<'a> WeightMatrix<'a> {
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let n = self.row_bytes();
        &self.data[r * n..(r + 1) * n]
    }

    /// Row `r` as f32 into `out` (`cols` long).
    pub fn dequantize_row_into(&self, r: usize, out: &mut [f32]) {
        // Lengths were validated when the model was loaded.
        let _ = dequantize_row(self.ty, self.row(r), out);
    }

    /// `row(r) · x`, f32 accumulation.
    pub fn dot_row(&self, r: usize, x: &[f32]) -> f32 {
        let row = self.row(r);
        if self.ty == GgmlType::F32 {
            if let Ok(w) = bytemuck::try_cast_slice::<u8, f32>(row) {
                return dot(w, x);
            }
        }
        let block = self.ty.block_size();
        let blocks_per_chunk = (MAX_BLOCK / block).max(1);
        let chunk_elems = block * blocks_per_chunk;
        let chunk_bytes = self.ty.type_size() * blocks_per_chunk;
        let mut buf = [0f32; MAX_BLOCK];
        let mut sum = 0f32;
        for (bytes, xs) in row.chunks(chunk_bytes).zip(x.chunks(chunk_elems)) {
            let n = xs.len();
            let _ = dequantize_row(self.ty, bytes, &mut buf[..n]);
            sum += dot(&buf[..n], xs);
        }
        sum
    }

    /// `y = W·x` (`x`: cols, `y`: rows), parallel over rows.
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) {
        debug_assert_eq!((x.len(), y.len()), (self.cols, self.rows));
        y.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(c, ys)| {
                for (i, y) in ys.iter_mut().enumerate() {
                    *y = self.dot_row(c * ROWS_PER_TASK + i, x);
                }
            });
    }

    /// `Y = X·Wᵀ` for `t` rows of activations (`x`: [t, cols], `y`: [t, rows]). Each weight
    /// row is dequantized once and dotted with every activation row.
    pub fn matmul(&self, x: &[f32], t: usize, y: &mut [f32]) {
        debug_assert_eq!((x.len(), y.len()), (t * self.cols, t * self.rows));
        if t == 1 {
            return self.matvec(x, y);
        }
        // Transposed result [rows, t], computed by row blocks in parallel, then scattered.
        let mut yt = vec![0f32; self.rows * t];
        yt.par_chunks_mut(ROWS_PER_TASK * t)
            .enumerate()
            .for_each(|(c, block)| {
                let mut w = vec![0f32; self.cols];
                for (i, out) in block.chunks_mut(t).enumerate() {
                    self.dequantize_row_into(c * ROWS_PER_TASK + i, &mut w);
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = dot(&w, &x[j * self.cols..(j + 1) * self.cols]);
                    }
                }
            });
        for r in 0..self.rows {
            for j in 0..t {
                y[j * self.rows + r] = yt[r * t + j];
            }
        }
    }
}

/// f32 dot product with 8 independent accumulators (vectorizes well).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}
