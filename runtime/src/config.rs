//! The model configuration a liger file carries (`liger.*` metadata; the format: `gguf/mod.rs`), read back
//! and validated so that nothing later is sized by an unchecked number.

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value};

pub const ARCHITECTURE: &str = "liger";
/// Constants of the reference code (not HF config fields), stored in the file anyway.
pub const DEFAULT_WINDOW: u32 = 64;
pub const DEFAULT_MIX_SWA: f32 = 0.5;
pub const DEFAULT_GATE_NORMALIZER: f32 = 16.0;

/// Which gated recurrence replaces softmax attention (docs/MATH.md §1 table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Gla,
    Hgrn2,
    Gsa,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Gla => "gla",
            Variant::Hgrn2 => "hgrn2",
            Variant::Gsa => "gsa",
        }
    }
    pub fn from_name(s: &str) -> Option<Variant> {
        [Variant::Gla, Variant::Hgrn2, Variant::Gsa]
            .into_iter()
            .find(|v| v.name() == s)
    }
}

/// The pretrained model the Liger model was linearized from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Base {
    pub fn name(self) -> &'static str {
        match self {
            Base::Llama => "llama",
            Base::Mistral => "mistral",
            Base::Qwen2 => "qwen2",
            Base::Qwen3 => "qwen3",
        }
    }
    pub fn from_name(s: &str) -> Option<Base> {
        [Base::Llama, Base::Mistral, Base::Qwen2, Base::Qwen3]
            .into_iter()
            .find(|b| b.name() == s)
    }
}

/// RoPE frequency scaling of the base model (HF `rope_scaling`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// Llama-3.1 / 3.2 style: long wavelengths divided by `factor`, a smooth ramp between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_context: u32,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct LigerConfig {
    pub variant: Variant,
    pub base: Base,
    /// L
    pub n_layers: usize,
    /// D
    pub hidden: usize,
    /// F (SwiGLU inner size)
    pub ffn: usize,
    /// H
    pub n_heads: usize,
    /// Hkv
    pub n_kv_heads: usize,
    /// d
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: Option<RopeScaling>,
    /// max_position_embeddings of the base (informational: the recurrence has no limit).
    pub context_length: u32,
    /// SWA keys before the current one (64).
    pub window: u32,
    /// Weight of the SWA branch in the mix (0.5); the recurrent branch gets 1 − mix.
    pub mix_swa: f32,
    /// GLA / GSA gate normalizer (16).
    pub gate_normalizer: f32,
    /// M, GSA's pooled key size per head (`pool_size`); equals `head_dim` for other variants.
    pub gsa_slots: usize,
    pub tie_embeddings: bool,
    /// q/k/v projections have biases (Qwen2).
    pub attention_bias: bool,
    /// True when the model is a base model linearized without Liger training or LoRA
    /// recovery (e.g. converted from a plain Llama GGUF): runs correctly, answers poorly.
    pub untrained: bool,
}

/// Largest values accepted from a file, far above any real model, so that a hostile file
/// cannot make the runtime size buffers from absurd numbers.
const MAX_LAYERS: usize = 1024;
const MAX_WIDTH: usize = 1 << 20;
const MAX_HEADS: usize = 1024;
const MAX_HEAD_DIM: usize = 1024;
const MAX_VOCAB: usize = 1 << 24;
const MAX_WINDOW: u32 = 1 << 16;

impl LigerConfig {
    /// Recurrent state bytes per sequence (f32): `L·Hkv·d·d` (GLA/HGRN2) or `L·Hkv·2·d·M` (GSA).
    pub fn recurrent_state_bytes(&self) -> u64 {
        let (d, m) = (self.head_dim as u64, self.gsa_slots as u64);
        let per_head = match self.variant {
            Variant::Gla | Variant::Hgrn2 => d * d,
            Variant::Gsa => 2 * d * m,
        };
        self.n_layers as u64 * self.n_kv_heads as u64 * per_head * 4
    }

    /// Sliding-window cache bytes per sequence at `bytes_per_value` (4 for f32, 2 for f16):
    /// `L·Hkv·window·2·d` values. (u64 throughout: the validated maxima overflow 32 bits.)
    pub fn window_cache_bytes(&self, bytes_per_value: usize) -> u64 {
        self.n_layers as u64
            * self.n_kv_heads as u64
            * u64::from(self.window)
            * 2
            * self.head_dim as u64
            * bytes_per_value as u64
    }

