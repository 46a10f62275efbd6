//! Rebuilds an HF `tokenizers` tokenizer from a llama.cpp GGUF's `tokenizer.ggml.*`
//! metadata, so that a liger file always carries a `tokenizer.huggingface.json`.
//!
//! - `gpt2` vocabularies (byte-level BPE): the pre-tokenizer regexes that llama.cpp uses
//!   for the `tokenizer.ggml.pre` name, as a sequence of `Split` pre-tokenizers followed by
//!   the byte-level mapping; merges as stored.
//! - `llama` vocabularies (SentencePiece BPE with scores): `▁` for spaces, byte fallback, and
//!   merges derived from the scores (a pair merges with the rank of the score of the token it
//!   makes, as llama.cpp's SPM tokenizer picks the highest-scoring merge first).
//!
//! Control and user-defined tokens become added tokens, matched in the text as llama.cpp
//! does with special-token parsing on.

use crate::source::TokenizerInfo;
use liger::gguf::{GgufFile, Value};
use liger::{Error, Result};
use serde_json::{json, Value as Json};
use std::collections::HashMap;

/// llama.cpp's `llama_token_type`.
const TOKEN_NORMAL: i64 = 1;
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regexes (applied in order) and `ignore_merges` for a `tokenizer.ggml.pre` name, as
/// llama.cpp's `llm_tokenizer_bpe` defines them.
fn pre_tokenizer_for(pre: &str) -> Result<(Vec<&'static str>, bool)> {
    Ok(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => (vec![LLAMA3_REGEX], true),
        "dbrx" | "smaug-bpe" => (vec![LLAMA3_REGEX], false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            (vec![r"\p{N}", GPT2_REGEX], false)
        }
        "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "trillion" => (vec![GPT2_REGEX], false),
        "qwen2" | "stablelm2" | "deepseek-r1-qwen" | "hunyuan" => (vec![QWEN2_REGEX], false),
        "default" => (
            vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]"],
            false,
        ),
        other => {
            return Err(Error::Unsupported(format!(
                "tokenizer.ggml.pre '{other}' (supported: llama-bpe/llama3, smollm/starcoder, gpt-2, qwen2, default)"
            )))
        }
    })
}

fn strings<'a>(file: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    let items = file
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Tokenizer(format!("'{key}' is missing or not an array")))?;
    let strings = items
        .strings()
        .ok_or_else(|| Error::Tokenizer(format!("'{key}' is not an array of strings")))?;
    Ok(strings.iter().collect())
}

fn numbers(file: &GgufFile, key: &str, n: usize, default: f64) -> Result<Vec<f64>> {
    let Some(items) = file.get(key) else {
        return Ok(vec![default; n]);
    };
    let items = items
        .as_array()
        .ok_or_else(|| Error::Tokenizer(format!("'{key}' is not an array")))?;
    if items.len() != n {
        return Err(Error::Tokenizer(format!(
            "'{key}' has {} entries for {n} tokens",
            items.len()
        )));
    }
    items
        .iter()
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| Error::Tokenizer(format!("'{key}' holds a non-number")))
        })
        .collect()
}

fn token_id(file: &GgufFile, key: &str, n: usize) -> Result<Option<u32>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(id) if (id as usize) < n => Ok(Some(id as u32)),
            _ => Err(Error::Tokenizer(format!(
                "'{key}' = {v} is not a token id below {n}"
            ))),
        },
    }
}

