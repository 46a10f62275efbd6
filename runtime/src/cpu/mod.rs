//! CPU kernels: quantized matrix-vector / matrix-matrix products (scalar reference and SIMD),
//! the small fused ops of the model step, and the worker pool they run on.

pub mod act;
pub mod gemm;
pub mod kernels;
pub mod linear;
pub mod ops;
pub mod packed;
pub mod path;
pub mod pool;
