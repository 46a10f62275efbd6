//! The model step on a CUDA device: a [`CudaModel`] holds the uploaded weights; a
//! [`CudaSequence`] one sequence's state, window ring and activations. A step over a batch of T
//! tokens is: copy their embedding rows, RoPE angles and the step words (position, window
//! fill, T) to the device; queue the layers' kernels (`kernels/step.cu` and the products of
//! `kernels/matvec.cu`, in the order of `gpu::GpuSequence`); copy the last token's logits
//! back. Decode (T = 1) is captured once as a CUDA graph and replayed (no per-kernel launch
//! cost; `LIGER_CUDA_GRAPH=0` turns that off); prompts run in batches of up to
//! [`CudaSequence::batch`] tokens.
//!
//! Every variant (GLA, HGRN2, GSA) and both decode semantics (hf-compat: [`CudaSequence::
//! clear_window`] at the start of each call); weights of type F32, F16, BF16, Q8_0, Q4_0, Q4_K
//! or Q6_K.

use super::{driver_error, CudaDevice, CudaMatrix};
use crate::config::Variant;
use crate::error::{Error, Result};
use crate::model::{DeviceInputs, Model, SequenceState};
use cudarc::driver::{sys, CudaGraph, CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// Threads per block of `step.cu` (the largest head dim, window and GSA slot count it takes).
const WG: u32 = 128;
/// Tokens per prefill step unless asked otherwise.
pub const DEFAULT_BATCH: usize = 64;

/// `Op` of `step.cu`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Op {
    n: u32,
    d: u32,
    group: u32,
    flag: u32,
    f0: f32,
    f1: f32,
    window: u32,
    slots: u32,
}

// SAFETY: `Op` is `#[repr(C)]` plain data of 4-byte fields, laid out as `step.cu`'s `struct Op`.
unsafe impl DeviceRepr for Op {}

impl Op {
    fn n(n: usize) -> Op {
        Op {
            n: n as u32,
            ..Op::default()
        }
    }
}

struct CudaLayer {
    attn_norm: CudaSlice<f32>,
    ffn_norm: CudaSlice<f32>,
    wq: CudaMatrix,
    wk: CudaMatrix,
    wv: CudaMatrix,
    bias: [Option<CudaSlice<f32>>; 3],
    wo: CudaMatrix,
    w_gate: CudaMatrix,
    w_up: CudaMatrix,
    w_down: CudaMatrix,
}

/// A model's weights on the device (the token embedding stays in the mapped file: one row is
/// copied per token).
pub struct CudaModel {
    pub model: Arc<Model>,
    pub dev: CudaDevice,
    layers: Vec<CudaLayer>,
    output_norm: CudaSlice<f32>,
    output: CudaMatrix,
}

impl CudaModel {
    /// Uploads `model` to `dev`.
    pub fn new(dev: CudaDevice, model: Arc<Model>) -> Result<CudaModel> {
        let c = &model.config;
        if c.head_dim as u32 > WG || c.window >= WG || c.gsa_slots as u32 > WG {
            return Err(Error::Unsupported(format!(
                "the CUDA step handles head dims, windows and GSA slots < {WG} (model: {}, {}, {})",
                c.head_dim, c.window, c.gsa_slots
            )));
        }
        let upload = |m: &crate::model::MatrixRef| {
            let w = model.matrix(m);
            CudaMatrix::upload(&dev, w.ty, w.rows, w.cols, w.data)
        };
        let floats = |v: &[f32]| dev.stream.clone_htod(v).map_err(driver_error("upload"));
        let w = &model.weights;
        let mut layers = Vec::with_capacity(w.layers.len());
        for lw in &w.layers {
            let bias = [&lw.bq, &lw.bk, &lw.bv].map(|b| b.as_ref().map(|b| floats(b)));
            let [bq, bk, bv] = bias;
            layers.push(CudaLayer {
                attn_norm: floats(&lw.attn_norm)?,
                ffn_norm: floats(&lw.ffn_norm)?,
                wq: upload(&lw.wq)?,
                wk: upload(&lw.wk)?,
                wv: upload(&lw.wv)?,
                bias: [bq.transpose()?, bk.transpose()?, bv.transpose()?],
                wo: upload(&lw.wo)?,
                w_gate: upload(&lw.w_gate)?,
                w_up: upload(&lw.w_up)?,
                w_down: upload(&lw.w_down)?,
            });
        }
        Ok(CudaModel {
            output_norm: floats(&w.output_norm)?,
            output: upload(&w.output)?,
            layers,
            model,
            dev,
        })
    }

