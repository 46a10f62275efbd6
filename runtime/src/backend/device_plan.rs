//! The step plan ([`crate::model::plan`]) lowered to the GPU backends' kernels: each op of
//! the model's step becomes the kernel launches and matvecs that compute it, over the same
//! named buffers, with the kernels' parameters. Both GPU backends run this list — wgpu records
//! it once per sequence as bind groups, CUDA queues it (or replays it as a captured graph) —
//! each mapping a [`Kernel`] to its pipeline or kernel of the same name (`shaders/step.wgsl`,
//! `kernels/step.cu`) and a product to its matvec. The weights and a sequence's buffers are
//! laid out here too ([`DeviceWeights`], [`SequenceBuffers`]), so a backend only allocates,
//! uploads and launches.
//!
//! Shapes: D hidden, F ffn, H heads, Hkv KV heads, d head dim, W window, M GSA slots, V vocab,
//! T tokens of the batch (1 when decoding).

use crate::config::{LigerConfig, Variant};
use crate::error::{Error, Result};
pub use crate::model::plan::{Buf, Matrix, Projection, LAYER_MATRICES};
use crate::model::plan::{Op, StepPlan};
use crate::model::{MatrixRef, MatrixView, Model, SequenceState};

/// Threads per workgroup (wgpu) or block (CUDA) of the step kernels: the largest head dim,
/// window and GSA slot count they take.
pub const THREADS: usize = 128;

/// The `Op` every step kernel reads (`struct Op` of `step.wgsl` and `step.cu`): each field
/// means one thing wherever it is read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct OpParams {
    /// Values per token row (rms_norm, add, swiglu, mix, ring_write).
    pub elements: u32,
    /// Heads rotated (rope: H for q, Hkv for k).
    pub heads: u32,
    /// Hkv (recurrence, recurrence_gsa, swa).
    pub kv_heads: u32,
    pub head_dim: u32,
    /// Query heads per KV head, H / Hkv.
    pub group: u32,
    /// recurrence: 1 = HGRN2 gates, 0 = GLA.
    pub hgrn2: u32,
    /// add: 1 = the second buffer is one row added to every token's (a bias).
    pub broadcast: u32,
    /// rms_norm: 1 = only the last token's row, into the output's first.
    pub last_row: u32,
    pub eps: f32,
    pub gate_normalizer: f32,
    /// mix: the SWA branch's weight.
    pub mix_swa: f32,
    /// swa: 1/√d.
    pub scale: f32,
    pub window: u32,
    pub slots: u32,
    pub pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<OpParams>() == 64);

/// The step words every kernel reads (`struct Step` of `step.wgsl`, `st` of `step.cu`),
/// written per step: [position of the first token, valid window entries before it, the
/// sequence's first row in the activations, T (its rows), the row its logits go to, 0, 0, 0].
/// One sequence alone has first row 0 and logits row 0; in a step over several, an op over
/// every row reads T = all the rows, and a sequence's own ops ([`KernelOp::per_sequence`])
/// its own words.
pub type StepWords = [u32; 8];

/// Sequences one step over several takes at most (the rows of its logits buffer).
pub const MAX_TOGETHER: usize = 16;

/// The step kernels, by entry point (declared in [`Kernel::ALL`]'s order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    RmsNorm,
    Add,
    Swiglu,
    Mix,
    Rope,
    Recurrence,
    RecurrenceGsa,
    Swa,
    RingWrite,
}

impl Kernel {
    pub const ALL: [Kernel; 9] = [
        Kernel::RmsNorm,
        Kernel::Add,
        Kernel::Swiglu,
        Kernel::Mix,
        Kernel::Rope,
        Kernel::Recurrence,
        Kernel::RecurrenceGsa,
        Kernel::Swa,
        Kernel::RingWrite,
    ];

    /// Its place in [`Kernel::ALL`] (the declaration order).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The entry point's name in `step.wgsl` and `step.cu`.
    pub fn entry_point(self) -> &'static str {
        match self {
            Kernel::RmsNorm => "rms_norm",
            Kernel::Add => "add",
            Kernel::Swiglu => "swiglu",
            Kernel::Mix => "mix",
            Kernel::Rope => "rope",
            Kernel::Recurrence => "recurrence",
            Kernel::RecurrenceGsa => "recurrence_gsa",
            Kernel::Swa => "swa",
            Kernel::RingWrite => "ring_write",
        }
    }
}

