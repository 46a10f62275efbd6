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

/// A sequence state as the bytes [`Session::save_state`] writes: versioned, checksummed, bound
/// to `model` and `mode`. Every backend saves its sequences this way, so a state moves between
/// them.
pub fn encode_state(model: &Model, mode: DecodeMode, state: &SequenceState) -> Vec<u8> {
    state.to_bytes(model.fingerprint, mode.code())
}

/// The state in `bytes` (from [`encode_state`]), checked against `model` and `mode`.
pub fn decode_state(model: &Model, mode: DecodeMode, bytes: &[u8]) -> Result<SequenceState> {
    let mut state = SequenceState::new(&model.config);
    let saved = state.load_bytes(bytes, model.fingerprint, model.config.window as usize)?;
    if saved != mode.code() {
        return Err(Error::InvalidArgument(format!(
            "state: saved in another decode mode than this session's ({})",
            mode.name()
        )));
    }
    Ok(state)
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
        encode_state(&self.model, self.mode, &self.state)
    }

    /// Restores a state saved by [`Session::save_state`] (or a GPU sequence) on the same model
    /// and decode mode; on error the session is unchanged.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.state = decode_state(&self.model, self.mode, bytes)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Base, LigerConfig, Variant};
    use crate::gguf::{GgufFile, GgufWriter, TensorDecl};
    use crate::layout::tensor_specs;
    use crate::quant::{quantize, GgmlType};
    use crate::ModelOptions;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Counts the allocations of the current thread.
    struct CountingAllocator;

    thread_local! {
        static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    }

    // SAFETY: forwards to the system allocator; the counter is a thread-local Cell.
    unsafe impl GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
            System.alloc(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
    }

    #[global_allocator]
    static GLOBAL: CountingAllocator = CountingAllocator;

    /// A tiny random model of `variant` at `ty`, written and loaded in memory.
    fn tiny_model(variant: Variant, ty: GgmlType, threads: usize) -> Arc<Model> {
        let config = LigerConfig {
            variant,
            base: Base::Llama,
            n_layers: 2,
            hidden: 64,
            ffn: 128,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            vocab_size: 96,
            rms_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            context_length: 0,
            window: 64,
            mix_swa: 0.5,
            gate_normalizer: 16.0,
            gsa_slots: if variant == Variant::Gsa { 8 } else { 16 },
            tie_embeddings: false,
            attention_bias: false,
            untrained: false,
        };
        let specs = tensor_specs(&config);
        let types: Vec<GgmlType> = specs
            .iter()
            .map(|s| if s.is_matrix() { ty } else { GgmlType::F32 })
            .collect();
        let decls = specs
            .iter()
            .zip(&types)
            .map(|(s, &t)| TensorDecl {
                name: s.name.clone(),
                dims: s.ggml_dims(),
                ggml_type: t,
            })
            .collect();
        let mut buf = Vec::new();
        let mut w = GgufWriter::new(&mut buf, &config.to_metadata(), decls).unwrap();
        for (i, (s, &t)) in specs.iter().zip(&types).enumerate() {
            let n = s.shape.iter().product::<usize>();
            let x: Vec<f32> = (0..n)
                .map(|k| {
                    if s.is_matrix() {
                        (((k * 7919 + i * 104_729) % 1000) as f32 / 500.0 - 1.0) * 0.2
                    } else {
                        1.0
                    }
                })
                .collect();
            w.write_tensor(&s.name, &quantize(t, &x).unwrap()).unwrap();
        }
        w.finish().unwrap();
        let file = GgufFile::from_bytes(buf).unwrap();
        Arc::new(
            Model::from_file(
                file,
                &ModelOptions {
                    threads: Some(threads),
                    simd: None,
                },
            )
            .unwrap(),
        )
    }

    #[test]
    fn decode_steps_allocate_nothing() {
        for (variant, ty) in [
            (Variant::Gla, GgmlType::Q8_0),
            (Variant::Gsa, GgmlType::Q4_0),
            (Variant::Hgrn2, GgmlType::F16),
        ] {
            for threads in [1, 2] {
                let model = tiny_model(variant, ty, threads);
                let mut s = Session::new(model, DecodeMode::Window);
                s.feed(&[1, 2, 3, 4]).unwrap();
                s.feed(&[5]).unwrap(); // the first single-token step sizes the buffers
                let before = ALLOCATIONS.with(|c| c.get());
                for t in 0..100u32 {
                    s.feed(&[t % 96]).unwrap();
                }
                let after = ALLOCATIONS.with(|c| c.get());
                assert_eq!(
                    after - before,
                    0,
                    "{variant:?} {ty} {threads} threads: {} allocations in 100 decode steps",
                    after - before
                );
            }
        }
    }

    /// Greedy tokens after a prompt, through a save, more tokens, and a restore.
    fn script(model: &Arc<Model>, seed: u32) -> (Vec<u32>, Vec<u8>) {
        let mut s = Session::new(model.clone(), DecodeMode::Window);
        let prompt: Vec<u32> = (0..1 + seed * 5 % 23)
            .map(|t| (t * 11 + seed) % 96)
            .collect();
        s.feed(&prompt).unwrap();
        let saved = s.save_state();
        let mut tokens = Vec::new();
        for _ in 0..2 {
            s.load_state(&saved).unwrap();
            for _ in 0..6 {
                let t = crate::sampler::argmax(s.logits()) as u32;
                tokens.push(t);
                s.feed(&[t]).unwrap();
            }
        }
        (tokens, s.save_state())
    }

    /// Sessions on one shared model (and its worker pool) from several threads give exactly
    /// what they give one at a time (also run under ThreadSanitizer, `scripts/tsan.sh`).
    #[test]
    fn sessions_on_many_threads_equal_serial_runs() {
        let model = tiny_model(Variant::Gla, GgmlType::Q8_0, 2);
        let serial: Vec<_> = (0..12).map(|i| script(&model, i)).collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let (model, serial) = (&model, &serial);
                    scope.spawn(move || {
                        for i in (t..12).step_by(4) {
                            assert!(script(model, i as u32) == serial[i], "script {i}");
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        });
    }
}