/// Builds the tokenizer of a llama.cpp GGUF, checked by loading it with `tokenizers`.
pub fn rebuild_tokenizer(file: &GgufFile) -> Result<TokenizerInfo> {
    let model = file
        .get("tokenizer.ggml.model")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Tokenizer("tokenizer.ggml.model is missing".into()))?;
    let tokens = strings(file, "tokenizer.ggml.tokens")?;
    let n = tokens.len();
    let types: Vec<i64> = numbers(file, "tokenizer.ggml.token_type", n, TOKEN_NORMAL as f64)?
        .into_iter()
        .map(|t| t as i64)
        .collect();
    let bos = token_id(file, "tokenizer.ggml.bos_token_id", n)?;
    let eos = token_id(file, "tokenizer.ggml.eos_token_id", n)?;
    let eot = token_id(file, "tokenizer.ggml.eot_token_id", n)?;
    let add_bos = file
        .get("tokenizer.ggml.add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or(model == "llama");

    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, (tok, ty)) in tokens.iter().zip(&types).enumerate() {
        if !vocab.contains_key(*tok) {
            vocab.insert(tok.to_string(), json!(id));
        }
        if *ty == TOKEN_CONTROL || *ty == TOKEN_USER_DEFINED {
            added.push(json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": *ty == TOKEN_CONTROL,
            }));
        }
    }

    let mut tokenizer = match model {
        "gpt2" => {
            let pre = file
                .get("tokenizer.ggml.pre")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let (regexes, ignore_merges) = pre_tokenizer_for(pre)?;
            let mut pretokenizers: Vec<Json> = regexes
                .iter()
                .map(|r| json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
                .collect();
            pretokenizers.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}));
            let merges = strings(file, "tokenizer.ggml.merges")?
                .into_iter()
                .map(|m| {
                    let (a, b) = m
                        .split_once(' ')
                        .ok_or_else(|| Error::Tokenizer(format!("merge '{m}' has no space")))?;
                    Ok(json!([a, b]))
                })
                .collect::<Result<Vec<_>>>()?;
            json!({
                "version": "1.0", "truncation": null, "padding": null,
                "added_tokens": added,
                "normalizer": null,
                "pre_tokenizer": {"type": "Sequence", "pretokenizers": pretokenizers},
                "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {
                    "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                    "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges,
                },
            })
        }
        "llama" => {
            let scores = numbers(file, "tokenizer.ggml.scores", n, 0.0)?;
            let add_space_prefix = file
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let unk =
                token_id(file, "tokenizer.ggml.unknown_token_id", n)?.map(|id| tokens[id as usize]);
            let merges = spm_merges(&tokens, &types, &scores);
            let mut normalizers =
                vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"})];
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if add_space_prefix {
                normalizers.insert(0, json!({"type": "Prepend", "prepend": "▁"}));
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            json!({
                "version": "1.0", "truncation": null, "padding": null,
                "added_tokens": added,
                "normalizer": {"type": "Sequence", "normalizers": normalizers},
                "pre_tokenizer": null,
                "post_processor": null,
                "decoder": {"type": "Sequence", "decoders": decoders},
                "model": {
                    "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                    "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                    "ignore_merges": false, "vocab": vocab, "merges": merges,
                },
            })
        }
        other => {
            return Err(Error::Unsupported(format!(
                "tokenizer.ggml.model '{other}' (supported: gpt2, llama)"
            )))
        }
    };
    if let (true, Some(b)) = (add_bos, bos) {
        let name = tokens[b as usize];
        tokenizer["post_processor"] = json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": name, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": name, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": name, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {name: {"id": name, "ids": [b], "tokens": [name]}},
        });
    }
    let json = serde_json::to_string(&tokenizer).map_err(|e| Error::Tokenizer(e.to_string()))?;
    let stop_ids: Vec<u32> = eos
        .into_iter()
        .chain(eot)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let info = TokenizerInfo {
        json: Some(json),
        chat_template: file
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .map(String::from),
        bos,
        eos,
        stop_ids,
        add_bos,
    };
    info.validate(n)?;
    Ok(info)
}

/// Longest piece (bytes) whose splits are searched for merges: SentencePiece's pieces are at
/// most 16 characters (`max_sentencepiece_length`), so 64 four-byte characters is generous, and
/// the search (quadratic in a piece's length) stays bounded for a hostile vocabulary.
const MAX_MERGED_PIECE: usize = 256;

