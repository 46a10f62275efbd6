//! AArch64 NEON kernels, and `sdot` (the dot-product extension, FEAT_DotProd) where the CPU
//! has it. Only handed out by [`super::row_dot`] after run-time detection. The `sdot`
//! intrinsics are not stable in Rust yet, so that one instruction is inline assembly.
//! f16 → f32 (`fcvtl`) is inline assembly too: Rust's `float16x4_t` is not stable either.

use crate::cpu::act_blocks::{ActBlock, ActBlock16};
use half::f16;
use std::arch::aarch64::*;

const Q8_0_BYTES: usize = 34;
const Q4_0_BYTES: usize = 18;

fn f16_at(p: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([p[at], p[at + 1]]).to_f32()
}

#[target_feature(enable = "neon")]
unsafe fn dot_f32_impl(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(row.len() / 4);
    let (w, xp) = (row.as_ptr(), x.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // Byte loads: the row need not be 4-byte aligned.
            let wv = vreinterpretq_f32_u8(vld1q_u8(w.add(4 * (i + 4 * k))));
            *a = vfmaq_f32(*a, wv, vld1q_f32(xp.add(i + 4 * k)));
        }
        i += 16;
    }
    let mut sum = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    while i < n {
        let b = &row[4 * i..4 * i + 4];
        sum += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * x[i];
        i += 1;
    }
    sum
}

#[target_feature(enable = "neon")]
unsafe fn dot_bf16_impl(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(row.len() / 2);
    let (w, xp) = (row.as_ptr(), x.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut i = 0;
    while i + 8 <= n {
        // bf16 → f32 is a 16-bit left shift of the bits.
        let h = vreinterpretq_u16_u8(vld1q_u8(w.add(2 * i)));
        let lo = vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h)));
        let hi = vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h));
        acc[0] = vfmaq_f32(acc[0], lo, vld1q_f32(xp.add(i)));
        acc[1] = vfmaq_f32(acc[1], hi, vld1q_f32(xp.add(i + 4)));
        i += 8;
    }
    let mut sum = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    while i < n {
        sum += crate::quant::bf16_to_f32(u16::from_le_bytes([row[2 * i], row[2 * i + 1]])) * x[i];
        i += 1;
    }
    sum
}

/// The f16 scales at byte `at` of four rows as f32x4 (one `fcvtl`).
#[inline(always)]
unsafe fn scales4(rows: &[&[u8]; 4], at: usize) -> float32x4_t {
    let bits = |r: &[u8]| u16::from_le_bytes([r[at], r[at + 1]]);
    let bits = [bits(rows[0]), bits(rows[1]), bits(rows[2]), bits(rows[3])];
    f16x8_to_f32(vcombine_u16(vld1_u16(bits.as_ptr()), vdup_n_u16(0))).0
}

/// 8 f16 (as raw bits) → two f32x4 (`fcvtl`, `fcvtl2`: base ARMv8 floating point).
#[inline(always)]
pub(super) unsafe fn f16x8_to_f32(h: uint16x8_t) -> (float32x4_t, float32x4_t) {
    let (lo, hi): (float32x4_t, float32x4_t);
    std::arch::asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        h = in(vreg) h,
        lo = out(vreg) lo,
        hi = out(vreg) hi,
        options(pure, nomem, nostack, preserves_flags)
    );
    (lo, hi)
}

