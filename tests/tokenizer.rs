//! Tokenizers in liger files: rebuilt from a llama.cpp GGUF's `tokenizer.ggml.*` metadata
//! (must give llama.cpp's ids), or carried over from an HF checkpoint's files.

use liger::gguf::{GgufFile, Value};
use liger_tests::*;
use serde_json::json;

/// A tokenizer fixture case: text, expected ids, and (llama3) the expected decode.
struct Case {
    text: String,
    ids: Vec<u32>,
    decoded: Option<String>,
}

fn tokenizer_cases(path: &str) -> Vec<Case> {
    let json: serde_json::Value =
        serde_json::from_slice(&read_bytes(&fixtures().join(path))).unwrap();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect(),
            decoded: c["decoded"].as_str().map(String::from),
        })
        .collect()
}

fn stored_tokenizer(file: &GgufFile) -> tokenizers::Tokenizer {
    let json = file
        .get("tokenizer.huggingface.json")
        .and_then(Value::as_str)
        .expect("tokenizer.huggingface.json");
    json.parse().expect("stored tokenizer loads")
}

#[test]
fn smollm2_tokenizer_rebuilt_from_gguf_gives_llama_cpp_ids() {
    let Some(gguf) = test_data("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smollm2.gguf");
    let report = convert_to(&gguf, &out, "q8_0", None).unwrap();
    assert!(
        report.config.untrained,
        "a plain Llama GGUF is an untrained linearization"
    );
    let file = GgufFile::open(&out).unwrap();
    let tok = stored_tokenizer(&file);
    let cases = tokenizer_cases("tokenizers/smollm2/cases.json");
    assert!(cases.len() >= 5);
    for case in cases {
        let (text, want) = (case.text.as_str(), case.ids.clone());
        // llama-tokenize --no-bos with special tokens parsed; the GGUF has add_bos_token=false.
        let got = tok.encode(text, true).unwrap().get_ids().to_vec();
        if let Some(i) = got
            .iter()
            .zip(&want)
            .position(|(g, w)| g != w)
            .or((got.len() != want.len()).then_some(got.len().min(want.len())))
        {
            panic!(
                "{text:?}: first difference at token {i}: got {:?}, want {:?}",
                got.get(i),
                want.get(i)
            );
        }
        assert_eq!(tok.decode(&got, false).unwrap(), text, "decode round trip");
    }
    assert_eq!(
        file.get("tokenizer.ggml.eos_token_id"),
        Some(&Value::U32(2))
    );
    assert_eq!(
        file.get("tokenizer.ggml.bos_token_id"),
        Some(&Value::U32(1))
    );
    let template = file
        .get("tokenizer.chat_template")
        .and_then(Value::as_str)
        .unwrap();
    assert!(
        template.contains("<|im_start|>"),
        "chat template carried over"
    );
}

/// A small byte-level BPE tokenizer.json with 2 special tokens, inside a vocab of 512.
fn tiny_tokenizer_json() -> serde_json::Value {
    let bytes: Vec<char> = (0..=255u8)
        .map(|b| match b {
            b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff => b as char,
            _ => char::from_u32(256 + b as u32).unwrap(),
        })
        .collect();
    let mut vocab = serde_json::Map::new();
    vocab.insert("<s>".into(), json!(0));
    vocab.insert("</s>".into(), json!(1));
    for (i, c) in bytes.iter().enumerate() {
        vocab.entry(c.to_string()).or_insert(json!(2 + i));
    }
    vocab.insert("he".into(), json!(300));
    vocab.insert("llo".into(), json!(301));
    vocab.insert("ll".into(), json!(302));
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": [["h", "e"], ["l", "l"], ["ll", "o"]]}
    })
}

