//! Matrix-matrix products for prefill (`Y = X·Wᵀ` over a chunk of tokens), blocked for SIMD.
//!
//! The file's weights stay where they are (zero copy): each task copies a *panel* of `NR`
//! consecutive weight rows into a small per-thread buffer, in an interleaved integer layout a
//! SIMD register holds one lane per row of, and then runs every token of the chunk against
//! it. The copy is read once per chunk (256 tokens), so it costs ~1/256 of the products.
//!
//! Panel layouts, per 32-element block `b` of the rows (`lane` = row within the panel):
//! - [`PanelForm::U8`] (Q4_0, Q4_K; 8-bit activations): 8 groups of 4 elements, the word
//!   `w[(b·8 + g)·NR + lane]` holds `q(lane, 32b + 4g + j)`, j = 0..4, as unsigned bytes, and
//!   `weight = scale[b·NR+lane] · q − min[b·NR+lane]`;
//! - [`PanelForm::I16`] (Q8_0; 16-bit activations): 16 groups of 2 elements, the word
//!   `w[(b·16 + g)·NR + lane]` holds `q(lane, 32b + 2g + j)`, j = 0..2, as i16;
//!   `weight = scale · q`.
//!
//! A register lane then accumulates one row's dot product: `vpdpbusd`/`vpdpwssd` (or
//! `pmaddubsw`/`pmaddwd` on AVX2; `sdot` by element or widening multiplies on NEON) of the
//! group with the token's 4 (2) activations broadcast.

use super::kernels::TypeKernels;
pub use super::panel::{Panel, PanelForm, PanelKernel};
use super::simd::SimdLevel;
use crate::quant::{scale_min_k4, GgmlType};
use half::f16;
use std::cell::RefCell;

/// Elements per block of the panel (and of the activations).
pub const BLOCK: usize = 32;

/// Which panel kernel multiplies rows of `ty` at `level`, and its panel width.
#[derive(Clone, Copy)]
pub struct PanelGemm {
    pub nr: usize,
    pub kernel: PanelKernel,
    ty: GgmlType,
}

impl PanelGemm {
    /// The panel GEMM for rows of `ty` at `level`, where one exists (AVX2, AVX-512 VNNI, NEON,
    /// NEON dotprod; Q4_0, Q4_K, Q8_0). Other types and levels use the row kernels token by token.
    pub fn for_type(ty: GgmlType, level: SimdLevel) -> Option<PanelGemm> {
        let (nr, kernel) = TypeKernels::of(ty, level).panels?;
        Some(PanelGemm { nr, kernel, ty })
    }

    /// The panel GEMM of rows of `ty` by a panel kernel of `nr` rows.
    pub fn new(ty: GgmlType, nr: usize, kernel: PanelKernel) -> PanelGemm {
        PanelGemm { nr, kernel, ty }
    }

    pub fn form(&self) -> PanelForm {
        match self.kernel {
            PanelKernel::U8(_) => PanelForm::U8,
            PanelKernel::I16(_) => PanelForm::I16,
        }
    }

    /// Packs `rows` (each `blocks · 32` elements of type `ty`, at most `nr` of them; missing
    /// lanes are zero) into `buf`.
    pub fn pack(&self, rows: &[&[u8]], blocks: usize, buf: &mut PanelBuf) {
        let nr = self.nr;
        assert!(rows.len() <= nr, "a panel holds at most {nr} rows");
        buf.scale.clear();
        buf.scale.resize(blocks * nr, 0.0);
        buf.min.clear();
        buf.min.resize(blocks * nr, 0.0);
        let groups = match self.form() {
            PanelForm::U8 => 8,
            PanelForm::I16 => 16,
        };
        buf.w.clear();
        buf.w.resize(blocks * groups * nr, 0);
        let mut groups = [0u32; 16];
        for (lane, row) in rows.iter().enumerate() {
            for b in 0..blocks {
                let (scale, min, n) = match self.ty {
                    GgmlType::Q4_0 => unpack_q4_0(row, b, &mut groups),
                    GgmlType::Q4_K => unpack_q4_k(row, b, &mut groups),
                    _ => unpack_q8_0(row, b, &mut groups),
                };
                buf.scale[b * nr + lane] = scale;
                buf.min[b * nr + lane] = min;
                for (g, &word) in groups[..n].iter().enumerate() {
                    buf.w[(b * n + g) * nr + lane] = word;
                }
            }
        }
    }
}

