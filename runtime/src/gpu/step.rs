//! The model step on the GPU through wgpu: a [`GpuModel`] holds the uploaded weights, the
//! compiled pipelines and the step plan (`backend::device_plan`, shared with CUDA); a
//! [`GpuSequence`] holds one sequence's buffers and the plan recorded once as dispatches over
//! them, so a step over a batch of T tokens is: write their embedding rows, RoPE angles, the
//! position and T; encode the dispatches into one compute pass; read the last token's logits
//! back. Decode is T = 1; a prompt runs in batches of up to [`DeviceSequence::batch`] tokens
//! (matrix-matrix products, the recurrence token by token inside one dispatch per layer), one
//! submission each, which bounds every dispatch's length. A step over several sequences
//! ([`StepOnDevice::run_together`]) runs the ops over every row once on activations the model
//! keeps for it ([`GpuTogether`]) and each sequence's own ops on its rows, recorded once per
//! sequence over those activations and its own state.

use super::matvec::MatvecCall;
use super::{GpuContext, GpuMatrix, MatvecPipelines};
use crate::backend::device_plan::{
    resolve, Buf, DeviceRows, DeviceWeights, Grid, Kernel, KernelOp, KernelPlan, LayerBuffers,
    SequenceBuffers, StepWords, MAX_TOGETHER, THREADS,
};
use crate::backend::DeviceInputs;
use crate::backend::{BackendKind, DeviceModel, SequenceChunk, Stacked, StepOnDevice, STEP_ROWS};
use crate::error::Result;
use crate::model::Model;
use std::sync::{Arc, Mutex};

const SHADER: &str = include_str!("../../../shaders/step.wgsl");
/// Workgroups per dispatch dimension that every adapter allows.
const MAX_GROUPS: usize = 65_535;

/// A model's weights on the GPU (the token embedding stays in the mapped file: one row is
/// uploaded per token), its pipelines and its step plan.
pub struct GpuModel {
    pub model: Arc<Model>,
    pub ctx: GpuContext,
    matvec: MatvecPipelines,
    /// The pipelines of `step.wgsl`, in [`Kernel::ALL`]'s order (layouts from the shader).
    pipelines: Vec<wgpu::ComputePipeline>,
    weights: DeviceWeights<GpuMatrix, wgpu::Buffer>,
    plan: KernelPlan,
    /// The buffers of steps over several sequences, made on the first (one step at a time).
    together: Mutex<Option<GpuTogether>>,
}

/// What steps over several sequences share: activations of up to `capacity` rows (logits of
/// [`MAX_TOGETHER`] sequences), the step words of the ops over every row and of the LM head,
/// those ops recorded over them (`None` at a sequence's own ops), and the logits' readback.
struct GpuTogether {
    rows: DeviceRows<wgpu::Buffer>,
    all_rows: wgpu::Buffer,
    head_rows: wgpu::Buffer,
    dispatches: Vec<Option<Dispatch>>,
    staging: wgpu::Buffer,
}

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC);
const WORDS_BYTES: usize = std::mem::size_of::<StepWords>();

fn floats(ctx: &GpuContext, label: &str, v: &[f32]) -> wgpu::Buffer {
    ctx.upload(label, bytemuck::cast_slice(v), wgpu::BufferUsages::STORAGE)
}

impl GpuModel {
    /// Uploads `model` to the device of `ctx`.
    pub fn new(ctx: GpuContext, model: Arc<Model>) -> Result<GpuModel> {
        let plan = KernelPlan::new(&model)?;
        let weights = DeviceWeights::upload(
            &model,
            |w| GpuMatrix::upload(&ctx, w.ty, w.rows, w.cols, w.data),
            |v| Ok(floats(&ctx, "weights", v)),
        )?;
        let pipelines = step_pipelines(&ctx);
        Ok(GpuModel {
            matvec: MatvecPipelines::new(&ctx),
            pipelines,
            weights,
            plan,
            model,
            ctx,
            together: Mutex::new(None),
        })
    }

    /// The largest batch of rows whose dispatches stay within the adapter's grid, up to
    /// `wanted`.
    fn rows_within_grid(&self, wanted: usize) -> usize {
        let c = &self.model.config;
        let widest = [c.hidden, c.ffn, c.n_heads * c.head_dim]
            .into_iter()
            .max()
            .unwrap_or(1);
        wanted
            .min(MAX_GROUPS * THREADS / widest)
            .min(MAX_GROUPS / c.n_heads.max(1))
            .max(1)
    }