    /// Bytes of weight matrices one decode step reads (every layer's and the LM head).
    pub fn weight_bytes_per_token(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
                    .into_iter()
                    .map(CudaMatrix::bytes)
                    .sum::<u64>()
            })
            .sum::<u64>()
            + self.output.bytes()
    }
}

/// Activations of a batch of tokens: [T, n] each (the logits: the last token's).
struct Activations {
    x: CudaSlice<f32>,
    h: CudaSlice<f32>,
    q: CudaSlice<f32>,
    k: CudaSlice<f32>,
    v: CudaSlice<f32>,
    o_rec: CudaSlice<f32>,
    y: CudaSlice<f32>,
    proj: CudaSlice<f32>,
    gate: CudaSlice<f32>,
    up: CudaSlice<f32>,
    logits: CudaSlice<f32>,
    /// Per token: [cos (d/2), sin (d/2)] of its position.
    rope: CudaSlice<f32>,
}

/// A captured decode step. cudarc's graph holds raw driver handles and is not `Send`; an
/// instantiated graph is not tied to the thread that captured it.
struct DecodeGraph(CudaGraph);

// SAFETY: a CUgraphExec may be launched from any thread of its context (the launch binds the
// context first); the graph is owned by one sequence, whose `&mut self` methods keep launches
// from overlapping.
unsafe impl Send for DecodeGraph {}

/// One sequence on the device (window semantics unless cleared per call).
pub struct CudaSequence {
    g: Arc<CudaModel>,
    a: Activations,
    /// [pos, window_len, 0, T] of the step being run.
    st: CudaSlice<u32>,
    /// Per layer: recurrent state ([Hkv, d, d], GSA [Hkv, 2·d·M]); ring keys and values
    /// [W, Hkv·d].
    states: Vec<CudaSlice<f32>>,
    rings: Vec<(CudaSlice<f32>, CudaSlice<f32>)>,
    /// The decode step (T = 1, with logits), captured on first use.
    graph: Option<DecodeGraph>,
    use_graph: bool,
    host: DeviceInputs,
}

impl CudaSequence {
    /// A sequence whose prompts run in batches of [`DEFAULT_BATCH`] tokens.
    pub fn new(g: &Arc<CudaModel>) -> Result<CudaSequence> {
        Self::with_batch(g, DEFAULT_BATCH)
    }

