//! An HF checkpoint directory as a conversion source: `config.json` → [`LigerConfig`],
//! `model.safetensors` or sharded `model-0000x-of-0000y.safetensors` (+ index) memory-mapped,
//! and the tokenizer files.

use crate::names::{hf_ignored, hf_to_gguf};
use crate::source::{read_json, WeightSource};
use liger::config::{DEFAULT_GATE_NORMALIZER, DEFAULT_MIX_SWA, DEFAULT_WINDOW};
use liger::{Base, Error, LigerConfig, Result, RopeScaling, Variant};
use safetensors::Dtype;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The Liger authors' `pool_size` of GSA when a config leaves it out.
const DEFAULT_GSA_SLOTS: usize = 64;

/// model_type → (variant, base). The released checkpoints are of these types.
pub const MODEL_TYPES: [(&str, Variant, Base); 6] = [
    ("liger_gla", Variant::Gla, Base::Llama),
    ("liger_hgrn2", Variant::Hgrn2, Base::Llama),
    ("liger_gsa", Variant::Gsa, Base::Llama),
    ("liger_mistral_gla", Variant::Gla, Base::Mistral),
    ("liger_qwen2_gla", Variant::Gla, Base::Qwen2),
    ("liger_qwen3_gla", Variant::Gla, Base::Qwen3),
];

fn field_usize(cfg: &Json, key: &str) -> Result<Option<usize>> {
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            Error::Config(format!(
                "config.json: '{key}' should be a non-negative integer, is {v}"
            ))
        }),
    }
}

fn required_usize(cfg: &Json, key: &str) -> Result<usize> {
    field_usize(cfg, key)?.ok_or_else(|| Error::Config(format!("config.json: '{key}' is missing")))
}

fn field_f32(cfg: &Json, key: &str) -> Result<Option<f32>> {
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v.as_f64().map(|x| Some(x as f32)).ok_or_else(|| {
            Error::Config(format!("config.json: '{key}' should be a number, is {v}"))
        }),
    }
}

/// Token ids from a field that may be an integer or a list of integers.
pub fn id_list(v: Option<&Json>) -> Vec<u32> {
    match v {
        Some(Json::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_u64())
            .map(|n| n as u32)
            .collect(),
        _ => vec![],
    }
}

fn rope_scaling(cfg: &Json) -> Result<Option<RopeScaling>> {
    let Some(rs) = cfg.get("rope_scaling").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(Json::as_str)
        .unwrap_or("");
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let num = |k: &str| {
                rs.get(k).and_then(Json::as_f64).ok_or_else(|| {
                    Error::Config(format!(
                        "config.json: rope_scaling (llama3) needs a number '{k}'"
                    ))
                })
            };
            Ok(Some(RopeScaling::Llama3 {
                factor: num("factor")? as f32,
                low_freq_factor: num("low_freq_factor")? as f32,
                high_freq_factor: num("high_freq_factor")? as f32,
                original_context: num("original_max_position_embeddings")? as u32,
            }))
        }
        other => Err(Error::Unsupported(format!(
            "rope_scaling type '{other}' (supported: llama3, or none)"
        ))),
    }
}

