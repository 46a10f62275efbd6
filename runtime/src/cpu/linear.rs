//! Products with weight matrices stored in any ggml type, read in place from the mapping.
//! Rows of Q4_0 / Q4_K / Q6_K are dotted with 8-bit activations, Q8_0 rows with 16-bit ones,
//! F32 / F16 / BF16 rows with f32 activations, by the best SIMD kernel of this CPU; other types
//! are dequantized block by block (scalar). Which kernel runs a product is chosen in one place,
//! [`WeightMatrix::path`] (`liger info --kernels` prints it per type and token count).

use super::act::{ActForms, ACT_BLOCK};
pub use super::act::{ActivationBuffers, Activations};
use super::gemm::{with_panel_buf, PanelGemm, PanelKernel};
use super::kernels::{GroupKernel, RowDot, RowDot4, RowsDot4, SimdLevel, TypeKernels};
use super::packed::{self, GROUP_ROWS};
use super::path::Held;
pub use super::path::Path;
use super::pool::{Disjoint, WorkerPool, TASKS_PER_THREAD};
use crate::quant::{dequantize_row, GgmlType};

/// A `[rows, cols]` row-major weight matrix of type `ty` inside a byte buffer.
#[derive(Clone, Copy)]
pub struct WeightMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    /// This type's kernels on this CPU, those the matrix's width allows.
    kernels: TypeKernels,
    /// The matrix repacked in groups of 8 rows for `kernels.groups` ([`packed`]; Q4_0, Q8_0,
    /// Q4_K and Q6_K on x86, Q4_0 on NEON with dot products): used for decode (and for Q6_K's
    /// prefill) and to pack the prefill panels, instead of `data`.
    packed: Option<&'a [u8]>,
}

/// The path a matrix of `ty` with `cols` columns takes over each of `tokens` on `level`, as the
/// CPU backend opens it (repacked where it repacks, unless `repack` is false): what
/// `liger info --kernels` prints.
pub fn planned_paths(
    ty: GgmlType,
    cols: usize,
    level: SimdLevel,
    repack: bool,
    tokens: &[usize],
) -> Vec<Path> {
    let rows = GROUP_ROWS;
    let data = vec![0u8; rows * (cols / ty.block_size()) * ty.type_size()];
    let packed = vec![0u8; packed::packed_len(ty, rows, cols)];
    let mut m = WeightMatrix::new(ty, rows, cols, &data, level);
    if repack && WeightMatrix::repacks(ty, cols, level) {
        m = m.with_packed(&packed, level);
    }
    tokens.iter().map(|&t| m.planned_path(t)).collect()
}

/// Fewest tokens for which packing panels pays off (the packing reads each row once).
const PANEL_MIN_TOKENS: usize = 16;

/// Largest block of any type (elements); the fallback dequantizes one chunk at a time.
const MAX_BLOCK: usize = 256;
/// Rows per parallel task: enough work to amortize scheduling.
const ROWS_PER_TASK: usize = 16;

