//! AVX2 + FMA + F16C kernels. The `pub fn`s are only handed out by [`super::row_dot`] after
//! run-time detection found these features.

use crate::cpu::act_blocks::{ActBlock, ActBlock16};
use crate::quant::{scale_min_k4, BlockQ4K, BlockQ6K};
use std::arch::x86_64::*;

const Q8_0_BYTES: usize = 34;
const Q4_0_BYTES: usize = 18;

/// The f16 at `p[at..at + 2]` as f32, with F16C.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn f16_at(p: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([p[at], p[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// 32 nibbles of a Q4_0 block as unsigned bytes 0..15 (the −8 offset is applied with the
/// activation sums), elements 0..15 then 16..31.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn unpack_q4_0_unsigned(qs: *const u8) -> __m256i {
    let q = _mm_loadu_si128(qs as *const __m128i);
    let mask = _mm_set1_epi8(0x0f);
    _mm256_set_m128i(
        _mm_and_si128(_mm_srli_epi16(q, 4), mask),
        _mm_and_si128(q, mask),
    )
}

/// 32 unsigned bytes · 32 signed bytes → 8 i32 partial sums (maddubs cannot overflow for
/// w ≤ 15, |a| ≤ 127).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dot_u8_i8(w: __m256i, a: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32_impl(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(row.len() / 4);
    let (w, xp) = (row.as_ptr() as *const f32, x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(
                _mm256_loadu_ps(w.add(i + 8 * k)),
                _mm256_loadu_ps(xp.add(i + 8 * k)),
                *a,
            );
        }
        i += 32;
    }
    let mut sum = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        sum += std::ptr::read_unaligned(w.add(i)) * x[i];
        i += 1;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_impl(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(row.len() / 2);
    let (w, xp) = (row.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let h = _mm_loadu_si128(w.add(2 * (i + 8 * k)) as *const __m128i);
            *a = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(xp.add(i + 8 * k)), *a);
        }
        i += 16;
    }
    let mut sum = hsum(_mm256_add_ps(acc[0], acc[1]));
    while i < n {
        sum += f16_at(row, 2 * i) * x[i];
        i += 1;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_bf16_impl(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(row.len() / 2);
    let (w, xp) = (row.as_ptr(), x.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm_loadu_si128(w.add(2 * i) as *const __m128i);
        let f = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        acc = _mm256_fmadd_ps(f, _mm256_loadu_ps(xp.add(i)), acc);
        i += 8;
    }
    let mut sum = hsum(acc);
    while i < n {
        sum += crate::quant::bf16_to_f32(u16::from_le_bytes([row[2 * i], row[2 * i + 1]])) * x[i];
        i += 1;
    }
    sum
}

/// Σ over Q8_0 blocks of `d_w·d_a·(w·q_a)` with 16-bit activations; `dot16` multiplies 16
/// sign-extended weights by 16 activations into 8 i32 sums.
#[inline(always)]
pub(super) unsafe fn dot_q8_0_a16(
    row: &[u8],
    x: &[ActBlock16],
    dot16: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) -> f32 {
    let n = x.len().min(row.len() / Q8_0_BYTES);
    let (p, a) = (row.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    for i in 0..n {
        let b = p.add(i * Q8_0_BYTES);
        let act = &*a.add(i);
        let w_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(2) as *const __m128i));
        let w_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(18) as *const __m128i));
        let q_lo = _mm256_loadu_si256(act.qs.as_ptr() as *const __m256i);
        let q_hi = _mm256_loadu_si256(act.qs.as_ptr().add(16) as *const __m256i);
        let sums = dot16(dot16(_mm256_setzero_si256(), w_lo, q_lo), w_hi, q_hi);
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(
            b as *const u16,
        ) as i32)));
        acc[i % 2] = _mm256_fmadd_ps(
            _mm256_set1_ps(d * act.d),
            _mm256_cvtepi32_ps(sums),
            acc[i % 2],
        );
    }
    hsum(_mm256_add_ps(acc[0], acc[1]))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0_impl(row: &[u8], x: &[ActBlock16]) -> f32 {
    dot_q8_0_a16(row, x, |acc, w, q| {
        _mm256_add_epi32(acc, _mm256_madd_epi16(w, q))
    })
}

