//! A `Session` owns one sequence on a shared model, on any backend (`crate::backend`): feed
//! tokens, read logits, save / restore / fork the state. Its memory is fixed whatever the
//! number of tokens fed.

pub use crate::backend::DecodeMode;
use crate::backend::{Backend, CpuBackend, Sequence};
use crate::error::{Error, Result};
use crate::model::{Model, SequenceState};
use std::sync::Arc;

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

/// One sequence on a shared model, on any backend: feed tokens, read logits, save / restore /
/// fork the state. Its memory is fixed whatever the number of tokens fed.
pub struct Session {
    backend: Arc<dyn Backend>,
    sequence: Box<dyn Sequence>,
}

impl Session {
    /// A session on the CPU.
    pub fn new(model: Arc<Model>, mode: DecodeMode) -> Session {
        let cpu = CpuBackend::new(model);
        Session {
            sequence: Box::new(cpu.sequence(mode)),
            backend: Arc::new(cpu),
        }
    }

    /// A session on `backend` (see [`crate::backend::open`]).
    pub fn on(backend: &Arc<dyn Backend>, mode: DecodeMode) -> Result<Session> {
        Ok(Session {
            sequence: backend.new_sequence(mode)?,
            backend: Arc::clone(backend),
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        self.backend.model()
    }

    /// Where this session runs.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn mode(&self) -> DecodeMode {
        self.sequence.mode()
    }

    /// Tokens fed so far.
    pub fn position(&self) -> usize {
        self.sequence.position()
    }

    /// Logits after the last token fed ([V]; zeros or empty before the first).
    pub fn logits(&self) -> &[f32] {
        self.sequence.logits()
    }

    /// Feeds `tokens` as one call and returns the logits after the last one.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.sequence.feed(tokens, None)?;
        Ok(self.sequence.logits())
    }