impl PanelGemm {
    /// Packs the panel of rows `r0 .. r0 + nr` (r0 a multiple of 8) of a `rows`-row Q4_0 or
    /// Q4_K (U8 form) or Q8_0 (I16 form) matrix repacked in groups of 8
    /// ([`crate::cpu::packed`]): the same panel [`Self::pack`] makes from the rows, without
    /// reading the file's copy.
    pub fn pack_from_groups(
        &self,
        packed: &[u8],
        blocks: usize,
        rows: usize,
        r0: usize,
        buf: &mut PanelBuf,
    ) {
        use crate::cpu::packed::{group_bytes, GROUP_ROWS};
        let nr = self.nr;
        assert!(
            matches!(self.ty, GgmlType::Q4_0 | GgmlType::Q4_K | GgmlType::Q8_0)
                && r0 % GROUP_ROWS == 0
                && nr % GROUP_ROWS == 0,
            "a Q4_0, Q4_K or Q8_0 panel of whole groups"
        );
        let words = if self.ty == GgmlType::Q8_0 { 16 } else { 8 };
        for v in [&mut buf.scale, &mut buf.min] {
            v.clear();
            v.resize(blocks * nr, 0.0);
        }
        buf.w.clear();
        buf.w.resize(blocks * words * nr, 0);
        let size = group_bytes(self.ty, blocks * BLOCK);
        // Whole groups at a time (8 lanes: a panel of 16 rows is two groups side by side),
        // in loops over 8 lanes that vectorize.
        for half in 0..nr / GROUP_ROWS {
            let g = r0 / GROUP_ROWS + half;
            if g * GROUP_ROWS >= rows {
                break;
            }
            let at = half * GROUP_ROWS;
            let group = &packed[g * size..(g + 1) * size];
            for b in 0..blocks {
                let (scale, min) = (&mut buf.scale[b * nr + at..], &mut buf.min[b * nr + at..]);
                let weights = block_scales(self.ty, group, b, &mut scale[..8], &mut min[..8]);
                if self.ty == GgmlType::Q8_0 {
                    // Register p: 8 rows' pair (2p, 2p + 1) of i8 → a word of two i16.
                    for (p, reg) in weights.chunks_exact(2 * GROUP_ROWS).enumerate() {
                        let out = &mut buf.w[(b * 16 + p) * nr + at..][..GROUP_ROWS];
                        for (o, pair) in out.iter_mut().zip(reg.chunks_exact(2)) {
                            let (lo, hi) =
                                (pair[0] as i8 as i16 as u16, pair[1] as i8 as i16 as u16);
                            *o = lo as u32 | (hi as u32) << 16;
                        }
                    }
                    continue;
                }
                for (k, reg) in weights.chunks_exact(4 * GROUP_ROWS).enumerate() {
                    let lo = &mut buf.w[(b * 8 + k) * nr + at..][..GROUP_ROWS];
                    for (o, word) in lo.iter_mut().zip(reg.chunks_exact(4)) {
                        *o = u32::from_le_bytes([word[0], word[1], word[2], word[3]]) & NIBBLES;
                    }
                    let hi = &mut buf.w[(b * 8 + k + 4) * nr + at..][..GROUP_ROWS];
                    for (o, word) in hi.iter_mut().zip(reg.chunks_exact(4)) {
                        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                        *o = (word >> 4) & NIBBLES;
                    }
                }
            }
        }
    }
}