    /// The shared buffers of steps over several sequences, and the ops over every row
    /// recorded over them.
    fn new_together(&self) -> Result<GpuTogether> {
        let ctx = &self.ctx;
        let c = &self.model.config;
        let capacity = self.rows_within_grid(STEP_ROWS);
        let rows = DeviceRows::new(c, capacity, MAX_TOGETHER, |label, n| {
            Ok(ctx.upload(label, &vec![0u8; n * 4], STORAGE))
        })?;
        let words = || ctx.upload("step", &[0u8; WORDS_BYTES], wgpu::BufferUsages::UNIFORM);
        let (all_rows, head_rows) = (words(), words());
        let dispatches = record(self, &rows, None, &all_rows, &head_rows, |op| {
            !op.per_sequence()
        })?;
        Ok(GpuTogether {
            staging: ctx.staging((MAX_TOGETHER * c.vocab_size * 4) as u64),
            rows,
            all_rows,
            head_rows,
            dispatches,
        })
    }

    /// Bytes of weight matrices one decode step reads (every layer's and the LM head).
    pub fn weight_bytes_per_token(&self) -> u64 {
        self.weights.matrices().map(GpuMatrix::bytes).sum()
    }

    fn pipeline(&self, kernel: Kernel) -> &wgpu::ComputePipeline {
        &self.pipelines[kernel.index()]
    }
}

/// The pipelines of `step.wgsl`, one per kernel in [`Kernel::ALL`]'s order (layouts derived
/// from the shader).
pub(crate) fn step_pipelines(ctx: &GpuContext) -> Vec<wgpu::ComputePipeline> {
    let module = ctx
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("step.wgsl"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
    Kernel::ALL
        .iter()
        .map(|k| {
            ctx.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(k.entry_point()),
                    layout: None,
                    module: &module,
                    entry_point: Some(k.entry_point()),
                    compilation_options: Default::default(),
                    cache: None,
                })
        })
        .collect()
}

/// A bind group of `buffers` as bindings 0, 1, … of `pipeline`'s group 0.
pub(crate) fn bind_all(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let entries: Vec<_> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}

/// One op of the plan, recorded over a sequence's buffers.
enum Dispatch {
    /// A weight product over the batch; `last_only` ones (the LM head) see the logits rows.
    Matvec { call: MatvecCall, last_only: bool },
    Op {
        pipeline: wgpu::ComputePipeline,
        bind_group: wgpu::BindGroup,
        grid: Grid,
    },
}

impl Dispatch {
    /// Encodes the op over `rows` rows (the LM head over `head_rows`).
    fn encode(&self, pass: &mut wgpu::ComputePass, rows: usize, head_rows: usize) {
        match self {
            Dispatch::Matvec { call, last_only } => {
                call.encode(pass, if *last_only { head_rows } else { rows })
            }
            Dispatch::Op {
                pipeline,
                bind_group,
                grid,
            } => {
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, bind_group, &[]);
                pass.dispatch_workgroups(grid.blocks(rows) as u32, 1, 1);
            }
        }
    }
}

/// Records the plan's ops that `keep` selects (`None` at the others) over activations `rows`
/// and a sequence's `layers`: a bind group per op (its `Op` uniform, the step words
/// `step_words` — `head_words` for the LM head —, its buffers as b2..), a matvec call per
/// product.
fn record(
    g: &GpuModel,
    rows: &DeviceRows<wgpu::Buffer>,
    layers: Option<&LayerBuffers<wgpu::Buffer>>,
    step_words: &wgpu::Buffer,
    head_words: &wgpu::Buffer,
    keep: impl Fn(&KernelOp) -> bool,
) -> Result<Vec<Option<Dispatch>>> {
    let ctx = &g.ctx;
    let mut list = Vec::with_capacity(g.plan.ops.len());
    for op in &g.plan.ops {
        let buffer = |buf: Buf| resolve(&g.weights, rows, layers, buf);
        if !keep(op) {
            list.push(None);
            continue;
        }
        list.push(Some(match op {
            KernelOp::Product {
                matrix,
                x,
                y,
                last_row_only,
            } => Dispatch::Matvec {
                call: g.matvec.bind(
                    ctx,
                    g.weights.matrix(*matrix),
                    buffer(*x)?,
                    buffer(*y)?,
                    if *last_row_only {
                        head_words
                    } else {
                        step_words
                    },
                )?,
                last_only: *last_row_only,
            },
            KernelOp::Kernel {
                kernel,
                params,
                buffers: bound,
                grid,
            } => {
                let pipeline = g.pipeline(*kernel);
                let uniform = ctx.upload(
                    kernel.entry_point(),
                    bytemuck::bytes_of(params),
                    wgpu::BufferUsages::UNIFORM,
                );
                let mut resolved = vec![&uniform, step_words];
                for &b in bound {
                    resolved.push(buffer(b)?);
                }
                let bind_group = bind_all(ctx, pipeline, &resolved);
                Dispatch::Op {
                    pipeline: pipeline.clone(),
                    bind_group,
                    grid: *grid,
                }
            }
        }));
    }
    Ok(list)
}

