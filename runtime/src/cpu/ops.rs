//! Element-wise and per-head operations of the model step (f32).

/// `out = x / rms(x) · w`, rms over the row.
#[inline]
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv * w;
    }
}

/// Whether the portable loops should run in their AVX2 + FMA builds (see [`multiversion`]).
#[inline]
pub fn use_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::simd::SimdLevel::detect() >= super::simd::SimdLevel::Avx2
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Defines `$name` that runs `$body` (a function marked `#[inline(always)]`, whose portable
/// loops and inlined callees then vectorize 8 wide) compiled for AVX2 + FMA when this CPU
/// has them, and as baseline code otherwise: the crate itself targets baseline x86-64
/// (SSE2), so hot element-wise code needs this to use the CPU it runs on.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:path) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::cpu::ops::use_avx2() {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// `eˣ` without a libm call, branch-free so loops over it vectorize: 2ⁿ·p(r) with
/// `x = n·ln2 + r`, |r| ≤ ln2/2, p a degree-6 polynomial (Cephes' `expf` coefficients);
/// relative error < 2e-7. Inputs are clamped to [−87, 88]: `exp_fast(−∞)` ≈ 1.6e−38, not 0.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// In-place softmax. The max, the exponentials and their sum run in 8 independent lanes (the
/// lanes' partial sums added in a fixed order), so that they vectorize.
#[inline]
pub fn softmax(x: &mut [f32]) {
    let split = x.len() / 8 * 8;
    let mut lanes = [f32::NEG_INFINITY; 8];
    for c in x[..split].chunks_exact(8) {
        for k in 0..8 {
            lanes[k] = lanes[k].max(c[k]);
        }
    }
    let max = x[split..].iter().copied().fold(
        lanes.into_iter().fold(f32::NEG_INFINITY, f32::max),
        f32::max,
    );
    let mut sums = [0f32; 8];
    for c in x[..split].chunks_exact_mut(8) {
        for k in 0..8 {
            c[k] = exp_fast(c[k] - max);
            sums[k] += c[k];
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for v in x[split..].iter_mut() {
        *v = exp_fast(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Asks the CPU to bring `row`'s cache lines into L1 before it is read (x86-64; elsewhere
/// nothing): for rows the hardware prefetcher does not see coming, like a ring's strided rows.
#[inline(always)]
pub fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let (start, bytes) = (row.as_ptr() as *const i8, std::mem::size_of_val(row));
        let mut at = 0;
        while at < bytes {
            // SAFETY: `at` < `bytes`: an address inside `row`; a prefetch reads nothing.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(at)) };
            at += 64;
        }
        if let Some(last) = bytes.checked_sub(1) {
            // The last byte's line, when `row` does not start on a line.
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(last)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// `log σ(x)`, stable for large |x|.
#[inline]
pub fn log_sigmoid(x: f32) -> f32 {
    x.min(0.0) - ln_1p_unit(exp_fast(-x.abs()))
}

/// `ln(1 + t)` for `t` in [0, 1], without a libm call (so gate loops vectorize): with
/// `s = t / (2 + t)` ∈ [0, 1/3], `ln(1 + t) = 2·atanh(s) = 2·(s + s³/3 + s⁵/5 + …)`, summed to
/// s¹³ (the rest < 1e-8). Within 3e-7 of libm (relative, f32 rounding; tested).
#[inline(always)]
pub fn ln_1p_unit(t: f32) -> f32 {
    let s = t / (2.0 + t);
    let s2 = s * s;
    let mut p = 1.0 / 13.0;
    p = p * s2 + 1.0 / 11.0;
    p = p * s2 + 1.0 / 9.0;
    p = p * s2 + 1.0 / 7.0;
    p = p * s2 + 1.0 / 5.0;
    p = p * s2 + 1.0 / 3.0;
    p = p * s2 + 1.0;
    2.0 * s * p
}

#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

#[inline]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// Adaptive average pooling of `x` (length L) into `out` (length O), PyTorch's
/// `AdaptiveAvgPool1d`: bin `b` averages `x[⌊b·L/O⌋ .. ⌈(b+1)·L/O⌉)`.
pub fn adaptive_avg_pool(x: &[f32], out: &mut [f32]) {
    let (l, o) = (x.len(), out.len());
    for (b, y) in out.iter_mut().enumerate() {
        let start = b * l / o;
        let end = ((b + 1) * l).div_ceil(o);
        *y = x[start..end].iter().sum::<f32>() / (end - start) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_1p_unit_is_within_its_stated_error_of_libm() {
        let mut worst = 0f64;
        for i in 0..=100_000 {
            let t = i as f32 / 100_000.0;
            let want = (t as f64).ln_1p();
            let got = ln_1p_unit(t) as f64;
            if want > 0.0 {
                worst = worst.max((got - want).abs() / want);
            }
        }
        assert!(worst < 3e-7, "ln_1p_unit relative error {worst:e} ≥ 3e-7");
        assert_eq!(ln_1p_unit(0.0), 0.0);
        // log_sigmoid through it, against the f64 formula.
        for x in [-30.0f32, -5.0, -0.3, 0.0, 0.7, 4.0, 25.0] {
            let want = -((-(x as f64)).exp().ln_1p());
            assert!(
                (log_sigmoid(x) as f64 - want).abs() <= 2e-6 * want.abs().max(1e-3),
                "{x}"
            );
        }
    }

    #[test]
    fn exp_fast_is_within_its_stated_error_of_libm() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp_fast(x) as f64;
            worst = worst.max((got - want).abs() / want);
            x += 0.001_37;
        }
        assert!(worst < 2e-7, "exp_fast relative error {worst:e} ≥ 2e-7");
        assert!(exp_fast(f32::NEG_INFINITY) < 1e-37);
    }
}