#[target_feature(enable = "neon")]
unsafe fn dot_f16_impl(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(row.len() / 2);
    let (w, xp) = (row.as_ptr(), x.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut i = 0;
    while i + 8 <= n {
        let (lo, hi) = f16x8_to_f32(vreinterpretq_u16_u8(vld1q_u8(w.add(2 * i))));
        acc[0] = vfmaq_f32(acc[0], lo, vld1q_f32(xp.add(i)));
        acc[1] = vfmaq_f32(acc[1], hi, vld1q_f32(xp.add(i + 4)));
        i += 8;
    }
    let mut sum = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    while i < n {
        sum += f16_at(row, 2 * i) * x[i];
        i += 1;
    }
    sum
}

/// Q8_0 weights · 16-bit activations: widening multiply-accumulates (i8·i16 sums of 32 terms
/// stay far inside i32).
#[target_feature(enable = "neon")]
unsafe fn dot_q8_0_impl(row: &[u8], x: &[ActBlock16]) -> f32 {
    let n = x.len().min(row.len() / Q8_0_BYTES);
    let mut acc = [vdupq_n_f32(0.0); 2];
    for i in 0..n {
        let b = row.as_ptr().add(i * Q8_0_BYTES);
        let a = &*x.as_ptr().add(i);
        let w0 = vld1q_s8(b.add(2) as *const i8);
        let w1 = vld1q_s8(b.add(18) as *const i8);
        let q = a.qs.as_ptr();
        let mut s = vdupq_n_s32(0);
        for (k, w) in [
            vmovl_s8(vget_low_s8(w0)),
            vmovl_high_s8(w0),
            vmovl_s8(vget_low_s8(w1)),
            vmovl_high_s8(w1),
        ]
        .into_iter()
        .enumerate()
        {
            let qa = vld1q_s16(q.add(8 * k));
            s = vmlal_s16(s, vget_low_s16(w), vget_low_s16(qa));
            s = vmlal_high_s16(s, w, qa);
        }
        let scale = f16_at(row, i * Q8_0_BYTES) * a.d;
        acc[i % 2] = vfmaq_n_f32(acc[i % 2], vcvtq_f32_s32(s), scale);
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1]))
}

/// A Q4_0 block's 32 weights as signed bytes `q − 8`: elements 0..16, then 16..32.
#[inline(always)]
unsafe fn q4_0_signed(b: *const u8) -> (int8x16_t, int8x16_t) {
    let q = vld1q_u8(b.add(2));
    let eight = vdupq_n_s8(8);
    let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f))), eight);
    let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight);
    (lo, hi)
}

/// Σ over Q4_0 blocks of `d·d_a·(w·q_a)`; `dot32` gives 4 i32 partial sums of a block.
#[inline(always)]
unsafe fn dot_q4_0_with(
    row: &[u8],
    x: &[ActBlock],
    dot32: impl Fn(int8x16_t, int8x16_t, int8x16_t, int8x16_t) -> int32x4_t,
) -> f32 {
    let n = x.len().min(row.len() / Q4_0_BYTES);
    let mut acc = [vdupq_n_f32(0.0); 2];
    for i in 0..n {
        let a = &*x.as_ptr().add(i);
        let (lo, hi) = q4_0_signed(row.as_ptr().add(i * Q4_0_BYTES));
        let q = a.qs.as_ptr();
        let s = dot32(lo, vld1q_s8(q), hi, vld1q_s8(q.add(16)));
        let scale = f16_at(row, i * Q4_0_BYTES) * a.d;
        acc[i % 2] = vfmaq_n_f32(acc[i % 2], vcvtq_f32_s32(s), scale);
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1]))
}

#[target_feature(enable = "neon")]
unsafe fn dot_q4_0_impl(row: &[u8], x: &[ActBlock]) -> f32 {
    // |w| ≤ 8, |q_a| ≤ 127: four products per i16 lane stay below 4064.
    dot_q4_0_with(row, x, |w0, a0, w1, a1| {
        let mut p = vmull_s8(vget_low_s8(w0), vget_low_s8(a0));
        p = vmlal_high_s8(p, w0, a0);
        p = vmlal_s8(p, vget_low_s8(w1), vget_low_s8(a1));
        p = vmlal_high_s8(p, w1, a1);
        vpaddlq_s16(p)
    })
}

