//! Fuzzes rebuilding an HF tokenizer from a llama.cpp GGUF's `tokenizer.ggml.*` metadata
//! (the converter's path for llama.cpp files), then using what was built.
//!
//! Input: a GGUF file (starts with `GGUF`), or — so that mutations stay meaningful — a text
//! description turned into one: line 1 `gpt2 <pre>` or `llama`; then one token per line,
//! `<type> <score> <text>`; after a line `--`, gpt2 merges (`a b`), one per line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liger::gguf::{GgufFile, GgufWriter, Value, ValueType};

fn gguf_from_description(text: &str) -> Option<Vec<u8>> {
    let mut lines = text.split('\n');
    let mut head = lines.next()?.split(' ');
    let model = head.next()?;
    let mut meta = vec![(
        "tokenizer.ggml.model".to_string(),
        Value::String(model.into()),
    )];
    if let Some(pre) = head.next() {
        meta.push(("tokenizer.ggml.pre".into(), Value::String(pre.into())));
    }
    let (mut tokens, mut types, mut scores, mut merges) = (vec![], vec![], vec![], vec![]);
    let mut in_merges = false;
    for line in lines {
        if line == "--" {
            in_merges = true;
        } else if in_merges {
            merges.push(line);
        } else {
            let mut parts = line.splitn(3, ' ');
            types.push(Value::I32(parts.next()?.parse().ok()?));
            scores.push(Value::F32(parts.next()?.parse().ok()?));
            tokens.push(parts.next()?);
        }
    }
    let n = tokens.len() as u32;
    meta.extend([
        (
            "tokenizer.ggml.tokens".to_string(),
            Value::string_array(&tokens),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::array(ValueType::I32, types).ok()?,
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::array(ValueType::F32, scores).ok()?,
        ),
        ("tokenizer.ggml.merges".into(), Value::string_array(&merges)),
        (
            "tokenizer.ggml.bos_token_id".into(),
            Value::U32(1.min(n.saturating_sub(1))),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(2.min(n.saturating_sub(1))),
        ),
    ]);
    let mut buf = Vec::new();
    GgufWriter::new(&mut buf, &meta, vec![])
        .ok()?
        .finish()
        .ok()?;
    Some(buf)
}

fuzz_target!(|data: &[u8]| {
    let bytes = if data.starts_with(b"GGUF") {
        data.to_vec()
    } else {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Some(bytes) = gguf_from_description(text) else {
            return;
        };
        bytes
    };
    let Ok(file) = GgufFile::from_bytes(bytes) else {
        return;
    };
    let Ok(info) = liger_convert::tokenizer_gguf::rebuild_tokenizer(&file) else {
        return;
    };
    // What was rebuilt is what a liger file would carry: it must load in the runtime and
    // tokenize and detokenize any text.
    let json = info.json.expect("a rebuilt tokenizer has its JSON");
    let tokenizer: tokenizers::Tokenizer = json.parse().expect("the rebuilt JSON loads");
    for text in ["Hello world! 123 ÿ\n\n\t x", "<s></s><|im_start|>", ""] {
        let ids = tokenizer.encode(text, true).expect("any text encodes");
        let _ = tokenizer.decode(ids.get_ids(), false);
    }
});