/// One sequence on the GPU.
pub struct GpuSequence {
    g: Arc<GpuModel>,
    buffers: SequenceBuffers<wgpu::Buffer>,
    /// The step words of the batch being run (`Step` of step.wgsl).
    step_params: wgpu::Buffer,
    /// Host-mappable copy of the logits.
    staging: wgpu::Buffer,
    /// The plan's ops, recorded once (its head from `head_from`).
    dispatches: Vec<Option<Dispatch>>,
    head_from: usize,
    /// Its own ops in steps over several sequences, recorded over the model's shared
    /// activations on its first such step.
    together: Option<Vec<Option<Dispatch>>>,
    host: DeviceInputs,
}

impl StepOnDevice for GpuSequence {
    type Device = GpuModel;

    /// Prompts run in batches of up to `batch` tokens (lowered where a dispatch would exceed
    /// the adapter's grid).
    fn with_batch(g: &Arc<GpuModel>, batch: usize) -> Result<GpuSequence> {
        let ctx = &g.ctx;
        let c = &g.model.config;
        let batch = g.rows_within_grid(batch);
        let buffers = SequenceBuffers::new(c, batch, |label, n| {
            Ok(ctx.upload(label, &vec![0u8; n * 4], STORAGE))
        })?;
        let step_params = ctx.upload("step", &[0u8; WORDS_BYTES], wgpu::BufferUsages::UNIFORM);
        let (rows, layers) = (&buffers.rows, Some(&buffers.layers));
        Ok(GpuSequence {
            dispatches: record(g, rows, layers, &step_params, &step_params, |_| true)?,
            head_from: g.plan.head_from,
            together: None,
            staging: ctx.staging((c.vocab_size * 4) as u64),
            buffers,
            step_params,
            host: DeviceInputs::new(&g.model, batch),
            g: Arc::clone(g),
        })
    }

    fn device(&self) -> &Arc<GpuModel> {
        &self.g
    }

    fn inputs(&self) -> &DeviceInputs {
        &self.host
    }

    fn inputs_mut(&mut self) -> &mut DeviceInputs {
        &mut self.host
    }

