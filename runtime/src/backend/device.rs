//! A GPU backend written once over what a device provides: a model uploaded to it
//! ([`DeviceModel`]) and one sequence's buffers there with a way to run one batch of the step
//! plan ([`StepOnDevice`], `backend::device_plan`), alone or with other sequences. Calls,
//! batches, steps over several sequences, decode modes, logits, states, resets and forks are
//! the same for wgpu and CUDA, and live here ([`DeviceSequence`], [`OnDevice`]).

use super::DecodeMode;
use super::DeviceInputs;
use super::{Backend, BackendKind, Sequence};
use crate::backend::device_plan::{StepWords, MAX_TOGETHER};
use crate::error::{Error, Result};
use crate::model::{Model, SequenceState};
use std::borrow::Cow;
use std::sync::Arc;

/// A model's weights uploaded to a device.
pub trait DeviceModel: Send + Sync + Sized + 'static {
    type Sequence: StepOnDevice<Device = Self>;
    const KIND: BackendKind;
    fn model(&self) -> &Arc<Model>;
    /// "wgpu: <adapter>" / "CUDA: <device>".
    fn describe(&self) -> String;
    /// Bytes of the weight matrices one decode step reads.
    fn weight_bytes_per_token(&self) -> u64;
    /// Bytes per second of a device-to-device copy (read + write).
    fn copy_bandwidth(&self) -> Result<f64>;
    /// Most rows (tokens of every sequence together) of one step over several sequences.
    fn together_rows(&self) -> usize;
}

/// One sequence's chunk of tokens in a step over several ([`StepOnDevice::run_together`]): its tokens
/// (at least one) at its position, and whether its last token's logits are read back.
pub struct SequenceChunk<'a, S> {
    pub seq: &'a mut S,
    pub tokens: &'a [u32],
    pub want_logits: bool,
}

/// What a GPU backend implements for a sequence: its buffers and one batch of the step.
pub trait StepOnDevice: Send + Sized + 'static {
    type Device: DeviceModel<Sequence = Self>;
    /// An empty sequence whose prompts run in batches of up to `batch` tokens.
    fn with_batch(device: &Arc<Self::Device>, batch: usize) -> Result<Self>;
    fn device(&self) -> &Arc<Self::Device>;
    fn inputs(&self) -> &DeviceInputs;
    fn inputs_mut(&mut self) -> &mut DeviceInputs;
    /// Runs one batch of `tokens` (1 ..= batch, in the vocabulary) at the inputs' position:
    /// prepares and uploads its inputs, runs the plan and, with `want_logits`, reads the last
    /// token's logits into the inputs. Does not advance the position.
    fn run_batch(&mut self, tokens: &[u32], want_logits: bool) -> Result<()>;
    /// Runs one step over several sequences of `device` (at most [`MAX_TOGETHER`], their
    /// tokens together at most [`DeviceModel::together_rows`]): their rows stacked
    /// ([`Stacked`]) so that every product reads its weights once for all of them, each
    /// sequence's own ops on its rows, its state and window; the logits of each part that
    /// wants them read into its inputs. Does not advance the positions.
    fn run_together(
        device: &Arc<Self::Device>,
        parts: &mut [SequenceChunk<'_, Self>],
    ) -> Result<()>;
    /// Copies layer `l`'s recurrent state, window keys and window values into `parts`.
    fn read_layer(&self, l: usize, parts: [&mut [f32]; 3]) -> Result<()>;
    /// Uploads layer `l`'s recurrent state, window keys and window values.
    fn write_layer(&mut self, l: usize, parts: [&[f32]; 3]) -> Result<()>;
}

/// A sequence on a GPU: what every GPU backend's sequence offers, written once.
pub trait DeviceSequence: StepOnDevice {
    /// A sequence whose prompts run in batches of the default 64 tokens.
    fn new(device: &Arc<Self::Device>) -> Result<Self> {
        Self::with_batch(device, DEFAULT_BATCH)
    }

    /// Tokens per prefill batch.
    fn batch(&self) -> usize {
        self.inputs().batch
    }

    /// Feeds `tokens` as one call (`hf_compat`: the window is emptied first), in batches of
    /// up to [`Self::batch`] tokens; returns the last token's logits.
    fn feed(&mut self, tokens: &[u32], hf_compat: bool) -> Result<&[f32]> {
        self.feed_call(tokens, hf_compat, None)?;
        Ok(self.logits())
    }