/// Reads an HF `config.json` of a Liger checkpoint. Tensor-dependent fields
/// (`tie_embeddings`, `attention_bias`) are settled by [`HfSource::open`].
pub fn parse_config(cfg: &Json) -> Result<LigerConfig> {
    let model_type = cfg.get("model_type").and_then(Json::as_str).unwrap_or("");
    let (variant, base) = MODEL_TYPES
        .iter()
        .find(|(t, _, _)| *t == model_type)
        .map(|(_, v, b)| (*v, *b))
        .ok_or_else(|| {
            let known: Vec<&str> = MODEL_TYPES.iter().map(|t| t.0).collect();
            Error::Unsupported(format!(
                "config.json model_type '{model_type}' is not a Liger model (supported: {})",
                known.join(", ")
            ))
        })?;
    let hidden = required_usize(cfg, "hidden_size")?;
    let n_heads = required_usize(cfg, "num_attention_heads")?;
    if n_heads == 0 {
        return Err(Error::Config(
            "config.json: num_attention_heads is 0".into(),
        ));
    }
    // liger runs SwiGLU MLPs without biases: another activation or an MLP bias would convert
    // into a model that runs but computes something else.
    let act = cfg
        .get("hidden_act")
        .or_else(|| cfg.get("hidden_activation"))
        .and_then(Json::as_str)
        .unwrap_or("silu");
    if !matches!(act, "silu" | "swish") {
        return Err(Error::Unsupported(format!(
            "config.json: hidden_act '{act}' (liger runs SwiGLU MLPs: silu)"
        )));
    }
    if cfg.get("mlp_bias").and_then(Json::as_bool) == Some(true) {
        return Err(Error::Unsupported(
            "config.json: mlp_bias is true (liger's MLP projections have no bias)".into(),
        ));
    }
    let head_dim = match base {
        // The Liger authors' Qwen attention takes hidden / heads, whatever `head_dim` says
        // (the tensors' shapes are checked against it when the checkpoint opens).
        Base::Qwen2 | Base::Qwen3 => hidden / n_heads,
        _ => field_usize(cfg, "head_dim")?.unwrap_or(hidden / n_heads),
    };
    let gsa_slots = match variant {
        // The authors' GSA default: 64 slots.
        Variant::Gsa => field_usize(cfg, "pool_size")?
            .or(field_usize(cfg, "num_slots")?)
            .unwrap_or(DEFAULT_GSA_SLOTS),
        _ => head_dim,
    };
    let config = LigerConfig {
        variant,
        base,
        n_layers: required_usize(cfg, "num_hidden_layers")?,
        hidden,
        ffn: required_usize(cfg, "intermediate_size")?,
        n_heads,
        n_kv_heads: field_usize(cfg, "num_key_value_heads")?.unwrap_or(n_heads),
        head_dim,
        vocab_size: required_usize(cfg, "vocab_size")?,
        rms_eps: field_f32(cfg, "rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: field_f32(cfg, "rope_theta")?.unwrap_or(10000.0),
        rope_scaling: rope_scaling(cfg)?,
        context_length: field_usize(cfg, "max_position_embeddings")?.unwrap_or(0) as u32,
        window: DEFAULT_WINDOW,
        mix_swa: DEFAULT_MIX_SWA,
        gate_normalizer: DEFAULT_GATE_NORMALIZER,
        gsa_slots,
        tie_embeddings: cfg
            .get("tie_word_embeddings")
            .and_then(Json::as_bool)
            .unwrap_or(false),
        attention_bias: base == Base::Qwen2,
        untrained: false,
    };
    Ok(config)
}

/// A safetensors file. Tensor bytes are read with positioned reads rather than through a
/// mapping, so that pages already converted do not stay resident in the converter.
struct Shard {
    path: PathBuf,
    file: std::fs::File,
    /// Offset of the data section (8 + header length).
    data_start: usize,
    len: usize,
}

/// Reads `buf.len()` bytes at `offset`.
fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_read(
                file,
                &mut buf[done..],
                offset + done as u64,
            )?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the shard.
    range: std::ops::Range<usize>,
}

/// Safetensors weights of an HF checkpoint, keyed by GGUF name.
pub struct HfSource {
    pub dir: PathBuf,
    pub config: LigerConfig,
    pub raw_config: Json,
    shards: Vec<Shard>,
    tensors: HashMap<String, Entry>,
    pub ignored: Vec<(String, &'static str)>,
}

/// The safetensors files of a checkpoint: the index's shards, or `model.safetensors`.
fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let idx = read_json(&index)?;
        let map = idx
            .get("weight_map")
            .and_then(Json::as_object)
            .ok_or_else(|| Error::Config(format!("{}: no 'weight_map' object", index.display())))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        files.sort();
        files.dedup();
        for f in &files {
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                return Err(Error::Config(format!(
                    "{}: shard name '{f}' is not a plain file name",
                    index.display()
                )));
            }
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(Error::Config(format!(
        "{}: no model.safetensors and no model.safetensors.index.json",
        dir.display()
    )))
}

/// Opens a shard and parses its header (through a temporary mapping: only the header pages
/// are touched). Returns the shard and its tensor table.
fn open_shard(path: &Path) -> Result<(Shard, safetensors::tensor::Metadata)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only private mapping, dropped before this function returns; the
    // checkpoint must not be truncated concurrently (that could fault the process).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map)
        .map_err(|e| Error::Format(format!("{}: bad safetensors header: {e}", path.display())))?;
    let len = map.len();
    drop(map);
    Ok((
        Shard {
            path: path.to_owned(),
            file,
            data_start: 8 + header_len,
            len,
        },
        meta,
    ))
}

