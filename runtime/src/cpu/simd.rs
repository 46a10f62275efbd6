//! The instruction-set levels the CPU kernels are written for, detected once (or forced by
//! `LIGER_SIMD`).

use std::sync::OnceLock;

/// An instruction-set level with its kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    Scalar,
    Avx2,
    /// AVX-512 F/BW/VL with VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// AArch64 Advanced SIMD (part of the baseline).
    Neon,
    /// NEON with the dot-product extension (`sdot`).
    NeonDotprod,
}

impl SimdLevel {
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512Vnni => "avx512-vnni",
            SimdLevel::Neon => "neon",
            SimdLevel::NeonDotprod => "neon-dotprod",
        }
    }

    /// Every level this CPU can run, lowest first (detected once).
    pub fn available() -> &'static [SimdLevel] {
        static LEVELS: OnceLock<Vec<SimdLevel>> = OnceLock::new();
        LEVELS.get_or_init(Self::detect_levels)
    }

    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_mut)
    )]
    fn detect_levels() -> Vec<SimdLevel> {
        let mut out = vec![SimdLevel::Scalar];
        #[cfg(target_arch = "aarch64")]
        {
            out.push(SimdLevel::Neon);
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                out.push(SimdLevel::NeonDotprod);
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                out.push(SimdLevel::Avx2);
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    out.push(SimdLevel::Avx512Vnni);
                }
            }
        }
        out
    }

    /// The best available level, or the one `LIGER_SIMD` names (scalar, avx2, avx512-vnni,
    /// neon, neon-dotprod) if this CPU has it.
    pub fn detect() -> SimdLevel {
        static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let available = Self::available();
            let best = *available.last().unwrap_or(&SimdLevel::Scalar);
            match std::env::var("LIGER_SIMD") {
                Ok(want) => available
                    .iter()
                    .copied()
                    .find(|l| l.name() == want)
                    .unwrap_or(best),
                Err(_) => best,
            }
        })
    }
}
