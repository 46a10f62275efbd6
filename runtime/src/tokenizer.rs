//! The tokenizer a liger file carries (`tokenizer.huggingface.json`), through the HF
//! `tokenizers` crate, with the special ids of the file, and a streaming detokenizer that
//! only ever emits complete UTF-8.

use crate::config::meta_opt;
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Every id that ends generation (the file's eos and `liger.stop_token_ids`).
    pub stop_ids: Vec<u32>,
    pub chat_template: Option<String>,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn token_id(file: &GgufFile, key: &str, vocab: usize) -> Result<Option<u32>> {
    let id = meta_opt(file, key, crate::config::meta_usize)?;
    match id {
        Some(i) if i >= vocab => Err(Error::Tokenizer(format!(
            "{key} = {i} is outside the vocabulary of {vocab}"
        ))),
        other => Ok(other.map(|i| i as u32)),
    }
}

/// The stop ids of a file: eos, and every id of `liger.stop_token_ids`.
pub fn stop_ids(file: &GgufFile, vocab: usize) -> Result<Vec<u32>> {
    let mut ids: Vec<u32> = token_id(file, "tokenizer.ggml.eos_token_id", vocab)?
        .into_iter()
        .collect();
    if let Some(list) = file.get("liger.stop_token_ids") {
        let items = list
            .as_array()
            .ok_or_else(|| Error::Tokenizer("liger.stop_token_ids is not an array".into()))?;
        for v in items.iter() {
            match v.as_u64() {
                Some(id) if (id as usize) < vocab => ids.push(id as u32),
                _ => {
                    return Err(Error::Tokenizer(format!(
                        "liger.stop_token_ids holds {v}, not an id below {vocab}"
                    )))
                }
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// One more than the largest id a tokenizer can produce (added tokens included).
pub fn id_span(t: &tokenizers::Tokenizer) -> usize {
    t.get_vocab(true)
        .values()
        .map(|&id| id as usize + 1)
        .max()
        .unwrap_or(0)
}

impl Tokenizer {
    /// The file's tokenizer, or `None` when it has none (token ids only).
    pub fn from_gguf(file: &GgufFile, vocab_size: usize) -> Result<Option<Tokenizer>> {
        let Some(json) = file.get("tokenizer.huggingface.json") else {
            return Ok(None);
        };
        let json = json
            .as_str()
            .ok_or_else(|| Error::Tokenizer("tokenizer.huggingface.json is not a string".into()))?;
        let inner: tokenizers::Tokenizer = json.parse().map_err(|e| {
            Error::Tokenizer(format!("tokenizer.huggingface.json does not load: {e}"))
        })?;
        // A tokenizer may know ids the model does not (Llama-3.2's has `<|image|>` = 128256 for
        // a 128256-row model): such ids are rejected when fed or decoded, not here.
        Ok(Some(Tokenizer {
            inner,
            bos: token_id(file, "tokenizer.ggml.bos_token_id", vocab_size)?,
            eos: token_id(file, "tokenizer.ggml.eos_token_id", vocab_size)?,
            stop_ids: stop_ids(file, vocab_size)?,
            chat_template: file
                .get("tokenizer.chat_template")
                .and_then(Value::as_str)
                .map(String::from),
            vocab_size,
        }))
    }

    /// Token ids of `text`. `add_special` applies the tokenizer's post-processor (e.g. BOS);
    /// special tokens written in the text are always recognized.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; unknown ids are an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.vocab_size) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.vocab_size
            )));
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.contains(&id)
    }
}

/// Turns a stream of token ids into text pieces that are always complete UTF-8 (a byte-level
/// token can end inside a character; its text is held back until the character completes).
#[derive(Default, Debug, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// Start of the tokens decoded for context (decoders drop leading spaces at a start).
    prefix: usize,
    /// End of the tokens whose text has been emitted.
    read: usize,
    /// Special tokens (`<|im_start|>`, …) give no text: for answers shown to people.
    skip_special: bool,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder whose text leaves out special tokens (chat answers, the server's).
    pub fn skipping_special() -> Self {
        StreamDecoder {
            skip_special: true,
            ..Self::default()
        }
    }

    /// Adds a token; returns the new complete text, if any.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = tokenizer.decode(&self.ids[self.prefix..], self.skip_special)?;
        if now.len() > before.len()
            && !now.ends_with('\u{FFFD}')
            && now.is_char_boundary(before.len())
        {
            let piece = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            // Keep only what the next decode needs.
            if self.prefix > 0 {
                self.ids.drain(..self.prefix);
                self.read -= self.prefix;
                self.prefix = 0;
            }
            return Ok(Some(piece));
        }
        Ok(None)
    }

    /// Text still held back (an incomplete character at the end), decoded lossily.
    pub fn flush(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        let before = tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = tokenizer.decode(&self.ids[self.prefix..], self.skip_special)?;
        self.ids.clear();
        self.prefix = 0;
        self.read = 0;
        Ok(now.get(before.len()..).unwrap_or("").to_string())
    }
}
