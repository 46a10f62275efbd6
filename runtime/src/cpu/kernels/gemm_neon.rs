//! Panel microkernels for prefill on AArch64 (layouts in [`crate::cpu::gemm`]): 8 rows per
//! panel, two registers of four i32 lanes (one lane per weight row), a tile of 4 tokens sharing
//! each loaded weight group. U8 form: `sdot` by element (the token's 4 activations of a group are
//! one 32-bit element of the register holding its block) with the dot-product extension, else
//! widening multiplies of the group broadcast; I16 form: widening multiplies of 16-bit pairs.

use super::neon::sdot_lane;
use crate::cpu::act_blocks::{ActBlock, ActBlock16};
use crate::cpu::panel::{check, Panel, PanelAct};
use std::arch::aarch64::*;

/// Rows per panel, and tokens per register tile (4 × (2 integer + 2 float) accumulators, the
/// weights and the activations fit the 32 registers).
const NR: usize = 8;
const TILE_TOKENS: usize = 4;

/// Every token tile of a panel. `G` groups of 4 bytes per lane per block; `group(acc, w, a,
/// g)` adds group `g` of the token's block (`a`: its 32 or 64 bytes as registers) times the
/// group's weights of 4 lanes (`w`) to `acc`. `MIN`: subtract `min · dsum` per block.
///
/// # Safety
/// NEON present (and what `group` uses); lengths as checked by [`check`].
#[inline(always)]
unsafe fn panel<A: PanelAct, const G: usize, const MIN: bool>(
    p: &Panel,
    acts: &[A],
    out: &mut [f32],
    group: impl Fn(int32x4_t, int8x16_t, &[int8x16_t; 4], usize) -> int32x4_t + Copy,
) {
    let t = out.len() / NR;
    let mut t0 = 0;
    while t0 + TILE_TOKENS <= t {
        tile::<A, TILE_TOKENS, G, MIN>(p, acts, t0, out, group);
        t0 += TILE_TOKENS;
    }
    while t0 < t {
        tile::<A, 1, G, MIN>(p, acts, t0, out, group);
        t0 += 1;
    }
}

#[inline(always)]
unsafe fn tile<A: PanelAct, const M: usize, const G: usize, const MIN: bool>(
    p: &Panel,
    acts: &[A],
    t0: usize,
    out: &mut [f32],
    group: impl Fn(int32x4_t, int8x16_t, &[int8x16_t; 4], usize) -> int32x4_t,
) {
    let nb = p.blocks;
    let a = acts.as_ptr();
    let w = p.w.as_ptr() as *const i8;
    let mut facc = [[vdupq_n_f32(0.0); 2]; M];
    // A block's activations: 32 bytes (U8 form, two registers) or 64 (I16 form, four).
    let regs = G / 4;
    for b in 0..nb {
        let mut iacc = [[vdupq_n_s32(0); 2]; M];
        let mut av = [[vdupq_n_s8(0); 4]; M];
        for (m, v) in av.iter_mut().enumerate() {
            let qs = (*a.add((t0 + m) * nb + b)).qs_bytes() as *const i8;
            for (r, reg) in v.iter_mut().enumerate().take(regs) {
                *reg = vld1q_s8(qs.add(16 * r));
            }
        }
        let wb = w.add(b * G * NR * 4);
        for g in 0..G {
            let wv = [vld1q_s8(wb.add(g * 32)), vld1q_s8(wb.add(g * 32 + 16))];
            for m in 0..M {
                iacc[m][0] = group(iacc[m][0], wv[0], &av[m], g);
                iacc[m][1] = group(iacc[m][1], wv[1], &av[m], g);
            }
        }
        let scale = p.scale.as_ptr().add(b * NR);
        let min = p.min.as_ptr().add(b * NR);
        for m in 0..M {
            let act = &*a.add((t0 + m) * nb + b);
            for h in 0..2 {
                let v = vmulq_n_f32(vcvtq_f32_s32(iacc[m][h]), act.d());
                facc[m][h] = vfmaq_f32(facc[m][h], vld1q_f32(scale.add(4 * h)), v);
                if MIN {
                    let dsum = vdupq_n_f32(act.dsum());
                    facc[m][h] = vfmsq_f32(facc[m][h], vld1q_f32(min.add(4 * h)), dsum);
                }
            }
        }
    }
    for (m, f) in facc.iter().enumerate() {
        let o = out.as_mut_ptr().add((t0 + m) * NR);
        vst1q_f32(o, f[0]);
        vst1q_f32(o.add(4), f[1]);
    }
}

