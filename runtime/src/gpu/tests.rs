//! Every shader against the CPU reference on random data. Without an adapter these tests are
//! skipped with a printed reason — except in CI (`CI` or `LIGER_REQUIRE_GPU` set), where they
//! fail: CI installs lavapipe.

use super::{GpuContext, GpuMatrix, MatvecPipelines};
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