#[test]
fn hf_tokenizer_files_are_carried_into_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("ckpt");
    std::fs::create_dir_all(&src).unwrap();
    let case = fixtures().join("liger/liger_gla");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(case.join(f), src.join(f)).unwrap();
    }
    let tokenizer_json = serde_json::to_string(&tiny_tokenizer_json()).unwrap();
    std::fs::write(src.join("tokenizer.json"), &tokenizer_json).unwrap();
    std::fs::write(
        src.join("tokenizer_config.json"),
        serde_json::to_vec(&json!({
            "bos_token": "<s>",
            "eos_token": {"content": "</s>"},
            "chat_template": "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}",
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        src.join("generation_config.json"),
        r#"{"eos_token_id": [1, 300]}"#,
    )
    .unwrap();
    let out = tmp.path().join("out.gguf");
    let opts = liger_convert::ConvertOptions {
        src,
        out: out.clone(),
        out_type: "f16".parse().unwrap(),
        lora: None,
        name: Some("tiny".into()),
        progress: false,
    };
    assert!(liger_convert::convert(&opts).unwrap().has_tokenizer);
    let file = GgufFile::open(&out).unwrap();
    assert_eq!(
        file.get("tokenizer.huggingface.json")
            .and_then(Value::as_str),
        Some(tokenizer_json.as_str())
    );
    assert_eq!(
        file.get("tokenizer.ggml.bos_token_id"),
        Some(&Value::U32(0))
    );
    assert_eq!(
        file.get("tokenizer.ggml.eos_token_id"),
        Some(&Value::U32(1))
    );
    assert_eq!(
        file.get("liger.stop_token_ids"),
        Some(&Value::u32_array(&[1, 300]))
    );
    assert!(file
        .get("tokenizer.chat_template")
        .and_then(Value::as_str)
        .unwrap()
        .contains("messages"));
    assert_eq!(
        file.get("general.name"),
        Some(&Value::String("tiny".into()))
    );
    assert_eq!(
        stored_tokenizer(&file)
            .encode("hello", false)
            .unwrap()
            .get_ids(),
        [300, 301]
    );
}

/// The runtime's tokenizer over the Llama-3.2 tokenizer.json, as a liger file carries it.
fn llama3_runtime_tokenizer() -> Option<liger::Tokenizer> {
    let path = test_data("llama3/tokenizer.json")?;
    let json = String::from_utf8(read_bytes(&path)).unwrap();
    let meta = vec![
        (
            "tokenizer.huggingface.json".to_string(),
            Value::String(json),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(128000)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(128001)),
        (
            "liger.stop_token_ids".into(),
            Value::u32_array(&[128001, 128008, 128009]),
        ),
    ];
    let mut buf = Vec::new();
    liger::gguf::GgufWriter::new(&mut buf, &meta, vec![])
        .unwrap()
        .finish()
        .unwrap();
    let file = GgufFile::from_bytes(buf).unwrap();
    Some(liger::Tokenizer::from_gguf(&file, 128256).unwrap().unwrap())
}

#[test]
fn llama3_tokenizer_cases_and_streaming_detokenization() {
    let Some(tok) = llama3_runtime_tokenizer() else {
        return;
    };
    let cases = tokenizer_cases("tokenizers/llama3/cases.json");
    assert!(!cases.is_empty());
    for case in cases {
        let (text, want) = (case.text.as_str(), case.ids.clone());
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, want, "{text:?}");
        let decoded = case.decoded.as_deref().unwrap();
        assert_eq!(
            tok.decode(&want, false).unwrap(),
            decoded,
            "decode of {text:?}"
        );
        // Streaming: pieces are complete UTF-8 and add up to the whole text.
        let mut stream = liger::StreamDecoder::new();
        let mut pieces = String::new();
        for &id in &want {
            if let Some(piece) = stream.push(&tok, id).unwrap() {
                assert!(
                    !piece.contains('\u{FFFD}'),
                    "{text:?}: piece {piece:?} holds a replacement character"
                );
                pieces.push_str(&piece);
            }
        }
        pieces.push_str(&stream.flush(&tok).unwrap());
        assert_eq!(pieces, decoded, "streamed text of {text:?}");
    }
    // BOS comes from the tokenizer's post-processor; stop ids from the file.
    assert_eq!(tok.encode("Hi", true).unwrap()[0], 128000);
    assert!(tok.is_stop(128009) && tok.is_stop(128001) && !tok.is_stop(128000));
    assert!(tok
        .decode(&[128256], false)
        .unwrap_err()
        .to_string()
        .contains("outside the vocabulary"));
}

#[test]
fn an_emoji_split_over_byte_tokens_is_held_back_until_complete() {
    let Some(tok) = llama3_runtime_tokenizer() else {
        return;
    };
    // "🦁" is 4 UTF-8 bytes; Llama-3 encodes it as several byte-level tokens.
    let ids = tok.encode("🦁", false).unwrap();
    assert!(
        ids.len() > 1,
        "expected the emoji to span several tokens, got {ids:?}"
    );
    let mut stream = liger::StreamDecoder::new();
    for &id in &ids[..ids.len() - 1] {
        assert_eq!(
            stream.push(&tok, id).unwrap(),
            None,
            "no partial character is emitted"
        );
    }
    assert_eq!(
        stream.push(&tok, ids[ids.len() - 1]).unwrap().as_deref(),
        Some("🦁")
    );
}

#[test]
fn answers_for_people_leave_out_special_tokens() {
    let Some(tok) = llama3_runtime_tokenizer() else {
        return;
    };
    // <|start_header_id|> "Hi" <|eot_id|> " there"
    let mut ids = vec![128006];
    ids.extend(tok.encode("Hi", false).unwrap());
    ids.push(128009);
    ids.extend(tok.encode(" there", false).unwrap());
    let streamed = |mut d: liger::StreamDecoder| {
        let mut text = String::new();
        for &id in &ids {
            text.extend(d.push(&tok, id).unwrap());
        }
        text + &d.flush(&tok).unwrap()
    };
    assert_eq!(
        streamed(liger::StreamDecoder::new()),
        "<|start_header_id|>Hi<|eot_id|> there"
    );
    assert_eq!(
        streamed(liger::StreamDecoder::skipping_special()),
        "Hi there"
    );
}
