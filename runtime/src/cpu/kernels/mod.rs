//! Dot products of one weight row (any supported ggml type) with an activation vector: a
//! scalar reference and SIMD versions chosen at run time by CPU feature detection.
//!
//! Quantized rows (Q4_0, Q4_K, Q6_K) are dotted with 8-bit activations ([`ActBlock`]s), Q8_0
//! rows with 16-bit ones ([`ActBlock16`]: 8-bit activations on top of 8-bit weights cost
//! measurable accuracy); float rows (F32, F16, BF16) with the f32 activations.

/// The entry point of a four-row kernel `$imp::<N>(rows, [x of N tokens])` over any number
/// of tokens: `out[t] = rows · x[t]` for the `out.len()` activation rows of `x` ([T, blocks]),
/// in groups of up to four tokens (one accumulator each in registers).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! rows4_over_tokens {
    ($(#[$meta:meta])* $name:ident => $imp:ident, $act:ty) => {
        $(#[$meta])*
        pub fn $name(rows: [&[u8]; 4], x: &[$act], blocks: usize, out: &mut [[f32; 4]]) {
            let token = |t: usize| &x[t * blocks..(t + 1) * blocks];
            let mut t = 0;
            while t < out.len() {
                let n = (out.len() - t).min(4);
                let group = &mut out[t..t + n];
                // SAFETY: handed out only after detection of the kernel's features; it reads
                // only within the whole blocks of each row and of each token's slice.
                unsafe {
                    match n {
                        1 => group.copy_from_slice(&$imp(rows, [token(t)])),
                        2 => group.copy_from_slice(&$imp(rows, [token(t), token(t + 1)])),
                        3 => group
                            .copy_from_slice(&$imp(rows, [token(t), token(t + 1), token(t + 2)])),
                        _ => group.copy_from_slice(&$imp(
                            rows,
                            [token(t), token(t + 1), token(t + 2), token(t + 3)],
                        )),
                    }
                }
                t += n;
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "aarch64")]
pub mod gemm_neon;
#[cfg(target_arch = "x86_64")]
pub mod gemm_x86;
#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "aarch64")]
pub mod packed_neon;
#[cfg(target_arch = "x86_64")]
pub mod packed_x86;
pub mod scalar;

use super::act_blocks::{ActBlock, ActBlock16, BroadcastBlock, BroadcastBlock16};
use super::panel::{PanelForm, PanelKernel};
pub use super::simd::SimdLevel;
use crate::quant::GgmlType;

/// Every kernel this CPU has for rows of one weight type at one SIMD level — ggml's
/// `type_traits_cpu`: a product of that type picks among them by its token count
/// (`WeightMatrix::path`). A level this CPU lacks gets only the scalar row kernel.
#[derive(Clone, Copy, Default)]
pub struct TypeKernels {
    /// One row against one token's activations (every type the products support).
    pub row: Option<RowDot>,
    /// One row against four tokens' at once (prefill).
    pub four_tokens: Option<RowDot4>,
    /// Four rows at once against every token's (decode).
    pub four_rows: Option<RowsDot4>,
    /// A group of 8 rows repacked at load (`cpu::packed`) against every token's.
    pub groups: Option<GroupKernel>,
    /// A panel of rows against tiles of tokens (prefill): its width (rows) and kernel.
    pub panels: Option<(usize, PanelKernel)>,
}

impl TypeKernels {
    /// The kernels of rows of `ty` at `level`.
    pub fn of(ty: GgmlType, level: SimdLevel) -> TypeKernels {
        let form = match ty {
            GgmlType::Q4_0 | GgmlType::Q4_K => Some(PanelForm::U8),
            GgmlType::Q8_0 => Some(PanelForm::I16),
            _ => None,
        };
        let available = SimdLevel::available().contains(&level);
        TypeKernels {
            row: row_dot(ty, level),
            four_tokens: row_dot4(ty, level),
            four_rows: rows_dot4(ty, level),
            groups: group_kernel(ty, level),
            panels: form
                .filter(|_| available)
                .and_then(|form| panel_kernel(form, level)),
        }
    }
}

/// `row · x` for float rows: `x` has `row` elements.
pub type FloatDot = fn(row: &[u8], x: &[f32]) -> f32;
/// `row · x` for quantized rows: `x` has one block per 32 elements.
pub type QuantDot = fn(row: &[u8], x: &[ActBlock]) -> f32;

/// `row · x` for rows dotted with 16-bit activations (Q8_0).
pub type Quant16Dot = fn(row: &[u8], x: &[ActBlock16]) -> f32;

#[derive(Clone, Copy)]
pub enum RowDot {
    Float(FloatDot),
    Quant(QuantDot),
    Quant16(Quant16Dot),
}

/// The dot kernel for rows of `ty` at `level`, or `None` if the type has none (the caller
/// then dequantizes).
pub fn row_dot(ty: GgmlType, level: SimdLevel) -> Option<RowDot> {
    use RowDot::*;
    let scalar = match ty {
        GgmlType::F32 => Float(scalar::dot_f32),
        GgmlType::F16 => Float(scalar::dot_f16),
        GgmlType::BF16 => Float(scalar::dot_bf16),
        GgmlType::Q8_0 => Quant16(scalar::dot_q8_0),
        GgmlType::Q4_0 => Quant(scalar::dot_q4_0),
        GgmlType::Q4_K => Quant(scalar::dot_q4_k),
        GgmlType::Q6_K => Quant(scalar::dot_q6_k),
        _ => return None,
    };
    // A level this CPU lacks falls back to scalar: the SIMD kernels must never run without
    // their features.
    let level = if SimdLevel::available().contains(&level) {
        level
    } else {
        SimdLevel::Scalar
    };
    #[cfg(target_arch = "x86_64")]
    {
        if level >= SimdLevel::Avx512Vnni {
            match ty {
                GgmlType::Q8_0 => return Some(Quant16(avx512::dot_q8_0)),
                GgmlType::Q4_0 => return Some(Quant(avx512::dot_q4_0)),
                _ => {}
            }
        }
        if level >= SimdLevel::Avx2 {
            return Some(match ty {
                GgmlType::F32 => Float(avx2::dot_f32),
                GgmlType::F16 => Float(avx2::dot_f16),
                GgmlType::BF16 => Float(avx2::dot_bf16),
                GgmlType::Q8_0 => Quant16(avx2::dot_q8_0),
                GgmlType::Q4_0 => Quant(avx2::dot_q4_0),
                GgmlType::Q4_K => Quant(avx2::dot_q4_k),
                GgmlType::Q6_K => Quant(avx2::dot_q6_k),
                _ => scalar,
            });
        }
    }
    #[cfg(target_arch = "aarch64")]
    if matches!(level, SimdLevel::Neon | SimdLevel::NeonDotprod) {
        return Some(match ty {
            GgmlType::F32 => Float(neon::dot_f32),
            GgmlType::F16 => Float(neon::dot_f16),
            GgmlType::BF16 => Float(neon::dot_bf16),
            GgmlType::Q8_0 => Quant16(neon::dot_q8_0),
            GgmlType::Q4_0 if level == SimdLevel::NeonDotprod => Quant(neon::dot_q4_0_dotprod),
            GgmlType::Q4_0 => Quant(neon::dot_q4_0),
            GgmlType::Q4_K if level == SimdLevel::NeonDotprod => Quant(neon::dot_q4_k_dotprod),
            GgmlType::Q4_K => Quant(neon::dot_q4_k),
            GgmlType::Q6_K if level == SimdLevel::NeonDotprod => Quant(neon::dot_q6_k_dotprod),
            GgmlType::Q6_K => Quant(neon::dot_q6_k),
            _ => scalar,
        });
    }
    let _ = level;
    Some(scalar)
}

#[cfg(test)]
mod tests;

/// Four weight rows at once against the activations of T tokens ([T, blocks]; decode of T
/// sequences): `(rows, x, blocks, out [T])`. A token's sums do not depend on T.
#[derive(Clone, Copy)]
pub enum RowsDot4 {
    Quant(Rows4Kernel<ActBlock>),
    Quant16(Rows4Kernel<ActBlock16>),
}

/// `(four rows, activations [T, blocks], blocks, out [T])`.
pub type Rows4Kernel<A> = fn([&[u8]; 4], &[A], usize, &mut [[f32; 4]]);

/// The four-row kernel for rows of `ty` at `level`, where one exists (Q4_0 and Q8_0 on AVX2,
/// AVX-512 VNNI, NEON and NEON dotprod; Q4_K and Q6_K on AVX2 and AVX-512 VNNI); otherwise
/// the caller uses [`row_dot`] row by row.
pub fn rows_dot4(ty: GgmlType, level: SimdLevel) -> Option<RowsDot4> {
    if !SimdLevel::available().contains(&level) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    match (ty, level) {
        (GgmlType::Q4_0, SimdLevel::Avx512Vnni) => {
            return Some(RowsDot4::Quant(avx512::rows4_q4_0))
        }
        (GgmlType::Q8_0, SimdLevel::Avx512Vnni) => {
            return Some(RowsDot4::Quant16(avx512::rows4_q8_0))
        }
        (GgmlType::Q4_0, SimdLevel::Avx2) => return Some(RowsDot4::Quant(avx2::rows4_q4_0)),
        (GgmlType::Q8_0, SimdLevel::Avx2) => return Some(RowsDot4::Quant16(avx2::rows4_q8_0)),
        (GgmlType::Q6_K, SimdLevel::Avx2 | SimdLevel::Avx512Vnni) => {
            return Some(RowsDot4::Quant(avx2::rows4_q6_k))
        }
        (GgmlType::Q4_K, SimdLevel::Avx2 | SimdLevel::Avx512Vnni) => {
            return Some(RowsDot4::Quant(avx2::rows4_q4_k))
        }
        _ => {}
    }
    #[cfg(target_arch = "aarch64")]
    match (ty, level) {
        (GgmlType::Q4_0, SimdLevel::NeonDotprod) => {
            return Some(RowsDot4::Quant(neon::rows4_q4_0_dotprod))
        }
        (GgmlType::Q4_0, SimdLevel::Neon) => return Some(RowsDot4::Quant(neon::rows4_q4_0)),
        (GgmlType::Q8_0, SimdLevel::Neon | SimdLevel::NeonDotprod) => {
            return Some(RowsDot4::Quant16(neon::rows4_q8_0))
        }
        _ => {}
    }
    let _ = (ty, level);
    None
}

/// One group of 8 rows repacked at load ([`crate::cpu::packed`]) against T tokens:
/// `(the group's bytes, activations [T, blocks], the same broadcast ([T, blocks], or empty),
/// blocks of 32, out [T])`.
#[derive(Clone, Copy)]
pub enum GroupKernel {
    /// 8-bit activations (Q4_0, Q6_K).
    Quant(fn(&[u8], &[ActBlock], &[BroadcastBlock], usize, &mut [[f32; 8]])),
    /// 16-bit activations (Q8_0).
    Quant16(fn(&[u8], &[ActBlock16], &[BroadcastBlock16], usize, &mut [[f32; 8]])),
}

/// Whether the group kernels read the broadcast form of the activations when they have it
/// (x86: see [`BroadcastBlock`]; NEON multiplies by element of the blocks themselves).
pub const GROUP_KERNELS_READ_BROADCAST: bool = cfg!(target_arch = "x86_64");

/// The kernel of repacked rows of `ty` at `level`, where repacking is used: Q4_0 on AVX2,
/// AVX-512 VNNI and NEON with the dot-product extension; Q8_0, Q4_K and Q6_K on AVX2 and
/// AVX-512 VNNI (the AVX2 kernels). Elsewhere the rows are read in place.
pub fn group_kernel(ty: GgmlType, level: SimdLevel) -> Option<GroupKernel> {
    if !SimdLevel::available().contains(&level) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    match (ty, level) {
        (GgmlType::Q4_0, SimdLevel::Avx512Vnni) => {
            return Some(GroupKernel::Quant(packed_x86::q4_0_vnni))
        }
        (GgmlType::Q4_0, SimdLevel::Avx2) => {
            return Some(GroupKernel::Quant(packed_x86::q4_0_avx2))
        }
        (GgmlType::Q6_K, SimdLevel::Avx2 | SimdLevel::Avx512Vnni) => {
            return Some(GroupKernel::Quant(packed_x86::q6_k_avx2))
        }
        (GgmlType::Q4_K, SimdLevel::Avx2 | SimdLevel::Avx512Vnni) => {
            return Some(GroupKernel::Quant(packed_x86::q4_k_avx2))
        }
        (GgmlType::Q8_0, SimdLevel::Avx2 | SimdLevel::Avx512Vnni) => {
            return Some(GroupKernel::Quant16(packed_x86::q8_0_avx2))
        }
        _ => {}
    }
    #[cfg(target_arch = "aarch64")]
    if (ty, level) == (GgmlType::Q4_0, SimdLevel::NeonDotprod) {
        return Some(GroupKernel::Quant(packed_neon::q4_0_dotprod));
    }
    let _ = (ty, level);
    None
}

/// The panel microkernel of `form` at `level` and its panel width (rows), where one exists.
pub fn panel_kernel(form: PanelForm, level: SimdLevel) -> Option<(usize, PanelKernel)> {
    #[cfg(target_arch = "x86_64")]
    {
        use PanelForm::*;
        return match (form, level) {
            (U8, SimdLevel::Avx512Vnni) => Some((16, PanelKernel::U8(gemm_x86::u8_avx512))),
            (I16, SimdLevel::Avx512Vnni) => Some((16, PanelKernel::I16(gemm_x86::i16_avx512))),
            (U8, SimdLevel::Avx2) => Some((8, PanelKernel::U8(gemm_x86::u8_avx2))),
            (I16, SimdLevel::Avx2) => Some((8, PanelKernel::I16(gemm_x86::i16_avx2))),
            _ => None,
        };
    }
    #[cfg(target_arch = "aarch64")]
    {
        use PanelForm::*;
        return match (form, level) {
            (U8, SimdLevel::NeonDotprod) => Some((8, PanelKernel::U8(gemm_neon::u8_dotprod))),
            (U8, SimdLevel::Neon) => Some((8, PanelKernel::U8(gemm_neon::u8_neon))),
            (I16, SimdLevel::Neon | SimdLevel::NeonDotprod) => {
                Some((8, PanelKernel::I16(gemm_neon::i16_neon)))
            }
            _ => None,
        };
    }
    #[allow(unreachable_code)]
    {
        let _ = (form, level);
        None
    }
}

/// Four activation rows at once against one weight row (prefill): the weight block is
/// unpacked once for the four.
#[derive(Clone, Copy)]
pub enum RowDot4 {
    Quant(fn(&[u8], [&[ActBlock]; 4]) -> [f32; 4]),
    Quant16(fn(&[u8], [&[ActBlock16]; 4]) -> [f32; 4]),
}

/// The four-token kernel for rows of `ty` at `level`, where one exists (Q8_0, Q4_0, Q4_K, Q6_K
/// on x86 SIMD levels); otherwise the caller uses [`row_dot`] per token.
pub fn row_dot4(ty: GgmlType, level: SimdLevel) -> Option<RowDot4> {
    if !SimdLevel::available().contains(&level) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        match (ty, level) {
            (GgmlType::Q8_0, SimdLevel::Avx512Vnni) => {
                return Some(RowDot4::Quant16(avx512::dot4_q8_0))
            }
            (GgmlType::Q4_0, SimdLevel::Avx512Vnni) => {
                return Some(RowDot4::Quant(avx512::dot4_q4_0))
            }
            (GgmlType::Q8_0, SimdLevel::Avx2) => return Some(RowDot4::Quant16(avx2::dot4_q8_0)),
            (GgmlType::Q4_0, SimdLevel::Avx2) => return Some(RowDot4::Quant(avx2::dot4_q4_0)),
            (GgmlType::Q4_K, SimdLevel::Avx2 | SimdLevel::Avx512Vnni) => {
                return Some(RowDot4::Quant(avx2::dot4_q4_k))
            }
            (GgmlType::Q6_K, SimdLevel::Avx2 | SimdLevel::Avx512Vnni) => {
                return Some(RowDot4::Quant(avx2::dot4_q6_k))
            }
            _ => {}
        }
    }
    let _ = (ty, level);
    None
}
