//! Quantization against ggml's own outputs (`tests/fixtures/quant`): exact bytes for
//! F16 / BF16 / Q8_0 / Q4_0 / Q4_1 (the `gguf` package), exact dequantization of every type
//! (including Q2_K..Q6_K bytes written by ggml's C quantizer), and our Q4_K / Q6_K
//! quantizers within 1.05× of ggml's mean squared error on the same rows.

use liger::quant::{dequantize_row, quantize_row, GgmlType};
use liger_tests::*;

const ROWS: usize = 12;
const COLS: usize = 512;
const ROW_NAMES: [&str; ROWS] = [
    "normal",
    "normal_small",
    "uniform",
    "outliers",
    "zeros",
    "constant",
    "tiny",
    "large",
    "negative_max_each_block",
    "positive_only",
    "half_zeros",
    "ramp",
];

fn fixture(name: &str) -> Vec<u8> {
    read_bytes(&fixtures().join("quant").join(name))
}

fn input_rows(file: &[u8]) -> Vec<f32> {
    let (x, shape) = tensor_f32(file, "input_f32");
    assert_eq!(shape, [ROWS, COLS]);
    x
}

#[test]
fn gguf_py_quantizers_reproduce_bytes_exactly() {
    let file = fixture("gguf_py_quant.safetensors");
    let x = input_rows(&file);
    for (ty, key) in [
        (GgmlType::F16, "f16"),
        (GgmlType::BF16, "bf16"),
        (GgmlType::Q8_0, "q8_0"),
        (GgmlType::Q4_0, "q4_0"),
        (GgmlType::Q4_1, "q4_1"),
    ] {
        let (want, shape) = tensor_u8(&file, &format!("{key}_bytes"));
        let row_bytes = shape[1];
        assert_eq!(ty.row_bytes(COLS).unwrap(), row_bytes, "{ty} bytes per row");
        for r in 0..ROWS {
            let mut got = vec![0u8; row_bytes];
            quantize_row(ty, &x[r * COLS..(r + 1) * COLS], &mut got).unwrap();
            assert_bytes_eq(
                &format!("{ty} row {r} ({})", ROW_NAMES[r]),
                &got,
                &want[r * row_bytes..(r + 1) * row_bytes],
            );
        }
    }
}

fn check_dequant(file: &[u8], key: &str, ty: GgmlType) {
    let (bytes, shape) = tensor_u8(file, &format!("{key}_bytes"));
    let (want, _) = tensor_f32(file, &format!("{key}_dequant"));
    let row_bytes = shape[1];
    for r in 0..ROWS {
        let mut got = vec![0f32; COLS];
        dequantize_row(ty, &bytes[r * row_bytes..(r + 1) * row_bytes], &mut got).unwrap();
        assert_close(
            &format!("{ty} dequant row {r} ({})", ROW_NAMES[r]),
            &got,
            &want[r * COLS..(r + 1) * COLS],
            0.0,
        );
    }
}

#[test]
fn every_type_dequantizes_exactly() {
    let file = fixture("gguf_py_quant.safetensors");
    for (ty, key) in [
        (GgmlType::F16, "f16"),
        (GgmlType::BF16, "bf16"),
        (GgmlType::Q8_0, "q8_0"),
        (GgmlType::Q4_0, "q4_0"),
        (GgmlType::Q4_1, "q4_1"),
    ] {
        check_dequant(&file, key, ty);
    }
    let file = fixture("ggml_kquant.safetensors");
    for (ty, key) in [
        (GgmlType::Q2_K, "q2_k"),
        (GgmlType::Q3_K, "q3_k"),
        (GgmlType::Q4_K, "q4_k"),
        (GgmlType::Q5_K, "q5_k"),
        (GgmlType::Q6_K, "q6_k"),
    ] {
        check_dequant(&file, key, ty);
    }
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn k_quantizers_error_within_1_05x_of_ggml() {
    let file = fixture("ggml_kquant.safetensors");
    let x = input_rows(&file);
    for (ty, key) in [(GgmlType::Q4_K, "q4_k"), (GgmlType::Q6_K, "q6_k")] {
        let (ggml_mse, _) = tensor_f32(&file, &format!("{key}_mse_per_row"));
        let (ggml_bytes, shape) = tensor_u8(&file, &format!("{key}_bytes"));
        let (mut ours_total, mut ggml_total, mut identical_rows) = (0f64, 0f64, 0);
        for r in 0..ROWS {
            let row = &x[r * COLS..(r + 1) * COLS];
            let mut bytes = vec![0u8; ty.row_bytes(COLS).unwrap()];
            quantize_row(ty, row, &mut bytes).unwrap();
            identical_rows += (bytes[..] == ggml_bytes[r * shape[1]..(r + 1) * shape[1]]) as usize;
            let mut y = vec![0f32; COLS];
            dequantize_row(ty, &bytes, &mut y).unwrap();
            let ours = mse(row, &y);
            let theirs = ggml_mse[r] as f64;
            // Per row: no worse than 1.05x ggml's (and exact zero rows stay exact).
            assert!(
                ours <= theirs * 1.05 + 1e-12,
                "{ty} row {r} ({}): mse {ours:e} vs ggml {theirs:e}",
                ROW_NAMES[r]
            );
            ours_total += ours;
            ggml_total += theirs;
        }
        eprintln!(
            "{ty}: mean mse ours {:e}, ggml {:e}, byte-identical rows {identical_rows}/{ROWS}",
            ours_total / ROWS as f64,
            ggml_total / ROWS as f64
        );
    }
}

#[test]
fn quantize_rejects_partial_blocks_and_wrong_lengths() {
    let x = vec![1f32; 100];
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let err = liger::quant::quantize(ty, &x).unwrap_err().to_string();
        assert!(err.contains("block size"), "{ty}: {err}");
    }
    let mut y = vec![0f32; 32];
    let err = dequantize_row(GgmlType::Q8_0, &[0u8; 33], &mut y)
        .unwrap_err()
        .to_string();
    assert!(err.contains("34 bytes"), "{err}");
    let err = dequantize_row(GgmlType::Q5_0, &[0u8; 22], &mut y)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unsupported"), "{err}");
}