/// Σ over 32-element blocks of `d_w·d_a·(w·q_a)`, two blocks per iteration into two
/// accumulators. `BYTES`: block size; `unpack`: the block's 32 signed weights; `dot`: 8 i32
/// partial sums of w·q_a.
#[inline(always)]
pub(super) unsafe fn dot_blocks<const BYTES: usize, const OFFSET: i32>(
    row: &[u8],
    x: &[ActBlock],
    unpack: impl Fn(*const u8) -> __m256i,
    dot: impl Fn(__m256i, __m256i) -> __m256i,
) -> f32 {
    let n = x.len().min(row.len() / BYTES);
    let (p, a) = (row.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    // Σ d·d_a·OFFSET·Σq_a: the weights' offset, applied once per block through the sums.
    let mut offset = 0f32;
    let mut block = |i: usize, acc: __m256| -> __m256 {
        let b = p.add(i * BYTES);
        let act = &*a.add(i);
        let q = _mm256_loadu_si256(act.qs.as_ptr() as *const __m256i);
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(
            b as *const u16,
        ) as i32)));
        let scale = d * act.d;
        if OFFSET != 0 {
            offset += d * act.dsum;
        }
        _mm256_fmadd_ps(
            _mm256_set1_ps(scale),
            _mm256_cvtepi32_ps(dot(unpack(b), q)),
            acc,
        )
    };
    while i + 2 <= n {
        acc[0] = block(i, acc[0]);
        acc[1] = block(i + 1, acc[1]);
        i += 2;
    }
    if i < n {
        acc[0] = block(i, acc[0]);
    }
    hsum(_mm256_add_ps(acc[0], acc[1])) - OFFSET as f32 * offset
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_0_impl(row: &[u8], x: &[ActBlock]) -> f32 {
    dot_blocks::<Q4_0_BYTES, 8>(
        row,
        x,
        |b| unpack_q4_0_unsigned(b.add(2)),
        |w, q| dot_u8_i8(w, q),
    )
}

/// Q4_K rows against `N` activation rows: per sub-block j of 32,
/// `d·sc_j·d_a·Σ q·q_a − dmin·m_j·d_a·Σ q_a`; each weight sub-block is unpacked once for all N.
#[inline(always)]
unsafe fn dot_q4_k_n<const N: usize>(row: &[u8], x: [&[ActBlock]; N]) -> [f32; N] {
    const BYTES: usize = size_of::<BlockQ4K>();
    let nb = x
        .iter()
        .map(|a| a.len() / 8)
        .min()
        .unwrap_or(0)
        .min(row.len() / BYTES);
    let mask = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut mins = [0f32; N];
    for i in 0..nb {
        let b: BlockQ4K = bytemuck::pod_read_unaligned(&row[i * BYTES..(i + 1) * BYTES]);
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for k in 0..4 {
            let q = _mm256_loadu_si256(b.qs.as_ptr().add(32 * k) as *const __m256i);
            let halves = [
                _mm256_and_si256(q, mask),
                _mm256_and_si256(_mm256_srli_epi16(q, 4), mask),
            ];
            for (half, nibbles) in halves.into_iter().enumerate() {
                let j = 2 * k + half;
                let (sc, m) = scale_min_k4(j, &b.scales);
                let (dsc, dm) = (d * sc as f32, dmin * m as f32);
                for t in 0..N {
                    let a = &x[t][i * 8 + j];
                    let qa = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                    let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles, qa), ones);
                    acc[t] =
                        _mm256_fmadd_ps(_mm256_set1_ps(dsc * a.d), _mm256_cvtepi32_ps(dot), acc[t]);
                    mins[t] += dm * a.dsum;
                }
            }
        }
    }
    std::array::from_fn(|t| hsum(acc[t]) - mins[t])
}

