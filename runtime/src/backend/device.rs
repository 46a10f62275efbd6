//! A GPU backend written once over what a device provides: a model uploaded to it
//! ([`DeviceModel`]) and one sequence's buffers there with a way to run one batch of the step
//! plan ([`StepOnDevice`], `model::device_plan`). Calls, batches, decode modes, logits, states,
//! resets and forks are the same for wgpu and CUDA, and live here ([`DeviceSequence`],
//! [`OnDevice`]).

use super::{Backend, BackendKind, Sequence};
use crate::error::Result;
use crate::model::{DeviceInputs, Model, SequenceState};
use crate::session::DecodeMode;
use std::borrow::Cow;
use std::sync::Arc;

/// A model's weights uploaded to a device.
pub trait DeviceModel: Send + Sync + Sized + 'static {
    type Step: StepOnDevice<Device = Self>;
    const KIND: BackendKind;
    fn model(&self) -> &Arc<Model>;
    /// "wgpu: <adapter>" / "CUDA: <device>".
    fn describe(&self) -> String;
    /// Bytes of the weight matrices one decode step reads.
    fn weight_bytes_per_token(&self) -> u64;
    /// Bytes per second of a device-to-device copy (read + write).
    fn copy_bandwidth(&self) -> Result<f64>;
}

/// What a GPU backend implements for a sequence: its buffers and one batch of the step.
pub trait StepOnDevice: Send + Sized + 'static {
    type Device: DeviceModel<Step = Self>;
    /// An empty sequence whose prompts run in batches of up to `batch` tokens.
    fn with_batch(device: &Arc<Self::Device>, batch: usize) -> Result<Self>;
    fn device(&self) -> &Arc<Self::Device>;
    fn inputs(&self) -> &DeviceInputs;
    fn inputs_mut(&mut self) -> &mut DeviceInputs;
    /// Runs one batch of `tokens` (1 ..= batch, in the vocabulary) at the inputs' position:
    /// prepares and uploads its inputs, runs the plan and, with `want_logits`, reads the last
    /// token's logits into the inputs. Does not advance the position.
    fn run_batch(&mut self, tokens: &[u32], want_logits: bool) -> Result<()>;
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
            step: M::Step::new(&self.0)?,
            mode,
        }))
    }

    fn weight_bytes_per_token(&self) -> u64 {
        self.0.weight_bytes_per_token()
    }

    fn copy_bandwidth(&self) -> Result<Option<f64>> {
        self.0.copy_bandwidth().map(Some)
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
