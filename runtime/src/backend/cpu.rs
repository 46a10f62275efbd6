//! The CPU backend: the model step (`model::forward`) on the worker pool and SIMD kernels of
//! the model, weights read in place from the mapped file.

use super::{Backend, BackendKind, Sequence};
use crate::error::Result;
use crate::model::{forward, Model, Scratch, SequenceState};
use crate::session::DecodeMode;
use std::borrow::Cow;
use std::sync::Arc;

/// Tokens per forward chunk of a long prompt: bounds the scratch memory.
const PREFILL_CHUNK: usize = 256;

pub struct CpuBackend {
    model: Arc<Model>,
}

impl CpuBackend {
    pub fn new(model: Arc<Model>) -> CpuBackend {
        CpuBackend { model }
    }
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn describe(&self) -> String {
        format!(
            "CPU ({}, {} threads)",
            self.model.simd.name(),
            self.model.threads()
        )
    }

    fn model(&self) -> &Arc<Model> {
        &self.model
    }

    fn new_sequence(&self, mode: DecodeMode) -> Result<Box<dyn Sequence>> {
        Ok(Box::new(CpuSequence::new(Arc::clone(&self.model), mode)))
    }

    fn weight_bytes_per_token(&self) -> u64 {
        self.model.weight_bytes_per_token()
    }
}

/// One sequence on the CPU: its state, and the scratch buffers of its steps.
pub(crate) struct CpuSequence {
    model: Arc<Model>,
    state: SequenceState,
    mode: DecodeMode,
    scratch: Scratch,
    /// Logits of the last forward chunk ([T, V] or [V]).
    chunk_logits: Vec<f32>,
}

impl CpuSequence {
    pub(crate) fn new(model: Arc<Model>, mode: DecodeMode) -> CpuSequence {
        CpuSequence {
            state: SequenceState::new(&model.config),
            model,
            mode,
            scratch: Scratch::default(),
            chunk_logits: Vec::new(),
        }
    }
}

impl Sequence for CpuSequence {
    fn mode(&self) -> DecodeMode {
        self.mode
    }

    fn feed(&mut self, tokens: &[u32], mut all: Option<&mut Vec<f32>>) -> Result<()> {
        super::check_vocabulary(&self.model, tokens)?;
        let model = Arc::clone(&self.model);
        let fresh = self.mode == DecodeMode::HfCompat;
        for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            forward(
                &model,
                &mut self.state,
                chunk,
                fresh && i == 0,
                all.is_some(),
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
            // A prompt's buffers are large; a decode step's are kept (it allocates nothing).
            self.scratch.release();
            self.chunk_logits = Vec::new();
        }
        Ok(())
    }

    fn logits(&self) -> &[f32] {
        &self.state.logits
    }

    fn position(&self) -> usize {
        self.state.position()
    }

    fn reset(&mut self) -> Result<()> {
        self.state.reset();
        Ok(())
    }

    fn state(&self) -> Result<Cow<'_, SequenceState>> {
        Ok(Cow::Borrowed(&self.state))
    }

    fn set_state(&mut self, state: SequenceState) -> Result<()> {
        self.state = state;
        Ok(())
    }

    fn fork(&self) -> Result<Box<dyn Sequence>> {
        Ok(Box::new(CpuSequence {
            model: Arc::clone(&self.model),
            state: self.state.clone(),
            mode: self.mode,
            scratch: Scratch::default(),
            chunk_logits: Vec::new(),
        }))
    }
}
