//! Panel microkernels for prefill (layouts in [`crate::cpu::gemm`]): one register lane per
//! weight row, a tile of tokens at a time sharing each loaded weight group. AVX-512 VNNI: 16 rows
//! per panel (`vpdpbusd` / `vpdpwssd`); AVX2: 8 rows (`pmaddubsw`+`pmaddwd` / `pmaddwd`).

use crate::cpu::act_blocks::{ActBlock, ActBlock16};
use crate::cpu::panel::{check, Panel, PanelAct};
use std::arch::x86_64::*;

/// Tokens per register tile: 8 on AVX-512 (32 registers hold 8 integer and 8 float
/// accumulators), 4 on AVX2 (16 registers).
const TILE_TOKENS_512: usize = 8;
const TILE_TOKENS_256: usize = 4;

/// Every token tile of a 16-row panel. `G` groups of 4 bytes per lane per block; `dp`
/// accumulates a group into 16 i32 lanes; `MIN`: subtract `min · dsum` per block.
///
/// # Safety
/// AVX-512 F + VNNI present; lengths as checked by [`check`].
#[inline(always)]
unsafe fn panel16<A: PanelAct, const G: usize, const MIN: bool>(
    p: &Panel,
    w: *const u8,
    acts: &[A],
    out: &mut [f32],
    dp: impl Fn(__m512i, __m512i, __m512i) -> __m512i + Copy,
) {
    let t = out.len() / 16;
    let mut t0 = 0;
    while t0 + TILE_TOKENS_512 <= t {
        tile16::<A, TILE_TOKENS_512, G, MIN>(p, w, acts, t0, out, dp);
        t0 += TILE_TOKENS_512;
    }
    while t0 < t {
        tile16::<A, 1, G, MIN>(p, w, acts, t0, out, dp);
        t0 += 1;
    }
}

#[inline(always)]
unsafe fn tile16<A: PanelAct, const M: usize, const G: usize, const MIN: bool>(
    p: &Panel,
    w: *const u8,
    acts: &[A],
    t0: usize,
    out: &mut [f32],
    dp: impl Fn(__m512i, __m512i, __m512i) -> __m512i,
) {
    let nb = p.blocks;
    let a = acts.as_ptr();
    let mut facc = [_mm512_setzero_ps(); M];
    for b in 0..nb {
        let mut iacc = [_mm512_setzero_si512(); M];
        let wb = w.add(b * G * 64);
        for g in 0..G {
            let wv = _mm512_loadu_si512(wb.add(g * 64) as *const _);
            for (m, acc) in iacc.iter_mut().enumerate() {
                let qs = (*a.add((t0 + m) * nb + b)).qs_bytes();
                let av = _mm512_set1_epi32(std::ptr::read_unaligned(qs.add(4 * g) as *const i32));
                *acc = dp(*acc, wv, av);
            }
        }
        let scale = _mm512_loadu_ps(p.scale.as_ptr().add(b * 16));
        for (m, f) in facc.iter_mut().enumerate() {
            let act = &*a.add((t0 + m) * nb + b);
            let v = _mm512_mul_ps(_mm512_cvtepi32_ps(iacc[m]), _mm512_set1_ps(act.d()));
            *f = _mm512_fmadd_ps(scale, v, *f);
            if MIN {
                let min = _mm512_loadu_ps(p.min.as_ptr().add(b * 16));
                *f = _mm512_fnmadd_ps(min, _mm512_set1_ps(act.dsum()), *f);
            }
        }
    }
    for (m, f) in facc.iter().enumerate() {
        _mm512_storeu_ps(out.as_mut_ptr().add((t0 + m) * 16), *f);
    }
}

/// As [`panel16`] for an 8-row panel on AVX2; `finish` turns a block's accumulators into 8
/// i32 lanes (the U8 form sums its 8 groups in i16 lanes and widens once per block).
///
/// # Safety
/// AVX2 + FMA present; lengths as checked by [`check`].
#[inline(always)]
unsafe fn panel8<A: PanelAct, const G: usize, const MIN: bool>(
    p: &Panel,
    w: *const u8,
    acts: &[A],
    out: &mut [f32],
    dp: impl Fn(__m256i, __m256i, __m256i) -> __m256i + Copy,
    finish: impl Fn(__m256i) -> __m256i + Copy,
) {
    let t = out.len() / 8;
    let mut t0 = 0;
    while t0 + TILE_TOKENS_256 <= t {
        tile8::<A, TILE_TOKENS_256, G, MIN>(p, w, acts, t0, out, dp, finish);
        t0 += TILE_TOKENS_256;
    }
    while t0 < t {
        tile8::<A, 1, G, MIN>(p, w, acts, t0, out, dp, finish);
        t0 += 1;
    }
}

