//! The model step on the GPU: a [`GpuModel`] holds the uploaded weights and the compiled
//! pipelines; a [`GpuSequence`] holds one sequence's state, window and activations on the GPU
//! and a dispatch list built once, so a step over a batch of T tokens is: write their embedding
//! rows, RoPE angles, the position and T; encode the list into one compute pass; read the last
//! token's logits back. Decode is T = 1; a prompt runs in batches of up to
//! [`GpuSequence::batch`] tokens (matrix-matrix products, the recurrence token by token inside
//! one dispatch per layer), one submission each, which bounds every dispatch's length.
//!
//! Every variant (GLA, HGRN2, GSA) and both decode semantics (hf-compat: [`GpuSequence::
//! clear_window`] at the start of each call); weights of type F32, F16, BF16, Q8_0, Q4_0, Q4_K or
//! Q6_K.

use super::matvec::MatvecCall;
use super::{GpuContext, GpuMatrix, MatvecPipelines};
use crate::config::Variant;
use crate::error::{Error, Result};
use crate::model::{DeviceInputs, Model, SequenceState};
use std::sync::Arc;

const SHADER: &str = include_str!("../../../shaders/step.wgsl");
/// Threads per workgroup of `step.wgsl` (the largest head dim and window it handles).
const WG: u32 = 128;
/// Tokens per prefill step unless asked otherwise.
pub const DEFAULT_BATCH: usize = 64;
/// Workgroups per dispatch dimension that every adapter allows.
const MAX_GROUPS: usize = 65_535;

/// The pipelines of `step.wgsl`, one per entry point (layouts derived from the shader).
struct OpPipelines {
    rms_norm: wgpu::ComputePipeline,
    add: wgpu::ComputePipeline,
    swiglu: wgpu::ComputePipeline,
    mix: wgpu::ComputePipeline,
    rope: wgpu::ComputePipeline,
    recurrence: wgpu::ComputePipeline,
    recurrence_gsa: wgpu::ComputePipeline,
    swa: wgpu::ComputePipeline,
    ring_write: wgpu::ComputePipeline,
}

impl OpPipelines {
    fn new(ctx: &GpuContext) -> OpPipelines {
        let module = ctx
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("step.wgsl"),
                source: wgpu::ShaderSource::Wgsl(SHADER.into()),
            });
        let p = |name: &str| {
            ctx.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(name),
                    layout: None,
                    module: &module,
                    entry_point: Some(name),
                    compilation_options: Default::default(),
                    cache: None,
                })
        };
        OpPipelines {
            rms_norm: p("rms_norm"),
            add: p("add"),
            swiglu: p("swiglu"),
            mix: p("mix"),
            rope: p("rope"),
            recurrence: p("recurrence"),
            recurrence_gsa: p("recurrence_gsa"),
            swa: p("swa"),
            ring_write: p("ring_write"),
        }
    }
}

struct GpuLayer {
    attn_norm: wgpu::Buffer,
    ffn_norm: wgpu::Buffer,
    wq: GpuMatrix,
    wk: GpuMatrix,
    wv: GpuMatrix,
    bias: [Option<wgpu::Buffer>; 3],
    wo: GpuMatrix,
    w_gate: GpuMatrix,
    w_up: GpuMatrix,
    w_down: GpuMatrix,
}

/// A model's weights on the GPU (the token embedding stays in the mapped file: one row is
/// uploaded per step).
pub struct GpuModel {
    pub model: Arc<Model>,
    pub ctx: GpuContext,
    matvec: MatvecPipelines,
    ops: OpPipelines,
    layers: Vec<GpuLayer>,
    output_norm: wgpu::Buffer,
    output: GpuMatrix,
}

fn floats(ctx: &GpuContext, label: &str, v: &[f32]) -> wgpu::Buffer {
    ctx.upload(label, bytemuck::cast_slice(v), wgpu::BufferUsages::STORAGE)
}

