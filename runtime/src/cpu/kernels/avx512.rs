//! AVX-512 VNNI kernels (`vpdpbusd` on 256-bit registers, AVX512VL) for the 32-element
//! block types. Only handed out by [`super::row_dot`] after run-time detection.

use super::avx2::{dot_blocks, dot_q8_0_a16, prefetch_distance, scales4, unpack_q4_0_unsigned};
use crate::cpu::act_blocks::{ActBlock, ActBlock16};
use std::arch::x86_64::*;

/// 32 unsigned bytes · 32 signed bytes → 8 i32 partial sums with one `vpdpbusd`.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
unsafe fn dot_u8_i8(w: __m256i, a: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dot_q8_0_impl(row: &[u8], x: &[ActBlock16]) -> f32 {
    dot_q8_0_a16(row, x, |acc, w, q| _mm256_dpwssd_epi32(acc, w, q))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dot_q4_0_impl(row: &[u8], x: &[ActBlock]) -> f32 {
    dot_blocks::<18, 8>(
        row,
        x,
        |b| unpack_q4_0_unsigned(b.add(2)),
        |w, q| dot_u8_i8(w, q),
    )
}

/// Safe entry point; only reachable through `row_dot` on a CPU with AVX-512 VNNI + VL.
pub fn dot_q8_0(row: &[u8], x: &[ActBlock16]) -> f32 {
    // SAFETY: handed out only after detection of avx2, fma, f16c, avx512f/vl/vnni.
    unsafe { dot_q8_0_impl(row, x) }
}

/// Safe entry point; only reachable through `row_dot` on a CPU with AVX-512 VNNI + VL.
pub fn dot_q4_0(row: &[u8], x: &[ActBlock]) -> f32 {
    // SAFETY: as `dot_q8_0`.
    unsafe { dot_q4_0_impl(row, x) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dot4_q8_0_impl(row: &[u8], x: [&[ActBlock16]; 4]) -> [f32; 4] {
    super::avx2::dot_q8_0_a16_x4(row, x, |acc, w, q| _mm256_dpwssd_epi32(acc, w, q))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dot4_q4_0_impl(row: &[u8], x: [&[ActBlock]; 4]) -> [f32; 4] {
    super::avx2::dot_blocks_x4::<18, 8>(
        row,
        x,
        |b| unpack_q4_0_unsigned(b.add(2)),
        |w, q| dot_u8_i8(w, q),
    )
}

/// Four-token Q8_0 kernel; only reachable through `row_dot4` after detection.
pub fn dot4_q8_0(row: &[u8], x: [&[ActBlock16]; 4]) -> [f32; 4] {
    // SAFETY: handed out only after detection of avx2, fma, f16c, avx512f/vl/vnni.
    unsafe { dot4_q8_0_impl(row, x) }
}

/// Four-token Q4_0 kernel; only reachable through `row_dot4` after detection.
pub fn dot4_q4_0(row: &[u8], x: [&[ActBlock]; 4]) -> [f32; 4] {
    // SAFETY: as `dot4_q8_0`.
    unsafe { dot4_q4_0_impl(row, x) }
}

/// Four Q4_0 rows against N activation vectors (decode of N sequences). Block i of the four
/// rows shares one 512-bit register, a 128-bit lane per row, loaded and unpacked once for
/// every token; per token, the activations' broadcast, the −8 offset and the scale
/// conversion are done once for four rows. Each token's sums are the same operations in the
/// same order whatever N is.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows4_q4_0_impl<const N: usize>(rows: [&[u8]; 4], x: [&[ActBlock]; N]) -> [[f32; 4]; N] {
    const BYTES: usize = 18;
    let n = rows
        .iter()
        .map(|r| r.len() / BYTES)
        .chain(x.iter().map(|a| a.len()))
        .fold(usize::MAX, usize::min);
    let p = rows.map(|r| r.as_ptr());
    let ahead = prefetch_distance(&rows);
    let nibbles = _mm512_set1_epi8(0x0f);
    // Lane l of the result takes row l / 4's scale.
    let spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    // Two interleaved accumulators per token (even and odd blocks).
    let mut acc = [[_mm512_setzero_ps(); 2]; N];
    for i in 0..n {
        let at = i * BYTES;
        for &row in &p {
            // Past the end of the matrix this is a hint for an address never read: harmless.
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(at + ahead) as *const i8);
        }
        let q = |r: usize| _mm_loadu_si128(p[r].add(at + 2) as *const __m128i);
        // [q_r0 | q_r1 | q_r2 | q_r3]: 16 bytes = 32 nibbles of each row.
        let w = _mm512_inserti32x4::<3>(
            _mm512_inserti32x4::<2>(
                _mm512_inserti32x4::<1>(_mm512_castsi128_si512(q(0)), q(1)),
                q(2),
            ),
            q(3),
        );
        let lo = _mm512_and_si512(w, nibbles);
        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(w), nibbles);
        for (k, acc) in acc.iter_mut().enumerate() {
            let a = &*x[k].as_ptr().add(i);
            let a_lo = _mm512_broadcast_i32x4(_mm_loadu_si128(a.qs.as_ptr() as *const __m128i));
            let a_hi =
                _mm512_broadcast_i32x4(_mm_loadu_si128(a.qs.as_ptr().add(16) as *const __m128i));
            // −8·Σq_a in one lane per row: the weights' offset, exact in integers.
            let init = _mm512_maskz_set1_epi32(0x1111, -8 * (a.sums[0] + a.sums[1]));
            let sums = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init, lo, a_lo), hi, a_hi);
            let d = scales4(&p, at, a.d);
            let d16 = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(d));
            acc[i % 2] = _mm512_fmadd_ps(d16, _mm512_cvtepi32_ps(sums), acc[i % 2]);
        }
    }
    acc.map(|acc| {
        let mut lanes = [0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), _mm512_add_ps(acc[0], acc[1]));
        std::array::from_fn(|r| lanes[4 * r..4 * r + 4].iter().sum())
    })
}

