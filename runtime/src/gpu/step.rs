//! The model step on the GPU through wgpu: a [`GpuModel`] holds the uploaded weights, the
//! compiled pipelines and the step plan (`model::device_plan`, shared with CUDA); a
//! [`GpuSequence`] holds one sequence's buffers and the plan recorded once as dispatches over
//! them, so a step over a batch of T tokens is: write their embedding rows, RoPE angles, the
//! position and T; encode the dispatches into one compute pass; read the last token's logits
//! back. Decode is T = 1; a prompt runs in batches of up to [`DeviceSequence::batch`] tokens
//! (matrix-matrix products, the recurrence token by token inside one dispatch per layer), one
//! submission each, which bounds every dispatch's length.

use super::matvec::MatvecCall;
use super::{GpuContext, GpuMatrix, MatvecPipelines};
use crate::backend::{BackendKind, DeviceModel, StepOnDevice};
use crate::error::Result;
use crate::model::device_plan::{
    resolve, Buf, DeviceWeights, Grid, Kernel, PlanOp, SequenceBuffers, StepPlan, THREADS,
};
use crate::model::{DeviceInputs, Model};
use std::sync::Arc;

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
    plan: StepPlan,
}

fn floats(ctx: &GpuContext, label: &str, v: &[f32]) -> wgpu::Buffer {
    ctx.upload(label, bytemuck::cast_slice(v), wgpu::BufferUsages::STORAGE)
}

impl GpuModel {
    /// Uploads `model` to the device of `ctx`.
    pub fn new(ctx: GpuContext, model: Arc<Model>) -> Result<GpuModel> {
        let plan = StepPlan::new(&model)?;
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
    /// A weight product over the batch; `last_only` ones (the LM head) see one row.
    Matvec { call: MatvecCall, last_only: bool },
    Op {
        pipeline: wgpu::ComputePipeline,
        bind_group: wgpu::BindGroup,
        grid: Grid,
    },
}

/// One sequence on the GPU.
pub struct GpuSequence {
    g: Arc<GpuModel>,
    buffers: SequenceBuffers<wgpu::Buffer>,
    /// [pos, window_len, 0, T] of the batch being run (`Step` of step.wgsl).
    step_params: wgpu::Buffer,
    /// Host-mappable copy of the logits.
    staging: wgpu::Buffer,
    /// The plan's ops, recorded once (its head from `head_from`).
    dispatches: Vec<Dispatch>,
    head_from: usize,
    host: DeviceInputs,
}

impl GpuSequence {
    /// Records the plan over this sequence's buffers: a bind group per op (its `Op` uniform,
    /// the step words, its buffers as b2..), a matvec call per product.
    fn record(
        g: &GpuModel,
        buffers: &SequenceBuffers<wgpu::Buffer>,
        step_params: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let ctx = &g.ctx;
        let mut list = Vec::with_capacity(g.plan.ops.len());
        for op in &g.plan.ops {
            let buffer = |buf: Buf| resolve(&g.weights, buffers, buf);
            list.push(match op {
                PlanOp::Product {
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
                        step_params,
                    )?,
                    last_only: *last_row_only,
                },
                PlanOp::Kernel {
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
                    let mut resolved = vec![&uniform, step_params];
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
            });
        }
        Ok(list)
    }
}

impl StepOnDevice for GpuSequence {
    type Device = GpuModel;

    /// Prompts run in batches of up to `batch` tokens (lowered where a dispatch would exceed
    /// the adapter's grid).
    fn with_batch(g: &Arc<GpuModel>, batch: usize) -> Result<GpuSequence> {
        let ctx = &g.ctx;
        let c = &g.model.config;
        let widest = [c.hidden, c.ffn, c.n_heads * c.head_dim]
            .into_iter()
            .max()
            .unwrap_or(1);
        let batch = batch
            .min(MAX_GROUPS * THREADS / widest)
            .min(MAX_GROUPS / c.n_heads.max(1))
            .max(1);
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let buffers = SequenceBuffers::new(c, batch, |label, n| {
            Ok(ctx.upload(label, &vec![0u8; n * 4], usage))
        })?;
        let step_params = ctx.upload("step", &[0u8; 16], wgpu::BufferUsages::UNIFORM);
        Ok(GpuSequence {
            dispatches: Self::record(g, &buffers, &step_params)?,
            head_from: g.plan.head_from,
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
            let buffer = resolve(&g.weights, &self.buffers, buf)?;
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
            for d in &self.dispatches[..end] {
                match d {
                    Dispatch::Matvec { call, last_only } => {
                        call.encode(&mut pass, if *last_only { 1 } else { t_len })
                    }
                    Dispatch::Op {
                        pipeline,
                        bind_group,
                        grid,
                    } => {
                        pass.set_pipeline(pipeline);
                        pass.set_bind_group(0, bind_group, &[]);
                        pass.dispatch_workgroups(grid.blocks(t_len) as u32, 1, 1);
                    }
                }
            }
        }
        let bytes = (c.vocab_size * 4) as u64;
        if want_logits {
            let logits = resolve(&g.weights, &self.buffers, Buf::Logits)?;
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

    fn read_layer(&self, l: usize, parts: [&mut [f32]; 3]) -> Result<()> {
        for (buffer, out) in self.buffers.layer(l).into_iter().zip(parts) {
            out.copy_from_slice(&self.g.ctx.read_f32(buffer, out.len())?);
        }
        Ok(())
    }

    fn write_layer(&mut self, l: usize, parts: [&[f32]; 3]) -> Result<()> {
        let queue = &self.g.ctx.queue;
        for (buffer, values) in self.buffers.layer(l).into_iter().zip(parts) {
            queue.write_buffer(buffer, 0, bytemuck::cast_slice(values));
        }
        Ok(())
    }
}

impl DeviceModel for GpuModel {
    type Step = GpuSequence;
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
}
