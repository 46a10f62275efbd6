//! Saved chats (`/save`, `/load`): the conversation and the session's state in one file,
//! written atomically (a temporary file beside the target, synced, then renamed over it, so a
//! crash leaves the old file or the new one, never a torn one).
//!
//! `LGCT` | version u32 | conversation JSON length u64 | JSON | state (itself versioned,
//! checksummed and bound to the model, `Session::save_state`) | FNV-1a u64 of all before.

use anyhow::{bail, ensure, Context, Result};
use liger::chat::Conversation;
use liger::Session;
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 4] = b"LGCT";
const VERSION: u32 = 1;
const HEADER: usize = 16;

pub fn save(path: &Path, conversation: &Conversation, session: &Session) -> Result<()> {
    let json = serde_json::to_vec(conversation)?;
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(&session.save_state()?);
    let sum = liger::model::fnv1a(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".liger-chat-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    liger::durable::sync_parent_dir(path)
        .with_context(|| format!("syncing the directory of {}", path.display()))
}

/// Restores `session` from a saved chat and returns its conversation; on any error the
/// session is unchanged.
pub fn load(path: &Path, session: &mut Session) -> Result<Conversation> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    from_bytes(&bytes, session)
}

fn from_bytes(bytes: &[u8], session: &mut Session) -> Result<Conversation> {
    ensure!(
        bytes.len() >= HEADER + 8 && &bytes[..4] == MAGIC,
        "not a liger chat file"
    );
    let version = u32::from_le_bytes(bytes[4..8].try_into()?);
    ensure!(
        version == VERSION,
        "chat file version {version}; this liger reads version {VERSION}"
    );
    let body = bytes.len() - 8;
    let sum = u64::from_le_bytes(bytes[body..].try_into()?);
    if liger::model::fnv1a(&bytes[..body]) != sum {
        bail!("the chat file is corrupted (checksum mismatch)");
    }
    let json_len = u64::from_le_bytes(bytes[8..16].try_into()?);
    let json_end = usize::try_from(json_len)
        .ok()
        .and_then(|n| n.checked_add(HEADER))
        .filter(|&e| e <= body)
        .context("the chat file's conversation runs past its end")?;
    let conversation: Conversation = serde_json::from_slice(&bytes[HEADER..json_end])
        .context("the chat file's conversation is not valid")?;
    session.load_state(&bytes[json_end..body])?;
    Ok(conversation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use liger::chat::ChatMessage;
    use liger::{DecodeMode, Model, ModelOptions};
    use std::sync::Arc;

    /// A random-weight model small enough for a unit test.
    fn tiny_session(dir: &Path) -> Session {
        let mut config = liger_convert::synth::shape_config("tiny", liger::Variant::Gla).unwrap();
        config.n_layers = 1;
        let path = dir.join("tiny.gguf");
        liger_convert::synth::write_synthetic(&config, liger_convert::OutType::F16, &path).unwrap();
        let options = ModelOptions {
            threads: Some(1),
            ..Default::default()
        };
        Session::new(
            Arc::new(Model::load(&path, &options).unwrap()),
            DecodeMode::Window,
        )
    }

    #[test]
    fn saves_atomically_and_refuses_every_damaged_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut session = tiny_session(dir.path());
        session.feed(&[1, 2, 3]).unwrap();
        let mut conversation = Conversation::default();
        conversation.messages.push(ChatMessage::new("user", "hi"));
        let path = dir.path().join("a.chat");
        std::fs::write(&path, b"an older file").unwrap();
        save(&path, &conversation, &session).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with(".liger-chat-")),
            "a temporary file was left: {names:?}"
        );
        let good = std::fs::read(&path).unwrap();

        let mut fresh = tiny_session(dir.path());
        let loaded = from_bytes(&good, &mut fresh).unwrap();
        assert_eq!(loaded.messages.len(), 1);
        assert_eq!(fresh.save_state().unwrap(), session.save_state().unwrap());

        // Every truncation, and a one-bit flip in every 7th byte, is refused; the session is
        // untouched.
        let before = fresh.save_state().unwrap();
        let mut refused = 0;
        for len in 0..good.len() {
            assert!(
                from_bytes(&good[..len], &mut fresh).is_err(),
                "cut at {len}"
            );
            refused += 1;
        }
        for at in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[at] ^= 1 << (at % 8);
            let err = from_bytes(&bad, &mut fresh).unwrap_err().to_string();
            assert!(
                err.contains("chat file") || err.contains("state"),
                "byte {at}: {err}"
            );
            refused += 1;
        }
        assert_eq!(fresh.save_state().unwrap(), before);
        assert!(refused > 1000);
        // A newer version is named as such.
        let mut newer = good.clone();
        newer[4] = 2;
        let err = from_bytes(&newer, &mut fresh).unwrap_err().to_string();
        assert!(err.contains("version 2"), "{err}");
    }
}
