//! The weight-product pipelines of `shaders/matvec.wgsl` (`matvec` for one token, `matmul`
//! for several): compiled once per device and weight type; a [`MatvecCall`] (bind groups +
//! grid) is made once per (matrix, input, output) and encoded into as many command buffers as
//! needed.

use super::{GpuContext, GpuMatrix};
use crate::error::{Error, Result};
use crate::quant::planes::PLANE_TYPES;
use crate::quant::GgmlType;

const SHADER: &str = include_str!("../../../shaders/matvec.wgsl");
/// Workgroups per grid row (WebGPU's minimum limit per dimension).
const GRID_X: u32 = 65_535;

/// The `matvec` and `matmul` pipelines of one weight type.
#[derive(Clone)]
struct TypePipelines {
    matvec: wgpu::ComputePipeline,
    matmul: wgpu::ComputePipeline,
}

/// The pipelines of every weight type, sharing one bind-group layout.
pub struct MatvecPipelines {
    layout: wgpu::BindGroupLayout,
    types: Vec<(GgmlType, TypePipelines)>,
}

/// A product ready to encode: `y[t] = W·x[t]` for the batch's tokens, one dispatch per part of
/// the matrix.
pub struct MatvecCall {
    pipelines: TypePipelines,
    parts: Vec<(wgpu::BindGroup, (u32, u32))>,
}

impl MatvecPipelines {
    pub fn new(ctx: &GpuContext) -> MatvecPipelines {
        let device = &ctx.device;
        let entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let read = wgpu::BufferBindingType::Storage { read_only: true };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("matvec"),
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, read),
                entry(2, read),
                entry(3, read),
                entry(4, wgpu::BufferBindingType::Storage { read_only: false }),
                entry(5, wgpu::BufferBindingType::Uniform),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("matvec"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let types = PLANE_TYPES
            .iter()
            .map(|&(ty, name)| {
                let source = format!(
                    "{SHADER}\nfn load32(row: u32, unit: u32) -> array<f32, 32> {{ \
                     return load32_{name}(row, unit); }}\n"
                );
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                });
                let pipeline = |entry: &str| {
                    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(name),
                        layout: Some(&pipeline_layout),
                        module: &module,
                        entry_point: Some(entry),
                        compilation_options: Default::default(),
                        cache: None,
                    })
                };
                let p = TypePipelines {
                    matvec: pipeline("matvec"),
                    matmul: pipeline("matmul"),
                };
                (ty, p)
            })
            .collect();
        MatvecPipelines { layout, types }
    }

    /// Binds `m`, `x` (f32, [T, `m.cols`]) and `y` (f32, [T, `m.rows`]); `batch` is the step
    /// uniform whose fourth word is T.
    pub fn bind(
        &self,
        ctx: &GpuContext,
        m: &GpuMatrix,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        batch: &wgpu::Buffer,
    ) -> Result<MatvecCall> {
        let Some((_, pipelines)) = self.types.iter().find(|(ty, _)| *ty == m.ty) else {
            return Err(Error::Unsupported(format!(
                "the wgpu backend has no {} kernel",
                m.ty
            )));
        };
        let mut parts = Vec::with_capacity(m.parts.len());
        for part in &m.parts {
            let rows = u32::try_from(part.rows)
                .map_err(|_| Error::Unsupported(format!("{} rows", part.rows)))?;
            let grid = (rows.min(GRID_X), rows.div_ceil(GRID_X));
            let dims = [
                rows,
                m.cols as u32,
                grid.0,
                part.row0 as u32,
                m.rows as u32,
                0,
                0,
                0,
            ];
            let uniform = ctx.upload(
                "matvec dims",
                bytemuck::cast_slice(&dims),
                wgpu::BufferUsages::UNIFORM,
            );
            let entries = [
                uniform.as_entire_binding(),
                part.quants.as_entire_binding(),
                part.scales.as_entire_binding(),
                x.as_entire_binding(),
                y.as_entire_binding(),
                batch.as_entire_binding(),
            ];
            let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("matvec"),
                layout: &self.layout,
                entries: &entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, resource)| wgpu::BindGroupEntry {
                        binding: i as u32,
                        resource,
                    })
                    .collect::<Vec<_>>(),
            });
            parts.push((bind_group, grid));
        }
        Ok(MatvecCall {
            pipelines: pipelines.clone(),
            parts,
        })
    }

    /// `W·x[t]` for `tokens` host rows `x` ([tokens, cols]), in one submission (tests and
    /// one-off products); returns [tokens, rows].
    pub fn run(
        &self,
        ctx: &GpuContext,
        m: &GpuMatrix,
        x: &[f32],
        tokens: usize,
    ) -> Result<Vec<f32>> {
        if tokens == 0 || x.len() != m.cols * tokens {
            return Err(Error::InvalidArgument(format!(
                "product input of {} values for {tokens} tokens of {} columns",
                x.len(),
                m.cols
            )));
        }
        let storage = wgpu::BufferUsages::STORAGE;
        let xb = ctx.upload("x", bytemuck::cast_slice(x), storage);
        let yb = ctx.upload(
            "y",
            &vec![0u8; m.rows * tokens * 4],
            storage | wgpu::BufferUsages::COPY_SRC,
        );
        let batch = ctx.upload(
            "batch",
            bytemuck::cast_slice(&[0u32, 0, 0, tokens as u32]),
            wgpu::BufferUsages::UNIFORM,
        );
        let call = self.bind(ctx, m, &xb, &yb, &batch)?;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        call.encode(&mut encoder.begin_compute_pass(&Default::default()), tokens);
        ctx.queue.submit([encoder.finish()]);
        ctx.read_f32(&yb, m.rows * tokens)
    }
}

impl MatvecCall {
    /// Adds the dispatches to a compute pass, for a batch of `tokens` (the value the bound
    /// step uniform holds).
    pub fn encode(&self, pass: &mut wgpu::ComputePass, tokens: usize) {
        pass.set_pipeline(if tokens == 1 {
            &self.pipelines.matvec
        } else {
            &self.pipelines.matmul
        });
        for (bind_group, grid) in &self.parts {
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(grid.0, grid.1, 1);
        }
    }
}
