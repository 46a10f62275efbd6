//! The matrix-vector pipelines of `shaders/matvec.wgsl`: compiled once per device; a
//! [`MatvecCall`] (bind group + grid) is made once per (matrix, input, output) and encoded into
//! as many command buffers as needed.

use super::{GpuContext, GpuMatrix};
use crate::error::{Error, Result};
use crate::quant::GgmlType;

const SHADER: &str = include_str!("../../../shaders/matvec.wgsl");
/// Workgroups per grid row (WebGPU's minimum limit per dimension).
const GRID_X: u32 = 65_535;

/// One compute pipeline per weight type, sharing one bind-group layout.
pub struct MatvecPipelines {
    layout: wgpu::BindGroupLayout,
    q8_0: wgpu::ComputePipeline,
    q4_0: wgpu::ComputePipeline,
    q4_k: wgpu::ComputePipeline,
    q6_k: wgpu::ComputePipeline,
    f32: wgpu::ComputePipeline,
    f16: wgpu::ComputePipeline,
}

/// A matrix-vector product ready to encode: `y = W·x`, one dispatch per part of the matrix.
pub struct MatvecCall {
    pipeline: wgpu::ComputePipeline,
    parts: Vec<(wgpu::BindGroup, (u32, u32))>,
}

impl MatvecPipelines {
    pub fn new(ctx: &GpuContext) -> MatvecPipelines {
        let device = &ctx.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("matvec.wgsl"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
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
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("matvec"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = |name: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(name),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        MatvecPipelines {
            q8_0: pipeline("matvec_q8_0"),
            q4_0: pipeline("matvec_q4_0"),
            q4_k: pipeline("matvec_q4_k"),
            q6_k: pipeline("matvec_q6_k"),
            f32: pipeline("matvec_f32"),
            f16: pipeline("matvec_f16"),
            layout,
        }
    }

    /// Binds `m`, `x` (f32, `m.cols`) and `y` (f32, `m.rows`).
    pub fn bind(
        &self,
        ctx: &GpuContext,
        m: &GpuMatrix,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<MatvecCall> {
        let pipeline = match m.ty {
            GgmlType::Q8_0 => &self.q8_0,
            GgmlType::Q4_0 => &self.q4_0,
            GgmlType::Q4_K => &self.q4_k,
            GgmlType::Q6_K => &self.q6_k,
            GgmlType::F32 => &self.f32,
            GgmlType::F16 => &self.f16,
            ty => return Err(Error::Unsupported(format!("no wgpu matvec for {ty}"))),
        };
        let mut parts = Vec::with_capacity(m.parts.len());
        for part in &m.parts {
            let rows = u32::try_from(part.rows)
                .map_err(|_| Error::Unsupported(format!("{} rows", part.rows)))?;
            let grid = (rows.min(GRID_X), rows.div_ceil(GRID_X));
            let dims = [rows, m.cols as u32, grid.0, part.row0 as u32];
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
            pipeline: pipeline.clone(),
            parts,
        })
    }

    /// `W·x` for a host vector, in one submission (tests and one-off products).
    pub fn run(&self, ctx: &GpuContext, m: &GpuMatrix, x: &[f32]) -> Result<Vec<f32>> {
        if x.len() != m.cols {
            return Err(Error::InvalidArgument(format!(
                "matvec input of {} values for {} columns",
                x.len(),
                m.cols
            )));
        }
        let storage = wgpu::BufferUsages::STORAGE;
        let xb = ctx.upload("x", bytemuck::cast_slice(x), storage);
        let yb = ctx.upload(
            "y",
            &vec![0u8; m.rows * 4],
            storage | wgpu::BufferUsages::COPY_SRC,
        );
        let call = self.bind(ctx, m, &xb, &yb)?;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        call.encode(&mut encoder.begin_compute_pass(&Default::default()));
        ctx.queue.submit([encoder.finish()]);
        ctx.read_f32(&yb, m.rows)
    }
}

impl MatvecCall {
    /// Adds the dispatches to a compute pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass) {
        pass.set_pipeline(&self.pipeline);
        for (bind_group, grid) in &self.parts {
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(grid.0, grid.1, 1);
        }
    }
}