impl GpuModel {
    /// Uploads `model` to the device of `ctx`.
    pub fn new(ctx: GpuContext, model: Arc<Model>) -> Result<GpuModel> {
        let c = &model.config;
        if c.head_dim as u32 > WG || c.window >= WG || c.gsa_slots as u32 > WG {
            return Err(Error::Unsupported(format!(
                "the wgpu step handles head dims, windows and GSA slots < {WG} (model: {}, {}, {})",
                c.head_dim, c.window, c.gsa_slots
            )));
        }
        let upload = |m: &crate::model::MatrixRef| {
            let w = model.matrix(m);
            GpuMatrix::upload(&ctx, w.ty, w.rows, w.cols, w.data)
        };
        let w = &model.weights;
        let mut layers = Vec::with_capacity(w.layers.len());
        for lw in &w.layers {
            let bias =
                [&lw.bq, &lw.bk, &lw.bv].map(|b| b.as_ref().map(|b| floats(&ctx, "bias", b)));
            layers.push(GpuLayer {
                attn_norm: floats(&ctx, "attn_norm", &lw.attn_norm),
                ffn_norm: floats(&ctx, "ffn_norm", &lw.ffn_norm),
                wq: upload(&lw.wq)?,
                wk: upload(&lw.wk)?,
                wv: upload(&lw.wv)?,
                bias,
                wo: upload(&lw.wo)?,
                w_gate: upload(&lw.w_gate)?,
                w_up: upload(&lw.w_up)?,
                w_down: upload(&lw.w_down)?,
            });
        }
        Ok(GpuModel {
            output_norm: floats(&ctx, "output_norm", &w.output_norm),
            output: upload(&w.output)?,
            matvec: MatvecPipelines::new(&ctx),
            ops: OpPipelines::new(&ctx),
            layers,
            model,
            ctx,
        })
    }
}

impl GpuModel {
    /// Bytes of weight matrices one decode step reads (every layer's and the LM head).
    pub fn weight_bytes_per_token(&self) -> u64 {
        let m = |m: &GpuMatrix| m.bytes();
        self.layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
                    .into_iter()
                    .map(m)
                    .sum::<u64>()
            })
            .sum::<u64>()
            + m(&self.output)
    }
}

/// Workgroups of a dispatch, for a batch of T tokens.
#[derive(Clone, Copy)]
enum Groups {
    Fixed(usize),
    /// n per token.
    PerToken(usize),
    /// One thread per element of n per token.
    Elements(usize),
}

impl Groups {
    fn count(self, tokens: usize) -> u32 {
        (match self {
            Groups::Fixed(n) => n,
            Groups::PerToken(n) => n * tokens,
            Groups::Elements(n) => (n * tokens).div_ceil(WG as usize),
        }) as u32
    }
}

enum Dispatch {
    /// A weight product over the batch; `last_only` ones (the LM head) see one row.
    Matvec { call: MatvecCall, last_only: bool },
    Op {
        pipeline: wgpu::ComputePipeline,
        bind_group: wgpu::BindGroup,
        groups: Groups,
    },
}

/// Activations of a batch of tokens on the GPU: [T, n] each (the logits: the last token's).
struct Activations {
    x: wgpu::Buffer,
    h: wgpu::Buffer,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    o_rec: wgpu::Buffer,
    y: wgpu::Buffer,
    proj: wgpu::Buffer,
    gate: wgpu::Buffer,
    up: wgpu::Buffer,
    logits: wgpu::Buffer,
    /// Per token: [cos (d/2), sin (d/2)] of its position.
    rope: wgpu::Buffer,
}