/// The activation buffers, with their labels and element counts for a batch of `batch`
/// tokens and the logits of `logit_rows` sequences.
fn activations(
    c: &LigerConfig,
    batch: usize,
    logit_rows: usize,
) -> [(Buf, &'static str, usize); 12] {
    let (hd, kv) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    [
        (Buf::X, "x", batch * c.hidden),
        (Buf::H, "h", batch * c.hidden),
        (Buf::Q, "q", batch * hd),
        (Buf::K, "k", batch * kv),
        (Buf::V, "v", batch * kv),
        (Buf::ORec, "o_rec", batch * hd),
        (Buf::Y, "y", batch * hd),
        (Buf::Proj, "proj", batch * c.hidden),
        (Buf::Gate, "gate", batch * c.ffn),
        (Buf::Up, "up", batch * c.ffn),
        (Buf::Logits, "logits", logit_rows * c.vocab_size),
        (Buf::Rope, "rope", batch * c.head_dim),
    ]
}

/// Blocks (workgroups) of a kernel launch, for a batch of T tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    Fixed(usize),
    /// n per token.
    PerToken(usize),
    /// One thread per element of n per token.
    Elements(usize),
}

impl Grid {
    pub fn blocks(self, tokens: usize) -> usize {
        match self {
            Grid::Fixed(n) => n,
            Grid::PerToken(n) => n * tokens,
            Grid::Elements(n) => (n * tokens).div_ceil(THREADS),
        }
        .max(1)
    }
}

/// One op of the step.
#[derive(Clone, Debug, PartialEq)]
pub enum KernelOp {
    /// `kernel(params, st, buffers…)` over `grid` blocks of [`THREADS`].
    Kernel {
        kernel: Kernel,
        params: OpParams,
        buffers: Vec<Buf>,
        grid: Grid,
    },
    /// y[t] = W·x[t] for the batch's rows; `last_row_only` (the LM head) for one row.
    Product {
        matrix: Matrix,
        x: Buf,
        y: Buf,
        last_row_only: bool,
    },
}

impl KernelOp {
    /// Whether the op reads a sequence's own state, window ring or position — run once per
    /// sequence in a step over several, on its rows with its step words — rather than only
    /// rows (once over all of them). The final norm is one: it picks the sequence's last row.
    pub fn per_sequence(&self) -> bool {
        match self {
            KernelOp::Product { .. } => false,
            KernelOp::Kernel { kernel, params, .. } => match kernel {
                Kernel::Recurrence | Kernel::RecurrenceGsa | Kernel::Swa | Kernel::RingWrite => {
                    true
                }
                Kernel::RmsNorm => params.last_row == 1,
                Kernel::Add | Kernel::Swiglu | Kernel::Mix | Kernel::Rope => false,
            },
        }
    }
}

/// The ops of one step, in order.
pub struct KernelPlan {
    pub ops: Vec<KernelOp>,
    /// Ops from here on (the final norm and the LM head) run only when logits are wanted.
    pub head_from: usize,
}

impl KernelPlan {
    /// The step of `model` ([`StepPlan`]) as kernels (their limits checked first).
    pub fn new(model: &Model) -> Result<KernelPlan> {
        let c = &model.config;
        check_limits(c)?;
        let d = c.head_dim;
        let base = OpParams {
            kv_heads: c.n_kv_heads as u32,
            head_dim: d as u32,
            group: (c.n_heads / c.n_kv_heads) as u32,
            hgrn2: u32::from(c.variant == Variant::Hgrn2),
            eps: c.rms_eps,
            gate_normalizer: c.gate_normalizer,
            mix_swa: c.mix_swa,
            scale: 1.0 / (d as f32).sqrt(),
            window: c.window,
            slots: c.gsa_slots as u32,
            ..OpParams::default()
        };
        let step = StepPlan::new(model);
        let mut ops = Vec::new();
        let mut head_from = 0;
        for (i, op) in step.ops.iter().enumerate() {
            if i == step.head_from {
                head_from = ops.len();
            }
            lower(c, &base, op, &mut ops);
        }
        Ok(KernelPlan { ops, head_from })
    }