    /// A sequence whose prompts run in batches of up to `batch` tokens.
    pub fn with_batch(g: &Arc<CudaModel>, batch: usize) -> Result<CudaSequence> {
        let c = &g.model.config;
        let batch = batch.max(1);
        let (hd, kv, d) = (
            c.n_heads * c.head_dim,
            c.n_kv_heads * c.head_dim,
            c.head_dim,
        );
        let s = &g.dev.stream;
        let buf = |n: usize| {
            s.alloc_zeros::<f32>(n.max(1))
                .map_err(driver_error("alloc"))
        };
        let a = Activations {
            x: buf(batch * c.hidden)?,
            h: buf(batch * c.hidden)?,
            q: buf(batch * hd)?,
            k: buf(batch * kv)?,
            v: buf(batch * kv)?,
            o_rec: buf(batch * hd)?,
            y: buf(batch * hd)?,
            proj: buf(batch * c.hidden)?,
            gate: buf(batch * c.ffn)?,
            up: buf(batch * c.ffn)?,
            logits: buf(c.vocab_size)?,
            rope: buf(batch * d)?,
        };
        let per_layer_state = c.n_kv_heads
            * match c.variant {
                Variant::Gsa => 2 * d * c.gsa_slots,
                _ => d * d,
            };
        let w = c.window as usize;
        let mut states = Vec::with_capacity(c.n_layers);
        let mut rings = Vec::with_capacity(c.n_layers);
        for _ in 0..c.n_layers {
            states.push(buf(per_layer_state)?);
            rings.push((buf(w * kv)?, buf(w * kv)?));
        }
        Ok(CudaSequence {
            st: s.alloc_zeros::<u32>(4).map_err(driver_error("alloc"))?,
            g: Arc::clone(g),
            a,
            states,
            rings,
            graph: None,
            use_graph: std::env::var("LIGER_CUDA_GRAPH").map_or(true, |v| v != "0"),
            host: DeviceInputs::new(&g.model, batch),
        })
    }

    /// The model this sequence runs.
    pub fn model(&self) -> &Arc<CudaModel> {
        &self.g
    }

    /// Tokens per prefill step.
    pub fn batch(&self) -> usize {
        self.host.batch
    }

    /// Whether decode steps replay a captured graph (on by default) or queue their kernels.
    pub fn set_graphs(&mut self, on: bool) {
        self.use_graph = on;
    }

    /// Empties the sliding window (hf-compat semantics: each call sees only its own tokens);
    /// the recurrent state is kept.
    pub fn clear_window(&mut self) {
        self.host.window_len = 0;
    }

    /// Feeds `tokens` as one call, in batches of up to [`Self::batch`] tokens, and keeps the
    /// last token's logits; `hf_compat` empties the window first.
    pub fn feed(&mut self, tokens: &[u32], hf_compat: bool) -> Result<&[f32]> {
        for (batch, last) in self.host.begin_call(&self.g.model, tokens, hf_compat)? {
            self.run(batch, last)?;
        }
        Ok(&self.host.logits)
    }

    /// The logits of the last token fed (empty before any).
    pub fn logits(&self) -> &[f32] {
        &self.host.logits
    }

    /// Tokens fed so far.
    pub fn position(&self) -> usize {
        self.host.pos
    }

    /// Runs one token and returns its logits ([vocab]).
    pub fn step(&mut self, token: u32) -> Result<&[f32]> {
        self.feed(&[token], false)
    }

    /// The sequence's state copied back, in the CPU's layout (the same tensors in the same
    /// order): saved with [`crate::session::encode_state`], it loads on any backend.
    pub fn state(&self) -> Result<SequenceState> {
        let s = &self.g.dev.stream;
        let state = self
            .host
            .read_state(&self.g.model, |l, recurrent, keys, values| {
                let (k, v) = &self.rings[l];
                s.memcpy_dtoh(&self.states[l], recurrent)
                    .and_then(|_| s.memcpy_dtoh(k, keys))
                    .and_then(|_| s.memcpy_dtoh(v, values))
                    .map_err(driver_error("state readback"))
            })?;
        s.synchronize().map_err(driver_error("state readback"))?;
        Ok(state)
    }

    /// Replaces the sequence's state with `state` (from [`Self::state`], a CPU session or a
    /// loaded blob of this model).
    pub fn set_state(&mut self, state: &SequenceState) -> Result<()> {
        let s = &self.g.dev.stream;
        let (states, rings) = (&mut self.states, &mut self.rings);
        self.host
            .write_state(&self.g.model, state, |l, recurrent, keys, values| {
                let (k, v) = &mut rings[l];
                s.memcpy_htod(recurrent, &mut states[l])
                    .and_then(|_| s.memcpy_htod(keys, k))
                    .and_then(|_| s.memcpy_htod(values, v))
                    .map_err(driver_error("state upload"))
            })
    }

