//! Fuzzes the GGUF reader: any bytes must parse or fail with an error, and whatever parses
//! must be safe to use (config, tokenizer, every tensor's bytes, dequantization of small
//! tensors, and a model built from it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = liger::GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    if let Ok(config) = liger::LigerConfig::from_gguf(&file) {
        let _ = liger::Tokenizer::from_gguf(&file, config.vocab_size);
    }
    for t in file.tensors() {
        let bytes = file.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes);
        if t.n_elements <= 1 << 16 && t.ggml_type.can_dequantize() {
            let _ = liger::quant::dequantize(t.ggml_type, bytes);
        }
    }
    let options = liger::ModelOptions {
        threads: Some(1),
        ..Default::default()
    };
    if let Ok(model) = liger::Model::from_file(file, &options) {
        // A model that loads must run: one token through the step.
        let mut session =
            liger::Session::new(std::sync::Arc::new(model), liger::DecodeMode::Window);
        let _ = session.feed(&[0]);
    }
});