impl HfSource {
    pub fn open(dir: &Path) -> Result<HfSource> {
        let raw_config = read_json(&dir.join("config.json"))?;
        let mut config = parse_config(&raw_config)?;
        let mut shards = Vec::new();
        let mut tensors = HashMap::new();
        let mut ignored = Vec::new();
        for path in shard_paths(dir)? {
            let (shard, meta) = open_shard(&path)?;
            let mut names: Vec<(String, &safetensors::tensor::TensorInfo)> =
                meta.tensors().into_iter().collect();
            names.sort_by(|a, b| a.0.cmp(&b.0));
            for (hf, info) in names {
                let Some(gguf) = hf_to_gguf(&hf) else {
                    match hf_ignored(&hf) {
                        Some(why) => {
                            ignored.push((hf, why));
                            continue;
                        }
                        None => {
                            return Err(Error::Tensor(format!(
                                "{}: tensor '{hf}' is not part of a Liger model of this kind",
                                path.display()
                            )))
                        }
                    }
                };
                let (start, end) = info.data_offsets;
                let range = shard
                    .data_start
                    .checked_add(start)
                    .zip(shard.data_start.checked_add(end));
                let range = match range {
                    Some((s, e)) if s <= e && e <= shard.len => s..e,
                    _ => {
                        return Err(Error::Format(format!(
                            "{}: tensor '{hf}' data {start}..{end} lies outside the file",
                            path.display()
                        )))
                    }
                };
                let entry = Entry {
                    shard: shards.len(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    range,
                };
                if tensors.insert(gguf, entry).is_some() {
                    return Err(Error::Tensor(format!(
                        "tensor '{hf}' appears in two shards"
                    )));
                }
            }
            shards.push(shard);
        }
        if config.tie_embeddings {
            tensors.remove("output.weight");
        } else if !tensors.contains_key("output.weight") {
            return Err(Error::Tensor(
                "lm_head.weight is missing and tie_word_embeddings is false".into(),
            ));
        }
        let has_bias = tensors.contains_key("blk.0.attn_q.bias");
        if config.base == Base::Qwen2 && !has_bias {
            return Err(Error::Tensor(
                "a Qwen2 base needs q/k/v_proj biases; layer 0 has none".into(),
            ));
        }
        // Liger-Qwen3 builds zero biases when the file has none; real trained ones are kept.
        config.attention_bias = has_bias;
        config.validate()?;
        Ok(HfSource {
            dir: dir.to_owned(),
            config,
            raw_config,
            shards,
            tensors,
            ignored,
        })
    }
}

impl WeightSource for HfSource {
    fn config(&self) -> &LigerConfig {
        &self.config
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|e| e.shape.clone())
    }

    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn read_rows(&self, name: &str, rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::Tensor(format!("tensor '{name}' is missing")))?;
        let shard = &self.shards[e.shard];
        let row_len: usize = e.shape.iter().skip(1).product::<usize>().max(1);
        let n: usize = e.shape.iter().product();
        let elem = match e.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            d => {
                return Err(Error::Unsupported(format!(
                    "tensor '{name}' has dtype {d:?} (want F32, F16 or BF16)"
                )))
            }
        };
        if n * elem != e.range.len() {
            return Err(Error::Format(format!(
                "{}: tensor '{name}' shape {:?} needs {} bytes, has {}",
                shard.path.display(),
                e.shape,
                n * elem,
                e.range.len()
            )));
        }
        let n_rows = if e.shape.len() <= 1 { 1 } else { e.shape[0] };
        let row_len = if e.shape.len() <= 1 { n } else { row_len };
        if rows.end > n_rows {
            return Err(Error::Tensor(format!(
                "tensor '{name}': rows {rows:?} of {n_rows}"
            )));
        }
        let mut bytes = vec![0u8; rows.len() * row_len * elem];
        let at = e.range.start + rows.start * row_len * elem;
        read_at(&shard.file, &mut bytes, at as u64).map_err(|err| Error::io(&shard.path, err))?;
        Ok(match e.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => bytes
                .chunks_exact(2)
                .map(|c| liger::quant::bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(model_type: &str) -> Json {
        json!({"model_type": model_type, "hidden_size": 128, "num_attention_heads": 4,
               "num_hidden_layers": 2, "intermediate_size": 256, "vocab_size": 512,
               "hidden_act": "silu"})
    }

    #[test]
    fn configs_liger_cannot_run_are_refused_by_name() {
        let mut gelu = config("liger_gla");
        gelu["hidden_act"] = "gelu".into();
        let err = parse_config(&gelu).unwrap_err().to_string();
        assert!(err.contains("hidden_act 'gelu'"), "{err}");
        let mut biased = config("liger_gla");
        biased["mlp_bias"] = true.into();
        let err = parse_config(&biased).unwrap_err().to_string();
        assert!(err.contains("mlp_bias"), "{err}");
        let mut heads = config("liger_gla");
        heads["num_attention_heads"] = 0.into();
        assert!(parse_config(&heads).is_err());
    }

    #[test]
    fn the_authors_defaults_fill_what_a_config_leaves_out() {
        // GSA without pool_size: 64 slots, as the authors' code.
        assert_eq!(parse_config(&config("liger_gsa")).unwrap().gsa_slots, 64);
        let mut gsa = config("liger_gsa");
        gsa["pool_size"] = 16.into();
        assert_eq!(parse_config(&gsa).unwrap().gsa_slots, 16);
        // Qwen: hidden / heads, whatever head_dim says (the authors' attention does so).
        for qwen in ["liger_qwen2_gla", "liger_qwen3_gla"] {
            let mut c = config(qwen);
            c["head_dim"] = 64.into();
            assert_eq!(parse_config(&c).unwrap().head_dim, 32, "{qwen}");
        }
        // Llama: head_dim taken at its word.
        let mut llama = config("liger_gla");
        llama["head_dim"] = 64.into();
        assert_eq!(parse_config(&llama).unwrap().head_dim, 64);
    }
}