/// BPE merges for a SentencePiece vocabulary: every split of a normal token into two normal
/// tokens, ranked by the merged token's score (highest first), then by the parts' ids.
fn spm_merges(tokens: &[&str], types: &[i64], scores: &[f64]) -> Vec<Json> {
    let normal: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| types[*i] == TOKEN_NORMAL)
        .map(|(i, t)| (*t, i))
        .collect();
    let mut merges: Vec<(f64, usize, usize, &str, &str)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        if types[id] != TOKEN_NORMAL || tok.len() > MAX_MERGED_PIECE {
            continue;
        }
        for (split, _) in tok.char_indices().skip(1) {
            let (a, b) = tok.split_at(split);
            if let (Some(&ia), Some(&ib)) = (normal.get(a), normal.get(b)) {
                merges.push((scores[id], ia, ib, a, b));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    merges
        .into_iter()
        .map(|(_, _, _, a, b)| json!([a, b]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use liger::gguf::{GgufWriter, ValueType};

    fn gguf_with(meta: Vec<(String, Value)>) -> GgufFile {
        let mut buf = Vec::new();
        GgufWriter::new(&mut buf, &meta, vec![])
            .unwrap()
            .finish()
            .unwrap();
        GgufFile::from_bytes(buf).unwrap()
    }

    #[test]
    fn spm_vocabulary_merges_by_score_and_falls_back_to_bytes() {
        let tokens = [
            "<unk>", "<s>", "</s>", "▁", "a", "b", "ab", "▁ab", "<0x41>", "<0x0A>",
        ];
        let types = [2, 3, 3, 1, 1, 1, 1, 1, 6, 6];
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -0.5, -0.1, 0.0, 0.0];
        let meta = vec![
            (
                "tokenizer.ggml.model".to_string(),
                Value::String("llama".into()),
            ),
            ("tokenizer.ggml.tokens".into(), Value::string_array(&tokens)),
            (
                "tokenizer.ggml.token_type".into(),
                Value::array(
                    ValueType::I32,
                    types.iter().map(|t| Value::I32(*t)).collect(),
                )
                .unwrap(),
            ),
            (
                "tokenizer.ggml.scores".into(),
                Value::array(
                    ValueType::F32,
                    scores.iter().map(|s| Value::F32(*s)).collect(),
                )
                .unwrap(),
            ),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
            ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
        ];
        let info = rebuild_tokenizer(&gguf_with(meta)).unwrap();
        let tok: tokenizers::Tokenizer = info.json.as_deref().unwrap().parse().unwrap();
        // "ab" -> "▁ab" (one token); "A" is not in the vocab -> byte fallback <0x41>; BOS added.
        let enc = tok.encode("ab A\n", true).unwrap();
        assert_eq!(enc.get_ids(), [1, 7, 3, 8, 9]);
        assert_eq!(tok.decode(&[7, 3, 8], true).unwrap(), "ab A");
        assert_eq!(
            (info.bos, info.eos, info.stop_ids.as_slice()),
            (Some(1), Some(2), &[2u32][..])
        );
    }

    #[test]
    fn merges_are_searched_only_in_pieces_of_bounded_length() {
        // The split search is quadratic in a piece's length: a piece longer than the bound is
        // not searched (a hostile file may hold megabyte pieces), a shorter one is.
        let half = "x".repeat(MAX_MERGED_PIECE / 2 + 1);
        let long = half.repeat(2);
        let tokens = ["a", "b", "ab", half.as_str(), long.as_str()];
        let merges = spm_merges(&tokens, &[1; 5], &[0.0; 5]);
        assert_eq!(merges, vec![json!(["a", "b"])]);
    }

    #[test]
    fn unknown_pre_tokenizer_is_a_clear_error() {
        let meta = vec![
            (
                "tokenizer.ggml.model".to_string(),
                Value::String("gpt2".into()),
            ),
            ("tokenizer.ggml.pre".into(), Value::String("klingon".into())),
            ("tokenizer.ggml.tokens".into(), Value::string_array(&["a"])),
            (
                "tokenizer.ggml.merges".into(),
                Value::string_array::<&str>(&[]),
            ),
        ];
        let err = rebuild_tokenizer(&gguf_with(meta)).unwrap_err().to_string();
        assert!(err.contains("klingon"), "{err}");
    }
}