    /// Checks the relations every later computation relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let ranges = [
            ("block_count", self.n_layers, MAX_LAYERS),
            ("embedding_length", self.hidden, MAX_WIDTH),
            ("feed_forward_length", self.ffn, MAX_WIDTH),
            ("attention.head_count", self.n_heads, MAX_HEADS),
            ("attention.head_count_kv", self.n_kv_heads, MAX_HEADS),
            ("attention.key_length", self.head_dim, MAX_HEAD_DIM),
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("gsa.slots", self.gsa_slots, MAX_HEAD_DIM),
        ];
        for (name, v, max) in ranges {
            if v == 0 || v > max {
                return bad(format!("{name} = {v} is out of range 1..={max}"));
            }
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return bad(format!(
                "head_count {} is not a multiple of head_count_kv {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return bad(format!(
                "key_length {} must be even for RoPE",
                self.head_dim
            ));
        }
        if self.window == 0 || self.window > MAX_WINDOW {
            return bad(format!(
                "sliding_window {} is out of range 1..={MAX_WINDOW}",
                self.window
            ));
        }
        let finite_positive = [
            ("layer_norm_rms_epsilon", self.rms_eps),
            ("rope.freq_base", self.rope_theta),
            ("gate.normalizer", self.gate_normalizer),
        ];
        for (name, v) in finite_positive {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} = {v} must be finite and positive"));
            }
        }
        if !(0.0..=1.0).contains(&self.mix_swa) {
            return bad(format!("mix.swa = {} must be in 0..=1", self.mix_swa));
        }
        if let Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        }) = self.rope_scaling
        {
            if !(factor >= 1.0 && low_freq_factor > 0.0 && high_freq_factor > low_freq_factor)
                || original_context == 0
            {
                return bad(format!(
                    "rope scaling llama3 parameters are inconsistent: {:?}",
                    self.rope_scaling
                ));
            }
        }
        if self.variant != Variant::Gsa && self.gsa_slots != self.head_dim {
            return bad(format!(
                "gsa.slots {} given for variant {}",
                self.gsa_slots,
                self.variant.name()
            ));
        }
        Ok(())
    }

    /// The `liger.*` and `general.architecture` metadata that describe this config.
    pub fn to_metadata(&self) -> Vec<(String, Value)> {
        let u32v = |v: usize| Value::U32(v as u32);
        let mut m = vec![
            (
                "general.architecture".to_string(),
                Value::String(ARCHITECTURE.into()),
            ),
            (
                "liger.variant".into(),
                Value::String(self.variant.name().into()),
            ),
            ("liger.base".into(), Value::String(self.base.name().into())),
            ("liger.block_count".into(), u32v(self.n_layers)),
            (
                "liger.context_length".into(),
                Value::U32(self.context_length),
            ),
            ("liger.embedding_length".into(), u32v(self.hidden)),
            ("liger.feed_forward_length".into(), u32v(self.ffn)),
            ("liger.attention.head_count".into(), u32v(self.n_heads)),
            (
                "liger.attention.head_count_kv".into(),
                u32v(self.n_kv_heads),
            ),
            ("liger.attention.key_length".into(), u32v(self.head_dim)),
            ("liger.attention.value_length".into(), u32v(self.head_dim)),
            (
                "liger.attention.layer_norm_rms_epsilon".into(),
                Value::F32(self.rms_eps),
            ),
            (
                "liger.attention.sliding_window".into(),
                Value::U32(self.window),
            ),
            (
                "liger.attention.bias".into(),
                Value::Bool(self.attention_bias),
            ),
            ("liger.rope.freq_base".into(), Value::F32(self.rope_theta)),
            ("liger.rope.dimension_count".into(), u32v(self.head_dim)),
            ("liger.mix.swa".into(), Value::F32(self.mix_swa)),
            (
                "liger.gate.normalizer".into(),
                Value::F32(self.gate_normalizer),
            ),
            ("liger.gsa.slots".into(), u32v(self.gsa_slots)),
            ("liger.vocab_size".into(), u32v(self.vocab_size)),
            (
                "liger.tie_word_embeddings".into(),
                Value::Bool(self.tie_embeddings),
            ),
            (
                "liger.untrained_linearization".into(),
                Value::Bool(self.untrained),
            ),
        ];
        match self.rope_scaling {
            None => m.push((
                "liger.rope.scaling.type".into(),
                Value::String("none".into()),
            )),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            }) => {
                m.push((
                    "liger.rope.scaling.type".into(),
                    Value::String("llama3".into()),
                ));
                m.push(("liger.rope.scaling.factor".into(), Value::F32(factor)));
                m.push((
                    "liger.rope.scaling.low_freq_factor".into(),
                    Value::F32(low_freq_factor),
                ));
                m.push((
                    "liger.rope.scaling.high_freq_factor".into(),
                    Value::F32(high_freq_factor),
                ));
                m.push((
                    "liger.rope.scaling.original_context_length".into(),
                    Value::U32(original_context),
                ));
            }
        }
        m
    }

    /// Reads and validates the config of a liger file.
    pub fn from_gguf(file: &GgufFile) -> Result<LigerConfig> {
        let arch = meta_str(file, "general.architecture")?;
        if arch != ARCHITECTURE {
            return Err(Error::Config(format!(
                "general.architecture is '{arch}', not '{ARCHITECTURE}' (convert it with `liger convert`)"
            )));
        }
        let variant_name = meta_str(file, "liger.variant")?;
        let variant = Variant::from_name(variant_name).ok_or_else(|| {
            Error::Config(format!(
                "liger.variant '{variant_name}' is not gla, hgrn2 or gsa"
            ))
        })?;
        let base_name = meta_str(file, "liger.base")?;
        let base = Base::from_name(base_name).ok_or_else(|| {
            Error::Config(format!(
                "liger.base '{base_name}' is not llama, mistral, qwen2 or qwen3"
            ))
        })?;
        let rope_scaling = match file.get("liger.rope.scaling.type").and_then(Value::as_str) {
            None | Some("none") => None,
            Some("llama3") => Some(RopeScaling::Llama3 {
                factor: meta_f32(file, "liger.rope.scaling.factor")?,
                low_freq_factor: meta_f32(file, "liger.rope.scaling.low_freq_factor")?,
                high_freq_factor: meta_f32(file, "liger.rope.scaling.high_freq_factor")?,
                original_context: meta_usize(file, "liger.rope.scaling.original_context_length")?
                    as u32,
            }),
            Some(other) => return Err(Error::Unsupported(format!("rope scaling type '{other}'"))),
        };
        let head_dim = meta_usize(file, "liger.attention.key_length")?;
        let config = LigerConfig {
            variant,
            base,
            n_layers: meta_usize(file, "liger.block_count")?,
            hidden: meta_usize(file, "liger.embedding_length")?,
            ffn: meta_usize(file, "liger.feed_forward_length")?,
            n_heads: meta_usize(file, "liger.attention.head_count")?,
            n_kv_heads: meta_usize(file, "liger.attention.head_count_kv")?,
            head_dim,
            vocab_size: meta_usize(file, "liger.vocab_size")?,
            rms_eps: meta_f32(file, "liger.attention.layer_norm_rms_epsilon")?,
            rope_theta: meta_f32(file, "liger.rope.freq_base")?,
            rope_scaling,
            context_length: meta_opt(file, "liger.context_length", meta_usize)?.unwrap_or(0) as u32,
            window: meta_opt(file, "liger.attention.sliding_window", meta_usize)?
                .unwrap_or(DEFAULT_WINDOW as usize)
                .min(u32::MAX as usize) as u32,
            mix_swa: meta_opt(file, "liger.mix.swa", meta_f32)?.unwrap_or(DEFAULT_MIX_SWA),
            gate_normalizer: meta_opt(file, "liger.gate.normalizer", meta_f32)?
                .unwrap_or(DEFAULT_GATE_NORMALIZER),
            gsa_slots: meta_opt(file, "liger.gsa.slots", meta_usize)?.unwrap_or(head_dim),
            tie_embeddings: file.tensor("output.weight").is_none(),
            attention_bias: file.tensor("blk.0.attn_q.bias").is_some(),
            untrained: meta_opt(file, "liger.untrained_linearization", meta_bool)?.unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }
}

