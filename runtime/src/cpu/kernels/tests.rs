//! Every kernel at every SIMD level this CPU has, against the scalar reference on random data;
//! and the scalar reference against the dequantizer (the oracle of the formats).

use super::{row_dot, RowDot, SimdLevel};
use crate::cpu::act::{quantize_activations, quantize_activations16, ActBlock, ActBlock16};
use crate::quant::{dequantize, quantize, GgmlType};

/// xorshift: deterministic test data without a dependency.
struct Rand(u64);
impl Rand {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

const TYPES: [GgmlType; 7] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

struct Acts {
    q8: Vec<ActBlock>,
    q16: Vec<ActBlock16>,
}

fn acts_of(x: &[f32]) -> Acts {
    let mut a = Acts {
        q8: vec![ActBlock::default(); x.len() / 32],
        q16: vec![ActBlock16::default(); x.len() / 32],
    };
    quantize_activations(x, &mut a.q8);
    quantize_activations16(x, &mut a.q16);
    a
}

/// Σ|w·x| of a quantized row against `x`: the tolerances of the kernels are relative to it
/// (the f32 rounding of the block sums).
fn magnitude(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    let w = dequantize(ty, row).unwrap();
    w.iter().zip(x).map(|(a, b)| (a * b).abs()).sum()
}

fn call(k: RowDot, row: &[u8], x: &[f32], acts: &Acts) -> f32 {
    match k {
        RowDot::Float(f) => f(row, x),
        RowDot::Quant(f) => f(row, &acts.q8),
        RowDot::Quant16(f) => f(row, &acts.q16),
    }
}

#[test]
fn every_level_matches_the_scalar_reference() {
    let mut rng = Rand(0x1234_5678);
    let levels = SimdLevel::available();
    #[cfg(target_arch = "aarch64")]
    assert!(
        levels.contains(&SimdLevel::Neon),
        "NEON not detected on aarch64"
    );
    // Compiled with these features (as `scripts/miri.sh` does), the AVX2 kernels must run.
    #[cfg(all(
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    assert!(
        levels.contains(&SimdLevel::Avx2),
        "AVX2 compiled in but not offered"
    );
    // Under Miri (scripts/miri.sh), which interprets every instruction: fewer, shorter rows.
    let (sizes, trials) = if cfg!(miri) { (2, 3) } else { (4, 20) };
    for ty in TYPES {
        let block = ty.block_size().max(32);
        for n in [block, 3 * block, 8 * block, 4096].into_iter().take(sizes) {
            if n % block != 0 {
                continue;
            }
            for trial in 0..trials {
                let scale = [1.0, 1e-3, 50.0][trial % 3];
                let w = rng.vec(n, scale);
                let row = quantize(ty, &w).unwrap();
                let x = rng.vec(n, 2.0);
                let acts = acts_of(&x);
                let reference = call(row_dot(ty, SimdLevel::Scalar).unwrap(), &row, &x, &acts);
                let magnitude = magnitude(ty, &row, &x);
                let tol = 2e-5 * magnitude + 1e-30;
                for &level in levels {
                    let got = call(row_dot(ty, level).unwrap(), &row, &x, &acts);
                    assert!(
                        (got - reference).abs() <= tol,
                        "{ty} n={n} {}: {got} vs scalar {reference} (|Δ| {:e} > {tol:e})",
                        level.name(),
                        (got - reference).abs()
                    );
                }
            }
        }
    }
}

#[test]
fn scalar_quantized_dots_equal_the_dequantized_product() {
    let mut rng = Rand(99);
    for ty in TYPES {
        let n = 1024;
        let w = rng.vec(n, 1.0);
        let row = quantize(ty, &w).unwrap();
        let x = rng.vec(n, 1.0);
        let acts = acts_of(&x);
        let kernel = row_dot(ty, SimdLevel::Scalar).unwrap();
        let wd = dequantize(ty, &row).unwrap();
        // The oracle: dequantized weights times the activations the kernel sees.
        let xs: Vec<f64> = match kernel {
            RowDot::Float(_) => x.iter().map(|&v| v as f64).collect(),
            RowDot::Quant(_) => acts
                .q8
                .iter()
                .flat_map(|a| a.qs.iter().map(move |&q| a.d as f64 * q as f64))
                .collect(),
            RowDot::Quant16(_) => acts
                .q16
                .iter()
                .flat_map(|a| a.qs.iter().map(move |&q| a.d as f64 * q as f64))
                .collect(),
        };
        let want: f64 = wd.iter().zip(&xs).map(|(a, b)| *a as f64 * b).sum();
        let got = call(kernel, &row, &x, &acts) as f64;
        let magnitude: f64 = wd.iter().zip(&xs).map(|(a, b)| (*a as f64 * b).abs()).sum();
        assert!(
            (got - want).abs() <= 1e-5 * magnitude,
            "{ty}: {got} vs oracle {want}"
        );
    }
}

#[test]
fn activation_quantization_round_trips_within_half_a_step() {
    let mut rng = Rand(5);
    let x = rng.vec(256, 3.0);
    let mut acts = vec![ActBlock::default(); 8];
    quantize_activations(&x, &mut acts);
    for (b, xs) in acts.iter().zip(x.chunks(32)) {
        for (q, v) in b.qs.iter().zip(xs) {
            assert!((b.d * *q as f32 - v).abs() <= b.d * 0.5 + 1e-6);
        }
        assert_eq!(b.sums[0], b.qs[..16].iter().map(|&q| q as i32).sum::<i32>());
    }
}

#[test]
fn four_token_kernels_match_the_single_token_reference() {
    use super::{row_dot4, RowDot4};
    let mut rng = Rand(77);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        for &level in SimdLevel::available() {
            let Some(k4) = row_dot4(ty, level) else {
                continue;
            };
            let n = if ty.block_size() == 256 { 768 } else { 576 };
            let row = quantize(ty, &rng.vec(n, 1.0)).unwrap();
            let xs: Vec<Vec<f32>> = (0..4).map(|_| rng.vec(n, 3.0)).collect();
            let acts: Vec<Acts> = xs.iter().map(|x| acts_of(x)).collect();
            let got = match k4 {
                RowDot4::Quant(f) => f(&row, [&acts[0].q8, &acts[1].q8, &acts[2].q8, &acts[3].q8]),
                RowDot4::Quant16(f) => f(
                    &row,
                    [&acts[0].q16, &acts[1].q16, &acts[2].q16, &acts[3].q16],
                ),
            };
            let single = row_dot(ty, SimdLevel::Scalar).unwrap();
            for k in 0..4 {
                let want = call(single, &row, &xs[k], &acts[k]);
                let magnitude = magnitude(ty, &row, &xs[k]);
                assert!(
                    (got[k] - want).abs() <= 2e-5 * magnitude,
                    "{ty} {} token {k}: {} vs {want}",
                    level.name(),
                    got[k]
                );
            }
        }
    }
}