#[inline(always)]
unsafe fn tile8<A: PanelAct, const M: usize, const G: usize, const MIN: bool>(
    p: &Panel,
    w: *const u8,
    acts: &[A],
    t0: usize,
    out: &mut [f32],
    dp: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
    finish: impl Fn(__m256i) -> __m256i,
) {
    let nb = p.blocks;
    let a = acts.as_ptr();
    let mut facc = [_mm256_setzero_ps(); M];
    for b in 0..nb {
        let mut iacc = [_mm256_setzero_si256(); M];
        let wb = w.add(b * G * 32);
        for g in 0..G {
            let wv = _mm256_loadu_si256(wb.add(g * 32) as *const __m256i);
            for (m, acc) in iacc.iter_mut().enumerate() {
                let qs = (*a.add((t0 + m) * nb + b)).qs_bytes();
                let av = _mm256_set1_epi32(std::ptr::read_unaligned(qs.add(4 * g) as *const i32));
                *acc = dp(*acc, wv, av);
            }
        }
        let scale = _mm256_loadu_ps(p.scale.as_ptr().add(b * 8));
        for (m, f) in facc.iter_mut().enumerate() {
            let act = &*a.add((t0 + m) * nb + b);
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(finish(iacc[m])), _mm256_set1_ps(act.d()));
            *f = _mm256_fmadd_ps(scale, v, *f);
            if MIN {
                let min = _mm256_loadu_ps(p.min.as_ptr().add(b * 8));
                *f = _mm256_fnmadd_ps(min, _mm256_set1_ps(act.dsum()), *f);
            }
        }
    }
    for (m, f) in facc.iter().enumerate() {
        _mm256_storeu_ps(out.as_mut_ptr().add((t0 + m) * 8), *f);
    }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn u8_avx512_impl(p: &Panel, acts: &[ActBlock], out: &mut [f32]) {
    panel16::<_, 8, true>(p, p.w.as_ptr() as *const u8, acts, out, |acc, w, a| {
        _mm512_dpbusd_epi32(acc, w, a)
    });
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn i16_avx512_impl(p: &Panel, acts: &[ActBlock16], out: &mut [f32]) {
    panel16::<_, 16, false>(p, p.w.as_ptr() as *const u8, acts, out, |acc, w, a| {
        _mm512_dpwssd_epi32(acc, w, a)
    });
}

#[target_feature(enable = "avx2,fma")]
unsafe fn u8_avx2_impl(p: &Panel, acts: &[ActBlock], out: &mut [f32]) {
    let ones = _mm256_set1_epi16(1);
    // pmaddubsw cannot saturate: unsigned weights ≤ 15, |activations| ≤ 127, so a group's
    // pair sums are ≤ 3810 and a block's 8 groups ≤ 30480: summed in i16, widened once.
    panel8::<_, 8, true>(
        p,
        p.w.as_ptr() as *const u8,
        acts,
        out,
        |acc, w, a| _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, a)),
        |acc| _mm256_madd_epi16(acc, ones),
    );
}

#[target_feature(enable = "avx2,fma")]
unsafe fn i16_avx2_impl(p: &Panel, acts: &[ActBlock16], out: &mut [f32]) {
    panel8::<_, 16, false>(
        p,
        p.w.as_ptr() as *const u8,
        acts,
        out,
        |acc, w, a| _mm256_add_epi32(acc, _mm256_madd_epi16(w, a)),
        |acc| acc,
    );
}

/// U8-form panel of 16 rows; only handed out after detection of AVX-512 VNNI.
pub fn u8_avx512(p: &Panel, acts: &[ActBlock], out: &mut [f32]) {
    check(p, 8, 16, acts, out, true);
    // SAFETY: features detected before this kernel was handed out; lengths checked.
    unsafe { u8_avx512_impl(p, acts, out) }
}

/// I16-form panel of 16 rows; only handed out after detection of AVX-512 VNNI.
pub fn i16_avx512(p: &Panel, acts: &[ActBlock16], out: &mut [f32]) {
    check(p, 16, 16, acts, out, false);
    // SAFETY: as `u8_avx512`.
    unsafe { i16_avx512_impl(p, acts, out) }
}

/// U8-form panel of 8 rows; only handed out after detection of AVX2 + FMA.
pub fn u8_avx2(p: &Panel, acts: &[ActBlock], out: &mut [f32]) {
    check(p, 8, 8, acts, out, true);
    // SAFETY: as `u8_avx512`.
    unsafe { u8_avx2_impl(p, acts, out) }
}

/// I16-form panel of 8 rows; only handed out after detection of AVX2 + FMA.
pub fn i16_avx2(p: &Panel, acts: &[ActBlock16], out: &mut [f32]) {
    check(p, 16, 8, acts, out, false);
    // SAFETY: as `u8_avx512`.
    unsafe { i16_avx2_impl(p, acts, out) }
}
