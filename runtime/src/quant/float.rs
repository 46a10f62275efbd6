//! f16 / bf16 conversions as ggml writes them.

/// f32 → f16, rounding to nearest even. Under Miri the software conversion (same bits): the
/// `half` crate's F16C path, compiled in with `+f16c` (`scripts/miri.sh`), is an instruction
/// Miri does not implement.
#[inline]
pub fn f16_from_f32(x: f32) -> half::f16 {
    #[cfg(miri)]
    return half::f16::from_f32_const(x);
    #[cfg(not(miri))]
    return half::f16::from_f32(x);
}

/// bf16 bits → f32 (exact: bf16 is the upper half of an f32).
#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// f32 → bf16 bits exactly as ggml (and the `gguf` package) do it: NaNs are forced to a
/// quiet NaN keeping the sign and upper mantissa, everything else rounds to nearest even.
#[inline]
pub fn bf16_from_f32_ggml(x: f32) -> u16 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return ((bits >> 16) | 64) as u16;
    }
    ((bits as u64 + (0x7fff + ((bits >> 16) & 1) as u64)) >> 16) as u16
}
