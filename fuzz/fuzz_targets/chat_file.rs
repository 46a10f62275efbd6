//! Fuzzes `liger chat --load FILE`: a saved chat (header, conversation JSON, state, checksum)
//! read into a session. Mutations of a real file are re-sealed (the checksum recomputed) so
//! that they reach the conversation and the state behind it. A refused file changes nothing;
//! an accepted one leaves a session that runs.
//!
//! Input: flags | n tokens fed before saving | tokens | (offset u16 LE, xor byte)*
//! flags: bit 0 re-seal the checksum, bit 1 the edits replace the file (raw bytes) instead.
#![no_main]

#[path = "../../cli/src/chat_file.rs"]
#[allow(dead_code)]
mod chat_file;

use libfuzzer_sys::fuzz_target;
use liger::chat::{ChatMessage, Conversation};
use liger::{DecodeMode, Model, Session, Variant};
use std::sync::{Arc, OnceLock};

fn model() -> &'static Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = liger_convert::synth::shape_config("tiny", Variant::Gla).unwrap();
        config.n_layers = 1;
        config.window = 4;
        let path = dir.path().join("tiny.gguf");
        liger_convert::synth::write_synthetic(&config, liger_convert::OutType::F16, &path).unwrap();
        let options = liger::ModelOptions {
            threads: Some(1),
            ..Default::default()
        };
        Arc::new(Model::load(&path, &options).unwrap())
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let vocab = model().config.vocab_size as u32;
    let (&n, rest) = rest.split_first().unwrap_or((&0, &[]));
    let n = (n as usize % 12).min(rest.len());
    let (tokens, edits) = rest.split_at(n);
    let tokens: Vec<u32> = tokens.iter().map(|&t| u32::from(t) % vocab).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.liger");

    let mut saver = Session::new(model().clone(), DecodeMode::Window);
    saver.feed(&tokens).unwrap();
    let mut conversation = Conversation::default();
    conversation.messages.push(ChatMessage::new("user", "hi"));
    chat_file::save(&path, &conversation, &saver).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    if flags & 2 != 0 {
        bytes = edits.to_vec();
    } else {
        for edit in edits.chunks_exact(3) {
            let at = u16::from_le_bytes([edit[0], edit[1]]) as usize;
            if let Some(b) = bytes.get_mut(at) {
                *b ^= edit[2];
            }
        }
        if flags & 1 != 0 && bytes.len() >= 8 {
            let body = bytes.len() - 8;
            let sum = liger::model::fnv1a(&bytes[..body]);
            bytes[body..].copy_from_slice(&sum.to_le_bytes());
        }
    }
    std::fs::write(&path, &bytes).unwrap();

    let mut session = Session::new(model().clone(), DecodeMode::Window);
    session.feed(&[1, 2]).unwrap();
    let before = session.save_state().unwrap();
    match chat_file::load(&path, &mut session) {
        Ok(_) => {
            // What loads runs on.
            session.feed(&[3]).unwrap();
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert_eq!(session.save_state().unwrap(), before, "a refused file changed the session");
        }
    }
});