    /// [`Self::feed`]; with `each`, one token per batch and every token's logits appended
    /// ([T, V]).
    fn feed_call(
        &mut self,
        tokens: &[u32],
        hf_compat: bool,
        mut each: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let model = Arc::clone(self.device().model());
        let per_token = each.is_some();
        let batches = self
            .inputs_mut()
            .begin_call(&model, tokens, hf_compat, per_token)?;
        for (batch, last) in batches {
            self.run_batch(batch, last || per_token)?;
            self.inputs_mut().advance(&model, batch.len());
            if let Some(out) = each.as_deref_mut() {
                out.extend_from_slice(&self.inputs().logits);
            }
        }
        Ok(())
    }

    /// Runs one token (its own call in window semantics) and returns its logits.
    fn step(&mut self, token: u32) -> Result<&[f32]> {
        self.feed(&[token], false)
    }

    /// The logits of the last token fed (empty before any).
    fn logits(&self) -> &[f32] {
        &self.inputs().logits
    }

    /// Tokens fed so far.
    fn position(&self) -> usize {
        self.inputs().pos
    }

    /// The state read back in the portable layout (the CPU's tensors in the CPU's order).
    fn state(&self) -> Result<SequenceState> {
        let model = Arc::clone(self.device().model());
        self.inputs()
            .read_state(&model, |l, recurrent, keys, values| {
                self.read_layer(l, [recurrent, keys, values])
            })
    }

    /// Replaces the state with `state` (from any backend, of this model).
    fn set_state(&mut self, state: &SequenceState) -> Result<()> {
        let model = Arc::clone(self.device().model());
        let (pos, window_len, logits) = state.position_for_gpu(&model.config)?;
        for l in 0..model.config.n_layers {
            let (recurrent, keys, values) = state.layer(&model.config, l);
            self.write_layer(l, [recurrent, keys, values])?;
        }
        let inputs = self.inputs_mut();
        (inputs.pos, inputs.window_len, inputs.logits) = (pos, window_len, logits);
        Ok(())
    }
}

impl<S: StepOnDevice> DeviceSequence for S {}

/// Tokens per prefill batch unless asked otherwise.
pub const DEFAULT_BATCH: usize = 64;

/// The host side of a step over several sequences: their embedding rows [R, D] and RoPE
/// angles [R, d] stacked in the parts' order, each part's step words (its first row, its
/// logits row among those that want logits), and the step's own words for the ops over every
/// row (T = R) and for the LM head (T = the sequences that want logits).
pub struct Stacked {
    pub rows: Vec<f32>,
    pub angles: Vec<f32>,
    pub words: Vec<StepWords>,
    /// R, and the parts that want logits.
    pub total: usize,
    pub heads: usize,
    pub all_rows: StepWords,
    pub head_rows: StepWords,
}

