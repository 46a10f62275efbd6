//! Every shader against the CPU reference on random data (the matvec products here, the step
//! kernels through `backend::step_kernel_checks`). Without an adapter these tests are
//! skipped with a printed reason — except in CI (`CI` or `LIGER_REQUIRE_GPU` set), where they
//! fail: CI installs lavapipe.

use super::step::{bind_all, step_pipelines};
use super::{GpuContext, GpuMatrix, MatvecPipelines};
use crate::backend::device_plan::{Kernel, OpParams};
use crate::backend::step_kernel_checks::every_step_kernel_matches_the_cpu;
use crate::quant::{dequantize, quantize, GgmlType};
use crate::testing::{assert_products, values};

#[test]
fn matvec_shaders_match_the_cpu_reference() {
    let Some(mut ctx) = GpuContext::for_tests() else {
        return;
    };
    let pipelines = MatvecPipelines::new(&ctx);
    let adapter_limit = ctx.max_binding_bytes;
    // A row count above 65535 takes the grid's second dimension; a binding limit of 4 KiB
    // splits every matrix into parts of whole rows (as a tensor over the adapter's limit is).
    for (rows, cols, limit) in [
        (37, 256, adapter_limit),
        (7, 50, adapter_limit), // float types: a row that is not whole 32-weight units
        (3, 2048, adapter_limit),
        (65_600, 32, adapter_limit),
        (37, 256, 4096),
        (5, 2048, 16_384),
    ] {
        ctx.max_binding_bytes = limit;
        for (i, ty) in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ]
        .into_iter()
        .enumerate()
        {
            if cols % ty.block_size() != 0 {
                continue;
            }
            let w = values(10 + i as u64, rows * cols, 1.0);
            let data = quantize(ty, &w).unwrap();
            let m = GpuMatrix::upload(&ctx, ty, rows, cols, &data).unwrap();
            if data.len() as u64 > limit {
                assert!(m.parts.len() > 1, "{ty} {rows}x{cols} was not split");
            }
            let wd = dequantize(ty, &data).unwrap();
            // One token (`matvec`) and 11 (`matmul`: a full tile of 8 and a partial one).
            for tokens in [1, 11] {
                let x = values(99 + tokens as u64, cols * tokens, 2.0);
                let got = pipelines.run(&ctx, &m, &x, tokens).unwrap();
                let what = format!("{ty} {rows}x{cols}, {tokens} tokens");
                assert_products(&what, &wd, &x, rows, &got);
            }
        }
    }
}

/// One `step.wgsl` entry point over host buffers (the op-level checks' launcher).
fn run_step_kernel(
    ctx: &GpuContext,
    kernel: Kernel,
    params: &OpParams,
    st: crate::backend::device_plan::StepWords,
    blocks: usize,
    buffers: &[Vec<f32>],
) -> crate::Result<Vec<Vec<f32>>> {
    let index = kernel.index();
    let pipeline = &step_pipelines(ctx)[index];
    let uniform = wgpu::BufferUsages::UNIFORM;
    let mut bound = vec![
        ctx.upload("op", bytemuck::bytes_of(params), uniform),
        ctx.upload("st", bytemuck::cast_slice(&st), uniform),
    ];
    let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    for b in buffers {
        bound.push(ctx.upload("b", bytemuck::cast_slice(b), storage));
    }
    let bind_group = bind_all(ctx, pipeline, &bound.iter().collect::<Vec<_>>());
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(blocks as u32, 1, 1);
    }
    ctx.queue.submit([encoder.finish()]);
    buffers
        .iter()
        .zip(&bound[2..])
        .map(|(b, gpu)| ctx.read_f32(gpu, b.len()))
        .collect()
}

#[test]
fn every_step_shader_matches_the_cpu_on_random_data() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    every_step_kernel_matches_the_cpu(&ctx.describe(), &|kernel, params, st, blocks, buffers| {
        run_step_kernel(&ctx, kernel, params, st, blocks, buffers)
    });
}
