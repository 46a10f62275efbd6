//! `liger` — the runtime library for Liger models: pretrained Llama / Mistral / Qwen LLMs
//! linearized into gated linear recurrences (GLA, HGRN2, GSA) plus a 64-token sliding-window
//! attention in every layer (the math: `docs/MATH.md`).
//!
//! Data flows one way: file ([`gguf`]) → model ([`Model`]: config, weights, tokenizer) →
//! backend ([`backend::open`]: CPU, wgpu, CUDA) → step → logits → sampler ([`Sampler`]) →
//! text. A [`Session`] is one sequence on a backend (feed, logits, save / load / fork its
//! fixed-size state); a [`Generator`] is the generation loop every front end runs. The C ABI
//! is [`capi`] (feature `capi`); OpenAI-shaped requests are parsed in [`openai`]. Each folder's
//! job and what a new backend or weight type touches: `docs/ARCHITECTURE.md`.

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
pub mod message;
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