/// Q6_K rows against `N` activation rows: per 32-element chunk with two 16-element scales,
/// `d·Σ_chunks d_a·Σ_halves sc·Σ (q6 − 32)·q_a`. The signed weights w = q6 − 32 go through
/// `maddubs` as |w| against the activations with w's sign (`psignb`; |w| ≤ 32, so pair sums
/// fit 16 bits), then `madd` by the scales: no bias term, no 32-bit multiply, no scalar work
/// per token. Each chunk is unpacked once for all N.
#[inline(always)]
unsafe fn dot_q6_k_n<const N: usize>(row: &[u8], x: [&[ActBlock]; N]) -> [f32; N] {
    const BYTES: usize = size_of::<BlockQ6K>();
    let nb = x
        .iter()
        .map(|a| a.len() / 8)
        .min()
        .unwrap_or(0)
        .min(row.len() / BYTES);
    let low_mask = _mm256_set1_epi8(0x0f);
    let two_bits = _mm256_set1_epi8(3);
    let bias = _mm256_set1_epi8(32);
    let p = row.as_ptr();
    let mut acc = [_mm256_setzero_ps(); N];
    for i in 0..nb {
        let b = p.add(i * BYTES);
        let (ql, qh, scales) = (b, b.add(128), b.add(192) as *const i8);
        // Σ_chunks d_a · (the chunk's scaled integer sums), per token.
        let mut block = [_mm256_setzero_ps(); N];
        for c in 0..8 {
            let (h, q) = (c / 4, c % 4);
            let l = _mm256_loadu_si256(ql.add(h * 64 + (q % 2) * 32) as *const __m256i);
            let low = if q < 2 { l } else { _mm256_srli_epi16(l, 4) };
            let hb = _mm256_loadu_si256(qh.add(h * 32) as *const __m256i);
            let high = _mm256_and_si256(
                _mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * q as i32)),
                two_bits,
            );
            let q6 = _mm256_or_si256(_mm256_and_si256(low, low_mask), _mm256_slli_epi16(high, 4));
            let w = _mm256_sub_epi8(q6, bias);
            let w_abs = _mm256_abs_epi8(w);
            // 16-bit lanes 0..8 hold pairs of the first 16 elements, 8..16 of the second.
            let (sc0, sc1) = (
                *scales.add(h * 8 + 2 * q) as i16,
                *scales.add(h * 8 + 2 * q + 1) as i16,
            );
            let sc = _mm256_set_m128i(_mm_set1_epi16(sc1), _mm_set1_epi16(sc0));
            for t in 0..N {
                let a = &*x[t].as_ptr().add(i * 8 + c);
                let qa = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                let dot =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(qa, w)), sc);
                block[t] = _mm256_fmadd_ps(_mm256_set1_ps(a.d), _mm256_cvtepi32_ps(dot), block[t]);
            }
        }
        let d_bits = std::ptr::read_unaligned(b.add(208) as *const u16);
        let d = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            d_bits as i32,
        ))));
        for t in 0..N {
            acc[t] = _mm256_fmadd_ps(d, block[t], acc[t]);
        }
    }
    std::array::from_fn(|t| hsum(acc[t]))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_k_impl(row: &[u8], x: &[ActBlock]) -> f32 {
    dot_q4_k_n::<1>(row, [x])[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q6_k_impl(row: &[u8], x: &[ActBlock]) -> f32 {
    dot_q6_k_n::<1>(row, [x])[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_q4_k_impl(row: &[u8], x: [&[ActBlock]; 4]) -> [f32; 4] {
    dot_q4_k_n::<4>(row, x)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_q6_k_impl(row: &[u8], x: [&[ActBlock]; 4]) -> [f32; 4] {
    dot_q6_k_n::<4>(row, x)
}

/// Four-token Q4_K kernel; only reachable through `row_dot4` after detection.
pub fn dot4_q4_k(row: &[u8], x: [&[ActBlock]; 4]) -> [f32; 4] {
    // SAFETY: handed out only when avx2, fma and f16c were detected; loads stay in bounds.
    unsafe { dot4_q4_k_impl(row, x) }
}

/// Four-token Q6_K kernel; only reachable through `row_dot4` after detection.
pub fn dot4_q6_k(row: &[u8], x: [&[ActBlock]; 4]) -> [f32; 4] {
    // SAFETY: as `dot4_q4_k`.
    unsafe { dot4_q6_k_impl(row, x) }
}

macro_rules! safe_wrappers {
    ($($name:ident => $impl:ident($t:ty)),* $(,)?) => {$(
        /// Safe entry point; only reachable through `row_dot` on a CPU with AVX2, FMA and F16C.
        pub fn $name(row: &[u8], x: &[$t]) -> f32 {
            // SAFETY: `row_dot` returns this function only when run-time detection found
            // avx2, fma and f16c; every load stays inside `row` / `x` (lengths checked in the impl).
            unsafe { $impl(row, x) }
        }
    )*};
}

safe_wrappers! {
    dot_f32 => dot_f32_impl(f32),
    dot_f16 => dot_f16_impl(f32),
    dot_bf16 => dot_bf16_impl(f32),
    dot_q8_0 => dot_q8_0_impl(ActBlock16),
    dot_q4_0 => dot_q4_0_impl(ActBlock),
    dot_q4_k => dot_q4_k_impl(ActBlock),
    dot_q6_k => dot_q6_k_impl(ActBlock),
}

/// Four activation rows against one Q8_0 row: each weight block is loaded and widened once.
#[inline(always)]
pub(super) unsafe fn dot_q8_0_a16_x4(
    row: &[u8],
    x: [&[ActBlock16]; 4],
    dot16: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) -> [f32; 4] {
    let n = x
        .iter()
        .map(|a| a.len())
        .min()
        .unwrap_or(0)
        .min(row.len() / Q8_0_BYTES);
    let p = row.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in 0..n {
        let b = p.add(i * Q8_0_BYTES);
        let w_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(2) as *const __m128i));
        let w_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(18) as *const __m128i));
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(
            b as *const u16,
        ) as i32)));
        for k in 0..4 {
            let act = &*x[k].as_ptr().add(i);
            let q_lo = _mm256_loadu_si256(act.qs.as_ptr() as *const __m256i);
            let q_hi = _mm256_loadu_si256(act.qs.as_ptr().add(16) as *const __m256i);
            let sums = dot16(dot16(_mm256_setzero_si256(), w_lo, q_lo), w_hi, q_hi);
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * act.d), _mm256_cvtepi32_ps(sums), acc[k]);
        }
    }
    [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
}

