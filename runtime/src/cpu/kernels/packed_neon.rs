//! Decode kernels for Q4_0 repacked in groups of 8 rows ([`crate::cpu::packed`]) with the
//! dot-product extension: the x86 layout serves as it is. Register `k` of a group block (32
//! bytes) is two NEON registers, rows 0–3 and rows 4–7; its low nibbles are group `k` of every
//! row, its high nibbles group `k + 4`, so `sdot` by element of the token's group `k` (`a0`,
//! lane `k`) and group `k + 4` (`a1`, lane `k`) adds 4 products per row into a lane per row:
//! 16 `sdot` per block and token for 8 rows, no horizontal sums, no per-row unpacking.

use super::neon::{f16x8_to_f32, sdot_lane};
use crate::cpu::act_blocks::{ActBlock, BroadcastBlock};
use crate::cpu::packed::GROUP_BLOCK_BYTES;
use std::arch::aarch64::*;

/// Eight rows (one group, its group blocks) against N tokens.
///
/// # Safety
/// NEON and the dot-product extension present; `group` holds whole group blocks.
#[inline(always)]
unsafe fn group_q4_0<const N: usize>(group: &[u8], x: [&[ActBlock]; N]) -> [[f32; 8]; N] {
    let n = x
        .iter()
        .map(|a| a.len())
        .fold(group.len() / GROUP_BLOCK_BYTES, usize::min);
    let low = vdupq_n_u8(0x0f);
    let p = group.as_ptr();
    let mut acc = [[vdupq_n_f32(0.0); 2]; N];
    for b in 0..n {
        let blk = p.add(b * GROUP_BLOCK_BYTES);
        let (d_lo, d_hi) = f16x8_to_f32(vld1q_u16(blk as *const u16));
        let q = blk.add(16);
        // [register k][rows 0-3 | rows 4-7]: low nibbles (group k), high (group k + 4).
        let mut lo = [[vdupq_n_s8(0); 2]; 4];
        let mut hi = [[vdupq_n_s8(0); 2]; 4];
        for k in 0..4 {
            for half in 0..2 {
                let v = vld1q_u8(q.add(32 * k + 16 * half));
                lo[k][half] = vreinterpretq_s8_u8(vandq_u8(v, low));
                hi[k][half] = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
            }
        }
        for t in 0..N {
            let a = &*x[t].as_ptr().add(b);
            let a0 = vld1q_s8(a.qs.as_ptr());
            let a1 = vld1q_s8(a.qs.as_ptr().add(16));
            let bias = vdupq_n_s32(8 * (a.sums[0] + a.sums[1]));
            let ad = vdupq_n_f32(a.d);
            for (half, d) in [(0, d_lo), (1, d_hi)] {
                let mut s = vnegq_s32(bias);
                for k in 0..4 {
                    s = sdot_lane(s, lo[k][half], a0, k);
                    s = sdot_lane(s, hi[k][half], a1, k);
                }
                acc[t][half] = vfmaq_f32(acc[t][half], vmulq_f32(d, ad), vcvtq_f32_s32(s));
            }
        }
    }
    let mut out = [[0f32; 8]; N];
    for t in 0..N {
        vst1q_f32(out[t].as_mut_ptr(), acc[t][0]);
        vst1q_f32(out[t].as_mut_ptr().add(4), acc[t][1]);
    }
    out
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn group_q4_0_dotprod<const N: usize>(group: &[u8], x: [&[ActBlock]; N]) -> [[f32; 8]; N] {
    group_q4_0(group, x)
}

/// Repacked Q4_0 group kernel (NEON with `sdot`, by element of the blocks: the broadcast form
/// is not read); only reachable after detection of the dot-product extension.
pub fn q4_0_dotprod(
    group: &[u8],
    x: &[ActBlock],
    _broadcast: &[BroadcastBlock],
    blocks: usize,
    out: &mut [[f32; 8]],
) {
    let token = |t: usize| &x[t * blocks..(t + 1) * blocks];
    let mut t = 0;
    while t < out.len() {
        let n = (out.len() - t).min(4);
        let o = &mut out[t..t + n];
        // SAFETY: handed out only after detection of the dot-product extension; it reads only
        // whole group blocks and each token's slice.
        unsafe {
            match n {
                1 => o.copy_from_slice(&group_q4_0_dotprod(group, [token(t)])),
                2 => o.copy_from_slice(&group_q4_0_dotprod(group, [token(t), token(t + 1)])),
                3 => o.copy_from_slice(&group_q4_0_dotprod(
                    group,
                    [token(t), token(t + 1), token(t + 2)],
                )),
                _ => o.copy_from_slice(&group_q4_0_dotprod(
                    group,
                    [token(t), token(t + 1), token(t + 2), token(t + 3)],
                )),
            }
        }
        t += n;
    }
}