/// One sequence on the GPU (window semantics).
pub struct GpuSequence {
    g: Arc<GpuModel>,
    a: Activations,
    step_params: wgpu::Buffer,
    /// Host-mappable copy of the logits.
    staging: wgpu::Buffer,
    /// Per layer: recurrent state [Hkv, d, d]; window keys and values [W, Hkv·d].
    states: Vec<wgpu::Buffer>,
    rings: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    dispatches: Vec<Dispatch>,
    /// Dispatches from here on (final norm, LM head) run only when logits are wanted.
    head_from: usize,
    host: DeviceInputs,
}

/// The `Op` uniform of `step.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct OpParams {
    n: u32,
    d: u32,
    group: u32,
    flag: u32,
    f0: f32,
    f1: f32,
    window: u32,
    slots: u32,
}

impl OpParams {
    fn n(n: usize) -> OpParams {
        OpParams {
            n: n as u32,
            ..bytemuck::Zeroable::zeroed()
        }
    }
}

impl GpuSequence {
    /// A sequence whose prompts run in batches of [`DEFAULT_BATCH`] tokens.
    pub fn new(g: &Arc<GpuModel>) -> Result<GpuSequence> {
        Self::with_batch(g, DEFAULT_BATCH)
    }

    /// A sequence whose prompts run in batches of up to `batch` tokens (lowered where a
    /// dispatch would exceed the adapter's grid).
    pub fn with_batch(g: &Arc<GpuModel>, batch: usize) -> Result<GpuSequence> {
        let ctx = &g.ctx;
        let c = &g.model.config;
        let (hd, kv, d) = (
            c.n_heads * c.head_dim,
            c.n_kv_heads * c.head_dim,
            c.head_dim,
        );
        let widest = [c.hidden, c.ffn, hd].into_iter().max().unwrap_or(1);
        let batch = batch
            .min(MAX_GROUPS * WG as usize / widest)
            .min(MAX_GROUPS / c.n_heads.max(1))
            .max(1);
        let buf = |label: &str, n: usize| {
            ctx.upload(
                label,
                &vec![0u8; n * 4],
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            )
        };
        let a = Activations {
            x: buf("x", batch * c.hidden),
            h: buf("h", batch * c.hidden),
            q: buf("q", batch * hd),
            k: buf("k", batch * kv),
            v: buf("v", batch * kv),
            o_rec: buf("o_rec", batch * hd),
            y: buf("y", batch * hd),
            proj: buf("proj", batch * c.hidden),
            gate: buf("gate", batch * c.ffn),
            up: buf("up", batch * c.ffn),
            logits: buf("logits", c.vocab_size),
            rope: buf("rope", batch * d),
        };
        let step_params = ctx.upload("step", &[0u8; 16], wgpu::BufferUsages::UNIFORM);
        let w = c.window as usize;
        let per_layer_state = c.n_kv_heads
            * match c.variant {
                Variant::Gsa => 2 * d * c.gsa_slots,
                _ => d * d,
            };
        let states: Vec<_> = (0..c.n_layers)
            .map(|_| buf("state", per_layer_state))
            .collect();
        let rings: Vec<_> = (0..c.n_layers)
            .map(|_| (buf("ring_k", w * kv), buf("ring_v", w * kv)))
            .collect();

        let mut list = Vec::new();
        let op = |pipeline: &wgpu::ComputePipeline,
                  params: OpParams,
                  buffers: &[&wgpu::Buffer],
                  groups: Groups|
         -> Dispatch {
            let uniform = ctx.upload(
                "op",
                bytemuck::bytes_of(&params),
                wgpu::BufferUsages::UNIFORM,
            );
            let mut entries = vec![
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniform.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: step_params.as_entire_binding(),
                },
            ];
            for (i, b) in buffers.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: 2 + i as u32,
                    resource: b.as_entire_binding(),
                });
            }
            let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            Dispatch::Op {
                pipeline: pipeline.clone(),
                bind_group,
                groups,
            }
        };
        let elementwise = Groups::Elements;
        let ops = &g.ops;
        // Every row of x, or (last) only the last one into h's first row.
        let norm = |x: &wgpu::Buffer, weight: &wgpu::Buffer, out: &wgpu::Buffer, last: bool| {
            let mut p = OpParams::n(c.hidden);
            p.f0 = c.rms_eps;
            p.flag = u32::from(last);
            let groups = if last {
                Groups::Fixed(1)
            } else {
                Groups::PerToken(1)
            };
            op(&ops.rms_norm, p, &[x, weight, out], groups)
        };
        let matvec = |m: &GpuMatrix, x: &wgpu::Buffer, y: &wgpu::Buffer| -> Result<Dispatch> {
            Ok(Dispatch::Matvec {
                call: g.matvec.bind(ctx, m, x, y, &step_params)?,
                last_only: false,
            })
        };
        // x += proj
        let add_residual = || {
            op(
                &ops.add,
                OpParams::n(c.hidden),
                &[&a.x, &a.proj],
                elementwise(c.hidden),
            )
        };
        for (l, lw) in g.layers.iter().enumerate() {
            list.push(norm(&a.x, &lw.attn_norm, &a.h, false));
            for (m, out, bias) in [
                (&lw.wq, &a.q, &lw.bias[0]),
                (&lw.wk, &a.k, &lw.bias[1]),
                (&lw.wv, &a.v, &lw.bias[2]),
            ] {
                list.push(matvec(m, &a.h, out)?);
                if let Some(b) = bias {
                    let mut p = OpParams::n(m.rows);
                    p.flag = 1;
                    list.push(op(&ops.add, p, &[out, b], elementwise(m.rows)));
                }
            }
            let heads = OpParams {
                n: c.n_kv_heads as u32,
                d: d as u32,
                group: (c.n_heads / c.n_kv_heads) as u32,
                flag: u32::from(c.variant == Variant::Hgrn2),
                f0: c.gate_normalizer,
                f1: 0.0,
                window: c.window,
                slots: c.gsa_slots as u32,
            };
            let recurrence = match c.variant {
                Variant::Gsa => &ops.recurrence_gsa,
                _ => &ops.recurrence,
            };
            list.push(op(
                recurrence,
                heads,
                &[&states[l], &a.k, &a.v, &a.q, &a.o_rec],
                Groups::Fixed(c.n_kv_heads),
            ));
            let rope_of = |n_heads: usize| OpParams {
                n: n_heads as u32,
                d: d as u32,
                ..OpParams::n(0)
            };
            list.push(op(
                &ops.rope,
                rope_of(c.n_heads),
                &[&a.q, &a.rope],
                elementwise(c.n_heads * d / 2),
            ));
            list.push(op(
                &ops.rope,
                rope_of(c.n_kv_heads),
                &[&a.k, &a.rope],
                elementwise(kv / 2),
            ));
            let (ring_k, ring_v) = &rings[l];
            let swa = OpParams {
                f0: 1.0 / (d as f32).sqrt(),
                ..heads
            };
            list.push(op(
                &ops.swa,
                swa,
                &[&a.q, &a.k, &a.v, ring_k, ring_v, &a.y],
                Groups::PerToken(c.n_heads),
            ));
            let ring = OpParams {
                window: c.window,
                ..OpParams::n(kv)
            };
            list.push(op(
                &ops.ring_write,
                ring,
                &[&a.k, &a.v, ring_k, ring_v],
                elementwise(kv),
            ));
            let mut mix = OpParams::n(hd);
            mix.f0 = c.mix_swa;
            list.push(op(&ops.mix, mix, &[&a.y, &a.o_rec], elementwise(hd)));
            list.push(matvec(&lw.wo, &a.y, &a.proj)?);
            list.push(add_residual());
            list.push(norm(&a.x, &lw.ffn_norm, &a.h, false));
            list.push(matvec(&lw.w_gate, &a.h, &a.gate)?);
            list.push(matvec(&lw.w_up, &a.h, &a.up)?);
            list.push(op(
                &ops.swiglu,
                OpParams::n(c.ffn),
                &[&a.gate, &a.up],
                elementwise(c.ffn),
            ));
            list.push(matvec(&lw.w_down, &a.gate, &a.proj)?);
            list.push(add_residual());
        }
        let head_from = list.len();
        list.push(norm(&a.x, &g.output_norm, &a.h, true));
        list.push(Dispatch::Matvec {
            call: g
                .matvec
                .bind(ctx, &g.output, &a.h, &a.logits, &step_params)?,
            last_only: true,
        });
        Ok(GpuSequence {
            staging: ctx.staging((c.vocab_size * 4) as u64),
            states,
            rings,
            g: Arc::clone(g),
            a,
            step_params,
            dispatches: list,
            head_from,
            host: DeviceInputs::new(&g.model, batch),
        })
    }

    /// The model this sequence runs.
    pub fn model(&self) -> &Arc<GpuModel> {
        &self.g
    }

    /// Tokens per prefill step.
    pub fn batch(&self) -> usize {
        self.host.batch
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

    /// The sequence's state read back, in the CPU's layout (the same tensors in the same
    /// order): saved with [`crate::session::encode_state`], it loads on any backend.
    pub fn state(&self) -> Result<SequenceState> {
        let ctx = &self.g.ctx;
        self.host
            .read_state(&self.g.model, |l, recurrent, keys, values| {
                let (k, v) = &self.rings[l];
                for (buffer, out) in [(&self.states[l], recurrent), (k, keys), (v, values)] {
                    out.copy_from_slice(&ctx.read_f32(buffer, out.len())?);
                }
                Ok(())
            })
    }

    /// Replaces the sequence's state with `state` (from [`Self::state`], a CPU session or a
    /// loaded blob of this model).
    pub fn set_state(&mut self, state: &SequenceState) -> Result<()> {
        let (ctx, states, rings) = (&self.g.ctx, &self.states, &self.rings);
        self.host
            .write_state(&self.g.model, state, |l, recurrent, keys, values| {
                let (k, v) = &rings[l];
                for (buffer, values) in [(&states[l], recurrent), (k, keys), (v, values)] {
                    ctx.queue
                        .write_buffer(buffer, 0, bytemuck::cast_slice(values));
                }
                Ok(())
            })
    }

    /// One submission for a batch of `tokens` (1 ..= batch, in the vocabulary): its dispatches
    /// and, with `want_logits`, the final norm, LM head and the copy of the last token's logits.
    fn run(&mut self, tokens: &[u32], want_logits: bool) -> Result<()> {
        let g = Arc::clone(&self.g);
        let c = &g.model.config;
        let (t_len, hidden, d) = (tokens.len(), c.hidden, c.head_dim);
        let ctx = &self.g.ctx;
        let params = self.host.prepare(&g.model, tokens);
        let write = |buffer: &wgpu::Buffer, values: &[f32]| {
            ctx.queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(values))
        };
        write(&self.a.x, &self.host.rows[..t_len * hidden]);
        write(&self.a.rope, &self.host.angles[..t_len * d]);
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
                        groups,
                    } => {
                        pass.set_pipeline(pipeline);
                        pass.set_bind_group(0, bind_group, &[]);
                        pass.dispatch_workgroups(groups.count(t_len), 1, 1);
                    }
                }
            }
        }
        let bytes = (c.vocab_size * 4) as u64;
        if want_logits {
            encoder.copy_buffer_to_buffer(&self.a.logits, 0, &self.staging, 0, bytes);
        }
        ctx.queue.submit([encoder.finish()]);
        self.host.advance(&g.model, t_len);
        // A batch without logits is not waited for: the host prepares the next one while it
        // runs (queue order keeps the buffers' writes after it).
        if want_logits {
            ctx.read_staging(&self.staging, c.vocab_size, &mut self.host.logits)?;
        }
        Ok(())
    }
}
