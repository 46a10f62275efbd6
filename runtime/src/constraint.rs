//! Structured output: a grammar — a JSON schema, any JSON object, a Lark grammar or a regex —
//! limits each next token to those that keep the text inside the grammar. The engine is
//! llguidance (as in llama.cpp and mistral.rs), over a token trie built once per model from
//! the file's own HF tokenizer; a generation's [`Constraint`] masks the logits before sampling
//! and follows every token fed.
//!
//! The model's stop ids are allowed exactly where the grammar can end, so a constrained answer
//! ends in a stop id or when the grammar admits nothing more, and its text is always a
//! complete sentence of the grammar unless `max_tokens` cut it short.

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use std::sync::Arc;

/// What a [`Grammar`]'s text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrammarKind {
    /// A JSON schema (JSON text): the output is JSON that validates against it.
    JsonSchema,
    /// Any JSON object (the text is ignored): OpenAI's `{"type": "json_object"}`.
    JsonObject,
    /// llguidance's Lark-like grammar syntax (`start: ...`).
    Lark,
    /// A regular expression (Rust `regex` syntax) the whole output matches.
    Regex,
}

impl GrammarKind {
    /// The kind named `name`: "json_schema" (or "json"), "json_object", "lark", "regex".
    pub fn parse(name: &str) -> Result<GrammarKind> {
        Ok(match name {
            "json_schema" | "json" => GrammarKind::JsonSchema,
            "json_object" => GrammarKind::JsonObject,
            "lark" => GrammarKind::Lark,
            "regex" => GrammarKind::Regex,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown grammar kind {other:?}: json_schema, json_object, lark or regex"
                )))
            }
        })
    }

    fn tag(self) -> &'static str {
        match self {
            GrammarKind::JsonSchema => "json_schema",
            GrammarKind::JsonObject => "json_object",
            GrammarKind::Lark => "lark",
            GrammarKind::Regex => "regex",
        }
    }
}

/// A constraint on a generation's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grammar {
    pub kind: GrammarKind,
    pub text: String,
}

impl Grammar {
    pub fn json_schema(schema: &serde_json::Value) -> Grammar {
        Grammar {
            kind: GrammarKind::JsonSchema,
            text: schema.to_string(),
        }
    }

    pub fn json_object() -> Grammar {
        Grammar {
            kind: GrammarKind::JsonObject,
            text: String::new(),
        }
    }
}

/// The grammar compiler of one model: its vocabulary as a token trie (built once; ~0.1 s for a
/// 128k vocabulary) and its stop ids.
pub struct GrammarEngine {
    factory: ParserFactory,
    stops: Vec<u32>,
    vocab: usize,
}

impl GrammarEngine {
    /// The engine of a file's tokenizer (`tokenizer.huggingface.json`), for a model of
    /// `vocab` logits that stops at `stops`.
    pub fn from_gguf(file: &GgufFile, vocab: usize, stops: Vec<u32>) -> Result<GrammarEngine> {
        let json = file
            .get("tokenizer.huggingface.json")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::InvalidArgument(
                    "this file has no tokenizer: output cannot be constrained by a grammar".into(),
                )
            })?;
        let json: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.huggingface.json: {e}")))?;
        let mut words = llguidance::token_bytes_from_tokenizer_json(&json)
            .map_err(|e| Error::Tokenizer(format!("tokens of tokenizer.huggingface.json: {e}")))?;
        // One entry per logit: ids the tokenizer lacks are never allowed (empty words), ids
        // past the model's rows are dropped.
        words.resize(vocab, Vec::new());
        let eos = *stops.first().ok_or_else(|| {
            Error::InvalidArgument(
                "this file has no stop id: a constrained output could not end".into(),
            )
        })?;
        let trie = TokTrie::from(&TokRxInfo::new(vocab as u32, eos), &words);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::InvalidArgument(format!("grammar engine: {e}")))?;
        Ok(GrammarEngine {
            factory,
            stops,
            vocab,
        })
    }

    /// A new constraint of `grammar`; an error names what is wrong with the grammar.
    pub fn constraint(&self, grammar: &Grammar) -> Result<Constraint> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::InvalidArgument(format!("{} grammar: {e}", grammar.kind.tag()))
        };
        let top = match grammar.kind {
            GrammarKind::JsonSchema | GrammarKind::JsonObject => {
                let schema = match grammar.kind {
                    GrammarKind::JsonObject => serde_json::json!({"type": "object"}),
                    _ => serde_json::from_str(&grammar.text).map_err(|e| bad(&e))?,
                };
                TopLevelGrammar::from_json_schema(with_bounded_whitespace(schema))
            }
            _ => TopLevelGrammar::from_tagged_str(grammar.kind.tag(), &grammar.text)
                .map_err(|e| bad(&e))?,
        };
        let parser = self.factory.create_parser(top).map_err(|e| bad(&e))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(bad(&e));
        }
        Ok(Constraint {
            matcher,
            stops: self.stops.clone(),
            masked: vec![f32::NEG_INFINITY; self.vocab],
        })
    }
}

