//! Helpers of the unit tests.

/// Deterministic values in [-scale, scale) (xorshift; no dependency).
pub fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Asserts a device's products `got` ([tokens, rows]) equal `W·x[t]` for the dequantized
/// weights `w` ([rows, cols]) and `x` ([tokens, cols]), within f32 accumulation in another
/// order (1e-5 of Σ|w·x|); names the first mismatch.
pub fn assert_products(what: &str, w: &[f32], x: &[f32], rows: usize, got: &[f32]) {
    if let Some(mismatch) = products_mismatch(w, x, rows, got) {
        panic!("{what}: {mismatch}");
    }
}

/// The first of `got`'s products that [`assert_products`] would refuse, described.
pub fn products_mismatch(w: &[f32], x: &[f32], rows: usize, got: &[f32]) -> Option<String> {
    let cols = w.len() / rows;
    if got.len() != rows * (x.len() / cols) {
        return Some(format!("output length {} for {rows} rows", got.len()));
    }
    got.iter().enumerate().find_map(|(i, g)| {
        let (t, r) = (i / rows, i % rows);
        let row = &w[r * cols..(r + 1) * cols];
        let xt = &x[t * cols..(t + 1) * cols];
        let want: f64 = row.iter().zip(xt).map(|(a, b)| *a as f64 * *b as f64).sum();
        let magnitude: f64 = row
            .iter()
            .zip(xt)
            .map(|(a, b)| (*a as f64 * *b as f64).abs())
            .sum();
        let tol = 1e-5 * magnitude + 1e-6;
        ((*g as f64 - want).abs() > tol).then(|| {
            format!("first mismatch at token {t}, row {r}: device {g}, cpu {want} (tol {tol:e})")
        })
    })
}
