//! One way to run a sequence, whatever the device.
//!
//! A [`Backend`] is a model opened on a device — the CPU, a GPU through wgpu, or CUDA — and is
//! shared by every sequence on it. A [`Sequence`] is one sequence's state, window and
//! activations there. [`crate::Session`] (and through it every front end: the CLI's commands,
//! the server, the C ABI, JNI) runs on a `Sequence`, so a feature written once works on every
//! backend. States move between backends in one portable format ([`SequenceState`]).
//!
//! Adding a backend: its device code in its own module (`gpu/`, `cuda/`), an implementation of
//! the two traits here (a GPU backend implements `DeviceModel` and `StepOnDevice` and gets
//! the rest), its line in `open_kind` — and its tests.

mod cpu;
// Used by the GPU backends only (a build without them has no device to drive).
#[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(dead_code))]
mod device;
mod device_inputs;
#[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(dead_code))]
pub mod device_plan;
mod self_test;
#[cfg(all(test, any(feature = "wgpu", feature = "cuda")))]
pub(crate) mod step_kernel_checks;

pub use cpu::CpuBackend;
#[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_imports))]
pub(crate) use device::OnDevice;
pub use device::{
    DeviceModel, DeviceSequence, SequenceChunk, Stacked, StepOnDevice, DEFAULT_BATCH,
};
pub use device_inputs::DeviceInputs;
pub use self_test::self_test;

use crate::error::{Error, Result};
use crate::model::{Model, SequenceState};
use std::borrow::Cow;
use std::sync::Arc;

/// What the sliding-window branch sees (docs/MATH.md §2); chosen per sequence.
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

    /// Its byte in a saved state.
    pub(crate) fn code(self) -> u8 {
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

/// Which device runs a model's sequences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// CUDA when a driver, a device and NVRTC are found and the self-test passes, else the CPU
    /// (wgpu only when asked for: GPU driver quality varies too much to pick it unasked).
    #[default]
    Auto,
    Cpu,
    Wgpu,
    Cuda,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this build has the backend (`auto` and `cpu` always).
    pub fn compiled_in(self) -> bool {
        match self {
            BackendKind::Auto | BackendKind::Cpu => true,
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(BackendKind::Auto),
            "cpu" => Ok(BackendKind::Cpu),
            "wgpu" => Ok(BackendKind::Wgpu),
            "cuda" => Ok(BackendKind::Cuda),
            _ => Err(Error::InvalidArgument(format!(
                "backend '{s}' (auto, cpu, wgpu or cuda)"
            ))),
        }
    }
}

/// A model opened on a device; shared by all its sequences (and threads).
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// The device, e.g. "CPU (AVX2, 2 threads)" or "wgpu: llvmpipe (Vulkan, Cpu)".
    fn describe(&self) -> String;
    fn model(&self) -> &Arc<Model>;
    /// A new sequence with an empty state.
    fn new_sequence(&self, mode: DecodeMode) -> Result<Box<dyn Sequence>>;
    /// Bytes of weight matrices one decode step reads (every layer's and the LM head).
    fn weight_bytes_per_token(&self) -> u64;
    /// Bytes of weights it copied into host memory (the CPU's repacked matrices; a GPU's live
    /// on the device).
    fn repacked_bytes(&self) -> u64 {
        0
    }
    /// The device's measured copy bandwidth in bytes/s (read + write), where it has one to
    /// measure (GPUs).
    fn copy_bandwidth(&self) -> Result<Option<f64>> {
        Ok(None)
    }
    /// Feeds several sequences of this backend their own tokens, each as one call (its own
    /// state, position and decode mode), together: a backend runs the linear layers once over
    /// all their rows. Leaves each sequence's logits as [`Sequence::feed`] would. This default
    /// feeds them one after another.
    fn feed_many(&self, work: &mut [(&mut dyn Sequence, &[u32])]) -> Result<()> {
        for (sequence, tokens) in work.iter_mut() {
            sequence.feed(tokens, None)?;
        }
        Ok(())
    }
}

/// Most rows (tokens of every sequence together) of one CPU step: a long prompt is fed in
/// steps of this many, which bounds the scratch memory and, beside decoding sequences, the
/// latency of their next token.
pub const STEP_ROWS: usize = 256;

/// How many of each sequence's `left` tokens the next step takes: one from every sequence
/// with any left (a decoding sequence is never held up), then the rest of `budget` rows to
/// the prompts, in order.
pub fn share_rows(left: &[usize], budget: usize, take: &mut Vec<usize>) {
    take.clear();
    take.extend(left.iter().map(|&l| l.min(1)));
    let mut spare = budget.saturating_sub(take.iter().sum());
    for (t, &l) in take.iter_mut().zip(left) {
        let more = (l - *t).min(spare);
        *t += more;
        spare -= more;
    }
}