fn missing(key: &str) -> Error {
    Error::Config(format!("metadata key '{key}' is missing"))
}

fn wrong_type(key: &str, want: &str, v: &Value) -> Error {
    Error::Config(format!("metadata '{key}' should be {want}, is {v}"))
}

pub fn meta_str<'a>(file: &'a GgufFile, key: &str) -> Result<&'a str> {
    let v = file.get(key).ok_or_else(|| missing(key))?;
    v.as_str().ok_or_else(|| wrong_type(key, "a string", v))
}

pub fn meta_usize(file: &GgufFile, key: &str) -> Result<usize> {
    let v = file.get(key).ok_or_else(|| missing(key))?;
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| wrong_type(key, "a non-negative integer", v))
}

pub fn meta_f32(file: &GgufFile, key: &str) -> Result<f32> {
    let v = file.get(key).ok_or_else(|| missing(key))?;
    v.as_f64()
        .map(|x| x as f32)
        .ok_or_else(|| wrong_type(key, "a number", v))
}

pub fn meta_bool(file: &GgufFile, key: &str) -> Result<bool> {
    let v = file.get(key).ok_or_else(|| missing(key))?;
    v.as_bool().ok_or_else(|| wrong_type(key, "a bool", v))
}

/// `Ok(None)` when absent, an error when present with the wrong type.
pub fn meta_opt<T>(
    file: &GgufFile,
    key: &str,
    get: impl Fn(&GgufFile, &str) -> Result<T>,
) -> Result<Option<T>> {
    if file.get(key).is_none() {
        return Ok(None);
    }
    get(file, key).map(Some)
}