/// `acc + Σ_{j<4} a[4i+j]·b[4i+j]` per i32 lane (`sdot`). Not a `target_feature` function
/// (the assembler is told of the extension instead), so that it inlines into the kernels'
/// closures, which do not inherit their function's features: a call per `sdot` costs more
/// than the instruction.
///
/// # Safety
/// Only on a CPU with the dot-product extension (callers are handed out after detection).
#[inline(always)]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    std::arch::asm!(
        ".arch_extension dotprod",
        "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// `acc + Σ_{j<4} w[4i+j]·a[4·lane+j]` per i32 lane i (`sdot` by element: one group of 4
/// activations against 4 rows' groups); inlines everywhere, as [`sdot`].
///
/// # Safety
/// As [`sdot`].
#[inline(always)]
pub(super) unsafe fn sdot_lane(
    mut acc: int32x4_t,
    w: int8x16_t,
    a: int8x16_t,
    lane: usize,
) -> int32x4_t {
    macro_rules! by_element {
        ($i:literal) => {
            std::arch::asm!(
                concat!(".arch_extension dotprod\nsdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[", $i, "]"),
                acc = inout(vreg) acc,
                w = in(vreg) w,
                a = in(vreg) a,
                options(pure, nomem, nostack, preserves_flags)
            )
        };
    }
    match lane {
        0 => by_element!(0),
        1 => by_element!(1),
        2 => by_element!(2),
        _ => by_element!(3),
    }
    acc
}

/// Blocks every one of four rows (of `bytes` per block) and every token (`tokens`: blocks
/// each) has: what a four-row kernel may read.
fn whole_blocks(rows: &[&[u8]; 4], bytes: usize, tokens: impl Iterator<Item = usize>) -> usize {
    rows.iter()
        .map(|r| r.len() / bytes)
        .chain(tokens)
        .fold(usize::MAX, usize::min)
}

/// The four lanes of a row-sum register.
#[inline(always)]
unsafe fn lanes(v: float32x4_t) -> [f32; 4] {
    let mut out = [0f32; 4];
    vst1q_f32(out.as_mut_ptr(), v);
    out
}

/// Four Q4_0 rows against N 8-bit activation rows (decode of N sequences): each row's block is
/// unpacked once for all N; `dot32(w_lo, a_lo, w_hi, a_hi)` gives a block's 4 partial sums. A
/// token's sums are the same operations whatever N is.
#[inline(always)]
unsafe fn rows4_q4_0_with<const N: usize>(
    rows: [&[u8]; 4],
    x: [&[ActBlock]; N],
    dot32: impl Fn(int8x16_t, int8x16_t, int8x16_t, int8x16_t) -> int32x4_t,
) -> [[f32; 4]; N] {
    let n = whole_blocks(&rows, Q4_0_BYTES, x.iter().map(|a| a.len()));
    let mut acc = [vdupq_n_f32(0.0); N];
    for i in 0..n {
        let at = i * Q4_0_BYTES;
        // Explicit arrays, not `map`: in these target-feature kernels `map`'s closures are not
        // inlined (measured under qemu: a third of the decode's instructions).
        let unpack = |r: &[u8]| q4_0_signed(r.as_ptr().add(at));
        let w = [
            unpack(rows[0]),
            unpack(rows[1]),
            unpack(rows[2]),
            unpack(rows[3]),
        ];
        let d = scales4(&rows, at);
        for k in 0..N {
            let a = &*x[k].as_ptr().add(i);
            let (a0, a1) = (vld1q_s8(a.qs.as_ptr()), vld1q_s8(a.qs.as_ptr().add(16)));
            let s = [
                dot32(w[0].0, a0, w[0].1, a1),
                dot32(w[1].0, a0, w[1].1, a1),
                dot32(w[2].0, a0, w[2].1, a1),
                dot32(w[3].0, a0, w[3].1, a1),
            ];
            // Lane r: row r's sum.
            let sums = vpaddq_s32(vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]));
            acc[k] = vfmaq_f32(acc[k], vcvtq_f32_s32(sums), vmulq_n_f32(d, a.d));
        }
    }
    acc.map(|a| lanes(a))
}

