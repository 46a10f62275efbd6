//! The model step on a CUDA device: a [`CudaModel`] holds the uploaded weights and the step
//! plan (`backend::device_plan`, shared with wgpu); a [`CudaSequence`] one sequence's buffers on
//! its own stream. A step over a batch of T tokens is: copy their embedding rows, RoPE angles
//! and the step words (position, window fill, T) to the device; queue the plan's kernels
//! (`kernels/step.cu` and the products of `kernels/matvec.cu`); copy the last token's logits
//! back. Decode (T = 1) is captured once as a CUDA graph and replayed (no per-kernel launch
//! cost; `LIGER_CUDA_GRAPH=0` turns that off); prompts run in batches of up to
//! [`DeviceSequence::batch`](crate::backend::DeviceSequence::batch) tokens. A step over several
//! sequences ([`StepOnDevice::run_together`]) runs on a stream and activations the model keeps
//! for it: the ops over every row once, each sequence's own ops on its rows and state.

use super::{driver_error, CudaDevice, CudaMatrix};
use crate::backend::device_plan::{
    resolve, Buf, DeviceRows, DeviceWeights, KernelOp, KernelPlan, LayerBuffers, OpParams,
    SequenceBuffers, StepWords, MAX_TOGETHER, THREADS,
};
use crate::backend::DeviceInputs;
use crate::backend::{BackendKind, DeviceModel, SequenceChunk, Stacked, StepOnDevice, STEP_ROWS};
use crate::error::{Error, Result};
use crate::model::Model;
use cudarc::driver::{
    sys, CudaGraph, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};
use std::sync::{Arc, Mutex};

// SAFETY: `OpParams` is `#[repr(C)]` plain data of 16 four-byte fields, laid out as `step.cu`'s
// `struct Op` (a size assertion beside it).
unsafe impl DeviceRepr for OpParams {}

/// A model's weights on the device (the token embedding stays in the mapped file: one row is
/// copied per token) and its step plan.
pub struct CudaModel {
    pub model: Arc<Model>,
    pub dev: CudaDevice,
    weights: DeviceWeights<CudaMatrix, CudaSlice<f32>>,
    plan: KernelPlan,
    /// The stream and buffers of steps over several sequences, made on the first (one step at
    /// a time).
    together: Mutex<Option<CudaTogether>>,
}

/// What steps over several sequences share: their stream, activations of up to
/// [`STEP_ROWS`] rows (logits of [`MAX_TOGETHER`] sequences), and the step words of the ops
/// over every row and of the LM head.
struct CudaTogether {
    stream: Arc<CudaStream>,
    rows: DeviceRows<CudaSlice<f32>>,
    all_rows: CudaSlice<u32>,
    head_rows: CudaSlice<u32>,
}

/// Words per step buffer.
const WORDS: usize = std::mem::size_of::<StepWords>() / 4;

impl CudaModel {
    /// Uploads `model` to `dev`.
    pub fn new(dev: CudaDevice, model: Arc<Model>) -> Result<CudaModel> {
        let plan = KernelPlan::new(&model)?;
        let weights = DeviceWeights::upload(
            &model,
            |w| CudaMatrix::upload(&dev, w.ty, w.rows, w.cols, w.data),
            |v| dev.stream.clone_htod(v).map_err(driver_error("upload")),
        )?;
        // Sequences read the weights from streams of their own: the upload completes first.
        dev.stream
            .synchronize()
            .map_err(driver_error("weight upload"))?;
        Ok(CudaModel {
            model,
            dev,
            weights,
            plan,
            together: Mutex::new(None),
        })
    }