    /// The ops of a batch: all of them with logits, else those before the head.
    pub fn ops(&self, want_logits: bool) -> &[KernelOp] {
        if want_logits {
            &self.ops
        } else {
            &self.ops[..self.head_from]
        }
    }
}

/// The step kernels handle head dims, windows and GSA slots up to their block size.
fn check_limits(c: &LigerConfig) -> Result<()> {
    if c.head_dim > THREADS || c.window as usize >= THREADS || c.gsa_slots > THREADS {
        return Err(Error::Unsupported(format!(
            "the GPU step handles head dims, windows and GSA slots < {THREADS} (model: {}, {}, {})",
            c.head_dim, c.window, c.gsa_slots
        )));
    }
    Ok(())
}

/// The kernels of one step op, appended to `ops`.
fn lower(c: &LigerConfig, base: &OpParams, op: &Op, ops: &mut Vec<KernelOp>) {
    let mut kernel = |kernel, params, buffers: &[Buf], grid| {
        ops.push(KernelOp::Kernel {
            kernel,
            params,
            buffers: buffers.to_vec(),
            grid,
        })
    };
    // Values per row of a row buffer.
    let width = |b: Buf| b.width(c).unwrap_or(0);
    let elements = |b: Buf| OpParams {
        elements: width(b) as u32,
        ..*base
    };
    match *op {
        // x [T, D], weight [D] → out [T, D]: a block per row.
        Op::RmsNorm { x, weight, out } => kernel(
            Kernel::RmsNorm,
            elements(x),
            &[x, weight, out],
            Grid::PerToken(1),
        ),
        Op::AddBias { out, bias } => {
            let p = OpParams {
                broadcast: 1,
                ..elements(out)
            };
            kernel(Kernel::Add, p, &[out, bias], Grid::Elements(width(out)))
        }
        // Recurrent branch on the raw q, k (state, k, v, q → o_rec), then the window branch on
        // q, k RoPE'd in place (q, k, v, ring → y), then the ring update.
        Op::TokenMixer { layer } => {
            let recurrence = match c.variant {
                Variant::Gsa => Kernel::RecurrenceGsa,
                _ => Kernel::Recurrence,
            };
            let state = [Buf::State(layer), Buf::K, Buf::V, Buf::Q, Buf::ORec];
            kernel(recurrence, *base, &state, Grid::Fixed(c.n_kv_heads));
            for (buf, heads) in [(Buf::Q, c.n_heads), (Buf::K, c.n_kv_heads)] {
                let p = OpParams {
                    heads: heads as u32,
                    ..*base
                };
                let grid = Grid::Elements(heads * c.head_dim / 2);
                kernel(Kernel::Rope, p, &[buf, Buf::Rope], grid);
            }
            let (ring_k, ring_v) = (Buf::RingKeys(layer), Buf::RingValues(layer));
            let window = [Buf::Q, Buf::K, Buf::V, ring_k, ring_v, Buf::Y];
            kernel(Kernel::Swa, *base, &window, Grid::PerToken(c.n_heads));
            let ring = [Buf::K, Buf::V, ring_k, ring_v];
            kernel(
                Kernel::RingWrite,
                elements(Buf::K),
                &ring,
                Grid::Elements(width(Buf::K)),
            );
        }
        Op::Mix { window, recurrent } => {
            let grid = Grid::Elements(width(window));
            kernel(Kernel::Mix, elements(window), &[window, recurrent], grid)
        }
        Op::Add { x, y } => kernel(Kernel::Add, elements(x), &[x, y], Grid::Elements(width(x))),
        Op::Swiglu { gate, up } => {
            let grid = Grid::Elements(width(gate));
            kernel(Kernel::Swiglu, elements(gate), &[gate, up], grid)
        }
        Op::OutputNorm => {
            let p = OpParams {
                last_row: 1,
                ..elements(Buf::X)
            };
            let buffers = [Buf::X, Buf::OutputNorm, Buf::H];
            kernel(Kernel::RmsNorm, p, &buffers, Grid::Fixed(1))
        }
        Op::Products { x, ref outputs } => {
            for &(matrix, y) in outputs {
                ops.push(KernelOp::Product {
                    matrix,
                    x,
                    y,
                    last_row_only: false,
                });
            }
        }
        Op::Logits => ops.push(KernelOp::Product {
            matrix: Matrix::Output,
            x: Buf::H,
            y: Buf::Logits,
            last_row_only: true,
        }),
    }
}

