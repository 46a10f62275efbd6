//! The CPU backend: the model's step plan (`cpu::step::forward`) on the worker pool and SIMD kernels of
//! the model, weights read in place from the mapped file or repacked (`Model::prepare_cpu`).
//! A step over several sequences runs their rows together, so each weight is read once for
//! all of them.

use super::DecodeMode;
use super::{share_rows, Backend, BackendKind, Sequence, STEP_ROWS};
use crate::cpu::step::{forward, Scratch, SequenceChunk};
use crate::error::{Error, Result};
use crate::model::plan::StepPlan;
use crate::model::{Model, SequenceState};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

pub struct CpuBackend {
    model: Arc<Model>,
    /// The model's step, as every sequence of it runs it.
    plan: Arc<StepPlan>,
    /// The buffers of steps over several sequences (one such step at a time).
    batch_scratch: Mutex<Scratch>,
}

impl CpuBackend {
    /// The model's CPU kernels get their repacked weights here (once per model).
    pub fn new(model: Arc<Model>) -> CpuBackend {
        model.prepare_cpu();
        CpuBackend {
            plan: Arc::new(StepPlan::new(&model)),
            model,
            batch_scratch: Mutex::new(Scratch::default()),
        }
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
        Ok(Box::new(CpuSequence::with_plan(
            Arc::clone(&self.model),
            Arc::clone(&self.plan),
            mode,
        )))
    }

    fn weight_bytes_per_token(&self) -> u64 {
        self.model.weight_bytes_per_token()
    }

    /// Steps of at most [`STEP_ROWS`] rows (more only when more sequences decode), each
    /// over every sequence with tokens left ([`share_rows`]).
    fn feed_many(&self, work: &mut [(&mut dyn Sequence, &[u32])]) -> Result<()> {
        let mut sequences = Vec::with_capacity(work.len());
        for (i, (sequence, tokens)) in work.iter_mut().enumerate() {
            let sequence = sequence
                .as_any_mut()
                .downcast_mut::<CpuSequence>()
                .filter(|s| Arc::ptr_eq(&s.model, &self.model))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "sequence #{i} of the step is not one of this CPU backend's model"
                    ))
                })?;
            super::check_vocabulary(&self.model, tokens)
                .map_err(|e| Error::InvalidArgument(format!("sequence #{i}: {e}")))?;
            sequences.push((sequence, *tokens, 0usize));
        }
        let mut scratch = self.batch_scratch.lock().unwrap_or_else(|e| e.into_inner());
        let (mut left, mut take) = (Vec::new(), Vec::new());
        let mut prompt_rows = false;
        loop {
            left.clear();
            left.extend(sequences.iter().map(|(_, t, done)| t.len() - done));
            if left.iter().all(|&l| l == 0) {
                break;
            }
            share_rows(&left, STEP_ROWS, &mut take);
            prompt_rows |= take.iter().any(|&t| t > 1);
            let mut chunks: Vec<SequenceChunk> = sequences
                .iter_mut()
                .zip(&take)
                .map(|((seq, tokens, done), &n)| SequenceChunk {
                    fresh_window: seq.mode == DecodeMode::HfCompat && *done == 0 && n > 0,
                    tokens: &tokens[*done..*done + n],
                    all_logits: false,
                    state: &mut seq.state,
                    logits: &mut seq.chunk_logits,
                })
                .collect();
            forward(&self.model, &self.plan, &mut chunks, &mut scratch);
            drop(chunks);
            for ((seq, _, done), &n) in sequences.iter_mut().zip(&take) {
                *done += n;
                if n > 0 {
                    seq.keep_last_logits();
                }
            }
        }
        if prompt_rows {
            scratch.release();
        }
        Ok(())
    }
}

/// One sequence on the CPU: its state, and the scratch buffers of its steps.
pub(crate) struct CpuSequence {
    model: Arc<Model>,
    plan: Arc<StepPlan>,
    state: SequenceState,
    mode: DecodeMode,
    scratch: Scratch,
    /// Logits of the last forward chunk ([T, V] or [V]).
    chunk_logits: Vec<f32>,
}

impl CpuSequence {
    pub(crate) fn new(model: Arc<Model>, mode: DecodeMode) -> CpuSequence {
        let plan = Arc::new(StepPlan::new(&model));
        CpuSequence::with_plan(model, plan, mode)
    }

    fn with_plan(model: Arc<Model>, plan: Arc<StepPlan>, mode: DecodeMode) -> CpuSequence {
        CpuSequence {
            plan,
            state: SequenceState::new(&model.config),
            model,
            mode,
            scratch: Scratch::default(),
            chunk_logits: Vec::new(),
        }
    }

    /// A sequence whose products dequantize the weights and multiply f32 activations, as the
    /// GPU backends do (the CPU's kernels quantize activations to 8 or 16 bits): the reference
    /// of their self-test.
    pub(crate) fn unquantized(model: Arc<Model>, mode: DecodeMode) -> CpuSequence {
        let mut seq = CpuSequence::new(model, mode);
        seq.scratch.exact = true;
        seq
    }
}

impl CpuSequence {
    /// The last token's logits of the last step, as the state's.
    fn keep_last_logits(&mut self) {
        let v = self.model.config.vocab_size;
        let last = &self.chunk_logits[self.chunk_logits.len() - v..];
        self.state.logits.copy_from_slice(last);
    }
}

impl Sequence for CpuSequence {
    fn mode(&self) -> DecodeMode {
        self.mode
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn feed(&mut self, tokens: &[u32], mut all: Option<&mut Vec<f32>>) -> Result<()> {
        super::check_vocabulary(&self.model, tokens)?;
        let model = Arc::clone(&self.model);
        let fresh = self.mode == DecodeMode::HfCompat;
        for (i, chunk) in tokens.chunks(STEP_ROWS).enumerate() {
            let mut one = [SequenceChunk {
                state: &mut self.state,
                tokens: chunk,
                fresh_window: fresh && i == 0,
                all_logits: all.is_some(),
                logits: &mut self.chunk_logits,
            }];
            forward(&model, &self.plan, &mut one, &mut self.scratch);
            if let Some(out) = all.as_deref_mut() {
                out.extend_from_slice(&self.chunk_logits);
            }
        }
        if !tokens.is_empty() {
            self.keep_last_logits();
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
            plan: Arc::clone(&self.plan),
            state: self.state.clone(),
            mode: self.mode,
            scratch: Scratch::default(),
            chunk_logits: Vec::new(),
        }))
    }
}
