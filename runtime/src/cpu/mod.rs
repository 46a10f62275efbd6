//! The CPU backend's computation: the model's step plan executed op by op (`step.rs`; the
//! token mixer in `mixer.rs`, `recurrence.rs`, `chunkwise.rs`), quantized matrix-vector /
//! matrix-matrix products (`linear.rs`, `gemm.rs`; the kernel each runs chosen from its type's
//! table, `kernels::TypeKernels`), activations quantized for them (`act.rs`), SIMD kernels
//! with their scalar references (`kernels/`), and the worker pool they run on (`pool.rs`).

pub mod act;
pub mod act_blocks;
pub(crate) mod chunkwise;
pub mod gemm;
pub mod kernels;
pub mod linear;
pub(crate) mod mixer;
pub mod model;
pub mod ops;
pub mod packed;
pub mod panel;
pub mod path;
pub mod pool;
pub(crate) mod recurrence;
pub mod simd;
pub(crate) mod step;
