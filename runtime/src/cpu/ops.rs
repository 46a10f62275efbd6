//! Element-wise and per-head operations of the model step (f32).

/// `out = x / rms(x) · w`, rms over the row.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv * w;
    }
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `log σ(x)`, stable for large |x|.
#[inline]
pub fn log_sigmoid(x: f32) -> f32 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
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