impl Stacked {
    pub fn new<S: StepOnDevice>(model: &Model, parts: &mut [SequenceChunk<'_, S>]) -> Stacked {
        let (hidden, d) = (model.config.hidden, model.config.head_dim);
        let total: usize = parts.iter().map(|p| p.tokens.len()).sum();
        let (mut rows, mut angles) = (vec![0.0; total * hidden], vec![0.0; total * d]);
        let (mut words, mut first, mut heads) = (Vec::with_capacity(parts.len()), 0, 0);
        for part in parts.iter_mut() {
            let n = part.tokens.len();
            let inputs = part.seq.inputs_mut();
            inputs.write_rows(
                model,
                part.tokens,
                &mut rows[first * hidden..(first + n) * hidden],
                &mut angles[first * d..(first + n) * d],
            );
            words.push(inputs.words(n, first, heads));
            first += n;
            heads += usize::from(part.want_logits);
        }
        let only = |tokens: usize| [0, 0, 0, tokens as u32, 0, 0, 0, 0];
        Stacked {
            rows,
            angles,
            words,
            total,
            heads,
            all_rows: only(total),
            head_rows: only(heads),
        }
    }

    /// Hands each part that wants logits its row of `logits` ([heads, V]).
    pub fn share_logits<S: StepOnDevice>(
        parts: &mut [SequenceChunk<'_, S>],
        logits: &[f32],
        vocab: usize,
    ) {
        let mut rows = logits.chunks_exact(vocab);
        for part in parts.iter_mut().filter(|p| p.want_logits) {
            if let Some(row) = rows.next() {
                let out = &mut part.seq.inputs_mut().logits;
                out.clear();
                out.extend_from_slice(row);
            }
        }
    }
}

/// A device model as a [`Backend`].
pub(crate) struct OnDevice<M>(pub Arc<M>);

impl<M: DeviceModel> OnDevice<M> {
    pub(crate) fn open(device: M) -> Arc<dyn Backend> {
        Arc::new(OnDevice(Arc::new(device)))
    }
}

impl<M: DeviceModel> Backend for OnDevice<M> {
    fn kind(&self) -> BackendKind {
        M::KIND
    }

    fn describe(&self) -> String {
        self.0.describe()
    }

    fn model(&self) -> &Arc<Model> {
        self.0.model()
    }

    fn new_sequence(&self, mode: DecodeMode) -> Result<Box<dyn Sequence>> {
        Ok(Box::new(ModeSequence {
            step: M::Sequence::new(&self.0)?,
            mode,
        }))
    }

    fn weight_bytes_per_token(&self) -> u64 {
        self.0.weight_bytes_per_token()
    }

    fn copy_bandwidth(&self) -> Result<Option<f64>> {
        self.0.copy_bandwidth().map(Some)
    }

    /// Up to [`MAX_TOGETHER`] sequences at a time in steps of at most
    /// [`DeviceModel::together_rows`] rows ([`super::run_steps`]): a decoding sequence gets
    /// its token in every step, prompts the rest. Every sequence is checked before any runs.
    fn feed_many(&self, work: &mut [(&mut dyn Sequence, &[u32])]) -> Result<()> {
        if work.len() < 2 {
            for (sequence, tokens) in work.iter_mut() {
                sequence.feed(tokens, None)?;
            }
            return Ok(());
        }
        let model = Arc::clone(self.0.model());
        let mut sequences = Vec::with_capacity(work.len());
        for (i, (sequence, tokens)) in work.iter_mut().enumerate() {
            let seq = sequence
                .as_any_mut()
                .downcast_mut::<ModeSequence<M::Sequence>>()
                .filter(|s| Arc::ptr_eq(s.step.device(), &self.0))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "sequence #{i} of the step is not one of this {} backend's model",
                        M::KIND.name()
                    ))
                })?;
            super::check_vocabulary(&model, tokens)
                .map_err(|e| Error::InvalidArgument(format!("sequence #{i}: {e}")))?;
            sequences.push((seq, *tokens));
        }
        for (seq, tokens) in sequences.iter_mut().filter(|s| !s.1.is_empty()) {
            let hf_compat = seq.mode == DecodeMode::HfCompat;
            seq.step
                .inputs_mut()
                .start_call(&model, tokens, hf_compat)?;
        }
        let budget = self.0.together_rows();
        for group in sequences.chunks_mut(MAX_TOGETHER) {
            let lengths: Vec<usize> = group.iter().map(|(_, tokens)| tokens.len()).collect();
            super::run_steps(&lengths, budget, |done, take| {
                let mut chunks: Vec<SequenceChunk<'_, M::Sequence>> = group
                    .iter_mut()
                    .zip(done.iter().zip(take))
                    .filter(|(_, (_, &n))| n > 0)
                    .map(|((seq, tokens), (&done, &n))| SequenceChunk {
                        seq: &mut seq.step,
                        tokens: &tokens[done..done + n],
                        want_logits: done + n == tokens.len(),
                    })
                    .collect();
                M::Sequence::run_together(&self.0, &mut chunks)?;
                drop(chunks);
                for ((seq, _), &n) in group.iter_mut().zip(take) {
                    seq.step.inputs_mut().advance(&model, n);
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// A device sequence in a decode mode, as a [`Sequence`].
struct ModeSequence<S> {
    step: S,
    mode: DecodeMode,
}

impl<S: StepOnDevice + 'static> Sequence for ModeSequence<S> {
    fn mode(&self) -> DecodeMode {
        self.mode
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn feed(&mut self, tokens: &[u32], all: Option<&mut Vec<f32>>) -> Result<()> {
        let hf_compat = self.mode == DecodeMode::HfCompat;
        self.step.feed_call(tokens, hf_compat, all)
    }

    fn logits(&self) -> &[f32] {
        self.step.logits()
    }

    fn position(&self) -> usize {
        self.step.position()
    }

    fn reset(&mut self) -> Result<()> {
        let empty = SequenceState::new(&self.step.device().model().config);
        self.step.set_state(&empty)
    }

    fn state(&self) -> Result<Cow<'_, SequenceState>> {
        self.step.state().map(Cow::Owned)
    }

    fn set_state(&mut self, state: SequenceState) -> Result<()> {
        self.step.set_state(&state)
    }

    fn fork(&self) -> Result<Box<dyn Sequence>> {
        let mut step = S::with_batch(self.step.device(), self.step.batch())?;
        step.set_state(&self.step.state()?)?;
        Ok(Box::new(ModeSequence {
            step,
            mode: self.mode,
        }))
    }
}
