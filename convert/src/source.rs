//! What every conversion source provides: the model config and f32 rows of each tensor by
//! GGUF name; plus the tokenizer metadata a liger file stores.

use liger::gguf::Value;
use liger::{Error, LigerConfig, Result};
use serde_json::Value as Json;
use std::ops::Range;
use std::path::Path;

pub trait WeightSource {
    fn config(&self) -> &LigerConfig;
    /// GGUF names of the tensors the source holds.
    fn names(&self) -> Vec<String>;
    /// Rows-first shape of a tensor.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// Rows `rows` of a tensor as f32 (a 1-D tensor is one row).
    fn read_rows(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>>;
}

pub fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// The tokenizer a liger file carries (`tokenizer.*` metadata).
#[derive(Clone, Debug, Default)]
pub struct TokenizerInfo {
    /// A whole HF `tokenizer.json` (absent for checkpoints without one: ids only).
    pub json: Option<String>,
    pub chat_template: Option<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Every id that ends generation (eos, eot, generation_config's list).
    pub stop_ids: Vec<u32>,
    pub add_bos: bool,
}

impl TokenizerInfo {
    pub fn to_metadata(&self) -> Vec<(String, Value)> {
        let mut m = vec![(
            "tokenizer.ggml.add_bos_token".to_string(),
            Value::Bool(self.add_bos),
        )];
        if let Some(json) = &self.json {
            m.push((
                "tokenizer.huggingface.json".into(),
                Value::String(json.clone()),
            ));
        }
        if let Some(t) = &self.chat_template {
            m.push(("tokenizer.chat_template".into(), Value::String(t.clone())));
        }
        if let Some(b) = self.bos {
            m.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
        }
        if let Some(e) = self.eos {
            m.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(e)));
        }
        if !self.stop_ids.is_empty() {
            m.push((
                "liger.stop_token_ids".into(),
                Value::u32_array(&self.stop_ids),
            ));
        }
        m
    }

    /// Checks that the JSON builds a tokenizer and the special ids are inside the model's
    /// vocabulary. (A tokenizer may know ids beyond it, as Llama-3.2's `<|image|>`; the runtime
    /// rejects such ids when they are fed.)
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        if let Some(json) = &self.json {
            let _: tokenizers::Tokenizer = json
                .parse()
                .map_err(|e| Error::Tokenizer(format!("tokenizer.json does not load: {e}")))?;
        }
        for id in self.bos.iter().chain(&self.eos).chain(&self.stop_ids) {
            if *id as usize >= vocab_size {
                return Err(Error::Tokenizer(format!(
                    "special token id {id} >= vocab_size {vocab_size}"
                )));
            }
        }
        Ok(())
    }
}

/// A token given in tokenizer_config.json as `"<s>"` or `{"content": "<s>", ...}`.
fn token_content(v: Option<&Json>) -> Option<&str> {
    match v? {
        Json::String(s) => Some(s),
        Json::Object(o) => o.get("content").and_then(Json::as_str),
        _ => None,
    }
}

/// The chat template of tokenizer_config.json (a string, or a list of named templates of
/// which "default" is used), or of `chat_template.jinja`.
fn chat_template(dir: &Path, tok_cfg: Option<&Json>) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| Error::io(&jinja, e));
    }
    Ok(match tok_cfg.and_then(|c| c.get("chat_template")) {
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
            .or(list.first())
            .and_then(|t| t.get("template"))
            .and_then(Json::as_str)
            .map(String::from),
        _ => None,
    })
}

/// The tokenizer of an HF checkpoint directory. Without a tokenizer.json only the special
/// ids of config.json / generation_config.json are kept (the file then works with ids only).
pub fn hf_tokenizer(dir: &Path, config: &Json) -> Result<TokenizerInfo> {
    let path = dir.join("tokenizer.json");
    let (json, tok) = if path.exists() {
        let json = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let tok: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        (Some(json), Some(tok))
    } else {
        (None, None)
    };
    let cfg_path = dir.join("tokenizer_config.json");
    let tok_cfg = if cfg_path.exists() {
        Some(read_json(&cfg_path)?)
    } else {
        None
    };
    let gen_path = dir.join("generation_config.json");
    let gen_cfg = if gen_path.exists() {
        Some(read_json(&gen_path)?)
    } else {
        None
    };

    let by_name = |key: &str| {
        let name = token_content(tok_cfg.as_ref().and_then(|c| c.get(key)))?;
        tok.as_ref()?.token_to_id(name)
    };
    let first = |v: Vec<u32>| v.first().copied();
    let bos = by_name("bos_token")
        .or_else(|| {
            first(crate::hf::id_list(
                gen_cfg.as_ref().and_then(|g| g.get("bos_token_id")),
            ))
        })
        .or_else(|| first(crate::hf::id_list(config.get("bos_token_id"))));
    let mut stop_ids = crate::hf::id_list(gen_cfg.as_ref().and_then(|g| g.get("eos_token_id")));
    stop_ids.extend(crate::hf::id_list(config.get("eos_token_id")));
    let eos = by_name("eos_token").or(stop_ids.first().copied());
    stop_ids.extend(eos);
    let mut seen = std::collections::HashSet::new();
    stop_ids.retain(|id| seen.insert(*id));
    let add_bos = tok_cfg
        .as_ref()
        .and_then(|c| c.get("add_bos_token"))
        .and_then(Json::as_bool)
        .unwrap_or(false);
    Ok(TokenizerInfo {
        json,
        chat_template: chat_template(dir, tok_cfg.as_ref())?,
        bos,
        eos,
        stop_ids,
        add_bos,
    })
}
