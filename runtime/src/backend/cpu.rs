//! The CPU backend: the model's step plan (`cpu::step::forward`) on the worker pool and SIMD
//! kernels of its CPU model (`cpu::model::CpuModel`: weights read in place from the mapped
//! file or repacked, shared by every CPU backend of the model).
//! A step over several sequences runs their rows together, so each weight is read once for
//! all of them.

use super::DecodeMode;
use super::{Backend, BackendKind, Sequence, STEP_ROWS};
use crate::cpu::model::CpuModel;
use crate::cpu::step::{forward, Scratch, SequenceChunk};
use crate::error::{Error, Result};
use crate::model::plan::StepPlan;
use crate::model::{Model, SequenceState};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

pub struct CpuBackend {
    cpu: Arc<CpuModel>,
    /// The model's step, as every sequence of it runs it.
    plan: Arc<StepPlan>,
    /// The buffers of steps over several sequences (one such step at a time).
    batch_scratch: Mutex<Scratch>,
}

impl CpuBackend {
    /// The CPU backend of `model`: its threads started and its weights repacked, unless a
    /// live CPU backend of the model did that already. An error if the threads cannot start.
    pub fn open(model: &Arc<Model>) -> Result<CpuBackend> {
        Ok(CpuBackend::on(CpuModel::shared(model)?))
    }

    /// As [`CpuBackend::open`]; where the threads cannot start, the steps run on the calling
    /// thread alone.
    pub fn new(model: Arc<Model>) -> CpuBackend {
        match CpuModel::shared(&model) {
            Ok(cpu) => CpuBackend::on(cpu),
            Err(_) => CpuBackend::on(Arc::new(CpuModel::single_threaded(&model))),
        }
    }

    /// A new sequence with an empty state.
    pub(crate) fn sequence(&self, mode: DecodeMode) -> CpuSequence {
        CpuSequence::with_plan(Arc::clone(&self.cpu), Arc::clone(&self.plan), mode)
    }

    fn on(cpu: Arc<CpuModel>) -> CpuBackend {
        CpuBackend {
            plan: Arc::new(StepPlan::new(&cpu.model)),
            cpu,
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
            self.cpu.simd.name(),
            self.cpu.threads()
        )
    }

    fn model(&self) -> &Arc<Model> {
        &self.cpu.model
    }

    fn new_sequence(&self, mode: DecodeMode) -> Result<Box<dyn Sequence>> {
        Ok(Box::new(self.sequence(mode)))
    }

    fn weight_bytes_per_token(&self) -> u64 {
        self.cpu.model.weight_bytes_per_token()
    }

    fn repacked_bytes(&self) -> u64 {
        self.cpu.repacked_bytes()
    }

    /// Steps of at most [`STEP_ROWS`] rows (more only when more sequences decode), each
    /// over every sequence with tokens left ([`super::run_steps`]).
    fn feed_many(&self, work: &mut [(&mut dyn Sequence, &[u32])]) -> Result<()> {
        let mut sequences = Vec::with_capacity(work.len());
        for (i, (sequence, tokens)) in work.iter_mut().enumerate() {
            let sequence = sequence
                .as_any_mut()
                .downcast_mut::<CpuSequence>()
                .filter(|s| Arc::ptr_eq(&s.cpu, &self.cpu))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "sequence #{i} of the step is not one of this CPU backend's model"
                    ))
                })?;
            super::check_vocabulary(&self.cpu.model, tokens)
                .map_err(|e| Error::InvalidArgument(format!("sequence #{i}: {e}")))?;
            sequences.push((sequence, *tokens));
        }
        let mut scratch = self.batch_scratch.lock().unwrap_or_else(|e| e.into_inner());
        let lengths: Vec<usize> = sequences.iter().map(|(_, tokens)| tokens.len()).collect();
        let mut prompt_rows = false;
        super::run_steps(&lengths, STEP_ROWS, |done, take| {
            prompt_rows |= take.iter().any(|&t| t > 1);
            let mut chunks: Vec<SequenceChunk> = sequences
                .iter_mut()
                .zip(done.iter().zip(take))
                .map(|((seq, tokens), (&done, &n))| SequenceChunk {
                    fresh_window: seq.mode == DecodeMode::HfCompat && done == 0 && n > 0,
                    tokens: &tokens[done..done + n],
                    all_logits: false,
                    state: &mut seq.state,
                    logits: &mut seq.chunk_logits,
                })
                .collect();
            forward(&self.cpu, &self.plan, &mut chunks, &mut scratch);
            drop(chunks);
            for ((seq, _), &n) in sequences.iter_mut().zip(take) {
                if n > 0 {
                    seq.keep_last_logits();
                }
            }
            Ok(())
        })?;
        if prompt_rows {
            scratch.release();
        }
        Ok(())
    }
}

/// One sequence on the CPU: its state, and the scratch buffers of its steps.
pub(crate) struct CpuSequence {
    cpu: Arc<CpuModel>,
    plan: Arc<StepPlan>,
    state: SequenceState,
    mode: DecodeMode,
    scratch: Scratch,
    /// Logits of the last forward chunk ([T, V] or [V]).
    chunk_logits: Vec<f32>,
}

impl CpuSequence {
    fn with_plan(cpu: Arc<CpuModel>, plan: Arc<StepPlan>, mode: DecodeMode) -> CpuSequence {
        CpuSequence {
            plan,
            state: SequenceState::new(&cpu.model.config),
            cpu,
            mode,
            scratch: Scratch::default(),
            chunk_logits: Vec::new(),
        }
    }

    /// A sequence of its own CPU model whose products dequantize the weights and multiply f32
    /// activations, as the GPU backends do (the CPU's kernels quantize activations to 8 or 16
    /// bits): the reference of their self-test. Nothing is repacked for it.
    pub(crate) fn unquantized(model: &Arc<Model>, mode: DecodeMode) -> Result<CpuSequence> {
        let cpu = Arc::new(CpuModel::unrepacked(model)?);
        let plan = Arc::new(StepPlan::new(model));
        let mut seq = CpuSequence::with_plan(cpu, plan, mode);
        seq.scratch.exact = true;
        Ok(seq)
    }
}

impl CpuSequence {
    /// The last token's logits of the last step, as the state's.
    fn keep_last_logits(&mut self) {
        let v = self.cpu.model.config.vocab_size;
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
        super::check_vocabulary(&self.cpu.model, tokens)?;
        let fresh = self.mode == DecodeMode::HfCompat;
        for (i, chunk) in tokens.chunks(STEP_ROWS).enumerate() {
            let mut one = [SequenceChunk {
                state: &mut self.state,
                tokens: chunk,
                fresh_window: fresh && i == 0,
                all_logits: all.is_some(),
                logits: &mut self.chunk_logits,
            }];
            forward(&self.cpu, &self.plan, &mut one, &mut self.scratch);
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
            cpu: Arc::clone(&self.cpu),
            plan: Arc::clone(&self.plan),
            state: self.state.clone(),
            mode: self.mode,
            scratch: Scratch::default(),
            chunk_logits: Vec::new(),
        }))
    }
}