/// Four Q8_0 rows against N 16-bit activation rows: each row's block widened to i16 once for
/// all N, then widening multiply-accumulates as in `dot_q8_0_impl`.
#[target_feature(enable = "neon")]
unsafe fn rows4_q8_0_impl<const N: usize>(
    rows: [&[u8]; 4],
    x: [&[ActBlock16]; N],
) -> [[f32; 4]; N] {
    let n = whole_blocks(&rows, Q8_0_BYTES, x.iter().map(|a| a.len()));
    let mut acc = [vdupq_n_f32(0.0); N];
    for i in 0..n {
        let at = i * Q8_0_BYTES;
        let widen = |r: &[u8]| {
            let b = r.as_ptr().add(at);
            let (w0, w1) = (
                vld1q_s8(b.add(2) as *const i8),
                vld1q_s8(b.add(18) as *const i8),
            );
            [
                vmovl_s8(vget_low_s8(w0)),
                vmovl_high_s8(w0),
                vmovl_s8(vget_low_s8(w1)),
                vmovl_high_s8(w1),
            ]
        };
        // Explicit arrays, not `map` (see `rows4_q4_0_with`).
        let w = [
            widen(rows[0]),
            widen(rows[1]),
            widen(rows[2]),
            widen(rows[3]),
        ];
        let d = scales4(&rows, at);
        for k in 0..N {
            let a = &*x[k].as_ptr().add(i);
            let q = a.qs.as_ptr();
            let qa = [
                vld1q_s16(q),
                vld1q_s16(q.add(8)),
                vld1q_s16(q.add(16)),
                vld1q_s16(q.add(24)),
            ];
            let row = |wr: &[int16x8_t; 4]| {
                let mut s = vdupq_n_s32(0);
                for j in 0..4 {
                    s = vmlal_s16(s, vget_low_s16(wr[j]), vget_low_s16(qa[j]));
                    s = vmlal_high_s16(s, wr[j], qa[j]);
                }
                s
            };
            let s = [row(&w[0]), row(&w[1]), row(&w[2]), row(&w[3])];
            let sums = vpaddq_s32(vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]));
            acc[k] = vfmaq_f32(acc[k], vcvtq_f32_s32(sums), vmulq_n_f32(d, a.d));
        }
    }
    acc.map(|a| lanes(a))
}