    /// One submission: the batch's inputs written, its dispatches and, with `want_logits`,
    /// the final norm, LM head and the copy of the last token's logits.
    fn run_batch(&mut self, tokens: &[u32], want_logits: bool) -> Result<()> {
        let g = Arc::clone(&self.g);
        let c = &g.model.config;
        let (t_len, hidden, d) = (tokens.len(), c.hidden, c.head_dim);
        let ctx = &g.ctx;
        let params = self.host.prepare(&g.model, tokens);
        let write = |buf: Buf, values: &[f32]| -> Result<()> {
            let buffer = resolve(&g.weights, &self.buffers.rows, None, buf)?;
            ctx.queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(values));
            Ok(())
        };
        write(Buf::X, &self.host.rows[..t_len * hidden])?;
        write(Buf::Rope, &self.host.angles[..t_len * d])?;
        ctx.queue
            .write_buffer(&self.step_params, 0, bytemuck::cast_slice(&params));
        let end = if want_logits {
            self.dispatches.len()
        } else {
            self.head_from
        };
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for d in self.dispatches[..end].iter().flatten() {
                d.encode(&mut pass, t_len, 1);
            }
        }
        let bytes = (c.vocab_size * 4) as u64;
        if want_logits {
            let logits = resolve(&g.weights, &self.buffers.rows, None, Buf::Logits)?;
            encoder.copy_buffer_to_buffer(logits, 0, &self.staging, 0, bytes);
        }
        ctx.queue.submit([encoder.finish()]);
        // A batch without logits is not waited for: the host prepares the next one while it
        // runs (queue order keeps the buffers' writes after it).
        if want_logits {
            ctx.read_staging(&self.staging, c.vocab_size, &mut self.host.logits)?;
        }
        Ok(())
    }

    /// One submission: the stacked rows and every part's words written; the ops over every
    /// row once, each part's own ops on its rows; the logits rows read back.
    fn run_together(g: &Arc<GpuModel>, parts: &mut [SequenceChunk<'_, GpuSequence>]) -> Result<()> {
        let ctx = &g.ctx;
        let vocab = g.model.config.vocab_size;
        let mut together = g.together.lock().unwrap_or_else(|e| e.into_inner());
        if together.is_none() {
            *together = Some(g.new_together()?);
        }
        let Some(shared) = together.as_ref() else {
            unreachable!("made above")
        };
        for part in parts.iter_mut() {
            let seq = &mut *part.seq;
            if seq.together.is_none() {
                let layers = Some(&seq.buffers.layers);
                let words = &seq.step_params;
                let own = record(
                    g,
                    &shared.rows,
                    layers,
                    words,
                    words,
                    KernelOp::per_sequence,
                )?;
                seq.together = Some(own);
            }
        }
        let stacked = Stacked::new(&g.model, parts);
        let write = |buf: Buf, values: &[f32]| -> Result<()> {
            let buffer = resolve(&g.weights, &shared.rows, None, buf)?;
            ctx.queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(values));
            Ok(())
        };
        write(Buf::X, &stacked.rows)?;
        write(Buf::Rope, &stacked.angles)?;
        let words = |buffer: &wgpu::Buffer, words: &StepWords| {
            ctx.queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(words))
        };
        words(&shared.all_rows, &stacked.all_rows);
        words(&shared.head_rows, &stacked.head_rows);
        for (part, w) in parts.iter().zip(&stacked.words) {
            words(&part.seq.step_params, w);
        }
        let want_logits = stacked.heads > 0;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for (i, op) in g.plan.ops(want_logits).iter().enumerate() {
                if let Some(d) = &shared.dispatches[i] {
                    d.encode(&mut pass, stacked.total, stacked.heads);
                    continue;
                }
                let in_head = i >= g.plan.head_from;
                for part in parts.iter().filter(|p| p.want_logits || !in_head) {
                    let own = part.seq.together.as_ref().and_then(|t| t[i].as_ref());
                    let own = own.ok_or_else(|| unrecorded(op))?;
                    own.encode(&mut pass, part.tokens.len(), 1);
                }
            }
        }
        let bytes = (stacked.heads * vocab * 4) as u64;
        if want_logits {
            let logits = resolve(&g.weights, &shared.rows, None, Buf::Logits)?;
            encoder.copy_buffer_to_buffer(logits, 0, &shared.staging, 0, bytes);
        }
        ctx.queue.submit([encoder.finish()]);
        if want_logits {
            let mut logits = Vec::new();
            ctx.read_staging(&shared.staging, stacked.heads * vocab, &mut logits)?;
            Stacked::share_logits(parts, &logits, vocab);
        }
        Ok(())
    }

    fn read_layer(&self, l: usize, parts: [&mut [f32]; 3]) -> Result<()> {
        for (buffer, out) in self.buffers.layers.layer(l).into_iter().zip(parts) {
            out.copy_from_slice(&self.g.ctx.read_f32(buffer, out.len())?);
        }
        Ok(())
    }

    fn write_layer(&mut self, l: usize, parts: [&[f32]; 3]) -> Result<()> {
        let queue = &self.g.ctx.queue;
        for (buffer, values) in self.buffers.layers.layer(l).into_iter().zip(parts) {
            queue.write_buffer(buffer, 0, bytemuck::cast_slice(values));
        }
        Ok(())
    }
}

impl DeviceModel for GpuModel {
    type Sequence = GpuSequence;
    const KIND: BackendKind = BackendKind::Wgpu;
    fn model(&self) -> &Arc<Model> {
        &self.model
    }
    fn describe(&self) -> String {
        format!("wgpu: {}", self.ctx.describe())
    }
    fn weight_bytes_per_token(&self) -> u64 {
        GpuModel::weight_bytes_per_token(self)
    }
    fn copy_bandwidth(&self) -> Result<f64> {
        self.ctx.copy_bandwidth()
    }
    fn together_rows(&self) -> usize {
        self.rows_within_grid(STEP_ROWS)
    }
}

/// A sequence's own op that was not recorded (a bug, not bad input).
fn unrecorded(op: &KernelOp) -> crate::error::Error {
    crate::error::Error::Unsupported(format!("no dispatch recorded for {op:?}"))
}
