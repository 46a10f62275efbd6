//! Decode kernels for Q4_0 repacked in groups of 8 rows ([`crate::cpu::packed`]): one register
//! lane per row, so a token's 8 sums need no horizontal reduction. Per block and token: the 8
//! groups of 4 activations broadcast, multiplied with the 8 rows' nibbles (`pmaddubsw`, the i16
//! sums added before one `pmaddwd`; or `vpdpbusd` with AVX-512 VNNI), `−8·Σa` and the scales.
//! A token's sums are the same operations whatever the number of tokens run together.

use crate::cpu::act::ActBlock;
use crate::cpu::packed::GROUP_BLOCK_BYTES;
use std::arch::x86_64::*;

/// Group blocks ahead to prefetch (a group block is 144 bytes: ~9 cache lines ahead).
const PREFETCH_BLOCKS: usize = 4;

/// Eight rows (one group, `blocks` group blocks) against N tokens; `dot(w, x)` is the
/// integer products of the 8 weight registers (groups 0..8) with the token's 8 broadcast
/// groups, as 8 i32 lanes.
#[inline(always)]
unsafe fn group_q4_0<const N: usize>(
    group: &[u8],
    x: [&[ActBlock]; N],
    dot: impl Fn(&[__m256i; 8], &[__m256i; 8]) -> __m256i,
) -> [[f32; 8]; N] {
    let n = x
        .iter()
        .map(|a| a.len())
        .fold(group.len() / GROUP_BLOCK_BYTES, usize::min);
    let low = _mm256_set1_epi8(0x0f);
    let p = group.as_ptr();
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..n {
        let blk = p.add(b * GROUP_BLOCK_BYTES);
        // Past the group's end this is a hint for an address never read: harmless.
        _mm_prefetch::<_MM_HINT_T0>(
            blk.wrapping_add(PREFETCH_BLOCKS * GROUP_BLOCK_BYTES) as *const i8
        );
        _mm_prefetch::<_MM_HINT_T0>(
            blk.wrapping_add(PREFETCH_BLOCKS * GROUP_BLOCK_BYTES + 64) as *const i8
        );
        _mm_prefetch::<_MM_HINT_T0>(
            blk.wrapping_add(PREFETCH_BLOCKS * GROUP_BLOCK_BYTES + 128) as *const i8
        );
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        let q = blk.add(16);
        let mut w = [_mm256_setzero_si256(); 8];
        for k in 0..4 {
            let v = _mm256_loadu_si256(q.add(32 * k) as *const __m256i);
            w[k] = _mm256_and_si256(v, low);
            w[k + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
        }
        for t in 0..N {
            let a = &*x[t].as_ptr().add(b);
            let qs = a.qs.as_ptr() as *const i32;
            let xs: [__m256i; 8] =
                std::array::from_fn(|g| _mm256_set1_epi32(std::ptr::read_unaligned(qs.add(g))));
            let sums =
                _mm256_sub_epi32(dot(&w, &xs), _mm256_set1_epi32(8 * (a.sums[0] + a.sums[1])));
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(a.d));
            acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc[t]);
        }
    }
    acc.map(|a| {
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), a);
        out
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q4_0_avx2<const N: usize>(group: &[u8], x: [&[ActBlock]; N]) -> [[f32; 8]; N] {
    let ones = _mm256_set1_epi16(1);
    // Nibbles ≤ 15, |a| ≤ 127: a group's pair sums ≤ 3810, eight groups ≤ 30480 fit i16.
    group_q4_0(group, x, |w, xs| {
        let mut s = _mm256_maddubs_epi16(w[0], xs[0]);
        for g in 1..8 {
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w[g], xs[g]));
        }
        _mm256_madd_epi16(s, ones)
    })
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn group_q4_0_vnni<const N: usize>(group: &[u8], x: [&[ActBlock]; N]) -> [[f32; 8]; N] {
    group_q4_0(group, x, |w, xs| {
        let mut s = _mm256_setzero_si256();
        for g in 0..8 {
            s = _mm256_dpbusd_epi32(s, w[g], xs[g]);
        }
        s
    })
}

macro_rules! over_tokens {
    ($(#[$meta:meta])* $name:ident => $imp:ident) => {
        $(#[$meta])*
        pub fn $name(group: &[u8], x: &[ActBlock], blocks: usize, out: &mut [[f32; 8]]) {
            let token = |t: usize| &x[t * blocks..(t + 1) * blocks];
            let mut t = 0;
            while t < out.len() {
                let n = (out.len() - t).min(4);
                let o = &mut out[t..t + n];
                // SAFETY: handed out only after detection of the kernel's features; it reads
                // only whole group blocks and each token's slice.
                unsafe {
                    match n {
                        1 => o.copy_from_slice(&$imp(group, [token(t)])),
                        2 => o.copy_from_slice(&$imp(group, [token(t), token(t + 1)])),
                        3 => o.copy_from_slice(&$imp(group, [token(t), token(t + 1), token(t + 2)])),
                        _ => o.copy_from_slice(&$imp(
                            group,
                            [token(t), token(t + 1), token(t + 2), token(t + 3)],
                        )),
                    }
                }
                t += n;
            }
        }
    };
}

over_tokens!(
    /// Repacked Q4_0 group kernel (AVX2); only reachable after detection of avx2/fma/f16c.
    q4_0_avx2 => group_q4_0_avx2);
over_tokens!(
    /// Repacked Q4_0 group kernel (AVX-512 VNNI on 256-bit registers); only reachable after
    /// detection.
    q4_0_vnni => group_q4_0_vnni);