#[target_feature(enable = "neon")]
unsafe fn rows4_q4_0_impl<const N: usize>(rows: [&[u8]; 4], x: [&[ActBlock]; N]) -> [[f32; 4]; N] {
    // As `dot_q4_0_impl`: four products per i16 lane stay below 4064.
    rows4_q4_0_with(rows, x, |w0, a0, w1, a1| {
        let mut p = vmull_s8(vget_low_s8(w0), vget_low_s8(a0));
        p = vmlal_high_s8(p, w0, a0);
        p = vmlal_s8(p, vget_low_s8(w1), vget_low_s8(a1));
        p = vmlal_high_s8(p, w1, a1);
        vpaddlq_s16(p)
    })
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn rows4_q4_0_dotprod_impl<const N: usize>(
    rows: [&[u8]; 4],
    x: [&[ActBlock]; N],
) -> [[f32; 4]; N] {
    rows4_q4_0_with(rows, x, |w0, a0, w1, a1| {
        sdot(sdot(vdupq_n_s32(0), w0, a0), w1, a1)
    })
}

rows4_over_tokens!(
    /// Four-row Q4_0 kernel (NEON).
    rows4_q4_0 => rows4_q4_0_impl, ActBlock);
rows4_over_tokens!(
    /// Four-row Q4_0 kernel (`sdot`); only reachable through `rows_dot4` after detection of
    /// the dot-product extension.
    rows4_q4_0_dotprod => rows4_q4_0_dotprod_impl, ActBlock);
rows4_over_tokens!(
    /// Four-row Q8_0 kernel (NEON).
    rows4_q8_0 => rows4_q8_0_impl, ActBlock16);

#[target_feature(enable = "neon,dotprod")]
unsafe fn dot_q4_0_dotprod_impl(row: &[u8], x: &[ActBlock]) -> f32 {
    dot_q4_0_with(row, x, |w0, a0, w1, a1| {
        sdot(sdot(vdupq_n_s32(0), w0, a0), w1, a1)
    })
}

/// 16 signed bytes · 16 signed bytes → 4 i32 partial sums, without `sdot`. Products stay
/// within i16 for |w| ≤ 32, |a| ≤ 127 (two per lane).
#[inline(always)]
unsafe fn dot16_neon(w: int8x16_t, a: int8x16_t) -> int32x4_t {
    vpaddlq_s16(vmlal_high_s8(
        vmull_s8(vget_low_s8(w), vget_low_s8(a)),
        w,
        a,
    ))
}

/// `dot16` with `sdot` (inlines everywhere, as [`sdot`]).
#[inline(always)]
unsafe fn dot16_sdot(w: int8x16_t, a: int8x16_t) -> int32x4_t {
    sdot(vdupq_n_s32(0), w, a)
}

/// Q4_K: per sub-block j of 32, `d·sc_j·d_a·Σ q·q_a − dmin·m_j·d_a·Σ q_a` (nibbles 0..15).
#[inline(always)]
unsafe fn dot_q4_k_with(
    row: &[u8],
    x: &[ActBlock],
    dot16: impl Fn(int8x16_t, int8x16_t) -> int32x4_t,
) -> f32 {
    const BYTES: usize = 144;
    let n = (row.len() / BYTES).min(x.len() / 8);
    let mut sum = 0f32;
    for sb in 0..n {
        let b = &row[sb * BYTES..(sb + 1) * BYTES];
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let mut scales = [0u8; 12];
        scales.copy_from_slice(&b[4..16]);
        for j in 0..8 {
            let a = &*x.as_ptr().add(sb * 8 + j);
            let (sc, m) = crate::quant::scale_min_k4(j, &scales);
            let qs = b.as_ptr().add(16 + (j / 2) * 32);
            let nibbles = |v: uint8x16_t| {
                vreinterpretq_s8_u8(if j % 2 == 0 {
                    vandq_u8(v, vdupq_n_u8(0x0f))
                } else {
                    vshrq_n_u8::<4>(v)
                })
            };
            let (w0, w1) = (nibbles(vld1q_u8(qs)), nibbles(vld1q_u8(qs.add(16))));
            let q = a.qs.as_ptr();
            let dot = vaddvq_s32(vaddq_s32(
                dot16(w0, vld1q_s8(q)),
                dot16(w1, vld1q_s8(q.add(16))),
            ));
            sum += d * sc as f32 * a.d * dot as f32
                - dmin * m as f32 * a.d * (a.sums[0] + a.sums[1]) as f32;
        }
    }
    sum
}

/// Q6_K: per 32-element chunk (half h, quarter q) with two 16-element scales,
/// `d·d_a·Σ_halves sc·Σ (q6 − 32)·q_a`.
#[inline(always)]
unsafe fn dot_q6_k_with(
    row: &[u8],
    x: &[ActBlock],
    dot16: impl Fn(int8x16_t, int8x16_t) -> int32x4_t,
) -> f32 {
    const BYTES: usize = 210;
    let n = (row.len() / BYTES).min(x.len() / 8);
    let mut sum = 0f32;
    for sb in 0..n {
        let b = &row[sb * BYTES..(sb + 1) * BYTES];
        let (ql, qh, scales) = (b.as_ptr(), b.as_ptr().add(128), &b[192..208]);
        let d = f16_at(b, 208);
        for c in 0..8 {
            let (h, q) = (c / 4, c % 4);
            let a = &*x.as_ptr().add(sb * 8 + c);
            let six = |l: usize| {
                let low = vld1q_u8(ql.add(h * 64 + (q % 2) * 32 + l));
                let low = if q < 2 {
                    vandq_u8(low, vdupq_n_u8(0x0f))
                } else {
                    vshrq_n_u8::<4>(low)
                };
                let high = vshlq_u8(vld1q_u8(qh.add(h * 32 + l)), vdupq_n_s8(-2 * q as i8));
                let high = vshlq_n_u8::<4>(vandq_u8(high, vdupq_n_u8(3)));
                vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(low, high)), vdupq_n_s8(32))
            };
            let qa = a.qs.as_ptr();
            let lo = vaddvq_s32(dot16(six(0), vld1q_s8(qa)));
            let hi = vaddvq_s32(dot16(six(16), vld1q_s8(qa.add(16))));
            let sc = |k: usize| scales[h * 8 + 2 * q + k] as i8 as i32;
            sum += d * a.d * (sc(0) * lo + sc(1) * hi) as f32;
        }
    }
    sum
}

