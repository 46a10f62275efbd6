//! ggml tensor types with their exact block layouts, and one scalar reference `quantize` /
//! `dequantize` per type. These scalar routines are the oracle that every SIMD or GPU kernel
//! is tested against; they reproduce the bytes and floats of ggml's own tools
//! (fixtures in `tests/fixtures/quant`).
//!
//! A "row" is a run of elements along the first (fastest) dimension; its length must be a
//! multiple of the type's block size.

mod float;
mod k_dequant;
mod k_quantize;
mod legacy;
pub mod planes;

pub use float::{bf16_from_f32_ggml, bf16_to_f32};
pub use k_dequant::{scale_min_k4, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ8_0, QK4_0, QK4_1, QK8_0};

use crate::error::{Error, Result};

/// ggml's tensor type ids (`enum ggml_type`), for the types whose block layout we know.
/// Types the runtime cannot dequantize still parse, so a file can be inspected.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    BF16 = 30,
}

impl GgmlType {
    pub const ALL: [GgmlType; 15] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::BF16,
    ];

    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.iter().copied().find(|t| *t as u32 == id)
    }

    /// ggml's name, as `gguf-dump` prints it.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Q8_K => "Q8_K",
            GgmlType::BF16 => "BF16",
        }
    }

    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => 32,
            GgmlType::Q8_0 | GgmlType::Q8_1 => 32,
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K => QK_K,
            GgmlType::Q6_K | GgmlType::Q8_K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => size_of::<BlockQ4_0>(),
            GgmlType::Q4_1 => size_of::<BlockQ4_1>(),
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => size_of::<BlockQ8_0>(),
            GgmlType::Q8_1 => 36,
            GgmlType::Q2_K => size_of::<BlockQ2K>(),
            GgmlType::Q3_K => size_of::<BlockQ3K>(),
            GgmlType::Q4_K => size_of::<BlockQ4K>(),
            GgmlType::Q5_K => size_of::<BlockQ5K>(),
            GgmlType::Q6_K => size_of::<BlockQ6K>(),
            GgmlType::Q8_K => 292,
        }
    }

    /// Bytes of a row of `n` elements, or an error when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Result<usize> {
        if n % self.block_size() != 0 {
            return Err(Error::InvalidArgument(format!(
                "row of {n} elements is not a multiple of {}'s block size {}",
                self.name(),
                self.block_size()
            )));
        }
        Ok(n / self.block_size() * self.type_size())
    }

    pub fn can_dequantize(self) -> bool {
        !matches!(
            self,
            GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_1 | GgmlType::Q8_K
        )
    }

    pub fn can_quantize(self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q8_0
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q4_K
                | GgmlType::Q6_K
        )
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn check_lengths(ty: GgmlType, n: usize, bytes: usize) -> Result<()> {
    let want = ty.row_bytes(n)?;
    if bytes != want {
        return Err(Error::InvalidArgument(format!(
            "{ty}: {n} elements need {want} bytes, got {bytes}"
        )));
    }
    Ok(())
}

/// Scalar reference dequantization of `src` (whole blocks of `ty`) into `dst`
/// (`dst.len()` elements). Bit-exact with ggml's and the `gguf` package's dequantizers.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    check_lengths(ty, dst.len(), src.len())?;
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16_to_f32(u16::from_le_bytes([s[0], s[1]]));
            }
        }
        GgmlType::Q4_0 => legacy::dequantize_q4_0(src, dst),
        GgmlType::Q4_1 => legacy::dequantize_q4_1(src, dst),
        GgmlType::Q8_0 => legacy::dequantize_q8_0(src, dst),
        GgmlType::Q2_K => k_dequant::dequantize_q2_k(src, dst),
        GgmlType::Q3_K => k_dequant::dequantize_q3_k(src, dst),
        GgmlType::Q4_K => k_dequant::dequantize_q4_k(src, dst),
        GgmlType::Q5_K => k_dequant::dequantize_q5_k(src, dst),
        GgmlType::Q6_K => k_dequant::dequantize_q6_k(src, dst),
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_1 | GgmlType::Q8_K => {
            return Err(Error::Unsupported(format!("dequantizing {ty} tensors")))
        }
    }
    Ok(())
}

/// Scalar reference quantization of `src` (a whole number of blocks) into `dst`, which must
/// be exactly `ty.row_bytes(src.len())` long. F16, BF16, Q8_0, Q4_0 and Q4_1 reproduce the
/// bytes of ggml's `gguf` Python package; Q4_K and Q6_K follow ggml's reference quantizer.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    check_lengths(ty, src.len(), dst.len())?;
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&s.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&float::f16_from_f32(*s).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&bf16_from_f32_ggml(*s).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => legacy::quantize_q8_0(src, dst),
        GgmlType::Q4_0 => legacy::quantize_q4_0(src, dst),
        GgmlType::Q4_1 => legacy::quantize_q4_1(src, dst),
        GgmlType::Q4_K => k_quantize::quantize_q4_k(src, dst),
        GgmlType::Q6_K => k_quantize::quantize_q6_k(src, dst),
        _ => return Err(Error::Unsupported(format!("quantizing to {ty}"))),
    }
    Ok(())
}

/// Allocating convenience over [`quantize_row`].
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; ty.row_bytes(src.len())?];
    quantize_row(ty, src, &mut out)?;
    Ok(out)
}

/// Allocating convenience over [`dequantize_row`]: `bytes` must hold whole blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>> {
    if bytes.len() % ty.type_size() != 0 {
        return Err(Error::InvalidArgument(format!(
            "{ty}: {} bytes is not a whole number of {}-byte blocks",
            bytes.len(),
            ty.type_size()
        )));
    }
    let mut out = vec![0f32; bytes.len() / ty.type_size() * ty.block_size()];
    dequantize_row(ty, bytes, &mut out)?;
    Ok(out)
}

/// ggml's `nearest_int`: round half to even (valid for |x| < 2^22, which callers ensure).
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// Small enough for Miri (`scripts/miri.sh`); the fixtures' exhaustive vectors are in
/// `tests/quant.rs`.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_within_its_step_and_refuses_bad_lengths() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for ty in GgmlType::ALL.into_iter().filter(|t| t.can_quantize()) {
            let q = quantize(ty, &x).unwrap();
            assert_eq!(q.len(), ty.row_bytes(256).unwrap(), "{ty}");
            let y = dequantize(ty, &q).unwrap();
            // Half a quantization step of the coarsest type (4 bits over [-2, 2]) and more.
            let worst = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 0.3, "{ty}: max error {worst}");
            if ty.block_size() > 1 {
                assert!(
                    dequantize(ty, &q[..q.len() - 1]).is_err(),
                    "{ty}: a cut block"
                );
                assert!(quantize(ty, &x[..255]).is_err(), "{ty}: a partial block");
            }
        }
    }
}
