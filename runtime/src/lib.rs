//! `liger` — the runtime library for Liger models: pretrained Llama / Mistral / Qwen LLMs
//! linearized into gated linear recurrences (GLA, HGRN2, GSA) plus a 64-token sliding-window
//! attention in every layer (see `DESIGN.md` §1).
//!
//! Data flows one way: file ([`gguf`]) → weights ([`quant`]) → model step → logits.
//! This crate holds the format reader/writer, the quantization types with their scalar
//! reference kernels and the model configuration stored in a liger file.

#[cfg(target_endian = "big")]
compile_error!(
    "liger reads little-endian GGUF files in place and supports little-endian targets only"
);

pub mod config;
pub mod error;
pub mod gguf;
pub mod quant;

pub use config::{Base, LigerConfig, RopeScaling, Variant};
pub use error::{Error, Result};
pub use gguf::{GgufFile, TensorInfo, Value};
pub use quant::GgmlType;