/// Four activation rows against one row of 32-element blocks (8-bit activations): each
/// weight block is unpacked once.
#[inline(always)]
pub(super) unsafe fn dot_blocks_x4<const BYTES: usize, const OFFSET: i32>(
    row: &[u8],
    x: [&[ActBlock]; 4],
    unpack: impl Fn(*const u8) -> __m256i,
    dot: impl Fn(__m256i, __m256i) -> __m256i,
) -> [f32; 4] {
    let n = x
        .iter()
        .map(|a| a.len())
        .min()
        .unwrap_or(0)
        .min(row.len() / BYTES);
    let p = row.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut offset = [0f32; 4];
    for i in 0..n {
        let b = p.add(i * BYTES);
        let w = unpack(b);
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(
            b as *const u16,
        ) as i32)));
        for k in 0..4 {
            let act = &*x[k].as_ptr().add(i);
            let q = _mm256_loadu_si256(act.qs.as_ptr() as *const __m256i);
            let scale = d * act.d;
            if OFFSET != 0 {
                offset[k] += d * act.dsum;
            }
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(dot(w, q)), acc[k]);
        }
    }
    let o = OFFSET as f32;
    [
        hsum(acc[0]) - o * offset[0],
        hsum(acc[1]) - o * offset[1],
        hsum(acc[2]) - o * offset[2],
        hsum(acc[3]) - o * offset[3],
    ]
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_q8_0_impl(row: &[u8], x: [&[ActBlock16]; 4]) -> [f32; 4] {
    dot_q8_0_a16_x4(row, x, |acc, w, q| {
        _mm256_add_epi32(acc, _mm256_madd_epi16(w, q))
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_q4_0_impl(row: &[u8], x: [&[ActBlock]; 4]) -> [f32; 4] {
    dot_blocks_x4::<Q4_0_BYTES, 8>(
        row,
        x,
        |b| unpack_q4_0_unsigned(b.add(2)),
        |w, q| dot_u8_i8(w, q),
    )
}

/// Four-token Q8_0 kernel; only reachable through `row_dot4` after detection.
pub fn dot4_q8_0(row: &[u8], x: [&[ActBlock16]; 4]) -> [f32; 4] {
    // SAFETY: handed out only when avx2, fma and f16c were detected; loads stay in bounds.
    unsafe { dot4_q8_0_impl(row, x) }
}

/// Four-token Q4_0 kernel; only reachable through `row_dot4` after detection.
pub fn dot4_q4_0(row: &[u8], x: [&[ActBlock]; 4]) -> [f32; 4] {
    // SAFETY: as `dot4_q8_0`.
    unsafe { dot4_q4_0_impl(row, x) }
}

/// How far ahead the four-row kernels prefetch: the same block of the next four rows, which
/// the caller reads next. A thread sweeps its rows in order, but four rows at a time: the
/// hardware prefetcher does not see that as one stream (measured on a Llama-3.2-1B-shaped
/// Q4_0 model, 2 threads: 16 → 29 tokens/s, ~19 of the machine's ~24 GB/s).
#[inline(always)]
pub(super) fn prefetch_distance(rows: &[&[u8]; 4]) -> usize {
    4 * rows[0].len()
}

/// The f16 scales of the four rows' blocks at byte `at`, times the activation scale `d_a`.
#[inline(always)]
pub(super) unsafe fn scales4(p: &[*const u8; 4], at: usize, d_a: f32) -> __m128 {
    let bits = _mm_set_epi16(
        0,
        0,
        0,
        0,
        scale_bits(p[3].add(at)),
        scale_bits(p[2].add(at)),
        scale_bits(p[1].add(at)),
        scale_bits(p[0].add(at)),
    );
    _mm_mul_ps(_mm_cvtph_ps(bits), _mm_set1_ps(d_a))
}

/// The f16 scale at the start of the block at `p` as raw bits.
#[inline(always)]
pub(super) unsafe fn scale_bits(p: *const u8) -> i16 {
    std::ptr::read_unaligned(p as *const i16)
}

/// Four rows' i32x8 block sums → the four rows' totals (lanes 0..4).
#[inline(always)]
unsafe fn reduce4(s: [__m256i; 4]) -> __m128i {
    // Per 128-bit half: [r0, r1, r2, r3] partial sums after two horizontal adds.
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// Four Q4_0 rows against N activation vectors (decode of N sequences): the rows' nibbles are
/// loaded once per block for every token; per token, the activation load, the −8 offset and
/// the scale conversion are shared by the four rows. Prefetches the next four rows (see
/// [`prefetch_distance`]). Each token's sums are the same operations in the same order
/// whatever N is.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows4_q4_0_impl<const N: usize>(rows: [&[u8]; 4], x: [&[ActBlock]; N]) -> [[f32; 4]; N] {
    let n = rows
        .iter()
        .map(|r| r.len() / Q4_0_BYTES)
        .chain(x.iter().map(|a| a.len()))
        .fold(usize::MAX, usize::min);
    let p = rows.map(|r| r.as_ptr());
    let ahead = prefetch_distance(&rows);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm_setzero_ps(); N];
    for i in 0..n {
        let at = i * Q4_0_BYTES;
        for &row in &p {
            // Past the end of the matrix this is a hint for an address never read: harmless.
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(at + ahead) as *const i8);
        }
        // (Loops, not closures: see `rows4_q8_0_impl`.)
        let mut w = [_mm256_setzero_si256(); 4];
        for r in 0..4 {
            w[r] = unpack_q4_0_unsigned(p[r].add(at + 2));
        }
        for k in 0..N {
            let a = &*x[k].as_ptr().add(i);
            let q = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            let mut dots = [_mm256_setzero_si256(); 4];
            for r in 0..4 {
                dots[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(w[r], q), ones);
            }
            let sums = _mm_sub_epi32(reduce4(dots), _mm_set1_epi32(8 * (a.sums[0] + a.sums[1])));
            acc[k] = _mm_fmadd_ps(scales4(&p, at, a.d), _mm_cvtepi32_ps(sums), acc[k]);
        }
    }
    acc.map(|a| {
        let mut out = [0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), a);
        out
    })
}