impl<'a> WeightMatrix<'a> {
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8], level: SimdLevel) -> Self {
        let mut kernels = TypeKernels::of(ty, level);
        // The integer kernels read whole blocks of 32 activations; panels whole weight blocks.
        let act_blocks = cols % ACT_BLOCK == 0;
        kernels.row = kernels
            .row
            .filter(|k| matches!(k, RowDot::Float(_)) || act_blocks);
        kernels.four_tokens = kernels.four_tokens.filter(|_| act_blocks);
        kernels.four_rows = kernels.four_rows.filter(|_| act_blocks);
        kernels.panels = kernels.panels.filter(|_| cols % ty.block_size() == 0);
        WeightMatrix {
            ty,
            rows,
            cols,
            data,
            kernels,
            packed: None,
        }
    }

    /// Whether rows of `ty` are repacked at load for `level` ([`packed::pack`]).
    pub fn repacks(ty: GgmlType, cols: usize, level: SimdLevel) -> bool {
        packed::has_layout(ty, cols) && TypeKernels::of(ty, level).groups.is_some()
    }

    /// This matrix with its repacked copy (`packed::packed_len` bytes), where `repacks`.
    pub fn with_packed(mut self, data: &'a [u8], level: SimdLevel) -> Self {
        if Self::repacks(self.ty, self.cols, level)
            && data.len() == packed::packed_len(self.ty, self.rows, self.cols)
        {
            self.packed = Some(data);
        }
        self
    }

    /// The forms of the activations this matrix's products over `t` tokens read.
    pub fn activation_forms(&self, t: usize) -> ActForms {
        // The group kernel runs unless panels do (Q4_0's prefill).
        let panels = self.kernels.panels.is_some();
        let groups = self.packed.is_some() && (t < PANEL_MIN_TOKENS || !panels);
        ActForms::of(&self.kernels, groups)
    }

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

    /// `row(r) · x_t` for activation row `t` of `x` (`cols` wide).
    #[inline]
    fn dot(&self, r: usize, x: &Activations, t: usize) -> f32 {
        let blocks = self.cols / ACT_BLOCK;
        match self.kernels.row {
            Some(RowDot::Quant(f)) if x.q8.len() >= (t + 1) * blocks => {
                f(self.row(r), &x.q8[t * blocks..(t + 1) * blocks])
            }
            Some(RowDot::Quant16(f)) if x.q16.len() >= (t + 1) * blocks => {
                f(self.row(r), &x.q16[t * blocks..(t + 1) * blocks])
            }
            Some(RowDot::Float(f)) => f(self.row(r), &x.f32[t * self.cols..(t + 1) * self.cols]),
            _ => self.dot_dequantized(r, &x.f32[t * self.cols..(t + 1) * self.cols]),
        }
    }

    /// `row(r)` against activation rows `j..j+4`, if a four-token kernel applies.
    #[inline]
    fn dot4(&self, r: usize, x: &Activations, j: usize) -> Option<[f32; 4]> {
        let b = self.cols / ACT_BLOCK;
        let rows = |k: usize| (j + k) * b..(j + k + 1) * b;
        match self.kernels.four_tokens? {
            RowDot4::Quant(f) if x.q8.len() >= (j + 4) * b => Some(f(
                self.row(r),
                [
                    &x.q8[rows(0)],
                    &x.q8[rows(1)],
                    &x.q8[rows(2)],
                    &x.q8[rows(3)],
                ],
            )),
            RowDot4::Quant16(f) if x.q16.len() >= (j + 4) * b => Some(f(
                self.row(r),
                [
                    &x.q16[rows(0)],
                    &x.q16[rows(1)],
                    &x.q16[rows(2)],
                    &x.q16[rows(3)],
                ],
            )),
            _ => None,
        }
    }

    /// Fallback: dequantize the row chunk by chunk and dot in f32.
    fn dot_dequantized(&self, r: usize, x: &[f32]) -> f32 {
        let row = self.row(r);
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

    /// The four-row kernel usable on `x` for `t` tokens, if this matrix has one.
    fn rows4_for(&self, x: &Activations, t: usize) -> Option<RowsDot4> {
        let blocks = self.cols / ACT_BLOCK;
        self.kernels.four_rows.filter(|k| match k {
            RowsDot4::Quant(_) => x.q8.len() >= t * blocks,
            RowsDot4::Quant16(_) => x.q16.len() >= t * blocks,
        })
    }

    /// The repacked rows and their kernel, if usable on `x` for `t` tokens.
    fn packed_for(&self, x: &Activations, t: usize) -> Option<(&'a [u8], GroupKernel)> {
        let need = t * (self.cols / ACT_BLOCK);
        let groups = self.packed.zip(self.kernels.groups);
        groups.filter(|(_, k)| match k {
            GroupKernel::Quant(_) => x.q8.len() >= need,
            GroupKernel::Quant16(_) => x.q16.len() >= need,
        })
    }

    /// The path a product over `t` tokens of `x` takes.
    pub fn path(&self, x: &Activations, t: usize) -> Path {
        let blocks = self.cols / ACT_BLOCK;
        let held = Held {
            q8: x.q8.len() >= t * blocks,
            q16: x.q16.len() >= t * blocks,
            none: x.q8.is_empty() && x.q16.is_empty(),
        };
        self.choose(t, held)
    }

    /// The path of `t` tokens when the activations come in the forms this matrix asks for
    /// ([`Self::activation_forms`]), as the model step makes them: what `liger info --kernels`
    /// shows.
    pub fn planned_path(&self, t: usize) -> Path {
        let forms = self.activation_forms(t);
        let held = Held {
            q8: forms.q8,
            q16: forms.q16,
            none: !forms.q8 && !forms.q16,
        };
        self.choose(t, held)
    }

    /// Every choice of kernel, in one place: the multi-row kernels below [`PANEL_MIN_TOKENS`]
    /// tokens (each weight row read once for all of them), panels from there, a fallback for
    /// what a type lacks.
    fn choose(&self, t: usize, held: Held) -> Path {
        let has = |sixteen: bool| if sixteen { held.q16 } else { held.q8 };
        let k = &self.kernels;
        let quantized_rows = !matches!(k.row, Some(RowDot::Float(_)));
        if t > 1 && quantized_rows && held.none {
            return Path::Dequantized;
        }
        let packed = self.packed.is_some()
            && k.groups
                .is_some_and(|k| has(matches!(k, GroupKernel::Quant16(_))));
        let rows4 = k
            .four_rows
            .is_some_and(|k| has(matches!(k, RowsDot4::Quant16(_))));
        // Row stretches for one token, a few with a multi-row kernel, or any number with
        // groups and no panels (repacked Q6_K: its file rows are not read again).
        if t == 1 || (t < PANEL_MIN_TOKENS && (rows4 || packed)) || (packed && k.panels.is_none()) {
            return match (packed, rows4) {
                (true, _) => Path::Groups,
                (false, true) => Path::FourRows,
                (false, false) => Path::OneRow,
            };
        }
        let panels = k.panels.is_some_and(|(nr, kernel)| {
            has(matches!(kernel, PanelKernel::I16(_))) && nr <= MAX_PANEL_ROWS
        });
        if t >= PANEL_MIN_TOKENS && panels {
            return Path::Panels;
        }
        let four = k
            .four_tokens
            .is_some_and(|k| has(matches!(k, RowDot4::Quant16(_))));
        if four {
            Path::FourTokens
        } else {
            Path::OneToken
        }
    }

    /// `Y = X·Wᵀ` for `t` activation rows (`y`: [t, rows]), by the path [`Self::path`] picks;
    /// parallel over blocks of weight rows, each weight row read once for every token.
    pub fn matmul(&self, pool: &WorkerPool, x: &Activations, t: usize, y: &mut [f32]) {
        debug_assert_eq!((x.f32.len(), y.len()), (t * self.cols, t * self.rows));
        match self.path(x, t) {
            Path::Dequantized => self.matmul_dequantized(pool, x.f32, t, y),
            path @ (Path::Groups | Path::FourRows | Path::OneRow) => {
                self.matmul_by_rows(pool, x, t, path, y)
            }
            Path::Panels => self.matmul_panels(pool, x, t, y),
            Path::FourTokens | Path::OneToken => self.matmul_by_tokens(pool, x, t, y),
        }
    }

    /// Blocks of rows per task, each row against four tokens at a time where the type has
    /// such a kernel, the rest one by one.
    fn matmul_by_tokens(&self, pool: &WorkerPool, x: &Activations, t: usize, y: &mut [f32]) {
        // Tasks own blocks of weight rows and write their columns of y directly.
        let rows = self.rows;
        let out = Disjoint::new(y);
        pool.run(rows.div_ceil(ROWS_PER_TASK), &|c| {
            for r in c * ROWS_PER_TASK..((c + 1) * ROWS_PER_TASK).min(rows) {
                let mut j = 0;
                while j + 4 <= t {
                    let Some(four) = self.dot4(r, x, j) else {
                        break;
                    };
                    for (k, v) in four.iter().enumerate() {
                        // SAFETY: element (j + k, r) belongs to this task's rows only.
                        unsafe { out.slice((j + k) * rows + r..(j + k) * rows + r + 1)[0] = *v };
                    }
                    j += 4;
                }
                for jj in j..t {
                    // SAFETY: as above.
                    unsafe { out.slice(jj * rows + r..jj * rows + r + 1)[0] = self.dot(r, x, jj) };
                }
            }
        });
    }
}

