//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`), merged into the
//! base weights before quantization: `W += s · B·A` with `s = lora_alpha / r`
//! (`lora_alpha / √r` with `use_rslora`), A `[r, in]`, B `[out, r]`.

use crate::names::{hf_to_gguf, PlannedTensor};
use crate::source::read_json;
use liger::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One adapted weight: `delta = scale · B·A`.
struct LoraPair {
    /// [r, in]
    a: Vec<f32>,
    /// [out, r]
    b: Vec<f32>,
    r: usize,
    in_features: usize,
    out_features: usize,
    scale: f32,
}

pub struct LoraAdapter {
    pub dir: PathBuf,
    /// By GGUF name of the adapted weight.
    pairs: HashMap<String, LoraPair>,
    pub r: usize,
    pub alpha: f64,
    pub rslora: bool,
}

fn to_f32(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| liger::quant::bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        d => {
            return Err(Error::Unsupported(format!(
                "adapter tensor '{name}' has dtype {d:?}"
            )))
        }
    })
}

/// PEFT's pattern match of a `rank_pattern` / `alpha_pattern` key against a module name:
/// the key names the module or a dotted suffix of it.
fn pattern_value(patterns: Option<&Json>, module: &str) -> Option<f64> {
    let map = patterns?.as_object()?;
    map.iter()
        .find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
        .and_then(|(_, v)| v.as_f64())
}

impl LoraAdapter {
    pub fn open(dir: &Path) -> Result<LoraAdapter> {
        let bad = |m: String| Error::Config(format!("LoRA adapter {}: {m}", dir.display()));
        let cfg = read_json(&dir.join("adapter_config.json"))?;
        let peft_type = cfg
            .get("peft_type")
            .and_then(Json::as_str)
            .unwrap_or("LORA");
        if peft_type != "LORA" {
            return Err(bad(format!("peft_type '{peft_type}' is not LORA")));
        }
        for (flag, what) in [
            ("use_dora", "DoRA"),
            ("fan_in_fan_out", "fan_in_fan_out weights"),
        ] {
            if cfg.get(flag).and_then(Json::as_bool).unwrap_or(false) {
                return Err(Error::Unsupported(format!("LoRA adapter with {what}")));
            }
        }
        if cfg
            .get("bias")
            .and_then(Json::as_str)
            .is_some_and(|b| b != "none")
        {
            return Err(Error::Unsupported("LoRA adapter that trains biases".into()));
        }
        if cfg.get("modules_to_save").is_some_and(|m| !m.is_null()) {
            return Err(Error::Unsupported(
                "LoRA adapter with modules_to_save".into(),
            ));
        }
        let r = cfg
            .get("r")
            .and_then(Json::as_u64)
            .filter(|r| *r > 0)
            .ok_or_else(|| bad("'r' must be a positive integer".into()))? as usize;
        let alpha = cfg
            .get("lora_alpha")
            .and_then(Json::as_f64)
            .ok_or_else(|| bad("'lora_alpha' is missing".into()))?;
        let rslora = cfg
            .get("use_rslora")
            .and_then(Json::as_bool)
            .unwrap_or(false);

        let path = dir.join("adapter_model.safetensors");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("adapter_model.safetensors: {e}")))?;
        let mut halves: HashMap<String, [Option<(Vec<f32>, Vec<usize>)>; 2]> = HashMap::new();
        for (key, view) in st.tensors() {
            let stripped = key.strip_prefix("base_model.model.").unwrap_or(&key);
            let (module, which) = if let Some(m) = stripped.strip_suffix(".lora_A.weight") {
                (m, 0)
            } else if let Some(m) = stripped.strip_suffix(".lora_B.weight") {
                (m, 1)
            } else {
                return Err(bad(format!(
                    "tensor '{key}' is not a lora_A / lora_B weight"
                )));
            };
            let data = to_f32(&key, view.dtype(), view.data())?;
            if view.shape().len() != 2 || data.len() != view.shape().iter().product::<usize>() {
                return Err(bad(format!("tensor '{key}' has shape {:?}", view.shape())));
            }
            halves.entry(module.to_string()).or_default()[which] =
                Some((data, view.shape().to_vec()));
        }
        if halves.is_empty() {
            return Err(bad("adapter_model.safetensors holds no LoRA weights".into()));
        }
        let mut pairs = HashMap::new();
        for (module, [a, b]) in halves {
            let (Some((a, a_shape)), Some((b, b_shape))) = (a, b) else {
                return Err(bad(format!("module '{module}' lacks its lora_A or lora_B")));
            };
            let gguf = hf_to_gguf(&format!("{module}.weight")).ok_or_else(|| {
                bad(format!(
                    "module '{module}' is not a weight of a Liger model"
                ))
            })?;
            let rank = a_shape[0];
            if rank == 0 {
                return Err(bad(format!("module '{module}' has rank 0")));
            }
            let want_r = pattern_value(cfg.get("rank_pattern"), &module)
                .map(|v| v as usize)
                .unwrap_or(r);
            if rank != want_r || b_shape[1] != rank {
                return Err(bad(format!("module '{module}': lora_A {a_shape:?} / lora_B {b_shape:?} do not match r = {want_r}")));
            }
            let module_alpha = pattern_value(cfg.get("alpha_pattern"), &module).unwrap_or(alpha);
            let scale = if rslora {
                module_alpha / (rank as f64).sqrt()
            } else {
                module_alpha / rank as f64
            };
            pairs.insert(
                gguf,
                LoraPair {
                    a,
                    b,
                    r: rank,
                    in_features: a_shape[1],
                    out_features: b_shape[0],
                    scale: scale as f32,
                },
            );
        }
        Ok(LoraAdapter {
            dir: dir.to_owned(),
            pairs,
            r,
            alpha,
            rslora,
        })
    }

    /// Checks every adapted weight exists in the model with matching shape.
    pub fn check_against(&self, plan: &[PlannedTensor]) -> Result<()> {
        for (name, p) in &self.pairs {
            let t = plan.iter().find(|t| &t.name == name).ok_or_else(|| {
                Error::Config(format!(
                    "LoRA adapter targets '{name}', which this model does not have"
                ))
            })?;
            if t.shape != [p.out_features, p.in_features] {
                return Err(Error::Config(format!(
                    "LoRA adapter for '{name}' is [{}, {}], the weight is {:?}",
                    p.out_features, p.in_features, t.shape
                )));
            }
        }
        Ok(())
    }

    pub fn n_modules(&self) -> usize {
        self.pairs.len()
    }

    /// Adds `scale · B[rows]·A` to `w`, which holds `rows` of the weight `name` (row-major).
    pub fn apply(&self, name: &str, rows: Range<usize>, w: &mut [f32]) {
        let Some(p) = self.pairs.get(name) else {
            return;
        };
        for (o, w_row) in rows.zip(w.chunks_exact_mut(p.in_features)) {
            let b_row = &p.b[o * p.r..(o + 1) * p.r];
            for (k, &b) in b_row.iter().enumerate() {
                let s = p.scale * b;
                for (wi, ai) in w_row
                    .iter_mut()
                    .zip(&p.a[k * p.in_features..(k + 1) * p.in_features])
                {
                    *wi += s * ai;
                }
            }
        }
    }
}
