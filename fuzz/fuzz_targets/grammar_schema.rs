//! Fuzzes structured output: a JSON schema (or Lark grammar, or regex) compiled by the grammar
//! engine over a small byte-level vocabulary, then a few tokens masked and committed. A
//! schema the engine refuses is an error with a message; one it takes leaves at least one
//! token allowed until the output is complete.
//!
//! Input: a kind byte (0 JSON schema, 1 JSON object, 2 Lark, 3 regex), then the grammar text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liger::constraint::{Grammar, GrammarEngine, GrammarKind};
use liger::gguf::{GgufFile, GgufWriter, Value};
use std::sync::OnceLock;

/// GPT-2's map of bytes to printable characters (byte-level BPE vocabularies use it).
fn byte_char(b: u8) -> char {
    let printable = (b'!'..=b'~').contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    if printable {
        return b as char;
    }
    let shifted = (0..b)
        .filter(|&c| !((b'!'..=b'~').contains(&c) || (0xa1..=0xac).contains(&c) || c >= 0xae))
        .count();
    char::from_u32(256 + shifted as u32).unwrap()
}

/// An engine over 256 byte tokens, some JSON words, and an end token.
fn engine() -> &'static GrammarEngine {
    static ENGINE: OnceLock<GrammarEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut vocab = serde_json::Map::new();
        for b in 0..=255u8 {
            vocab.insert(byte_char(b).to_string(), vocab.len().into());
        }
        for word in ["{\"", "\":", "\",", "true", "false", "null", "name", "  "] {
            let text: String = word.bytes().map(byte_char).collect();
            vocab.insert(text, vocab.len().into());
        }
        let eos = vocab.len();
        let tokenizer = serde_json::json!({
            "model": {"type": "BPE", "vocab": vocab, "merges": []},
            "added_tokens": [{"id": eos, "content": "</s>", "special": true}],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
            "decoder": {"type": "ByteLevel"},
        });
        let meta = vec![(
            "tokenizer.huggingface.json".to_string(),
            Value::String(tokenizer.to_string()),
        )];
        let w = GgufWriter::new(Vec::new(), &meta, Vec::new()).unwrap();
        let file = GgufFile::from_bytes(w.finish().unwrap()).unwrap();
        GrammarEngine::from_gguf(&file, eos + 1, vec![eos as u32]).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let kind = match kind % 4 {
        0 => GrammarKind::JsonSchema,
        1 => GrammarKind::JsonObject,
        2 => GrammarKind::Lark,
        _ => GrammarKind::Regex,
    };
    let grammar = Grammar {
        kind,
        text: text.to_owned(),
    };
    let mut constraint = match engine().constraint(&grammar) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let logits = vec![0f32; 265];
    for _ in 0..8 {
        if constraint.is_complete() {
            break;
        }
        let Ok(masked) = constraint.mask(&logits) else {
            break;
        };
        // The first token allowed (the engine's choice of what may follow).
        let Some(next) = masked.iter().position(|x| x.is_finite()) else {
            break;
        };
        if constraint.commit(next as u32).is_err() {
            break;
        }
    }
});
