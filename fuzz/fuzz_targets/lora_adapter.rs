//! Fuzzes reading a PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`)
//! for `liger convert --lora`: each input is a clean error, or an adapter whose every pair
//! matches a weight of the model and applies to it with finite scales.
//!
//! Input: config length (u16 LE), the config JSON, then the safetensors file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liger_convert::lora::LoraAdapter;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (config, tensors) = data[2..].split_at(n);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("adapter_config.json"), config).unwrap();
    std::fs::write(dir.path().join("adapter_model.safetensors"), tensors).unwrap();
    let Ok(adapter) = LoraAdapter::open(dir.path()) else {
        return;
    };
    // The fixtures' tiny Llama shape: hidden 128, 4 heads, 2 KV heads, FFN 256.
    let mut config = liger_convert::synth::shape_config("tiny", liger::Variant::Gla).unwrap();
    config.n_layers = 2;
    let plan = liger::layout::tensor_specs(&config);
    if adapter.check_against(&plan).is_err() {
        return;
    }
    for t in plan.iter().filter(|t| t.is_matrix()) {
        let rows = t.shape[0].min(4);
        let mut w = vec![0f32; rows * t.shape[1]];
        adapter.apply(&t.name, 0..rows, &mut w);
    }
});