/// A model's weights on a device: matrices `M` (a backend's repacked planes) and f32
/// vectors `F` (norms, biases). The token embedding stays in the mapped file (one row per
/// token is uploaded).
pub struct DeviceWeights<M, F> {
    layers: Vec<DeviceLayer<M, F>>,
    output_norm: F,
    output: M,
}

struct DeviceLayer<M, F> {
    attn_norm: F,
    ffn_norm: F,
    /// q, k, v, o, gate, up, down ([`LAYER_MATRICES`]).
    matrices: [M; 7],
    bias: [Option<F>; 3],
}

impl<M, F> DeviceWeights<M, F> {
    /// Uploads `model`'s weights through `matrix` (a matrix as the file holds it) and
    /// `floats`.
    pub fn upload(
        model: &Model,
        mut matrix: impl FnMut(MatrixView<'_>) -> Result<M>,
        mut floats: impl FnMut(&[f32]) -> Result<F>,
    ) -> Result<DeviceWeights<M, F>> {
        let mut upload = |m: &MatrixRef| matrix(model.matrix_view(m));
        let w = &model.weights;
        let mut layers = Vec::with_capacity(w.layers.len());
        for lw in &w.layers {
            let mut bias = [None, None, None];
            for (slot, b) in bias.iter_mut().zip([&lw.bq, &lw.bk, &lw.bv]) {
                if let Some(b) = b {
                    *slot = Some(floats(b)?);
                }
            }
            layers.push(DeviceLayer {
                attn_norm: floats(&lw.attn_norm)?,
                ffn_norm: floats(&lw.ffn_norm)?,
                matrices: [
                    upload(&lw.wq)?,
                    upload(&lw.wk)?,
                    upload(&lw.wv)?,
                    upload(&lw.wo)?,
                    upload(&lw.w_gate)?,
                    upload(&lw.w_up)?,
                    upload(&lw.w_down)?,
                ],
                bias,
            });
        }
        Ok(DeviceWeights {
            output_norm: floats(&w.output_norm)?,
            output: upload(&w.output)?,
            layers,
        })
    }

    pub fn matrix(&self, m: Matrix) -> &M {
        match m {
            Matrix::Layer(l, i) => &self.layers[l].matrices[i],
            Matrix::Output => &self.output,
        }
    }

    /// Every matrix one decode step reads (every layer's and the LM head).
    pub fn matrices(&self) -> impl Iterator<Item = &M> {
        self.layers
            .iter()
            .flat_map(|l| l.matrices.iter())
            .chain(std::iter::once(&self.output))
    }

    /// A weight vector a kernel binds (`None` for a sequence's buffers, or a missing bias).
    pub fn vector(&self, buf: Buf) -> Option<&F> {
        match buf {
            Buf::AttnNorm(l) => Some(&self.layers[l].attn_norm),
            Buf::FfnNorm(l) => Some(&self.layers[l].ffn_norm),
            Buf::Bias(l, p) => self.layers[l].bias[p as usize].as_ref(),
            Buf::OutputNorm => Some(&self.output_norm),
            _ => None,
        }
    }
}

/// The activations of a step on a device (`B`): a sequence's own for batches of up to
/// `rows` tokens, or those a step over several sequences shares.
pub struct DeviceRows<B>(Vec<(Buf, B)>);

impl<B> DeviceRows<B> {
    /// Allocates every activation buffer (zeroed) through `alloc(label, f32 count)` for up to
    /// `rows` token rows and the logits of `logit_rows` sequences.
    pub fn new(
        c: &LigerConfig,
        rows: usize,
        logit_rows: usize,
        mut alloc: impl FnMut(&'static str, usize) -> Result<B>,
    ) -> Result<DeviceRows<B>> {
        let mut made = Vec::with_capacity(12);
        for (buf, label, n) in activations(c, rows, logit_rows) {
            made.push((buf, alloc(label, n)?));
        }
        Ok(DeviceRows(made))
    }

    /// An activation buffer (`None` for a layer's or the model's).
    pub fn get(&self, buf: Buf) -> Option<&B> {
        self.0
            .iter()
            .find(|(b, _)| *b == buf)
            .map(|(_, buffer)| buffer)
    }

    pub fn get_mut(&mut self, buf: Buf) -> Option<&mut B> {
        self.0
            .iter_mut()
            .find(|(b, _)| *b == buf)
            .map(|(_, buffer)| buffer)
    }
}

/// A sequence's own buffers per layer: the recurrent state and the window ring.
pub struct LayerBuffers<B> {
    states: Vec<B>,
    rings: Vec<(B, B)>,
}

impl<B> LayerBuffers<B> {
    /// Allocates them (zeroed) through `alloc(label, f32 count)`.
    pub fn new(
        c: &LigerConfig,
        mut alloc: impl FnMut(&'static str, usize) -> Result<B>,
    ) -> Result<LayerBuffers<B>> {
        // Per layer: [Hkv, d, d] (GSA [Hkv, 2·d·M]); the ring [W, Hkv·d] twice.
        let state = c.n_kv_heads * SequenceState::per_head(c);
        let ring = c.window as usize * c.n_kv_heads * c.head_dim;
        let (mut states, mut rings) = (Vec::new(), Vec::new());
        for _ in 0..c.n_layers {
            states.push(alloc("state", state)?);
            rings.push((alloc("ring_keys", ring)?, alloc("ring_values", ring)?));
        }
        Ok(LayerBuffers { states, rings })
    }

    /// A layer's buffer (`None` for activations or the model's).
    pub fn get(&self, buf: Buf) -> Option<&B> {
        match buf {
            Buf::State(l) => self.states.get(l),
            Buf::RingKeys(l) => self.rings.get(l).map(|r| &r.0),
            Buf::RingValues(l) => self.rings.get(l).map(|r| &r.1),
            _ => None,
        }
    }

    /// Layer l's recurrent state, ring keys and ring values.
    pub fn layer(&self, l: usize) -> [&B; 3] {
        [&self.states[l], &self.rings[l].0, &self.rings[l].1]
    }

    pub fn layer_mut(&mut self, l: usize) -> [&mut B; 3] {
        let (keys, values) = &mut self.rings[l];
        [&mut self.states[l], keys, values]
    }
}

/// One sequence's buffers on a device (`B`): its activations for batches of up to `batch`
/// tokens, and per layer the recurrent state and the window ring.
pub struct SequenceBuffers<B> {
    pub rows: DeviceRows<B>,
    pub layers: LayerBuffers<B>,
}

impl<B> SequenceBuffers<B> {
    /// Allocates every buffer (zeroed) through `alloc(label, f32 count)`.
    pub fn new(
        c: &LigerConfig,
        batch: usize,
        mut alloc: impl FnMut(&'static str, usize) -> Result<B>,
    ) -> Result<SequenceBuffers<B>> {
        Ok(SequenceBuffers {
            rows: DeviceRows::new(c, batch, 1, &mut alloc)?,
            layers: LayerBuffers::new(c, &mut alloc)?,
        })
    }
}

/// The buffer a step op binds: an activation of `rows`, a layer's of `layers` (`None` for a
/// step's ops over every row, which name none), or a weight vector of the model's.
pub fn resolve<'a, M, B>(
    weights: &'a DeviceWeights<M, B>,
    rows: &'a DeviceRows<B>,
    layers: Option<&'a LayerBuffers<B>>,
    buf: Buf,
) -> Result<&'a B> {
    rows.get(buf)
        .or_else(|| layers.and_then(|l| l.get(buf)))
        .or_else(|| weights.vector(buf))
        .ok_or_else(|| Error::Unsupported(format!("the step plan names {buf:?}, which is absent")))
}

#[cfg(test)]
mod tests {
    use super::Kernel;

    #[test]
    fn every_kernel_is_at_its_index() {
        for (i, k) in Kernel::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{}", k.entry_point());
        }
    }
}