    /// One batch of `tokens` (1 ..= batch, in the vocabulary): the host inputs, the kernels
    /// (from the graph for a decode step) and, with `want_logits`, the logits read back.
    fn run(&mut self, tokens: &[u32], want_logits: bool) -> Result<()> {
        let g = Arc::clone(&self.g);
        let c = &g.model.config;
        let (t_len, hidden, d) = (tokens.len(), c.hidden, c.head_dim);
        let words = self.host.prepare(&g.model, tokens);
        let s = &g.dev.stream;
        s.memcpy_htod(&self.host.rows[..t_len * hidden], &mut self.a.x)
            .and_then(|_| s.memcpy_htod(&self.host.angles[..t_len * d], &mut self.a.rope))
            .and_then(|_| s.memcpy_htod(&words, &mut self.st))
            .map_err(driver_error("step upload"))?;
        if t_len == 1 && want_logits && self.use_graph {
            self.run_graph()?;
        } else {
            self.queue(t_len, want_logits)?;
        }
        self.host.advance(&g.model, t_len);
        if want_logits {
            self.host.logits.resize(c.vocab_size, 0.0);
            s.memcpy_dtoh(&self.a.logits, &mut self.host.logits)
                .map_err(driver_error("logits readback"))?;
            // (A copy to pageable memory returns when done; the wait makes that explicit.)
            s.synchronize().map_err(driver_error("step"))?;
        }
        Ok(())
    }

    /// Replays the captured decode step, capturing it first if needed; a capture the driver
    /// refuses turns graphs off for this sequence (the kernels are then queued one by one).
    fn run_graph(&mut self) -> Result<()> {
        if self.graph.is_none() {
            match self.capture()? {
                Some(graph) => self.graph = Some(DecodeGraph(graph)),
                None => {
                    self.use_graph = false;
                    return self.queue(1, true);
                }
            }
        }
        match &self.graph {
            Some(graph) => graph.0.launch().map_err(driver_error("graph launch")),
            None => self.queue(1, true),
        }
    }

    /// Captures the decode step; `None` (said on stderr) where the driver will not capture or
    /// instantiate it. A kernel that fails to queue is an error.
    fn capture(&self) -> Result<Option<CudaGraph>> {
        let s = &self.g.dev.stream;
        let refused = |e: cudarc::driver::DriverError| {
            eprintln!("liger: CUDA graph capture failed ({e}); launching kernels one by one");
            None
        };
        if let Err(e) =
            s.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        {
            return Ok(refused(e));
        }
        let queued = self.queue(1, true);
        let graph = s.end_capture(sys::CUgraphInstantiate_flags(0));
        queued?;
        Ok(graph.unwrap_or_else(refused))
    }