    /// Feeds `tokens` as one call and returns the logits after each of them, [T, V].
    pub fn feed_all_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(tokens.len() * self.model().config.vocab_size);
        self.sequence.feed(tokens, Some(&mut out))?;
        Ok(out)
    }

    /// Forgets everything fed.
    pub fn reset(&mut self) -> Result<()> {
        self.sequence.reset()
    }

    /// Bytes of a saved state (fixed for a model).
    pub fn state_size(&self) -> usize {
        SequenceState::byte_len_for(&self.model().config)
    }

    /// The state as versioned, checksummed bytes bound to this model and decode mode; they
    /// load on any backend.
    pub fn save_state(&self) -> Result<Vec<u8>> {
        let state = self.sequence.state()?;
        Ok(encode_state(self.model(), self.mode(), &state))
    }

    /// Restores a state saved by [`Session::save_state`] (on any backend) for the same model
    /// and decode mode; on error the session is unchanged.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let state = decode_state(self.model(), self.mode(), bytes)?;
        self.sequence.set_state(state)
    }

    /// The state in the portable layout (a GPU's read back).
    pub fn state(&self) -> Result<SequenceState> {
        Ok(self.sequence.state()?.into_owned())
    }

    /// Replaces the state with one this model's sessions produced ([`Self::state`], on any
    /// backend).
    pub fn set_state(&mut self, state: SequenceState) -> Result<()> {
        if state.byte_len() != self.state_size() {
            return Err(Error::InvalidArgument(
                "state: not one of this model's (another shape)".into(),
            ));
        }
        self.sequence.set_state(state)
    }

    /// An independent session on the same backend starting from this one's state.
    pub fn fork(&self) -> Result<Session> {
        Ok(Session {
            backend: Arc::clone(&self.backend),
            sequence: self.sequence.fork()?,
        })
    }

    /// This session's state continued on `backend` (the same model), e.g. a conversation
    /// begun on the CPU carried on on a GPU.
    pub fn moved_to(&self, backend: &Arc<dyn Backend>) -> Result<Session> {
        let mut moved = Session::on(backend, self.mode())?;
        moved.load_state(&self.save_state()?)?;
        Ok(moved)
    }

    /// Feeds several sessions of one model their own tokens, each as one call, in steps over
    /// all of them ([`Backend::feed_many`]: the linear layers read each weight once for
    /// every session). Each session ends as [`Session::feed`] would leave it. A token outside
    /// the vocabulary refuses the whole step before anything runs.
    pub fn feed_many(work: &mut [(&mut Session, &[u32])]) -> Result<()> {
        let Some(((first, _), rest)) = work.split_first() else {
            return Ok(());
        };
        if let Some(i) = rest
            .iter()
            .position(|(s, _)| !Arc::ptr_eq(s.model(), first.model()))
        {
            return Err(Error::InvalidArgument(format!(
                "session #{} of the step runs another model than session #0",
                i + 1
            )));
        }
        // Every token checked before anything runs, whatever the backend's `feed_many` does.
        for (i, (s, tokens)) in work.iter().enumerate() {
            crate::backend::check_vocabulary(s.model(), tokens)
                .map_err(|e| Error::InvalidArgument(format!("session #{i}: {e}")))?;
        }
        let backend = Arc::clone(&first.backend);
        let mut sequences: Vec<(&mut dyn Sequence, &[u32])> = work
            .iter_mut()
            .map(|(s, tokens)| (s.sequence.as_mut(), *tokens))
            .collect();
        backend.feed_many(&mut sequences)
    }

    /// The backend's sequence (for a step over several sequences, [`Backend::feed_many`]).
    pub fn sequence_mut(&mut self) -> &mut dyn Sequence {
        self.sequence.as_mut()
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
                    ..Default::default()
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
        let saved = s.save_state().unwrap();
        let mut tokens = Vec::new();
        for _ in 0..2 {
            s.load_state(&saved).unwrap();
            for _ in 0..6 {
                let t = crate::sampler::argmax(s.logits()) as u32;
                tokens.push(t);
                s.feed(&[t]).unwrap();
            }
        }
        (tokens, s.save_state().unwrap())
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

    /// Greedy decoding of three staggered sessions (window, hf-compat, window; one prompt
    /// longer than a step's row budget) fed together, each joining with its prompt while the
    /// others decode: every session's tokens equal its tokens alone, logits within 1e-4 (the
    /// same products; a step's rows may go through a different kernel than one token's).
    /// Q8_0: 2e-4 — its one-token, four-token and panel kernels add the blocks' f32 partial
    /// sums in different orders (≈1 ulp per product), which the 16-bit quantization of the next
    /// product's activations can turn into a step of max|x|/32767 (measured: 1.1e-4).
    #[test]
    fn sessions_fed_together_equal_sessions_alone() {
        const TOLERANCE: f32 = 1e-4;
        const Q8_0_TOLERANCE: f32 = 2e-4;
        let prompts: [Vec<u32>; 3] = [
            (0..300).map(|t| (t * 7 + 3) % 96).collect(),
            (0..5).map(|t| (t * 13 + 1) % 96).collect(),
            (0..40).map(|t| (t * 5 + 2) % 96).collect(),
        ];
        let modes = [DecodeMode::Window, DecodeMode::HfCompat, DecodeMode::Window];
        let (starts, steps) = ([0, 2, 3], 12);
        for (variant, ty) in [
            (Variant::Gla, GgmlType::Q8_0),
            (Variant::Gsa, GgmlType::Q4_0),
            (Variant::Hgrn2, GgmlType::F16),
            (Variant::Gla, GgmlType::F32),
            (Variant::Gla, GgmlType::Q4_0),
            (Variant::Gsa, GgmlType::Q8_0),
        ] {
            for threads in [1, 2] {
                let model = tiny_model(variant, ty, threads);
                // Alone: the prompt, then greedy tokens; the logits after every call.
                let alone: Vec<(Vec<u32>, Vec<Vec<f32>>)> = (0..3)
                    .map(|i| {
                        let mut s = Session::new(model.clone(), modes[i]);
                        let mut logits = vec![s.feed(&prompts[i]).unwrap().to_vec()];
                        let mut tokens = Vec::new();
                        for _ in starts[i] + 1..steps {
                            let t = crate::sampler::argmax(s.logits()) as u32;
                            tokens.push(t);
                            logits.push(s.feed(&[t]).unwrap().to_vec());
                        }
                        (tokens, logits)
                    })
                    .collect();
                let mut sessions: Vec<Session> = modes
                    .iter()
                    .map(|&m| Session::new(model.clone(), m))
                    .collect();
                let mut got: Vec<(Vec<u32>, Vec<Vec<f32>>)> = vec![Default::default(); 3];
                for step in 0..steps {
                    let feeds: Vec<(usize, Vec<u32>)> = (0..3)
                        .filter(|&i| step >= starts[i])
                        .map(|i| match step == starts[i] {
                            true => (i, prompts[i].clone()),
                            false => (i, vec![crate::sampler::argmax(sessions[i].logits()) as u32]),
                        })
                        .collect();
                    let mut work: Vec<(&mut Session, &[u32])> = sessions
                        .iter_mut()
                        .enumerate()
                        .filter_map(|(i, s)| {
                            let f = feeds.iter().find(|(j, _)| *j == i)?;
                            Some((s, f.1.as_slice()))
                        })
                        .collect();
                    Session::feed_many(&mut work).unwrap();
                    for (i, tokens) in &feeds {
                        if step > starts[*i] {
                            got[*i].0.push(tokens[0]);
                        }
                        got[*i].1.push(sessions[*i].logits().to_vec());
                    }
                }
                for i in 0..3 {
                    let what = format!("{variant:?} {ty} {threads} threads, session {i}");
                    assert_eq!(got[i].0, alone[i].0, "{what}: greedy tokens");
                    for (call, (g, a)) in got[i].1.iter().zip(&alone[i].1).enumerate() {
                        let worst = g
                            .iter()
                            .zip(a)
                            .map(|(x, y)| (x - y).abs())
                            .fold(0f32, f32::max);
                        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
                        let tolerance = if ty == GgmlType::Q8_0 {
                            Q8_0_TOLERANCE
                        } else {
                            TOLERANCE
                        };
                        assert!(
                            worst <= tolerance,
                            "{what}: call {call}: max |Δ| {worst:e} (max |logit| {scale}, tolerance {tolerance:e})"
                        );
                    }
                }
            }
        }
    }
}
