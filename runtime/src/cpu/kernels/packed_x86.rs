//! Decode kernels for Q4_0 repacked in groups of 8 rows ([`crate::cpu::packed`]): one register
//! lane per row, so a token's 8 sums need no horizontal reduction. Per block and token: the 8
//! groups of 4 activations broadcast (read whole from [`BroadcastBlock`]s where the caller made
//! them), multiplied with the 8 rows' nibbles (`pmaddubsw`, the i16
//! sums added before one `pmaddwd`; or `vpdpbusd` with AVX-512 VNNI), `−8·Σa` and the scales.
//! A token's sums are the same operations whatever the number of tokens run together.
//!
//! Repacked Q4_K: per sub-block the Q4_0 products, `pmaddwd` by the rows' scales, the mins
//! from the activation block's sum.
//!
//! Repacked Q8_0 (16-bit activations): per block, 16 registers of 8 rows × 2 weights widened to
//! i16 once for every token, `pmaddwd` with the token's pair of activations.
//!
//! Repacked Q6_K: per 32-element chunk, each of its 8 groups of 4 unpacked once (low nibble |
//! high bits << 4: 0..63) for every token, `pmaddubsw` against the token's broadcast group, two
//! groups summed in i16, then `pmaddwd` by the rows' 16-element scales; the `−32` offset as
//! `32·Σ scale·Σa` from the activation block's half sums (one `pmaddwd`).

use crate::cpu::act_blocks::{ActBlock, ActBlock16, BroadcastBlock, BroadcastBlock16};
use crate::cpu::packed::{
    GROUP_BLOCK_BYTES, Q4K_GROUP_SUPER_BYTES, Q4K_NIBBLES_AT, Q6K_GROUP_CHUNK_BYTES,
    Q6K_GROUP_SUPER_BYTES, Q8_0_GROUP_BLOCK_BYTES,
};
use std::arch::x86_64::*;

/// Group blocks ahead to prefetch (a group block is 144 bytes: ~9 cache lines ahead).
const PREFETCH_BLOCKS: usize = 4;

/// One token's activations: its blocks (8- or 16-bit) and, when the kernel reads them (`B`),
/// the same broadcast.
#[derive(Clone, Copy)]
struct Token<'a, A, Bc> {
    blocks: &'a [A],
    broadcast: &'a [Bc],
}

impl<A, Bc> Token<'_, A, Bc> {
    /// Blocks of 32 the token has for a kernel that reads the broadcast form or not.
    fn len<const B: bool>(&self) -> usize {
        if B {
            self.blocks.len().min(self.broadcast.len())
        } else {
            self.blocks.len()
        }
    }

    /// Block `b`.
    ///
    /// # Safety
    /// `b < self.len::<false>()`.
    #[inline(always)]
    unsafe fn block(&self, b: usize) -> &A {
        &*self.blocks.as_ptr().add(b)
    }
}

impl Token<'_, ActBlock, BroadcastBlock> {
    /// Group `g` (4 activations) of block `b` in the 8 lanes.
    ///
    /// # Safety
    /// AVX2; `b < self.len::<B>()`, `g < 8`.
    #[inline(always)]
    unsafe fn group<const B: bool>(&self, b: usize, g: usize) -> __m256i {
        if B {
            let lanes = &(*self.broadcast.as_ptr().add(b)).groups[g];
            _mm256_load_si256(lanes.as_ptr() as *const __m256i)
        } else {
            let qs = self.block(b).qs.as_ptr() as *const i32;
            _mm256_set1_epi32(std::ptr::read_unaligned(qs.add(g)))
        }
    }
}

impl Token<'_, ActBlock16, BroadcastBlock16> {
    /// Pair `p` (2 activations of 16 bits) of block `b` in the 8 lanes.
    ///
    /// # Safety
    /// AVX2; `b < self.len::<B>()`, `p < 16`.
    #[inline(always)]
    unsafe fn pair<const B: bool>(&self, b: usize, p: usize) -> __m256i {
        if B {
            let lanes = &(*self.broadcast.as_ptr().add(b)).pairs[p];
            _mm256_load_si256(lanes.as_ptr() as *const __m256i)
        } else {
            let qs = self.block(b).qs.as_ptr() as *const i32;
            _mm256_set1_epi32(std::ptr::read_unaligned(qs.add(p)))
        }
    }
}

