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

pub mod backend;
#[cfg(feature = "capi")]
pub mod capi;
pub mod chat;
pub mod config;
pub mod constraint;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod durable;
pub mod error;
pub mod generate;
pub mod gguf;
#[cfg(feature = "wgpu")]
pub mod gpu;
pub mod layout;
pub mod model;
pub mod openai;
pub mod quant;
pub mod sampler;
pub mod session;
#[cfg(test)]
mod testing;
pub mod tokenizer;
pub mod tools;

pub use backend::{Backend, BackendKind};
pub use config::{Base, LigerConfig, RopeScaling, Variant};
pub use error::{Error, Result};
pub use generate::{Generator, StopReason};
pub use gguf::{GgufFile, TensorInfo, Value};
pub use model::{Model, ModelOptions};
pub use quant::GgmlType;
pub use sampler::{Sampler, SamplerOptions};
pub use session::{DecodeMode, Session};
pub use tokenizer::{StreamDecoder, Tokenizer};