/// Block `b` (32 elements) of a repacked group of `ty`: its 8 rows' scale and min into
/// `scale`, `min` (as [`PanelGemm::pack`] computes them from the rows) and its weight bytes.
fn block_scales<'a>(
    ty: GgmlType,
    group: &'a [u8],
    b: usize,
    scale: &mut [f32],
    min: &mut [f32],
) -> &'a [u8] {
    use crate::cpu::packed::{
        GROUP_BLOCK_BYTES, Q4K_GROUP_SUPER_BYTES, Q4K_NIBBLES_AT, Q8_0_GROUP_BLOCK_BYTES,
    };
    match ty {
        GgmlType::Q4_K => {
            let (sup, j) = (&group[b / 8 * Q4K_GROUP_SUPER_BYTES..], b % 8);
            for lane in 0..8 {
                let (d, dmin) = (f16_at(sup, 2 * lane), f16_at(sup, 16 + 2 * lane));
                let (sc, m) = (sup[32 + 16 * j + 2 * lane], sup[33 + 16 * j + 2 * lane]);
                scale[lane] = d * sc as f32;
                min[lane] = dmin * m as f32;
            }
            &sup[Q4K_NIBBLES_AT + 128 * j..][..128]
        }
        GgmlType::Q8_0 => {
            let blk = &group[b * Q8_0_GROUP_BLOCK_BYTES..][..Q8_0_GROUP_BLOCK_BYTES];
            for lane in 0..8 {
                scale[lane] = f16_at(blk, 2 * lane);
            }
            &blk[16..]
        }
        _ => {
            let blk = &group[b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
            for lane in 0..8 {
                let d = f16_at(blk, 2 * lane);
                scale[lane] = d;
                min[lane] = 8.0 * d;
            }
            &blk[16..]
        }
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

fn word_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

const NIBBLES: u32 = 0x0f0f_0f0f;

/// Block `b` of a Q4_0 row as 8 words of 4 unsigned nibbles (elements 0..16 are the low
/// nibbles, 16..32 the high ones): `weight = d·q − 8d`. Returns (scale, min, words).
fn unpack_q4_0(row: &[u8], b: usize, out: &mut [u32; 16]) -> (f32, f32, usize) {
    let block = &row[b * 18..b * 18 + 18];
    let d = f16_at(block, 0);
    for g in 0..4 {
        let word = word_at(block, 2 + 4 * g);
        out[g] = word & NIBBLES;
        out[g + 4] = (word >> 4) & NIBBLES;
    }
    (d, 8.0 * d, 8)
}

/// Sub-block `b % 8` of super-block `b / 8` of a Q4_K row as 8 words of 4 nibbles:
/// `weight = d·sc·q − dmin·m`.
fn unpack_q4_k(row: &[u8], b: usize, out: &mut [u32; 16]) -> (f32, f32, usize) {
    const BYTES: usize = 144;
    let sb = &row[b / 8 * BYTES..b / 8 * BYTES + BYTES];
    let (d, dmin) = (f16_at(sb, 0), f16_at(sb, 2));
    let mut scales = [0u8; 12];
    scales.copy_from_slice(&sb[4..16]);
    let j = b % 8;
    let (sc, m) = scale_min_k4(j, &scales);
    let qs = 16 + (j / 2) * 32;
    let shift = 4 * (j % 2) as u32;
    for (g, word) in out[..8].iter_mut().enumerate() {
        *word = (word_at(sb, qs + 4 * g) >> shift) & NIBBLES;
    }
    (d * sc as f32, dmin * m as f32, 8)
}

/// Block `b` of a Q8_0 row as 16 words of two i16: `weight = d·q`.
fn unpack_q8_0(row: &[u8], b: usize, out: &mut [u32; 16]) -> (f32, f32, usize) {
    let block = &row[b * 34..b * 34 + 34];
    for (g, word) in out.iter_mut().enumerate() {
        let lo = block[2 + 2 * g] as i8 as i16 as u16 as u32;
        let hi = block[3 + 2 * g] as i8 as i16 as u16 as u32;
        *word = lo | hi << 16;
    }
    (f16_at(block, 0), 0.0, 16)
}

/// A thread's reusable panel and output tile.
#[derive(Default)]
pub struct PanelBuf {
    /// 4 bytes per lane per group (4 u8 or 2 i16 values).
    w: Vec<u32>,
    scale: Vec<f32>,
    min: Vec<f32>,
    /// `[t, nr]` results of the last panel.
    out: Vec<f32>,
}

impl PanelBuf {
    /// The packed panel (`nr` × `blocks`) and a zeroed `[t, nr]` output tile.
    pub fn split(&mut self, nr: usize, blocks: usize, t: usize) -> (Panel<'_>, &mut [f32]) {
        self.out.clear();
        self.out.resize(t * nr, 0.0);
        let panel = Panel {
            nr,
            blocks,
            w: &self.w,
            scale: &self.scale,
            min: &self.min,
        };
        (panel, &mut self.out)
    }
}

thread_local! {
    static PANEL_BUF: RefCell<PanelBuf> = RefCell::new(PanelBuf::default());
}

/// Runs `f` with this thread's panel buffer (grown on first use, then reused: no allocation
/// per chunk once warm).
pub fn with_panel_buf<R>(f: impl FnOnce(&mut PanelBuf) -> R) -> R {
    PANEL_BUF.with(|b| f(&mut b.borrow_mut()))
}
