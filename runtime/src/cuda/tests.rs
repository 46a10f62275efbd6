//! NVRTC compiles every kernel (CI, without a GPU: `LIGER_REQUIRE_NVRTC` makes a missing NVRTC
//! fail), and each product kernel and each step kernel (`backend::step_kernel_checks`) against
//! the CPU reference on random data (a CUDA device:
//! skipped with a printed reason without one, failed where `LIGER_REQUIRE_CUDA` is set).

use super::{
    compile, compile_with, driver_error, nvrtc_present, step_kernels, CudaDevice, CudaMatrix,
    SOURCES,
};
use crate::backend::device_plan::{Kernel, OpParams, THREADS};
use crate::backend::step_kernel_checks::every_step_kernel_matches_the_cpu;
use crate::quant::planes::PLANE_TYPES;
use crate::quant::{dequantize, quantize, GgmlType};
use crate::testing::{assert_products, values};
use cudarc::driver::{LaunchConfig, PushKernelArg};

#[test]
fn every_kernel_compiles_to_ptx_for_every_architecture() {
    if !nvrtc_present() {
        assert!(
            std::env::var_os("LIGER_REQUIRE_NVRTC").is_none(),
            "LIGER_REQUIRE_NVRTC is set but NVRTC cannot be loaded"
        );
        eprintln!("skipped: NVRTC (libnvrtc.so) not found");
        return;
    }
    // Turing (the oldest laptops), Ampere, Hopper.
    // Every matvec variant the tuning knob offers compiles (on Hopper).
    for rows in [2, 4, 8] {
        let ptx = compile_with(
            "matvec.cu",
            SOURCES[0].1,
            "compute_90",
            &[format!("ROWS_PER_WARP={rows}")],
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .to_src();
        assert!(
            !ptx.contains(".local"),
            "ROWS_PER_WARP={rows}: the PTX uses local memory"
        );
    }
    for arch in ["compute_75", "compute_80", "compute_90"] {
        for (name, source) in SOURCES {
            let ptx = compile(name, source, arch)
                .unwrap_or_else(|e| panic!("{e}"))
                .to_src();
            let want: Vec<String> = if name == "matvec.cu" {
                PLANE_TYPES
                    .iter()
                    .flat_map(|(_, t)| [format!("matvec_{t}"), format!("matmul_{t}")])
                    .collect()
            } else {
                step_kernels().map(|s| s.to_string()).collect()
            };
            for entry in want {
                assert!(
                    ptx.contains(&format!(".entry {entry}(")),
                    "{name} for {arch}: no entry point {entry} in the PTX"
                );
            }
            // Register arrays indexed at run time spill to local memory (slow): none may.
            assert!(
                !ptx.contains(".local"),
                "{name} for {arch}: the PTX uses local memory"
            );
        }
    }
}

#[test]
fn a_kernel_that_does_not_compile_is_an_error_with_the_log() {
    if !nvrtc_present() {
        eprintln!("skipped: NVRTC (libnvrtc.so) not found");
        return;
    }
    let err = compile(
        "broken.cu",
        "extern \"C\" __global__ void k() { int x = ; }",
        "compute_80",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("broken.cu") && err.contains("error"), "{err}");
}

#[test]
fn product_kernels_match_the_cpu_reference() {
    let Some(dev) = CudaDevice::for_tests() else {
        return;
    };
    for (rows, cols) in [(37, 256), (7, 50), (3, 2048), (70_001, 32), (5, 4096)] {
        for (i, (ty, _)) in PLANE_TYPES.into_iter().enumerate() {
            if cols % ty.block_size() != 0 {
                continue;
            }
            let w = values(10 + i as u64, rows * cols, 1.0);
            let data = quantize(ty, &w).unwrap();
            let m = CudaMatrix::upload(&dev, ty, rows, cols, &data).unwrap();
            let wd = dequantize(ty, &data).unwrap();
            // One token (`matvec`) and 11 (`matmul`: a full tile of 8 and a partial one).
            for tokens in [1, 11] {
                let x = values(99 + tokens as u64, cols * tokens, 2.0);
                let got = m.run(&dev, &x, tokens).unwrap();
                let what = format!("{ty} {rows}x{cols}, {tokens} tokens");
                assert_products(&what, &wd, &x, rows, &got);
            }
        }
    }
}

#[test]
fn unsupported_weight_types_are_refused_by_name() {
    let Some(dev) = CudaDevice::for_tests() else {
        return;
    };
    let data = quantize(GgmlType::Q5_K, &values(1, 256, 1.0)).unwrap();
    let err = CudaMatrix::upload(&dev, GgmlType::Q5_K, 1, 256, &data)
        .err()
        .expect("Q5_K has no kernel")
        .to_string();
    assert!(err.contains("q5_K") || err.contains("Q5_K"), "{err}");
}

#[test]
fn models_and_sequences_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<super::CudaModel>();
    send::<super::CudaSequence>();
}

/// One `step.cu` kernel over host buffers (the op-level checks' launcher), on the device's
/// stream.
fn run_step_kernel(
    dev: &CudaDevice,
    kernel: Kernel,
    params: &OpParams,
    st: crate::backend::device_plan::StepWords,
    blocks: usize,
    buffers: &[Vec<f32>],
) -> crate::Result<Vec<Vec<f32>>> {
    let s = &dev.stream;
    let st = s.clone_htod(&st).map_err(driver_error("upload"))?;
    let mut on_device = Vec::with_capacity(buffers.len());
    for b in buffers {
        on_device.push(s.clone_htod(b).map_err(driver_error("upload"))?);
    }
    let mut call = s.launch_builder(dev.kernels.op(kernel.entry_point()));
    call.arg(params).arg(&st);
    for b in &on_device {
        call.arg(b);
    }
    let cfg = LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the checks pass each kernel the buffers its comment in step.cu names, sized for
    // their shapes; all are used on this one stream.
    unsafe { call.launch(cfg) }.map_err(driver_error(kernel.entry_point()))?;
    on_device
        .iter()
        .map(|b| s.clone_dtoh(b).map_err(driver_error("readback")))
        .collect()
}

#[test]
fn every_step_kernel_matches_the_cpu_on_random_data() {
    let Some(dev) = CudaDevice::for_tests() else {
        return;
    };
    every_step_kernel_matches_the_cpu(&dev.describe(), &|kernel, params, st, blocks, buffers| {
        run_step_kernel(&dev, kernel, params, st, blocks, buffers)
    });
}