impl WeightMatrix<'_> {
    /// `Y = X·Wᵀ` with f32 activations ([`Activations::unquantized`]): each row dequantized
    /// once, then dotted with every token in f32.
    fn matmul_dequantized(&self, pool: &WorkerPool, x: &[f32], t: usize, y: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        let out = Disjoint::new(y);
        pool.run(rows.div_ceil(ROWS_PER_TASK), &|c| {
            let mut row = vec![0f32; cols];
            for r in c * ROWS_PER_TASK..((c + 1) * ROWS_PER_TASK).min(rows) {
                self.dequantize_row_into(r, &mut row);
                for (j, xs) in x.chunks_exact(cols).take(t).enumerate() {
                    // SAFETY: element (j, r) belongs to this task's rows only.
                    unsafe { out.slice(j * rows + r..j * rows + r + 1)[0] = dot(&row, xs) };
                }
            }
        });
    }
}

/// The products of several matrices with the same input (q, k, v; gate, up), each `y_i =
/// X·W_iᵀ` as [`WeightMatrix::matmul`] gives it. When every one takes the row-by-row path
/// (decode) their row stretches are shared out in one parallel job: one fork/join instead of
/// one per matrix.
pub fn matmul_together<const M: usize>(
    pool: &WorkerPool,
    x: &Activations,
    t: usize,
    products: [(&WeightMatrix<'_>, &mut [f32]); M],
) {
    let paths = products.each_ref().map(|(m, _)| m.path(x, t));
    if !paths.iter().all(|p| p.by_rows()) {
        for (m, y) in products {
            m.matmul(pool, x, t, y);
        }
        return;
    }
    let chunks = products.each_ref().map(|(m, _)| m.rows_chunk(pool));
    let mut first = [0; M];
    let mut total = 0;
    for (i, (m, _)) in products.iter().enumerate() {
        first[i] = total;
        total += m.rows.div_ceil(chunks[i]);
    }
    let outs = products.map(|(m, y)| (m, Disjoint::new(y)));
    pool.run(total, &|task| {
        let i = first.iter().rposition(|&f| f <= task).unwrap_or(0);
        let (m, out) = &outs[i];
        let c = task - first[i];
        let (r0, r1) = (c * chunks[i], ((c + 1) * chunks[i]).min(m.rows));
        m.rows_task(x, t, paths[i], out, r0, r1);
    });
}

impl WeightMatrix<'_> {
    /// Weight rows per task of [`Self::matmul_by_rows`]: a few stretches per thread keep each
    /// thread's weight reads sequential (hardware prefetch) while still balancing the load.
    fn rows_chunk(&self, pool: &WorkerPool) -> usize {
        self.rows
            .div_ceil(pool.threads() * TASKS_PER_THREAD)
            .max(ROWS_PER_TASK)
            .next_multiple_of(GROUP_ROWS)
    }

    /// `Y = X·Wᵀ` for a few tokens (decode of one sequence or of several): each task owns a
    /// stretch of weight rows ([`Self::rows_chunk`]) and runs every token against four rows at
    /// a time (the four-row kernel; the rows are read from memory once for all the tokens),
    /// the rest row by row. A token's result does not depend on how many are run together.
    fn matmul_by_rows(
        &self,
        pool: &WorkerPool,
        x: &Activations,
        t: usize,
        path: Path,
        y: &mut [f32],
    ) {
        let chunk = self.rows_chunk(pool);
        let out = Disjoint::new(y);
        pool.run(self.rows.div_ceil(chunk), &|c| {
            let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(self.rows));
            self.rows_task(x, t, path, &out, r0, r1);
        });
    }

    /// Rows `r0..r1` (r0 a multiple of 8) of `out` ([t, rows]) for every token, by `path`
    /// (groups, four rows or one).
    fn rows_task(
        &self,
        x: &Activations,
        t: usize,
        path: Path,
        out: &Disjoint<'_, f32>,
        r0: usize,
        r1: usize,
    ) {
        let (rows, blocks) = (self.rows, self.cols / ACT_BLOCK);
        if path == Path::Groups {
            if let Some(packed) = self.packed_for(x, t) {
                self.groups_task(x, t, packed, out, r0, r1);
                return;
            }
        }
        let mut r = r0;
        let rows4 = if path == Path::FourRows {
            self.rows4_for(x, t)
        } else {
            None
        };
        if let Some(f) = rows4 {
            let mut sums = [[0f32; 4]; PANEL_MIN_TOKENS];
            let sums = &mut sums[..t];
            while r + 4 <= r1 {
                let four = [
                    self.row(r),
                    self.row(r + 1),
                    self.row(r + 2),
                    self.row(r + 3),
                ];
                match f {
                    RowsDot4::Quant(f) => f(four, &x.q8[..t * blocks], blocks, sums),
                    RowsDot4::Quant16(f) => f(four, &x.q16[..t * blocks], blocks, sums),
                }
                for (j, s) in sums.iter().enumerate() {
                    // SAFETY: rows r..r+4 of every token belong to this task only.
                    unsafe { out.slice(j * rows + r..j * rows + r + 4) }.copy_from_slice(s);
                }
                r += 4;
            }
        }
        for r in r..r1 {
            for j in 0..t {
                // SAFETY: as above.
                unsafe { out.slice(j * rows + r..j * rows + r + 1)[0] = self.dot(r, x, j) };
            }
        }
    }

    /// Rows `r0..r1` (r0 a multiple of 8) of `out` ([t, rows]) for every token, from the
    /// repacked groups: whole groups (the last group's padding rows are dropped), for tiles of
    /// tokens whose activations stay in cache while the stretch of rows is swept.
    fn groups_task(
        &self,
        x: &Activations,
        t: usize,
        (data, kernel): (&[u8], GroupKernel),
        out: &Disjoint<'_, f32>,
        r0: usize,
        r1: usize,
    ) {
        let (rows, blocks) = (self.rows, self.cols / ACT_BLOCK);
        let mut sums = [[0f32; GROUP_ROWS]; PANEL_MIN_TOKENS];
        let group_bytes = packed::group_bytes(self.ty, self.cols);
        for t0 in (0..t).step_by(PANEL_MIN_TOKENS) {
            let tile = &mut sums[..(t - t0).min(PANEL_MIN_TOKENS)];
            let span = t0 * blocks..(t0 + tile.len()) * blocks;
            for g in r0 / GROUP_ROWS..r1.div_ceil(GROUP_ROWS) {
                let group = &data[g * group_bytes..(g + 1) * group_bytes];
                match kernel {
                    GroupKernel::Quant(f) => {
                        let broadcast = x.broadcast.get(span.clone()).unwrap_or(&[]);
                        f(group, &x.q8[span.clone()], broadcast, blocks, tile)
                    }
                    GroupKernel::Quant16(f) => {
                        let broadcast = x.broadcast16.get(span.clone()).unwrap_or(&[]);
                        f(group, &x.q16[span.clone()], broadcast, blocks, tile)
                    }
                }
                let (first, lanes) = (g * GROUP_ROWS, GROUP_ROWS.min(r1 - g * GROUP_ROWS));
                for (j, s) in tile.iter().enumerate() {
                    let at = (t0 + j) * rows + first;
                    // SAFETY: rows first..first+lanes of every token belong to this task.
                    unsafe { out.slice(at..at + lanes) }.copy_from_slice(&s[..lanes]);
                }
            }
        }
    }

    /// `Y = X·Wᵀ` through packed panels of `gemm.nr` rows, one panel per task ([`Path::Panels`]:
    /// the matrix has panels and `x` the form they read).
    fn matmul_panels(&self, pool: &WorkerPool, x: &Activations, t: usize, y: &mut [f32]) {
        let Some((nr, kernel)) = self.kernels.panels else {
            return self.matmul_by_tokens(pool, x, t, y);
        };
        let gemm = PanelGemm::new(self.ty, nr, kernel);
        let (rows, nr) = (self.rows, gemm.nr);
        // A task's panels span whole 64-byte lines of each output row where the rows allow
        // (two 8-row panels): tasks on different threads then do not write halves of the
        // same cache line token after token.
        let panels_per_task = (TASK_ROW_BYTES / (4 * nr)).max(1);
        let out = Disjoint::new(y);
        pool.run(rows.div_ceil(nr * panels_per_task), &|task| {
            for p in task * panels_per_task..((task + 1) * panels_per_task).min(rows.div_ceil(nr)) {
                self.panel_task(gemm, x, t, p, &out);
            }
        });
    }

    /// Panel `p` of a prefill product (rows `p·nr ..`) over `t` tokens into `out` (`[t, rows]`).
    fn panel_task(
        &self,
        gemm: PanelGemm,
        x: &Activations,
        t: usize,
        p: usize,
        out: &Disjoint<f32>,
    ) {
        let (rows, nr, blocks) = (self.rows, gemm.nr, self.cols / ACT_BLOCK);
        {
            let r0 = p * nr;
            let lanes = nr.min(rows - r0);
            let mut panel_rows: [&[u8]; MAX_PANEL_ROWS] = [&[]; MAX_PANEL_ROWS];
            for (i, r) in panel_rows[..lanes].iter_mut().enumerate() {
                *r = self.row(r0 + i);
            }
            with_panel_buf(|buf| {
                match self.packed {
                    Some(data) => gemm.pack_from_groups(data, blocks, rows, r0, buf),
                    None => gemm.pack(&panel_rows[..lanes], blocks, buf),
                }
                let (panel, tile) = buf.split(nr, blocks, t);
                match gemm.kernel {
                    PanelKernel::U8(f) => f(&panel, &x.q8[..t * blocks], tile),
                    PanelKernel::I16(f) => f(&panel, &x.q16[..t * blocks], tile),
                }
                for (tt, result) in tile.chunks_exact(nr).enumerate() {
                    let at = tt * rows + r0;
                    // SAFETY: columns r0..r0+lanes of every output row belong to this task.
                    let dst = unsafe { out.slice(at..at + lanes) };
                    copy_lanes(dst, &result[..lanes]);
                }
            });
        }
    }
}

