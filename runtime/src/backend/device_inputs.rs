//! The host side of a GPU sequence, the same for every GPU backend (wgpu, CUDA): the position
//! and window fill, the batch's embedding rows and RoPE angles prepared on the host, the last
//! logits read back, and a sequence's state split per layer for readback and upload.

use super::device_plan::StepWords;
use crate::error::Result;
use crate::model::{rope, Model, SequenceState};

/// The host side of one GPU sequence (see [`crate::backend::DeviceSequence`]).
pub struct DeviceInputs {
    /// Tokens per prefill step.
    pub batch: usize,
    /// Tokens fed so far.
    pub pos: usize,
    /// Valid entries of the window ring (positions pos − window_len .. pos).
    pub window_len: usize,
    /// The batch's embedding rows [T, hidden] and RoPE angles [T, d] ([cos d/2, sin d/2] per
    /// token), filled by [`Self::prepare`].
    pub rows: Vec<f32>,
    pub angles: Vec<f32>,
    /// The last token's logits ([vocab]; empty before any).
    pub logits: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl DeviceInputs {
    pub fn new(model: &Model, batch: usize) -> DeviceInputs {
        let c = &model.config;
        let d = c.head_dim;
        DeviceInputs {
            batch,
            pos: 0,
            window_len: 0,
            rows: vec![0.0; batch * c.hidden],
            angles: vec![0.0; batch * d],
            logits: Vec::new(),
            cos: vec![0.0; d / 2],
            sin: vec![0.0; d / 2],
        }
    }

    /// Starts a call of `tokens`: refuses any outside the vocabulary; `hf_compat` empties the
    /// window (each call sees only its own tokens).
    pub fn start_call(&mut self, model: &Model, tokens: &[u32], hf_compat: bool) -> Result<()> {
        crate::backend::check_vocabulary(model, tokens)?;
        if hf_compat {
            self.window_len = 0;
        }
        Ok(())
    }

    /// [`Self::start_call`], then the call's batches (of one token each with `per_token`, for
    /// every token's logits), each with whether it is the last (the one whose logits are read
    /// back).
    pub fn begin_call<'t>(
        &mut self,
        model: &Model,
        tokens: &'t [u32],
        hf_compat: bool,
        per_token: bool,
    ) -> Result<impl Iterator<Item = (&'t [u32], bool)>> {
        self.start_call(model, tokens, hf_compat)?;
        let batch = if per_token { 1 } else { self.batch };
        let batches = tokens.len().div_ceil(batch);
        Ok(tokens
            .chunks(batch)
            .enumerate()
            .map(move |(i, chunk)| (chunk, i + 1 == batches)))
    }

    /// Fills the embedding rows and RoPE angles of `tokens` (at most a batch, in the
    /// vocabulary) at the current position; returns the step words of the sequence alone.
    pub fn prepare(&mut self, model: &Model, tokens: &[u32]) -> StepWords {
        let (mut rows, mut angles) = (
            std::mem::take(&mut self.rows),
            std::mem::take(&mut self.angles),
        );
        self.write_rows(model, tokens, &mut rows, &mut angles);
        (self.rows, self.angles) = (rows, angles);
        self.words(tokens.len(), 0, 0)
    }

    /// Writes the embedding rows [T, hidden] and RoPE angles [T, d] of `tokens` (in the
    /// vocabulary) at the current position into the first T rows of `rows` and `angles`.
    pub fn write_rows(
        &mut self,
        model: &Model,
        tokens: &[u32],
        rows: &mut [f32],
        angles: &mut [f32],
    ) {
        let (hidden, d) = (model.config.hidden, model.config.head_dim);
        let embd = model.matrix_view(&model.weights.token_embd);
        for (t, &token) in tokens.iter().enumerate() {
            embd.dequantize_row_into(token as usize, &mut rows[t * hidden..(t + 1) * hidden]);
            rope::angles(self.pos + t, &model.inv_freq, &mut self.cos, &mut self.sin);
            let angles = &mut angles[t * d..(t + 1) * d];
            angles[..d / 2].copy_from_slice(&self.cos);
            angles[d / 2..].copy_from_slice(&self.sin);
        }
    }

    /// The step words of `tokens` tokens at the current position whose rows start at
    /// `first_row` of the activations, its logits going to row `logits_row`.
    pub fn words(&self, tokens: usize, first_row: usize, logits_row: usize) -> StepWords {
        let w = |n: usize| n as u32;
        [
            w(self.pos),
            w(self.window_len),
            w(first_row),
            w(tokens),
            w(logits_row),
            0,
            0,
            0,
        ]
    }

    /// After a batch of `tokens` ran.
    pub fn advance(&mut self, model: &Model, tokens: usize) {
        self.pos += tokens;
        self.window_len = (self.window_len + tokens).min(model.config.window as usize);
    }

    /// A state of `model` with this sequence's position and logits; `read_layer(l, recurrent,
    /// keys, values)` fills layer l's parts from the device.
    pub fn read_state(
        &self,
        model: &Model,
        mut read_layer: impl FnMut(usize, &mut [f32], &mut [f32], &mut [f32]) -> Result<()>,
    ) -> Result<SequenceState> {
        let mut state = SequenceState::new(&model.config);
        for l in 0..model.config.n_layers {
            let (recurrent, keys, values) = state.layer_mut(&model.config, l);
            read_layer(l, recurrent, keys, values)?;
        }
        state.set_position(self.pos, self.window_len, &self.logits);
        Ok(state)
    }
}