/// Four Q8_0 rows against N 16-bit activation vectors (decode of N sequences); as
/// [`rows4_q4_0_impl`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows4_q8_0_impl<const N: usize>(
    rows: [&[u8]; 4],
    x: [&[ActBlock16]; N],
) -> [[f32; 4]; N] {
    let n = rows
        .iter()
        .map(|r| r.len() / Q8_0_BYTES)
        .chain(x.iter().map(|a| a.len()))
        .fold(usize::MAX, usize::min);
    let p = rows.map(|r| r.as_ptr());
    let ahead = prefetch_distance(&rows);
    let mut acc = [_mm_setzero_ps(); N];
    for i in 0..n {
        let at = i * Q8_0_BYTES;
        for &row in &p {
            // As in `rows4_q4_0_impl`.
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(at + ahead) as *const i8);
        }
        // (Loops, not closures: a closure called per row was not inlined at opt-level 2, and
        // a call per block costs more than its products: the test profile ran ~3× slower.)
        let mut w = [(_mm256_setzero_si256(), _mm256_setzero_si256()); 4];
        for r in 0..4 {
            let b = p[r].add(at);
            w[r] = (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(2) as *const __m128i)),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(18) as *const __m128i)),
            );
        }
        for k in 0..N {
            let a = &*x[k].as_ptr().add(i);
            let q_lo = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            let q_hi = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
            let mut dots = [_mm256_setzero_si256(); 4];
            for r in 0..4 {
                let (w_lo, w_hi) = w[r];
                dots[r] =
                    _mm256_add_epi32(_mm256_madd_epi16(w_lo, q_lo), _mm256_madd_epi16(w_hi, q_hi));
            }
            let sums = reduce4(dots);
            acc[k] = _mm_fmadd_ps(scales4(&p, at, a.d), _mm_cvtepi32_ps(sums), acc[k]);
        }
    }
    acc.map(|a| {
        let mut out = [0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), a);
        out
    })
}

