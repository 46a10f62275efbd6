//! A `Session` owns one sequence's state on a shared model: feed tokens, read logits, save /
//! restore / fork the state. Its memory is fixed whatever the number of tokens fed.

use crate::error::{Error, Result};
use crate::model::{forward, Model, Scratch, SequenceState};
use std::sync::Arc;

/// What the sliding-window branch sees (DESIGN §1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecodeMode {
    /// A rolling cache of the last W keys: token-by-token decoding equals one full forward.
    #[default]
    Window,
    /// The reference HF `generate()`: the window holds only the tokens of the current call.
    HfCompat,
}

impl DecodeMode {
    pub fn name(self) -> &'static str {
        match self {
            DecodeMode::Window => "window",
            DecodeMode::HfCompat => "hf-compat",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }
}

impl std::str::FromStr for DecodeMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "window" => Ok(DecodeMode::Window),
            "hf-compat" => Ok(DecodeMode::HfCompat),
            _ => Err(Error::InvalidArgument(format!(
                "decode mode '{s}' (window or hf-compat)"
            ))),
        }
    }
}

/// Tokens per forward chunk of a long prompt: bounds the scratch memory.
const PREFILL_CHUNK: usize = 256;

pub struct Session {
    model: Arc<Model>,
    state: SequenceState,
    mode: DecodeMode,
    scratch: Scratch,
    /// Logits of the last forward chunk ([T, V] or [V]).
    chunk_logits: Vec<f32>,
}

impl Clone for Session {
    fn clone(&self) -> Self {
        self.fork()
    }
}

impl Session {
    pub fn new(model: Arc<Model>, mode: DecodeMode) -> Session {
        let state = SequenceState::new(&model.config);
        Session {
            model,
            state,
            mode,
            scratch: Scratch::default(),
            chunk_logits: Vec::new(),
        }
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn mode(&self) -> DecodeMode {
        self.mode
    }

    /// Tokens fed so far.
    pub fn position(&self) -> usize {
        self.state.position()
    }

    /// Logits after the last token fed ([V]; zeros before the first).
    pub fn logits(&self) -> &[f32] {
        &self.state.logits
    }

    fn check(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.model.config.vocab_size;
        match tokens.iter().position(|&t| t as usize >= vocab) {
            Some(i) => Err(Error::InvalidArgument(format!(
                "token #{i} (id {}) is outside the vocabulary of {vocab}",
                tokens[i]
            ))),
            None => Ok(()),
        }
    }

    fn run(&mut self, tokens: &[u32], mut all: Option<&mut Vec<f32>>) -> Result<()> {
        self.check(tokens)?;
        let model = Arc::clone(&self.model);
        let fresh = self.mode == DecodeMode::HfCompat;
        for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            let want_all = all.is_some();
            forward(
                &model,
                &mut self.state,
                chunk,
                fresh && i == 0,
                want_all,
                &mut self.scratch,
                &mut self.chunk_logits,
            );
            if let Some(out) = all.as_deref_mut() {
                out.extend_from_slice(&self.chunk_logits);
            }
        }
        let v = model.config.vocab_size;
        if !tokens.is_empty() {
            let last = &self.chunk_logits[self.chunk_logits.len() - v..];
            self.state.logits.copy_from_slice(last);
        }
        if tokens.len() > 1 {
            self.scratch.release();
            self.chunk_logits = Vec::new();
        }
        Ok(())
    }

    /// Feeds `tokens` as one call and returns the logits after the last one.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.run(tokens, None)?;
        Ok(&self.state.logits)
    }

    /// Feeds `tokens` as one call and returns the logits after each of them, [T, V].
    pub fn feed_all_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(tokens.len() * self.model.config.vocab_size);
        self.run(tokens, Some(&mut out))?;
        Ok(out)
    }

    /// Forgets everything fed.
    pub fn reset(&mut self) {
        self.state.reset();
    }

    /// Bytes of a saved state (fixed for a model).
    pub fn state_size(&self) -> usize {
        self.state.byte_len()
    }

    /// The state as versioned, checksummed bytes bound to this model.
    pub fn save_state(&self) -> Vec<u8> {
        self.state
            .to_bytes(self.model.fingerprint, self.mode.code())
    }

    /// Restores a state saved by [`Session::save_state`] on the same model and decode mode;
    /// on error the session is unchanged.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let mut state = self.state.clone();
        let mode = state.load_bytes(
            bytes,
            self.model.fingerprint,
            self.model.config.window as usize,
        )?;
        if mode != self.mode.code() {
            return Err(Error::InvalidArgument(format!(
                "state: saved in another decode mode than this session's ({})",
                self.mode.name()
            )));
        }
        self.state = state;
        Ok(())
    }

    /// An independent session starting from this one's state.
    pub fn fork(&self) -> Session {
        Session {
            model: Arc::clone(&self.model),
            state: self.state.clone(),
            mode: self.mode,
            scratch: Scratch::default(),
            chunk_logits: Vec::new(),
        }
    }
}