/// The one scheduler of a step over several sequences, for every backend: `step(done, take)`
/// runs one step in which sequence i takes its tokens `done[i] .. done[i] + take[i]` (as
/// [`share_rows`] shares at most `budget` rows), until each has taken all of its `lengths[i]`.
pub(crate) fn run_steps(
    lengths: &[usize],
    budget: usize,
    mut step: impl FnMut(&[usize], &[usize]) -> Result<()>,
) -> Result<()> {
    let mut done = vec![0; lengths.len()];
    let (mut left, mut take) = (Vec::new(), Vec::new());
    loop {
        left.clear();
        left.extend(lengths.iter().zip(&done).map(|(n, d)| n - d));
        if left.iter().all(|&l| l == 0) {
            return Ok(());
        }
        share_rows(&left, budget, &mut take);
        step(&done, &take)?;
        for (d, t) in done.iter_mut().zip(&take) {
            *d += t;
        }
    }
}

/// Refuses a token outside `model`'s vocabulary, naming the first; every sequence checks
/// what it is fed with this (a token indexes the embedding).
pub fn check_vocabulary(model: &Model, tokens: &[u32]) -> Result<()> {
    let vocab = model.config.vocab_size;
    match tokens.iter().position(|&t| t as usize >= vocab) {
        Some(i) => Err(Error::InvalidArgument(format!(
            "token #{i} (id {}) is outside the vocabulary of {vocab}",
            tokens[i]
        ))),
        None => Ok(()),
    }
}

/// One sequence on a backend. It refuses tokens outside the vocabulary
/// ([`check_vocabulary`]) before running anything.
pub trait Sequence: Send + 'static {
    fn mode(&self) -> DecodeMode;
    /// The concrete sequence, for its backend's [`Backend::feed_many`].
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
    /// Feeds `tokens` as one call (hf-compat: the window sees only them) and keeps the last
    /// token's logits; with `all`, appends every token's logits to it ([T, V]).
    fn feed(&mut self, tokens: &[u32], all: Option<&mut Vec<f32>>) -> Result<()>;
    /// Logits after the last token fed ([V]; zeros before the first).
    fn logits(&self) -> &[f32];
    /// Tokens fed so far.
    fn position(&self) -> usize;
    /// Forgets everything fed.
    fn reset(&mut self) -> Result<()>;
    /// The state in the portable layout (a GPU's is read back).
    fn state(&self) -> Result<Cow<'_, SequenceState>>;
    /// Replaces the state (one of this model's, from any backend).
    fn set_state(&mut self, state: SequenceState) -> Result<()>;
    /// An independent sequence on the same backend starting from this one's state.
    fn fork(&self) -> Result<Box<dyn Sequence>>;
}

/// A backend opened for a model, and why it was picked.
pub struct Opened {
    pub backend: Arc<dyn Backend>,
    /// One line for the user: which backend runs and why.
    pub reason: String,
}

/// Opens `model` on `kind`. A GPU backend must pass its self-test against the CPU's logits
/// ([`self_test`]) first. `auto`: CUDA where it opens and passes, else the CPU (and says why).
pub fn open(kind: BackendKind, model: &Arc<Model>) -> Result<Opened> {
    if kind != BackendKind::Auto {
        let backend = open_tested(kind, model)?;
        let reason = format!("backend {}: {}", kind.name(), backend.describe());
        return Ok(Opened { backend, reason });
    }
    match open_tested(BackendKind::Cuda, model) {
        Ok(backend) => {
            let reason = format!(
                "backend cuda (auto: a CUDA device passed the self-test): {}",
                backend.describe()
            );
            Ok(Opened { backend, reason })
        }
        Err(why) => {
            let backend = open_kind(BackendKind::Cpu, model)?;
            let reason = format!(
                "backend cpu (auto: {why}; --backend wgpu asks for the portable GPU backend): {}",
                backend.describe()
            );
            Ok(Opened { backend, reason })
        }
    }
}

fn open_tested(kind: BackendKind, model: &Arc<Model>) -> Result<Arc<dyn Backend>> {
    let backend = open_kind(kind, model)?;
    if kind != BackendKind::Cpu {
        self_test(backend.as_ref())?;
    }
    Ok(backend)
}

/// Every backend this build has: the one place that names them.
fn open_kind(kind: BackendKind, model: &Arc<Model>) -> Result<Arc<dyn Backend>> {
    match kind {
        BackendKind::Cpu => Ok(Arc::new(CpuBackend::open(model)?)),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => crate::gpu::open(model),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => crate::cuda::open(model),
        BackendKind::Auto => open(kind, model).map(|o| o.backend),
        #[allow(unreachable_patterns)]
        other => Err(Error::Unsupported(format!(
            "this liger was built without the {0} backend (cargo feature `{0}`)",
            other.name()
        ))),
    }
}