/// Four K-quant rows against N activation vectors, row after row (the four rows are adjacent
/// in memory: one sequential stream), each row unpacked once for the N tokens by `dot`; a
/// token's sums are those of the one-row kernel, whatever N is.
#[inline(always)]
unsafe fn rows4_by_row<const N: usize>(
    rows: [&[u8]; 4],
    dot: impl Fn(&[u8]) -> [f32; N],
) -> [[f32; 4]; N] {
    let mut out = [[0f32; 4]; N];
    for (r, row) in rows.iter().enumerate() {
        for (t, v) in dot(row).into_iter().enumerate() {
            out[t][r] = v;
        }
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows4_q6_k_impl<const N: usize>(rows: [&[u8]; 4], x: [&[ActBlock]; N]) -> [[f32; 4]; N] {
    rows4_by_row(rows, |row| dot_q6_k_n::<N>(row, x))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows4_q4_k_impl<const N: usize>(rows: [&[u8]; 4], x: [&[ActBlock]; N]) -> [[f32; 4]; N] {
    rows4_by_row(rows, |row| dot_q4_k_n::<N>(row, x))
}

rows4_over_tokens!(
    /// Four-row Q6_K kernel; only reachable through `rows_dot4` after detection of
    /// AVX2/FMA/F16C.
    rows4_q6_k => rows4_q6_k_impl, ActBlock);
rows4_over_tokens!(
    /// Four-row Q4_K kernel; only reachable through `rows_dot4` after detection of
    /// AVX2/FMA/F16C.
    rows4_q4_k => rows4_q4_k_impl, ActBlock);
rows4_over_tokens!(
    /// Four-row Q4_0 kernel; only reachable through `rows_dot4` after detection of
    /// AVX2/FMA/F16C.
    rows4_q4_0 => rows4_q4_0_impl, ActBlock);
rows4_over_tokens!(
    /// Four-row Q8_0 kernel; only reachable through `rows_dot4` after detection of
    /// AVX2/FMA/F16C.
    rows4_q8_0 => rows4_q8_0_impl, ActBlock16);

/// [`crate::cpu::act_blocks::quantize_activations`] with AVX2, bit for bit: per block of 32, `d =
/// max|x|/127`, `q = x·(1/d)` rounded to nearest even (`cvtps2dq` under the default rounding
/// mode, as the portable code's magic-number rounding), the half sums from the i32 values;
/// blocks with NaN, ±∞ or a subnormal scale go through the portable loop. Only called after
/// detection of AVX2 (see `act::quantize_activations`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn quantize_activations(x: &[f32], out: &mut [ActBlock]) {
    let sign = _mm256_set1_ps(-0.0);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (xs, b) in x.chunks_exact(32).zip(out.iter_mut()) {
        let v: [__m256; 4] = std::array::from_fn(|k| _mm256_loadu_ps(xs.as_ptr().add(8 * k)));
        let nan = v.map(|v| _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        let nan = _mm256_or_ps(_mm256_or_ps(nan[0], nan[1]), _mm256_or_ps(nan[2], nan[3]));
        let abs = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        if _mm256_movemask_ps(nan) != 0 || !amax.is_finite() || !id.is_finite() {
            // NaN, ±∞ or a subnormal scale (whose inverse overflows): the portable loop's
            // saturating casts define those blocks' bits (and keep the sums from overflowing).
            crate::cpu::act_blocks::quantize_activations_portable(xs, std::slice::from_mut(b));
            continue;
        }
        let id = _mm256_set1_ps(id);
        let q = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, id)));
        let bytes = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        _mm256_storeu_si256(
            b.qs.as_mut_ptr() as *mut __m256i,
            _mm256_permutevar8x32_epi32(bytes, order),
        );
        let half = |a: __m256i, c: __m256i| {
            let s = _mm256_add_epi32(a, c);
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
            let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<1>(s)))
        };
        b.d = d;
        b.sums = [half(q[0], q[1]), half(q[2], q[3])];
        b.dsum = d * (b.sums[0] + b.sums[1]) as f32;
    }
}