/// Group `g`'s 4 activation bytes (element g of the block's registers) in every 32-bit lane.
#[inline(always)]
unsafe fn broadcast_group(a: &[int8x16_t; 4], g: usize) -> int8x16_t {
    let r = vreinterpretq_s32_s8(a[g / 4]);
    vreinterpretq_s8_s32(match g % 4 {
        0 => vdupq_laneq_s32::<0>(r),
        1 => vdupq_laneq_s32::<1>(r),
        2 => vdupq_laneq_s32::<2>(r),
        _ => vdupq_laneq_s32::<3>(r),
    })
}

#[target_feature(enable = "neon")]
unsafe fn u8_neon_impl(p: &Panel, acts: &[ActBlock], out: &mut [f32]) {
    // Nibbles ≤ 15, |activations| ≤ 127: a pair of products stays within i16.
    panel::<_, 8, true>(p, acts, out, |acc, w, a, g| {
        let x = broadcast_group(a, g);
        let pairs = vpaddq_s16(
            vmull_s8(vget_low_s8(w), vget_low_s8(x)),
            vmull_high_s8(w, x),
        );
        vpadalq_s16(acc, pairs)
    });
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn u8_dotprod_impl(p: &Panel, acts: &[ActBlock], out: &mut [f32]) {
    panel::<_, 8, true>(p, acts, out, |acc, w, a, g| {
        sdot_lane(acc, w, a[g / 4], g % 4)
    });
}

#[target_feature(enable = "neon")]
unsafe fn i16_neon_impl(p: &Panel, acts: &[ActBlock16], out: &mut [f32]) {
    // Lane pairs of i16 weights · the group's pair of i16 activations: |q8| ≤ 127, |a| ≤
    // 32767, 32 products of a block stay within i32.
    panel::<_, 16, false>(p, acts, out, |acc, w, a, g| {
        let (w, x) = (
            vreinterpretq_s16_s8(w),
            vreinterpretq_s16_s8(broadcast_group(a, g)),
        );
        let lanes = vpaddq_s32(
            vmull_s16(vget_low_s16(w), vget_low_s16(x)),
            vmull_high_s16(w, x),
        );
        vaddq_s32(acc, lanes)
    });
}

/// U8-form panel of 8 rows (NEON).
pub fn u8_neon(p: &Panel, acts: &[ActBlock], out: &mut [f32]) {
    check(p, 8, NR, acts, out, true);
    // SAFETY: NEON is part of the AArch64 baseline; lengths checked.
    unsafe { u8_neon_impl(p, acts, out) }
}

/// U8-form panel of 8 rows (`sdot`); only handed out after detection of the dot-product
/// extension.
pub fn u8_dotprod(p: &Panel, acts: &[ActBlock], out: &mut [f32]) {
    check(p, 8, NR, acts, out, true);
    // SAFETY: dotprod detected before this kernel was handed out; lengths checked.
    unsafe { u8_dotprod_impl(p, acts, out) }
}

/// I16-form panel of 8 rows (NEON).
pub fn i16_neon(p: &Panel, acts: &[ActBlock16], out: &mut [f32]) {
    check(p, 16, NR, acts, out, false);
    // SAFETY: as `u8_neon`.
    unsafe { i16_neon_impl(p, acts, out) }
}