type Token8<'a> = Token<'a, ActBlock, BroadcastBlock>;
type Token16<'a> = Token<'a, ActBlock16, BroadcastBlock16>;

/// The 8 lanes (rows) of a register of sums.
#[inline(always)]
fn lanes(a: __m256) -> [f32; 8] {
    // SAFETY: `__m256` and `[f32; 8]` have the same size, every bit pattern valid in both.
    unsafe { std::mem::transmute(a) }
}

/// A group block's 8 registers of nibbles (4 × 32 bytes at `q`): groups 0..4 the low nibbles,
/// 4..8 the high ones.
///
/// # Safety
/// AVX2; 128 bytes readable at `q`.
#[inline(always)]
unsafe fn nibble_groups(q: *const u8) -> [__m256i; 8] {
    let low = _mm256_set1_epi8(0x0f);
    let mut w = [_mm256_setzero_si256(); 8];
    for k in 0..4 {
        let v = _mm256_loadu_si256(q.add(32 * k) as *const __m256i);
        w[k] = _mm256_and_si256(v, low);
        w[k + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    }
    w
}

/// Per token, `Σ_g pmaddubsw(nibbles of group g, token's group g of block `block`)` in i16
/// lanes, for the group block's nibbles at `q` (128 bytes): nibbles ≤ 15, |a| ≤ 128, so a
/// group's pair sums are ≤ 3840 and eight groups' ≤ 30720 (no saturation). Each register of
/// nibbles is unpacked once and used by every token before the next, so fewer values live
/// across the tokens than with all 8 unpacked first (16 registers: with 4 tokens that spilled
/// the accumulators; Q4_K with 4 tokens 1.13 → 0.83 ms on a 2048² matrix, Zen 1).
///
/// # Safety
/// AVX2; 128 bytes readable at `q`; `block < x[t].len::<B>()` for every token.
#[inline(always)]
unsafe fn nibble_sums<const N: usize, const B: bool>(
    q: *const u8,
    x: &[Token8; N],
    block: usize,
) -> [__m256i; N] {
    let low = _mm256_set1_epi8(0x0f);
    let mut s = [_mm256_setzero_si256(); N];
    for k in 0..4 {
        let v = _mm256_loadu_si256(q.add(32 * k) as *const __m256i);
        let lows = _mm256_and_si256(v, low);
        let highs = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
        for t in 0..N {
            let lo = _mm256_maddubs_epi16(lows, x[t].group::<B>(block, k));
            let hi = _mm256_maddubs_epi16(highs, x[t].group::<B>(block, k + 4));
            s[t] = _mm256_add_epi16(s[t], _mm256_add_epi16(lo, hi));
        }
    }
    s
}

/// Eight rows (one group, `blocks` group blocks) against N tokens; `dot(q, x, b)` is, per
/// token, the integer products of the group block's nibbles at `q` with the token's block `b`,
/// as 8 i32 lanes.
#[inline(always)]
unsafe fn group_q4_0<const N: usize, const B: bool>(
    group: &[u8],
    x: [Token8; N],
    dot: impl Fn(*const u8, &[Token8; N], usize) -> [__m256i; N],
) -> [[f32; 8]; N] {
    let n = x
        .iter()
        .map(|a| a.len::<B>())
        .fold(group.len() / GROUP_BLOCK_BYTES, usize::min);
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
        let products = dot(blk.add(16), &x, b);
        for t in 0..N {
            let a = x[t].block(b);
            // d_a·Σ(q·a) − 8·d_a·Σa, the offset from the block's `dsum` (= d_a·Σa).
            let row_sums = _mm256_fmsub_ps(
                _mm256_set1_ps(a.d),
                _mm256_cvtepi32_ps(products[t]),
                _mm256_set1_ps(8.0 * a.dsum),
            );
            acc[t] = _mm256_fmadd_ps(d, row_sums, acc[t]);
        }
    }
    acc.map(lanes)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q4_0_avx2<const N: usize, const B: bool>(
    group: &[u8],
    x: [Token8; N],
) -> [[f32; 8]; N] {
    let ones = _mm256_set1_epi16(1);
    group_q4_0::<N, B>(group, x, |q, x, b| {
        nibble_sums::<N, B>(q, x, b).map(|s| _mm256_madd_epi16(s, ones))
    })
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn group_q4_0_vnni<const N: usize, const B: bool>(
    group: &[u8],
    x: [Token8; N],
) -> [[f32; 8]; N] {
    // 32 registers: the 8 of nibbles stay in registers across the tokens.
    group_q4_0::<N, B>(group, x, |q, x, b| {
        let w = nibble_groups(q);
        x.map(|t| {
            let mut s = _mm256_setzero_si256();
            for g in 0..8 {
                s = _mm256_dpbusd_epi32(s, w[g], t.group::<B>(b, g));
            }
            s
        })
    })
}

/// Eight Q6_K rows (one group of super-blocks) against N tokens.
///
/// Bounds: q ≤ 63 and |a| ≤ 128, so a `pmaddubsw` pair sum is ≤ 16128 and two groups' sums
/// ≤ 32256 fit i16 (no saturation); by a scale (|s| ≤ 128), four pairs ≤ 1.7·10⁷ fit i32; the
/// half sums |Σa| ≤ 2048 fit the i16 lanes of the offset's `pmaddwd`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q6_k_avx2<const N: usize, const B: bool>(
    group: &[u8],
    x: [Token8; N],
) -> [[f32; 8]; N] {
    let supers = x
        .iter()
        .map(|a| a.len::<B>() / 8)
        .fold(group.len() / Q6K_GROUP_SUPER_BYTES, usize::min);
    let low = _mm256_set1_epi8(0x0f);
    let high_mask = _mm256_set1_epi8(0x30);
    // Per 32-bit lane (row) the i16 pair (s0, s0), or (s1, s1), of the scales (s0, s1).
    let first = _mm256_setr_epi8(
        0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13, 0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12,
        13, 12, 13,
    );
    let second = _mm256_add_epi8(first, _mm256_set1_epi8(2));
    let p = group.as_ptr();
    let mut acc = [_mm256_setzero_ps(); N];
    for sb in 0..supers {
        let sup = p.add(sb * Q6K_GROUP_SUPER_BYTES);
        let d = _mm256_cvtph_ps(_mm_loadu_si128(sup as *const __m128i));
        for c in 0..8 {
            let chunk = sup.add(16 + c * Q6K_GROUP_CHUNK_BYTES);
            // Past the group's end this is a hint for an address never read: harmless.
            let ahead = chunk.wrapping_add(2 * Q6K_GROUP_CHUNK_BYTES);
            for line in 0..4 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line) as *const i8);
            }
            // i16 lane 2·row + h: the scale of elements 16h.. of the chunk.
            let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(chunk as *const __m128i));
            let pair_scales = [
                _mm256_shuffle_epi8(scales, first),
                _mm256_shuffle_epi8(scales, second),
            ];
            let nibbles = chunk.add(16);
            let bits = [
                _mm256_loadu_si256(chunk.add(144) as *const __m256i),
                _mm256_loadu_si256(chunk.add(176) as *const __m256i),
            ];
            let block = sb * 8 + c;
            let a: [&ActBlock; N] = std::array::from_fn(|t| x[t].block(block));
            let mut sums = [_mm256_setzero_si256(); N];
            for pair in 0..4 {
                let mut pair_sum = [_mm256_setzero_si256(); N];
                for g in [2 * pair, 2 * pair + 1] {
                    let v = _mm256_loadu_si256(nibbles.add(32 * (g % 4)) as *const __m256i);
                    let lows = if g < 4 { v } else { _mm256_srli_epi16(v, 4) };
                    // The group's 2 bits (bits 2m, 2m + 1 of its register) to bits 4, 5; the
                    // 16-bit shifts carry bits across bytes only below bit 4 or above bit 5.
                    let h = bits[g / 4];
                    let high = match g % 4 {
                        0 => _mm256_slli_epi16(h, 4),
                        1 => _mm256_slli_epi16(h, 2),
                        2 => h,
                        _ => _mm256_srli_epi16(h, 2),
                    };
                    let q = _mm256_or_si256(
                        _mm256_and_si256(lows, low),
                        _mm256_and_si256(high, high_mask),
                    );
                    for t in 0..N {
                        let xs = x[t].group::<B>(block, g);
                        pair_sum[t] = _mm256_add_epi16(pair_sum[t], _mm256_maddubs_epi16(q, xs));
                    }
                }
                for t in 0..N {
                    sums[t] = _mm256_add_epi32(
                        sums[t],
                        _mm256_madd_epi16(pair_sum[t], pair_scales[pair / 2]),
                    );
                }
            }
            for t in 0..N {
                // Σ_h s_h·Σa_h, the −32 offset's factor.
                let halves = (a[t].sums[0] as u16 as u32 | (a[t].sums[1] as u32) << 16) as i32;
                let offset = _mm256_madd_epi16(scales, _mm256_set1_epi32(halves));
                let total = _mm256_sub_epi32(sums[t], _mm256_slli_epi32(offset, 5));
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(a[t].d));
                acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(total), acc[t]);
            }
        }
    }
    acc.map(lanes)
}