rows4_over_tokens!(
    /// Four-row Q4_0 kernel; only reachable through `rows_dot4` after detection of avx2, fma,
    /// f16c, avx512f/bw/vl/vnni.
    rows4_q4_0 => rows4_q4_0_impl, ActBlock);

/// Four Q8_0 rows against N 16-bit activation vectors (decode of N sequences): the rows'
/// weights widened once per block for every token; per token one `vpdpwssd` per row, then the
/// four rows' sums are interleaved into one register (a 128-bit lane holds one partial sum of
/// each row) so that scaling and accumulation are done once for four.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows4_q8_0_impl<const N: usize>(
    rows: [&[u8]; 4],
    x: [&[ActBlock16]; N],
) -> [[f32; 4]; N] {
    const BYTES: usize = 34;
    let n = rows
        .iter()
        .map(|r| r.len() / BYTES)
        .chain(x.iter().map(|a| a.len()))
        .fold(usize::MAX, usize::min);
    let p = rows.map(|r| r.as_ptr());
    let ahead = prefetch_distance(&rows);
    let mut acc = [[_mm512_setzero_ps(); 2]; N];
    for i in 0..n {
        let at = i * BYTES;
        for &row in &p {
            // Past the end of the matrix this is a hint for an address never read: harmless.
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(at + ahead) as *const i8);
        }
        let w = [0, 1, 2, 3]
            .map(|r| _mm512_cvtepi8_epi16(_mm256_loadu_si256(p[r].add(at + 2) as *const __m256i)));
        for (k, acc) in acc.iter_mut().enumerate() {
            let a = &*x[k].as_ptr().add(i);
            let act = _mm512_loadu_si512(a.qs.as_ptr() as *const _);
            let dot = |r: usize| _mm512_dpwssd_epi32(_mm512_setzero_si512(), w[r], act);
            let (s0, s1, s2, s3) = (dot(0), dot(1), dot(2), dot(3));
            // Per 128-bit lane: [r0, r1, r0, r1] then [r0, r1, r2, r3] partial sums.
            let s01 =
                _mm512_add_epi32(_mm512_unpacklo_epi32(s0, s1), _mm512_unpackhi_epi32(s0, s1));
            let s23 =
                _mm512_add_epi32(_mm512_unpacklo_epi32(s2, s3), _mm512_unpackhi_epi32(s2, s3));
            let s = _mm512_add_epi32(
                _mm512_unpacklo_epi64(s01, s23),
                _mm512_unpackhi_epi64(s01, s23),
            );
            let d = _mm512_broadcast_f32x4(scales4(&p, at, a.d));
            acc[i % 2] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[i % 2]);
        }
    }
    acc.map(|acc| {
        let mut lanes = [0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), _mm512_add_ps(acc[0], acc[1]));
        std::array::from_fn(|r| (0..4).map(|l| lanes[4 * l + r]).sum())
    })
}

rows4_over_tokens!(
    /// Four-row Q8_0 kernel; only reachable through `rows_dot4` after detection of avx2, fma,
    /// f16c, avx512f/bw/vl/vnni.
    rows4_q8_0 => rows4_q8_0_impl, ActBlock16);
