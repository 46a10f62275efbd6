//! Integration tests against the golden fixtures in `tests/fixtures` (see its README).

mod backends;
mod batch;
mod capi;
mod concurrency;
mod convert;
#[cfg(feature = "cuda")]
mod cuda;
mod demo_model;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod device;
mod gguf_reader;
#[cfg(feature = "wgpu")]
mod gpu;
mod jni;
mod malformed;
mod model;
mod quant;
mod real_model;
mod source;
mod structured;
mod tokenizer;
mod tools;

/// Counts allocations per thread, so tests can bound what refusing bad input allocates.
#[global_allocator]
static ALLOCATOR: liger_tests::alloc::Counting = liger_tests::alloc::Counting;
