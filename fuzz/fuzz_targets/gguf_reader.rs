//! Fuzzes the GGUF reader: any bytes must parse or fail with an error, and whatever parses
//! must be safe to use (config, every tensor's bytes, dequantization of small tensors).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = liger::GgufFile::from_bytes(data.to_vec()) else { return };
    let _ = liger::LigerConfig::from_gguf(&file);
    for t in file.tensors() {
        let bytes = file.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes);
        if t.n_elements <= 1 << 16 && t.ggml_type.can_dequantize() {
            let _ = liger::quant::dequantize(t.ggml_type, bytes);
        }
    }
});