/// Eight Q4_K rows (one group of super-blocks) against N tokens: per sub-block of 32 the Q4_0
/// group kernel's products (nibbles ≤ 15, |a| ≤ 128: eight groups' pair sums ≤ 30720 fit
/// i16), `pmaddwd` by the rows' 6-bit scales, then `d·d_a·Σ − dmin·min·d_a·Σa` per row.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q4_k_avx2<const N: usize, const B: bool>(
    group: &[u8],
    x: [Token8; N],
) -> [[f32; 8]; N] {
    let supers = x
        .iter()
        .map(|a| a.len::<B>() / 8)
        .fold(group.len() / Q4K_GROUP_SUPER_BYTES, usize::min);
    // Per 32-bit lane (row) the i16 pair (scale, scale) of the lane's (scale, min).
    let scale_pairs = _mm256_setr_epi8(
        0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13, 0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12,
        13, 12, 13,
    );
    let p = group.as_ptr();
    let mut acc = [_mm256_setzero_ps(); N];
    for sb in 0..supers {
        let sup = p.add(sb * Q4K_GROUP_SUPER_BYTES);
        let d = _mm256_cvtph_ps(_mm_loadu_si128(sup as *const __m128i));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(sup.add(16) as *const __m128i));
        for j in 0..8 {
            let q = sup.add(Q4K_NIBBLES_AT + 128 * j);
            // Past the group's end this is a hint for an address never read: harmless.
            let ahead = q.wrapping_add(PREFETCH_BLOCKS * 128);
            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64) as *const i8);
            // i16 lanes (scale, min) per row.
            let scale_min =
                _mm256_cvtepu8_epi16(_mm_loadu_si128(sup.add(32 + 16 * j) as *const __m128i));
            let scales = _mm256_shuffle_epi8(scale_min, scale_pairs);
            let mins = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_srli_epi32(scale_min, 16)));
            let block = sb * 8 + j;
            let products = nibble_sums::<N, B>(q, &x, block);
            for t in 0..N {
                let s = products[t];
                let a = x[t].block(block);
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(a.d));
                let sum = _mm256_cvtepi32_ps(_mm256_madd_epi16(s, scales));
                acc[t] = _mm256_fnmadd_ps(
                    mins,
                    _mm256_set1_ps(a.dsum),
                    _mm256_fmadd_ps(scale, sum, acc[t]),
                );
            }
        }
    }
    acc.map(lanes)
}

