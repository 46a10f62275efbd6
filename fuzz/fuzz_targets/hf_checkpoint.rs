//! Fuzzes the converter's HF checkpoint reader: `config.json` and `model.safetensors` from
//! the input, converted to a liger file. Any input must convert or fail with an error, and a
//! file that converts must load.
//!
//! Input: config length (u16 LE) | config.json bytes | model.safetensors bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn workdir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let Some(config) = data.get(2..2 + n) else {
        return;
    };
    let weights = &data[2 + n..];
    let dir = workdir().path();
    let src = dir.join("checkpoint");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("config.json"), config).unwrap();
    std::fs::write(src.join("model.safetensors"), weights).unwrap();
    let out = dir.join("out.gguf");
    let _ = std::fs::remove_file(&out);
    let opts = liger_convert::ConvertOptions {
        src,
        out: out.clone(),
        out_type: liger_convert::OutType::Q8_0,
        lora: None,
        name: None,
        progress: false,
    };
    if liger_convert::convert(&opts).is_ok() {
        let options = liger::ModelOptions {
            threads: Some(1),
            ..Default::default()
        };
        let model = liger::Model::load(&out, &options).expect("a converted file loads");
        let mut session =
            liger::Session::new(std::sync::Arc::new(model), liger::DecodeMode::Window);
        session.feed(&[0]).expect("a converted model runs");
    } else {
        assert!(!out.exists(), "a failed conversion leaves no output");
    }
});