#[test]
fn panel_kernels_match_the_single_token_reference() {
    use crate::cpu::gemm::{PanelBuf, PanelGemm, PanelKernel};
    let mut rng = Rand(31);
    let mut tested = 0;
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K] {
        for &level in SimdLevel::available() {
            let Some(gemm) = PanelGemm::for_type(ty, level) else {
                continue;
            };
            let n = 512;
            let blocks = n / 32;
            // A partial panel (lanes beyond `rows` must come out zero) and token counts
            // around the register tiles of 4 and 8.
            let shapes = [
                (gemm.nr, 4),
                (gemm.nr - 3, 9),
                (5, 1),
                (gemm.nr, 7),
                (gemm.nr, 19),
            ];
            // Under Miri: the partial panel only (the interpreter is ~10^4 times slower).
            let shapes = if cfg!(miri) {
                &shapes[1..2]
            } else {
                &shapes[..]
            };
            for &(rows, t) in shapes {
                let weights: Vec<Vec<u8>> = (0..rows)
                    .map(|r| quantize(ty, &rng.vec(n, [1.0, 1e-3, 30.0][r % 3])).unwrap())
                    .collect();
                let xs: Vec<Vec<f32>> = (0..t).map(|_| rng.vec(n, 3.0)).collect();
                let acts: Vec<Acts> = xs.iter().map(|x| acts_of(x)).collect();
                let q8: Vec<ActBlock> = acts.iter().flat_map(|a| a.q8.clone()).collect();
                let q16: Vec<ActBlock16> = acts.iter().flat_map(|a| a.q16.clone()).collect();
                let mut buf = PanelBuf::default();
                let row_refs: Vec<&[u8]> = weights.iter().map(|w| w.as_slice()).collect();
                gemm.pack(&row_refs, blocks, &mut buf);
                let (panel, out) = buf.split(gemm.nr, blocks, t);
                match gemm.kernel {
                    PanelKernel::U8(f) => f(&panel, &q8, out),
                    PanelKernel::I16(f) => f(&panel, &q16, out),
                }
                let single = row_dot(ty, SimdLevel::Scalar).unwrap();
                for tt in 0..t {
                    for lane in 0..gemm.nr {
                        let got = out[tt * gemm.nr + lane];
                        if lane >= rows {
                            assert_eq!(got, 0.0, "{ty} {}: padding lane {lane}", level.name());
                            continue;
                        }
                        let row = &weights[lane];
                        let want = call(single, row, &xs[tt], &acts[tt]);
                        let magnitude = magnitude(ty, row, &xs[tt]);
                        assert!(
                            (got - want).abs() <= 2e-5 * magnitude,
                            "{ty} {} rows={rows} t={t}: token {tt} row {lane}: {got} vs {want}",
                            level.name()
                        );
                    }
                }
                tested += 1;
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if SimdLevel::available().contains(&SimdLevel::Avx2) {
        assert!(tested > 0, "no panel kernel was tested on an AVX2 machine");
    }
    let _ = tested;
}

/// The four-row kernels over T = 1..=7 tokens: every token's sums equal the scalar reference
/// (within f32 rounding) and equal, bit for bit, that token run alone (a sequence's logits do
/// not depend on how many sequences decode with it).
#[test]
fn four_row_kernels_match_the_single_row_reference() {
    use super::{rows_dot4, RowsDot4};
    let mut rng = Rand(4242);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        for &level in SimdLevel::available() {
            let Some(k) = rows_dot4(ty, level) else {
                continue;
            };
            let lengths: &[usize] = if ty.block_size() == 256 {
                &[256, 1536, 2048]
            } else {
                &[32, 96, 576, 1536]
            };
            for &n in lengths {
                let weights: Vec<Vec<u8>> = (0..4)
                    .map(|r| quantize(ty, &rng.vec(n, [1.0, 1e-3, 30.0, 0.2][r])).unwrap())
                    .collect();
                let rows = [&weights[0][..], &weights[1], &weights[2], &weights[3]];
                let blocks = n / 32;
                let xs: Vec<Vec<f32>> = (0..7).map(|_| rng.vec(n, 3.0)).collect();
                let acts: Vec<Acts> = xs.iter().map(|x| acts_of(x)).collect();
                let q8: Vec<_> = acts.iter().flat_map(|a| a.q8.iter().copied()).collect();
                let q16: Vec<_> = acts.iter().flat_map(|a| a.q16.iter().copied()).collect();
                let run = |from: usize, tokens: usize| {
                    let mut out = vec![[0f32; 4]; tokens];
                    let x = from * blocks..(from + tokens) * blocks;
                    match k {
                        RowsDot4::Quant(f) => f(rows, &q8[x], blocks, &mut out),
                        RowsDot4::Quant16(f) => f(rows, &q16[x], blocks, &mut out),
                    }
                    out
                };
                let single = row_dot(ty, SimdLevel::Scalar).unwrap();
                for tokens in 1..=7 {
                    let got = run(0, tokens);
                    for (j, sums) in got.iter().enumerate() {
                        let what =
                            format!("{ty} {} n={n} {tokens} tokens, token {j}", level.name());
                        assert_eq!(sums, &run(j, 1)[0], "{what}: differs from the token alone");
                        for r in 0..4 {
                            let want = call(single, rows[r], &xs[j], &acts[j]);
                            let magnitude = magnitude(ty, rows[r], &xs[j]);
                            assert!(
                                (sums[r] - want).abs() <= 2e-5 * magnitude,
                                "{what} row {r}: {} vs {want}",
                                sums[r]
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The repacked group kernels (`cpu::packed`: Q4_0, Q8_0, Q4_K, Q6_K) at every level that has one: 8 rows
/// (13 in the matrix, so the second group is padded) over 1..7 tokens, each token's sums
/// bit-equal to the token alone and to the sums from the broadcast activations, and within
/// 2e-5·Σ|w·x| of the scalar reference row by row.
#[test]
fn repacked_group_kernels_match_the_single_row_reference() {
    use super::{group_kernel, GroupKernel};
    use crate::cpu::act_blocks::{
        broadcast_groups, broadcast_pairs, BroadcastBlock, BroadcastBlock16,
    };
    use crate::cpu::packed::{group_bytes, pack, packed_len};
    let mut rng = Rand(777);
    let mut tested = 0;
    for (ty, lengths) in [
        (GgmlType::Q4_0, &[32, 96, 576][..]),
        (GgmlType::Q8_0, &[32, 96, 576][..]),
        (GgmlType::Q4_K, &[256, 768][..]),
        (GgmlType::Q6_K, &[256, 768][..]),
    ] {
        let single = row_dot(ty, SimdLevel::Scalar).unwrap();
        for &level in SimdLevel::available() {
            let Some(kernel) = group_kernel(ty, level) else {
                continue;
            };
            tested += 1;
            for &n in lengths {
                let rows = 13;
                let blocks = n / 32;
                let scales = [1.0, 1e-3, 30.0, 0.2];
                let weights: Vec<Vec<u8>> = (0..rows)
                    .map(|r| quantize(ty, &rng.vec(n, scales[r % 4])).unwrap())
                    .collect();
                let data: Vec<u8> = weights.concat();
                let mut packed = vec![0u8; packed_len(ty, rows, n)];
                pack(ty, &data, rows, n, &mut packed);
                let xs: Vec<Vec<f32>> = (0..7).map(|_| rng.vec(n, 3.0)).collect();
                let acts: Vec<Acts> = xs.iter().map(|x| acts_of(x)).collect();
                let q8: Vec<_> = acts.iter().flat_map(|a| a.q8.iter().copied()).collect();
                let q16: Vec<_> = acts.iter().flat_map(|a| a.q16.iter().copied()).collect();
                let mut broadcast = vec![BroadcastBlock::default(); q8.len()];
                broadcast_groups(&q8, &mut broadcast);
                let mut broadcast16 = vec![BroadcastBlock16::default(); q16.len()];
                broadcast_pairs(&q16, &mut broadcast16);
                let size = group_bytes(ty, n);
                for g in 0..2 {
                    let group = &packed[g * size..(g + 1) * size];
                    let run = |from: usize, tokens: usize, whole: bool| {
                        let mut out = vec![[0f32; 8]; tokens];
                        let span = from * blocks..(from + tokens) * blocks;
                        let part = if whole { span.clone() } else { 0..0 };
                        match kernel {
                            GroupKernel::Quant(f) => {
                                f(group, &q8[span], &broadcast[part], blocks, &mut out)
                            }
                            GroupKernel::Quant16(f) => {
                                f(group, &q16[span], &broadcast16[part], blocks, &mut out)
                            }
                        }
                        out
                    };
                    for tokens in 1..=7 {
                        let from_broadcast = run(0, tokens, true);
                        for (j, sums) in run(0, tokens, false).iter().enumerate() {
                            let what = format!(
                                "{ty} {} n={n} group {g} {tokens} tokens, token {j}",
                                level.name()
                            );
                            let alone = run(j, 1, false)[0];
                            assert_eq!(sums, &alone, "{what}: differs from the token alone");
                            assert_eq!(
                                sums, &from_broadcast[j],
                                "{what}: differs with the broadcast activations"
                            );
                            for (lane, &got) in sums.iter().enumerate() {
                                let r = g * 8 + lane;
                                if r >= rows {
                                    assert_eq!(got, 0.0, "{what}: padding lane {lane}");
                                    continue;
                                }
                                let want = call(single, &weights[r], &xs[j], &acts[j]);
                                let magnitude = magnitude(ty, &weights[r], &xs[j]);
                                assert!(
                                    (got - want).abs() <= 2e-5 * magnitude,
                                    "{what} row {r}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    if cfg!(target_arch = "x86_64") && SimdLevel::available().contains(&SimdLevel::Avx2) {
        assert!(
            tested >= 2,
            "Q4_0 and Q6_K have group kernels on this x86 CPU"
        );
    }
}