    /// Queues the step's kernels for a batch of `t_len` tokens on the stream.
    fn queue(&self, t_len: usize, want_logits: bool) -> Result<()> {
        let g = &self.g;
        let c = &g.model.config;
        let dev = &g.dev;
        let a = &self.a;
        let st = &self.st;
        let (hd, kv, d) = (
            c.n_heads * c.head_dim,
            c.n_kv_heads * c.head_dim,
            c.head_dim,
        );
        // One launch of a step.cu kernel over `blocks` blocks of WG threads.
        let op = |name: &str, params: Op, buffers: &[&CudaSlice<f32>], blocks: usize| {
            let mut call = dev.stream.launch_builder(dev.kernels.op(name));
            call.arg(&params).arg(st);
            for b in buffers {
                call.arg(*b);
            }
            let cfg = LaunchConfig {
                grid_dim: (blocks.max(1) as u32, 1, 1),
                block_dim: (WG, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: each call site passes the buffers its kernel's comment in step.cu names,
            // in order, each sized for the sequence's batch (allocated in `with_batch`), and
            // `st` holds this batch's T; every buffer is used on this one stream, in order.
            unsafe { call.launch(cfg) }
                .map(|_| ())
                .map_err(driver_error(name))
        };
        let elements = |n: usize| (n * t_len).div_ceil(WG as usize);
        let product = |m: &CudaMatrix, x: &CudaSlice<f32>, y: &CudaSlice<f32>, tokens: usize| {
            m.launch(dev, x, y, tokens, st)
        };
        let norm_rows = |weight: &CudaSlice<f32>| {
            let mut p = Op::n(c.hidden);
            p.f0 = c.rms_eps;
            op("rms_norm", p, &[&a.x, weight, &a.h], t_len)
        };
        let heads = Op {
            n: c.n_kv_heads as u32,
            d: d as u32,
            group: (c.n_heads / c.n_kv_heads) as u32,
            flag: u32::from(c.variant == Variant::Hgrn2),
            f0: c.gate_normalizer,
            f1: 0.0,
            window: c.window,
            slots: c.gsa_slots as u32,
        };
        let rope_of = |n_heads: usize| Op {
            n: n_heads as u32,
            d: d as u32,
            ..Op::default()
        };
        for (l, lw) in g.layers.iter().enumerate() {
            norm_rows(&lw.attn_norm)?;
            for (m, out, bias) in [
                (&lw.wq, &a.q, &lw.bias[0]),
                (&lw.wk, &a.k, &lw.bias[1]),
                (&lw.wv, &a.v, &lw.bias[2]),
            ] {
                product(m, &a.h, out, t_len)?;
                if let Some(b) = bias {
                    let mut p = Op::n(m.rows);
                    p.flag = 1;
                    op("add", p, &[out, b], elements(m.rows))?;
                }
            }
            let recurrence = match c.variant {
                Variant::Gsa => "recurrence_gsa",
                _ => "recurrence",
            };
            let state = &self.states[l];
            op(
                recurrence,
                heads,
                &[state, &a.k, &a.v, &a.q, &a.o_rec],
                c.n_kv_heads,
            )?;
            op(
                "rope",
                rope_of(c.n_heads),
                &[&a.q, &a.rope],
                elements(hd / 2),
            )?;
            op(
                "rope",
                rope_of(c.n_kv_heads),
                &[&a.k, &a.rope],
                elements(kv / 2),
            )?;
            let (ring_k, ring_v) = &self.rings[l];
            let swa = Op {
                f0: 1.0 / (d as f32).sqrt(),
                ..heads
            };
            op(
                "swa",
                swa,
                &[&a.q, &a.k, &a.v, ring_k, ring_v, &a.y],
                t_len * c.n_heads,
            )?;
            let ring = Op {
                window: c.window,
                ..Op::n(kv)
            };
            op(
                "ring_write",
                ring,
                &[&a.k, &a.v, ring_k, ring_v],
                elements(kv),
            )?;
            let mut mix = Op::n(hd);
            mix.f0 = c.mix_swa;
            op("mix", mix, &[&a.y, &a.o_rec], elements(hd))?;
            product(&lw.wo, &a.y, &a.proj, t_len)?;
            op("add", Op::n(c.hidden), &[&a.x, &a.proj], elements(c.hidden))?;
            norm_rows(&lw.ffn_norm)?;
            product(&lw.w_gate, &a.h, &a.gate, t_len)?;
            product(&lw.w_up, &a.h, &a.up, t_len)?;
            op("swiglu", Op::n(c.ffn), &[&a.gate, &a.up], elements(c.ffn))?;
            product(&lw.w_down, &a.gate, &a.proj, t_len)?;
            op("add", Op::n(c.hidden), &[&a.x, &a.proj], elements(c.hidden))?;
        }
        if want_logits {
            let mut p = Op::n(c.hidden);
            p.f0 = c.rms_eps;
            p.flag = 1;
            op("rms_norm", p, &[&a.x, &g.output_norm, &a.h], 1)?;
            product(&g.output, &a.h, &a.logits, 1)?;
        }
        Ok(())
    }
}
