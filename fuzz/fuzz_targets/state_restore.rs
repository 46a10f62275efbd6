//! Fuzzes restoring a session's state. A state's checksum would stop almost every mutation at
//! the door, so the input edits a valid state and may then re-seal it, reaching the checks
//! behind the checksum (version, model, mode, position, window length) and the model step on
//! whatever they let through.
//!
//! Input: flags | n tokens fed first | tokens | (offset u16 LE, xor byte)*
//! flags: bits 0-1 the variant (GLA, HGRN2, GSA), bit 2 the decode mode of the saving
//! session, bit 3 that of the restoring one, bit 4 re-seal the checksum, bit 5 the edits
//! replace the state (raw bytes) instead.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liger::{DecodeMode, Model, Session, Variant};
use std::sync::{Arc, OnceLock};

fn models() -> &'static [Arc<Model>; 3] {
    static MODELS: OnceLock<[Arc<Model>; 3]> = OnceLock::new();
    MODELS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        [Variant::Gla, Variant::Hgrn2, Variant::Gsa].map(|v| {
            let mut config = liger_convert::synth::shape_config("tiny", v).unwrap();
            config.n_layers = 1;
            config.window = 4;
            let path = dir.path().join(format!("{}.gguf", v.name()));
            liger_convert::synth::write_synthetic(&config, liger_convert::OutType::F16, &path)
                .unwrap();
            let options = liger::ModelOptions {
                threads: Some(1),
                ..Default::default()
            };
            Arc::new(Model::load(&path, &options).unwrap())
        })
    })
}

fn mode(bit: bool) -> DecodeMode {
    if bit {
        DecodeMode::HfCompat
    } else {
        DecodeMode::Window
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let model = &models()[(flags & 3) as usize % 3];
    let vocab = model.config.vocab_size as u32;
    let (&n, rest) = rest.split_first().unwrap_or((&0, &[]));
    let n = (n as usize % 12).min(rest.len());
    let (tokens, edits) = rest.split_at(n);
    let tokens: Vec<u32> = tokens.iter().map(|&t| u32::from(t) % vocab).collect();

    let mut saver = Session::new(model.clone(), mode(flags & 4 != 0));
    saver.feed(&tokens).unwrap();
    let mut blob = saver.save_state().unwrap();
    if flags & 32 != 0 {
        blob = edits.to_vec();
    } else {
        for e in edits.chunks_exact(3) {
            let at = u16::from_le_bytes([e[0], e[1]]) as usize % blob.len();
            blob[at] ^= e[2];
        }
    }
    if flags & 16 != 0 && blob.len() >= 8 {
        let body = blob.len() - 8;
        let sum = liger::model::fnv1a(&blob[..body]);
        blob[body..].copy_from_slice(&sum.to_le_bytes());
    }

    let mut restorer = Session::new(model.clone(), mode(flags & 8 != 0));
    restorer.feed(&[1, 2]).unwrap();
    let before = restorer.save_state().unwrap();
    match restorer.load_state(&blob) {
        Ok(()) => {
            // Whatever was accepted must run (NaN logits are allowed, panics are not) and sample.
            let _ = restorer.feed(&[3]);
            let mut sampler = liger::Sampler::new(liger::SamplerOptions::default());
            let _ = sampler.sample(restorer.logits());
        }
        Err(_) => assert_eq!(
            restorer.save_state().unwrap(),
            before,
            "a refused state changes nothing"
        ),
    }
});