/// Eight Q8_0 rows (one group) against N tokens of 16-bit activations: per block, each pair
/// register sign-extended once, `pmaddwd` with the token's pair in every lane, the 16 pairs'
/// sums in i32 (|w| ≤ 128, |a| ≤ 32768: 16 pairs ≤ 1.3·10⁸), then the scales.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q8_0_avx2<const N: usize, const B: bool>(
    group: &[u8],
    x: [Token16; N],
) -> [[f32; 8]; N] {
    let n = x
        .iter()
        .map(|a| a.len::<B>())
        .fold(group.len() / Q8_0_GROUP_BLOCK_BYTES, usize::min);
    let p = group.as_ptr();
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..n {
        let blk = p.add(b * Q8_0_GROUP_BLOCK_BYTES);
        // Past the group's end this is a hint for an address never read: harmless.
        let ahead = blk.wrapping_add(2 * Q8_0_GROUP_BLOCK_BYTES);
        for line in 0..5 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line) as *const i8);
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        let mut sums = [_mm256_setzero_si256(); N];
        for pair in 0..16 {
            let w =
                _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(16 + 16 * pair) as *const __m128i));
            for t in 0..N {
                sums[t] = _mm256_add_epi32(sums[t], _mm256_madd_epi16(w, x[t].pair::<B>(b, pair)));
            }
        }
        for t in 0..N {
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(x[t].block(b).d));
            acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums[t]), acc[t]);
        }
    }
    acc.map(lanes)
}

