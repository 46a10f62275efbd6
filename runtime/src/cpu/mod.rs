//! CPU kernels: quantized matrix-vector / matrix-matrix products and the small fused ops of
//! the model step. Scalar reference code, parallel over rows with rayon.

pub mod act;
pub mod kernels;
pub mod linear;
pub mod ops;
pub mod pool;