    fn new_together(&self) -> Result<CudaTogether> {
        let stream = self.dev.ctx.new_stream().map_err(driver_error("stream"))?;
        let c = &self.model.config;
        let rows = DeviceRows::new(c, STEP_ROWS, MAX_TOGETHER, |_, n| {
            stream
                .alloc_zeros::<f32>(n.max(1))
                .map_err(driver_error("alloc"))
        })?;
        let words = || {
            stream
                .alloc_zeros::<u32>(WORDS)
                .map_err(driver_error("alloc"))
        };
        Ok(CudaTogether {
            all_rows: words()?,
            head_rows: words()?,
            rows,
            stream,
        })
    }

    /// Queues `op` on `stream` over `t_len` rows of `rows` (and a sequence's `layers`), with
    /// the step words `st`.
    fn launch(
        &self,
        stream: &Arc<CudaStream>,
        op: &KernelOp,
        rows: &DeviceRows<CudaSlice<f32>>,
        layers: Option<&LayerBuffers<CudaSlice<f32>>>,
        st: &CudaSlice<u32>,
        t_len: usize,
    ) -> Result<()> {
        let dev = &self.dev;
        let buffer = |buf: Buf| resolve(&self.weights, rows, layers, buf);
        match op {
            KernelOp::Product { matrix, x, y, .. } => {
                let (x, y) = (buffer(*x)?, buffer(*y)?);
                self.weights
                    .matrix(*matrix)
                    .launch(dev, stream, x, y, t_len, st)
            }
            KernelOp::Kernel {
                kernel,
                params,
                buffers,
                grid,
            } => {
                let name = kernel.entry_point();
                let mut call = stream.launch_builder(dev.kernels.op(name));
                call.arg(params).arg(st);
                for &b in buffers {
                    call.arg(buffer(b)?);
                }
                let cfg = LaunchConfig {
                    grid_dim: (grid.blocks(t_len) as u32, 1, 1),
                    block_dim: (THREADS as u32, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: the plan passes each kernel the buffers its comment in step.cu names,
                // in order, each sized for the rows of its activations (`DeviceRows`), a
                // sequence's layers (`LayerBuffers`) or the model's shapes (`DeviceWeights`),
                // and `st` holds words whose rows lie within them; the buffers are used on one
                // stream at a time, in order, and the weights were uploaded and synchronized
                // before any sequence existed.
                unsafe { call.launch(cfg) }
                    .map(|_| ())
                    .map_err(driver_error(name))
            }
        }
    }

    /// Bytes of weight matrices one decode step reads (every layer's and the LM head).
    pub fn weight_bytes_per_token(&self) -> u64 {
        self.weights.matrices().map(CudaMatrix::bytes).sum()
    }
}

/// A captured decode step. cudarc's graph holds raw driver handles and is not `Send`; an
/// instantiated graph is not tied to the thread that captured it.
struct DecodeGraph(CudaGraph);

// SAFETY: a CUgraphExec may be launched from any thread of its context (the launch binds the
// context first); the graph is owned by one sequence, whose `&mut self` methods keep launches
// from overlapping.
unsafe impl Send for DecodeGraph {}

/// One sequence on the device.
pub struct CudaSequence {
    g: Arc<CudaModel>,
    /// This sequence's own stream: every buffer below is used on it only, in order, and its
    /// decode graph is captured from it — sequences on other threads neither wait for it nor
    /// land in its graph.
    stream: Arc<CudaStream>,
    buffers: SequenceBuffers<CudaSlice<f32>>,
    /// The step words of the step being run.
    st: CudaSlice<u32>,
    /// The decode step (T = 1, with logits), captured on first use.
    graph: Option<DecodeGraph>,
    use_graph: bool,
    host: DeviceInputs,
}

impl CudaSequence {
    /// Whether decode steps replay a captured graph (on by default) or queue their kernels.
    pub fn set_graphs(&mut self, on: bool) {
        self.use_graph = on;
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
        let s = &self.stream;
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

    /// Queues the plan's kernels for a batch of `t_len` tokens on the sequence's stream.
    fn queue(&self, t_len: usize, want_logits: bool) -> Result<()> {
        let (rows, layers) = (&self.buffers.rows, Some(&self.buffers.layers));
        for op in self.g.plan.ops(want_logits) {
            let last_only = matches!(
                op,
                KernelOp::Product {
                    last_row_only: true,
                    ..
                }
            );
            let n = if last_only { 1 } else { t_len };
            self.g.launch(&self.stream, op, rows, layers, &self.st, n)?;
        }
        Ok(())
    }
}

/// A buffer the plan names that a sequence does not have (a bug, not bad input).
fn missing(buf: Buf) -> Error {
    Error::Unsupported(format!("no sequence buffer {buf:?}"))
}

impl StepOnDevice for CudaSequence {
    type Device = CudaModel;

    fn with_batch(g: &Arc<CudaModel>, batch: usize) -> Result<CudaSequence> {
        let c = &g.model.config;
        let batch = batch.max(1);
        let stream = g.dev.ctx.new_stream().map_err(driver_error("stream"))?;
        let buffers = SequenceBuffers::new(c, batch, |_, n| {
            stream
                .alloc_zeros::<f32>(n.max(1))
                .map_err(driver_error("alloc"))
        })?;
        Ok(CudaSequence {
            st: stream
                .alloc_zeros::<u32>(WORDS)
                .map_err(driver_error("alloc"))?,
            stream,
            buffers,
            graph: None,
            use_graph: std::env::var("LIGER_CUDA_GRAPH").map_or(true, |v| v != "0"),
            host: DeviceInputs::new(&g.model, batch),
            g: Arc::clone(g),
        })
    }

    fn device(&self) -> &Arc<CudaModel> {
        &self.g
    }

    fn inputs(&self) -> &DeviceInputs {
        &self.host
    }

    fn inputs_mut(&mut self) -> &mut DeviceInputs {
        &mut self.host
    }

    /// The host inputs, the kernels (from the graph for a decode step) and, with
    /// `want_logits`, the logits read back.
    fn run_batch(&mut self, tokens: &[u32], want_logits: bool) -> Result<()> {
        let model = Arc::clone(&self.g.model);
        let c = &model.config;
        let (t_len, hidden, d) = (tokens.len(), c.hidden, c.head_dim);
        let words = self.host.prepare(&model, tokens);
        let s = Arc::clone(&self.stream);
        let (buffers, host) = (&mut self.buffers, &self.host);
        let mut upload = |buf: Buf, values: &[f32]| -> Result<()> {
            let buffer = buffers.rows.get_mut(buf).ok_or_else(|| missing(buf))?;
            s.memcpy_htod(values, buffer)
                .map_err(driver_error("step upload"))
        };
        upload(Buf::X, &host.rows[..t_len * hidden])?;
        upload(Buf::Rope, &host.angles[..t_len * d])?;
        s.memcpy_htod(&words, &mut self.st)
            .map_err(driver_error("step upload"))?;
        if t_len == 1 && want_logits && self.use_graph {
            self.run_graph()?;
        } else {
            self.queue(t_len, want_logits)?;
        }
        if want_logits {
            let logits = self
                .buffers
                .rows
                .get(Buf::Logits)
                .ok_or_else(|| missing(Buf::Logits))?;
            self.host.logits.resize(c.vocab_size, 0.0);
            s.memcpy_dtoh(logits, &mut self.host.logits)
                .map_err(driver_error("logits readback"))?;
            // (A copy to pageable memory returns when done; the wait makes that explicit.)
            s.synchronize().map_err(driver_error("step"))?;
        }
        Ok(())
    }

    /// On the model's own stream for such steps (each part's stream synchronized first: a
    /// batch without logits is not waited for), which is synchronized at the end.
    fn run_together(
        g: &Arc<CudaModel>,
        parts: &mut [SequenceChunk<'_, CudaSequence>],
    ) -> Result<()> {
        let vocab = g.model.config.vocab_size;
        let mut together = g.together.lock().unwrap_or_else(|e| e.into_inner());
        if together.is_none() {
            *together = Some(g.new_together()?);
        }
        let Some(shared) = together.as_mut() else {
            unreachable!("made above")
        };
        for part in parts.iter() {
            part.seq
                .stream
                .synchronize()
                .map_err(driver_error("step"))?;
        }
        let stacked = Stacked::new(&g.model, parts);
        let s = Arc::clone(&shared.stream);
        let upload = || driver_error("step upload");
        for (buf, values) in [(Buf::X, &stacked.rows), (Buf::Rope, &stacked.angles)] {
            let buffer = shared.rows.get_mut(buf).ok_or_else(|| missing(buf))?;
            s.memcpy_htod(values.as_slice(), buffer).map_err(upload())?;
        }
        s.memcpy_htod(&stacked.all_rows, &mut shared.all_rows)
            .map_err(upload())?;
        s.memcpy_htod(&stacked.head_rows, &mut shared.head_rows)
            .map_err(upload())?;
        for (part, words) in parts.iter_mut().zip(&stacked.words) {
            s.memcpy_htod(words, &mut part.seq.st).map_err(upload())?;
        }
        let want_logits = stacked.heads > 0;
        for (i, op) in g.plan.ops(want_logits).iter().enumerate() {
            if !op.per_sequence() {
                let head = matches!(
                    op,
                    KernelOp::Product {
                        last_row_only: true,
                        ..
                    }
                );
                let (st, n) = match head {
                    true => (&shared.head_rows, stacked.heads),
                    false => (&shared.all_rows, stacked.total),
                };
                g.launch(&s, op, &shared.rows, None, st, n)?;
                continue;
            }
            let in_head = i >= g.plan.head_from;
            for part in parts.iter().filter(|p| p.want_logits || !in_head) {
                let (layers, n) = (Some(&part.seq.buffers.layers), part.tokens.len());
                g.launch(&s, op, &shared.rows, layers, &part.seq.st, n)?;
            }
        }
        if want_logits {
            let logits = shared
                .rows
                .get(Buf::Logits)
                .ok_or_else(|| missing(Buf::Logits))?;
            let mut host = vec![0.0; stacked.heads * vocab];
            s.memcpy_dtoh(&logits.slice(..host.len()), &mut host)
                .map_err(driver_error("logits readback"))?;
            s.synchronize().map_err(driver_error("step"))?;
            Stacked::share_logits(parts, &host, vocab);
        }
        s.synchronize().map_err(driver_error("step"))
    }

    fn read_layer(&self, l: usize, parts: [&mut [f32]; 3]) -> Result<()> {
        let s = &self.stream;
        for (buffer, out) in self.buffers.layers.layer(l).into_iter().zip(parts) {
            s.memcpy_dtoh(buffer, out)
                .map_err(driver_error("state readback"))?;
        }
        s.synchronize().map_err(driver_error("state readback"))
    }

    fn write_layer(&mut self, l: usize, parts: [&[f32]; 3]) -> Result<()> {
        let s = Arc::clone(&self.stream);
        for (buffer, values) in self.buffers.layers.layer_mut(l).into_iter().zip(parts) {
            s.memcpy_htod(values, buffer)
                .map_err(driver_error("state upload"))?;
        }
        Ok(())
    }
}

impl DeviceModel for CudaModel {
    type Sequence = CudaSequence;
    const KIND: BackendKind = BackendKind::Cuda;
    fn model(&self) -> &Arc<Model> {
        &self.model
    }
    fn describe(&self) -> String {
        format!("CUDA: {}", self.dev.describe())
    }
    fn weight_bytes_per_token(&self) -> u64 {
        CudaModel::weight_bytes_per_token(self)
    }
    fn copy_bandwidth(&self) -> Result<f64> {
        self.dev.copy_bandwidth()
    }
    fn together_rows(&self) -> usize {
        STEP_ROWS
    }
}