#[target_feature(enable = "neon")]
unsafe fn dot_q4_k_impl(row: &[u8], x: &[ActBlock]) -> f32 {
    dot_q4_k_with(row, x, |w, a| dot16_neon(w, a))
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn dot_q4_k_dotprod_impl(row: &[u8], x: &[ActBlock]) -> f32 {
    dot_q4_k_with(row, x, |w, a| dot16_sdot(w, a))
}

#[target_feature(enable = "neon")]
unsafe fn dot_q6_k_impl(row: &[u8], x: &[ActBlock]) -> f32 {
    dot_q6_k_with(row, x, |w, a| dot16_neon(w, a))
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn dot_q6_k_dotprod_impl(row: &[u8], x: &[ActBlock]) -> f32 {
    dot_q6_k_with(row, x, |w, a| dot16_sdot(w, a))
}

/// Safe entry points: NEON is part of the aarch64 baseline; the dotprod one is only handed
/// out after `is_aarch64_feature_detected!("dotprod")`.
pub fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: NEON is always present on aarch64; reads stay within `row` and `x`.
    unsafe { dot_f32_impl(row, x) }
}

pub fn dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: as `dot_f32`.
    unsafe { dot_bf16_impl(row, x) }
}

pub fn dot_q8_0(row: &[u8], x: &[ActBlock16]) -> f32 {
    // SAFETY: as `dot_f32`; the first `n` whole blocks of `row` and `x` only.
    unsafe { dot_q8_0_impl(row, x) }
}

pub fn dot_q4_0(row: &[u8], x: &[ActBlock]) -> f32 {
    // SAFETY: as `dot_q8_0`.
    unsafe { dot_q4_0_impl(row, x) }
}

pub fn dot_q4_0_dotprod(row: &[u8], x: &[ActBlock]) -> f32 {
    // SAFETY: handed out only after detection of dotprod; reads as `dot_q8_0`.
    unsafe { dot_q4_0_dotprod_impl(row, x) }
}

pub fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: as `dot_f32`.
    unsafe { dot_f16_impl(row, x) }
}

pub fn dot_q4_k(row: &[u8], x: &[ActBlock]) -> f32 {
    // SAFETY: as `dot_q8_0`; whole super-blocks only.
    unsafe { dot_q4_k_impl(row, x) }
}

pub fn dot_q4_k_dotprod(row: &[u8], x: &[ActBlock]) -> f32 {
    // SAFETY: as `dot_q4_0_dotprod`; whole super-blocks only.
    unsafe { dot_q4_k_dotprod_impl(row, x) }
}

pub fn dot_q6_k(row: &[u8], x: &[ActBlock]) -> f32 {
    // SAFETY: as `dot_q8_0`; whole super-blocks only.
    unsafe { dot_q6_k_impl(row, x) }
}

pub fn dot_q6_k_dotprod(row: &[u8], x: &[ActBlock]) -> f32 {
    // SAFETY: as `dot_q4_0_dotprod`; whole super-blocks only.
    unsafe { dot_q6_k_dotprod_impl(row, x) }
}