/// `$imp::<n, $b>` on the `n` (1..=4) tokens from `t`.
macro_rules! on_tokens {
    ($imp:ident, $b:literal, $group:ident, $token:ident, $t:ident, $n:ident) => {
        match $n {
            1 => &$imp::<1, $b>($group, [$token($t)])[..],
            2 => &$imp::<2, $b>($group, [$token($t), $token($t + 1)])[..],
            3 => &$imp::<3, $b>($group, [$token($t), $token($t + 1), $token($t + 2)])[..],
            _ => &$imp::<4, $b>(
                $group,
                [$token($t), $token($t + 1), $token($t + 2), $token($t + 3)],
            )[..],
        }
    };
}

macro_rules! over_tokens {
    ($(#[$meta:meta])* $name:ident => $imp:ident($act:ty, $bc:ty)) => {
        $(#[$meta])*
        pub fn $name(
            group: &[u8],
            x: &[$act],
            broadcast: &[$bc],
            blocks: usize,
            out: &mut [[f32; 8]],
        ) {
            let token = |t: usize| Token {
                blocks: &x[t * blocks..(t + 1) * blocks],
                broadcast: broadcast.get(t * blocks..(t + 1) * blocks).unwrap_or(&[]),
            };
            let whole = broadcast.len() >= out.len() * blocks;
            let mut t = 0;
            while t < out.len() {
                let n = (out.len() - t).min(4);
                // SAFETY: handed out only after detection of the kernel's features; it reads
                // only whole group blocks and each token's blocks.
                let sums = unsafe {
                    if whole {
                        on_tokens!($imp, true, group, token, t, n)
                    } else {
                        on_tokens!($imp, false, group, token, t, n)
                    }
                };
                out[t..t + n].copy_from_slice(sums);
                t += n;
            }
        }
    };
}

over_tokens!(
    /// Repacked Q4_0 group kernel (AVX2); only reachable after detection of avx2/fma/f16c.
    q4_0_avx2 => group_q4_0_avx2(ActBlock, BroadcastBlock));
over_tokens!(
    /// Repacked Q4_0 group kernel (AVX-512 VNNI on 256-bit registers); only reachable after
    /// detection.
    q4_0_vnni => group_q4_0_vnni(ActBlock, BroadcastBlock));
over_tokens!(
    /// Repacked Q6_K group kernel (AVX2; also the AVX-512 VNNI level's); only reachable after
    /// detection of avx2/fma/f16c.
    q6_k_avx2 => group_q6_k_avx2(ActBlock, BroadcastBlock));
over_tokens!(
    /// Repacked Q8_0 group kernel (AVX2; also the AVX-512 VNNI level's); only reachable after
    /// detection of avx2/fma/f16c.
    q8_0_avx2 => group_q8_0_avx2(ActBlock16, BroadcastBlock16));
over_tokens!(
    /// Repacked Q4_K group kernel (AVX2; also the AVX-512 VNNI level's); only reachable after
    /// detection of avx2/fma/f16c.
    q4_k_avx2 => group_q4_k_avx2(ActBlock, BroadcastBlock));