/// Bytes of an output row one panel task writes (a cache line).
const TASK_ROW_BYTES: usize = 64;

/// `dst = src` for a panel's output lanes, inlined for full panels (a memcpy call per
/// 64-byte row costs as much as the row's products).
#[inline(always)]
fn copy_lanes(dst: &mut [f32], src: &[f32]) {
    match (
        <&mut [f32; 16]>::try_from(&mut *dst),
        <&[f32; 16]>::try_from(src),
    ) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => match (
            <&mut [f32; 8]>::try_from(&mut *dst),
            <&[f32; 8]>::try_from(src),
        ) {
            (Ok(d), Ok(s)) => *d = *s,
            _ => dst.copy_from_slice(src),
        },
    }
}

/// Widest panel of any kernel.
const MAX_PANEL_ROWS: usize = 16;

/// f32 dot product with 8 independent accumulators (vectorizes well).
#[inline(always)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize;
    use crate::testing::values;

    /// q, k, v (or gate, up) in one job give exactly what each gives alone, for every type and
    /// SIMD level, on one and two threads, for one token, a few (four-row kernels over several
    /// tokens) and a prompt's worth (each alone).
    #[test]
    fn products_together_equal_each_alone() {
        let cols = 256;
        let shapes = [96, 32, 36];
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::Q6_K,
            GgmlType::F16,
        ] {
            let data: Vec<Vec<u8>> = shapes
                .iter()
                .enumerate()
                .map(|(i, &rows)| quantize(ty, &values(i as u64 + 1, rows * cols, 1.0)).unwrap())
                .collect();
            for &level in SimdLevel::available() {
                let ms: Vec<WeightMatrix> = shapes
                    .iter()
                    .zip(&data)
                    .map(|(&rows, d)| WeightMatrix::new(ty, rows, cols, d, level))
                    .collect();
                for threads in [1, 2] {
                    let pool = WorkerPool::new(threads).unwrap();
                    for t in [1, 4, 20] {
                        let x = values(9, t * cols, 2.0);
                        let mut buffers = ActivationBuffers::default();
                        let input = Activations::new(&x, &mut buffers, &pool);
                        let alone: Vec<Vec<f32>> = ms
                            .iter()
                            .map(|m| {
                                let mut y = vec![0.0; t * m.rows];
                                m.matmul(&pool, &input, t, &mut y);
                                y
                            })
                            .collect();
                        let mut got: Vec<Vec<f32>> =
                            ms.iter().map(|m| vec![f32::NAN; t * m.rows]).collect();
                        let [a, b, c] = &mut got[..] else {
                            unreachable!()
                        };
                        matmul_together(&pool, &input, t, [(&ms[0], a), (&ms[1], b), (&ms[2], c)]);
                        for (i, (g, w)) in got.iter().zip(&alone).enumerate() {
                            let what =
                                format!("{ty} {} {threads} threads {t} tokens", level.name());
                            assert_eq!(
                                g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                "{what}: product {i} together vs alone"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod unquantized_tests {
    use super::packed_tests::quantized_and_packed;
    use super::*;
    use crate::testing::{assert_products, products_mismatch, values};

    /// With unquantized activations (the GPU self-test's reference) a product is the
    /// dequantized weights times the f32 activations (within f32 sums in another order: 1e-5
    /// of Σ|w·x|), for every quantized type and SIMD level, read in place or repacked, for one
    /// token (row by row), a few and a prompt's worth (each row dequantized once) — where the
    /// 8-bit activations of the usual kernels land further off.
    #[test]
    fn unquantized_products_are_the_dequantized_weights_in_f32() {
        let (rows, cols) = (40, 512);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let (data, dense, packed) = quantized_and_packed(ty, 3, rows, cols);
            for &level in SimdLevel::available() {
                let in_place = WeightMatrix::new(ty, rows, cols, &data, level);
                let repacked = in_place.with_packed(&packed, level);
                for threads in [1, 2] {
                    let pool = WorkerPool::new(threads).unwrap();
                    for t in [1, 3, 20] {
                        let x = values(7, t * cols, 2.0);
                        for (m, how) in [(&in_place, "in place"), (&repacked, "repacked")] {
                            let mut y = vec![f32::NAN; t * rows];
                            m.matmul(&pool, &Activations::unquantized(&x), t, &mut y);
                            let what =
                                format!("{ty} {how} {} {threads} threads {t} tokens", level.name());
                            assert_products(&what, &dense, &x, rows, &y);
                        }
                    }
                }
            }
            if ty == GgmlType::Q8_0 {
                continue; // its 16-bit activations may land within 1e-5 too
            }
            // The check tells the two apart: 8-bit activations miss it somewhere.
            let pool = WorkerPool::new(1).unwrap();
            let m = WeightMatrix::new(ty, rows, cols, &data, SimdLevel::Scalar);
            let x = values(7, cols, 2.0);
            let mut buffers = ActivationBuffers::default();
            let mut y = vec![0.0; rows];
            m.matmul(&pool, &Activations::new(&x, &mut buffers, &pool), 1, &mut y);
            assert!(
                products_mismatch(&dense, &x, rows, &y).is_some(),
                "{ty}: 8-bit activations pass the 1e-5 check"
            );
        }
    }
}

#[cfg(test)]
mod packed_tests {
    use super::*;
    use crate::quant::quantize;
    use crate::testing::values;

    /// A `[rows, cols]` matrix of `ty` from seeded values: its bytes, dequantized, repacked.
    pub(super) fn quantized_and_packed(
        ty: GgmlType,
        seed: u64,
        rows: usize,
        cols: usize,
    ) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
        let data = quantize(ty, &values(seed, rows * cols, 1.0)).unwrap();
        let dense = crate::quant::dequantize(ty, &data).unwrap();
        let mut packed = vec![0u8; packed::packed_len(ty, rows, cols)];
        packed::pack(ty, &data, rows, cols, &mut packed);
        (data, dense, packed)
    }

    /// A Q4_0, Q8_0, Q4_K or Q6_K matrix read repacked gives the products of the matrix read
    /// in place: the prefill products of those with panels bit-equal (the same panels, packed
    /// from the groups), their decode products and all of Q6_K's (the group kernel, in tiles of
    /// tokens past 16) within 2e-5·Σ|w·x| of them (another kernel: the sums in another order).
    #[test]
    fn repacked_matrices_give_the_products_of_the_matrix_in_place() {
        let (rows, cols) = (44, 512);
        let mut tested = 0;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let (data, dense, packed) = quantized_and_packed(ty, 5, rows, cols);
            for &level in SimdLevel::available() {
                if !WeightMatrix::repacks(ty, cols, level) {
                    continue;
                }
                tested += 1;
                let in_place = WeightMatrix::new(ty, rows, cols, &data, level);
                let repacked = in_place.with_packed(&packed, level);
                for threads in [1, 2] {
                    let pool = WorkerPool::new(threads).unwrap();
                    for t in [1, 3, 20, 37] {
                        let x = values(11, t * cols, 2.0);
                        let mut buffers = ActivationBuffers::default();
                        let input = Activations::new(&x, &mut buffers, &pool);
                        let (mut a, mut b) = (vec![0.0; t * rows], vec![0.0; t * rows]);
                        in_place.matmul(&pool, &input, t, &mut a);
                        repacked.matmul(&pool, &input, t, &mut b);
                        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                            let what = format!(
                                "{ty} {} {threads} threads {t} tokens, y[{i}]",
                                level.name()
                            );
                            if t >= PANEL_MIN_TOKENS && ty != GgmlType::Q6_K {
                                assert_eq!(p.to_bits(), q.to_bits(), "{what}: panels");
                            } else {
                                let (tok, r) = (i / rows, i % rows);
                                let magnitude: f32 = dense[r * cols..(r + 1) * cols]
                                    .iter()
                                    .zip(&x[tok * cols..(tok + 1) * cols])
                                    .map(|(w, x)| (w * x).abs())
                                    .sum();
                                assert!((p - q).abs() <= 2e-5 * magnitude, "{what}: {p} vs {q}");
                            }
                        }
                    }
                }
            }
        }
        if cfg!(target_arch = "x86_64") && SimdLevel::available().contains(&SimdLevel::Avx2) {
            assert!(
                tested >= 3,
                "Q4_0, Q8_0 and Q6_K are repacked on this x86 CPU"
            );
        }
    }
}