/// Blanks allowed between two JSON tokens, as llama.cpp's JSON grammar has them: one space or
/// tab, or one newline and up to 20 spaces or tabs of indentation. llguidance's default
/// allows any amount, and a weak model then writes blank lines until `max_tokens`; this keeps
/// pretty-printing possible and every answer short. A schema's own `x-guidance` options win.
const JSON_BLANKS: &str = r"[\x20\x09]?|\x0A[\x20\x09]{0,20}";

fn with_bounded_whitespace(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(object) = schema.as_object_mut() {
        object
            .entry("x-guidance")
            .or_insert_with(|| serde_json::json!({ "whitespace_pattern": JSON_BLANKS }));
    }
    schema
}

/// One generation's grammar state.
pub struct Constraint {
    matcher: Matcher,
    stops: Vec<u32>,
    /// The last masked logits, `[vocab]`.
    masked: Vec<f32>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

impl Constraint {
    /// Whether the grammar admits no further token (the output is complete).
    pub fn is_complete(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// `logits` with every token the grammar does not allow next at −∞; the stop ids allowed
    /// only where the grammar can end.
    pub fn mask(&mut self, logits: &[f32]) -> Result<&[f32]> {
        let allowed: SimpleVob = self.matcher.compute_mask().map_err(Self::failed)?;
        let accepting = self.matcher.is_accepting().map_err(Self::failed)?;
        let n = logits.len().min(self.masked.len());
        self.masked.fill(f32::NEG_INFINITY);
        let mut any = false;
        for id in allowed.iter_set_entries_bounded(n) {
            self.masked[id] = logits[id];
            any = true;
        }
        for &s in &self.stops {
            let s = s as usize;
            if s < n {
                self.masked[s] = if accepting {
                    logits[s]
                } else {
                    f32::NEG_INFINITY
                };
                any |= accepting;
            }
        }
        if !any {
            return Err(Error::InvalidArgument(
                "the grammar allows no next token here".into(),
            ));
        }
        Ok(&self.masked[..n])
    }

    /// Follows token `id`, fed after the last [`Self::mask`] (a stop id ends the output and
    /// is not followed).
    pub fn commit(&mut self, id: u32) -> Result<()> {
        if self.stops.contains(&id) {
            return Ok(());
        }
        self.matcher.consume_token(id).map_err(Self::failed)
    }

    fn failed(e: impl std::fmt::Display) -> Error {
        Error::InvalidArgument(format!("grammar: {e}"))
    }
}

/// `SimpleVob`'s set entries below `n`.
trait SetEntries {
    fn iter_set_entries_bounded(&self, n: usize) -> impl Iterator<Item = usize> + '_;
}

impl SetEntries for SimpleVob {
    fn iter_set_entries_bounded(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        (0..n.min(self.len())).filter(|&i| self.is_allowed(i as u32))
    }
}
