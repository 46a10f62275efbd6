//! A panel of weight rows as the prefill microkernels read it (`kernels/gemm_*.rs`; packed by
//! [`crate::cpu::gemm`], whose module doc gives the layouts): its forms, the kernels' type,
//! and the lengths every kernel checks.

use super::act_blocks::{ActBlock, ActBlock16};

/// The integer layout of a panel: 4 u8 per word (8-bit activations) or 2 i16 (16-bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanelForm {
    U8,
    I16,
}

/// A packed panel of `nr` rows × `blocks` blocks (see the module doc for the layouts).
pub struct Panel<'a> {
    pub nr: usize,
    pub blocks: usize,
    /// `[blocks, groups, nr]` words of 4 bytes: 4 u8 (U8 form, 8 groups) or 2 i16 (I16
    /// form, 16 groups).
    pub w: &'a [u32],
    /// `[blocks, nr]`.
    pub scale: &'a [f32],
    /// `[blocks, nr]` (U8 form only).
    pub min: &'a [f32],
}

/// A microkernel: `out[t, lane] = Σ_k weight(lane, k) · x(t, k)` for all `t` of the
/// activations (`[t, blocks]`), `out` being `[t, nr]`.
#[derive(Clone, Copy)]
pub enum PanelKernel {
    U8(fn(&Panel, &[ActBlock], &mut [f32])),
    I16(fn(&Panel, &[ActBlock16], &mut [f32])),
}

/// What the microkernels read of an activation block.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) trait PanelAct {
    /// The block's quantized values as bytes (i8 or little-endian i16).
    fn qs_bytes(&self) -> *const u8;
    fn d(&self) -> f32;
    fn dsum(&self) -> f32;
}

impl PanelAct for ActBlock {
    fn qs_bytes(&self) -> *const u8 {
        self.qs.as_ptr() as *const u8
    }
    fn d(&self) -> f32 {
        self.d
    }
    fn dsum(&self) -> f32 {
        self.dsum
    }
}

impl PanelAct for ActBlock16 {
    fn qs_bytes(&self) -> *const u8 {
        self.qs.as_ptr() as *const u8
    }
    fn d(&self) -> f32 {
        self.d
    }
    fn dsum(&self) -> f32 {
        0.0
    }
}

/// Checks every length the unsafe loops rely on; returns the token count.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) fn check<A>(
    p: &Panel,
    groups: usize,
    nr: usize,
    acts: &[A],
    out: &[f32],
    min: bool,
) -> usize {
    assert_eq!(p.nr, nr, "panel width");
    assert!(
        p.w.len() >= p.blocks * groups * nr,
        "panel weights too short"
    );
    assert!(p.scale.len() >= p.blocks * nr, "panel scales too short");
    assert!(!min || p.min.len() >= p.blocks * nr, "panel mins too short");
    assert_eq!(out.len() % nr, 0, "output tile width");
    let t = out.len() / nr;
    assert!(acts.len() >= t * p.blocks, "activations too short");
    t
}
