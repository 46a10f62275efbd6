//! Integration tests against the golden fixtures in `tests/fixtures` (see its README).

mod capi;
mod convert;
mod gguf_reader;
#[cfg(feature = "wgpu")]
mod gpu;
mod jni;
mod model;
mod quant;
mod real_model;
mod tokenizer;
