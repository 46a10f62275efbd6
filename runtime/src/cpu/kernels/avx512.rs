//! AVX-512 VNNI kernels (`vpdpbusd` on 256-bit registers, AVX512VL) for the 32-element
//! block types. Only handed out by [`super::row_dot`] after run-time detection.

use super::avx2::{dot_blocks, dot_q8_0_a16, unpack_q4_0_unsigned};
use crate::cpu::act::{ActBlock, ActBlock16};
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
