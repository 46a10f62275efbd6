//! The desktop NVIDIA backend (cargo feature `cuda`): the kernels of `kernels/*.cu`, compiled
//! at run time by NVRTC for the device found, through `cudarc` with dynamic loading — so the
//! build needs no CUDA toolkit, and a machine without a driver gets a clear error (cudarc
//! panics when a library is missing: every entry point checks for it first, and what runs
//! the driver for the first time runs under `catch_unwind`).
//!
//! [`CudaDevice`] holds the context, the stream weights are uploaded on and the compiled
//! kernels; [`CudaModel`] the uploaded weights; [`CudaSequence`] one sequence's state, its own
//! stream and the step (the CUDA twin of `gpu::GpuSequence`, kernel for kernel).

mod matrix;
mod step;

pub use matrix::CudaMatrix;
pub use step::{CudaModel, CudaSequence};

use crate::backend::device_plan::Kernel;
use crate::backend::{Backend, OnDevice};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::quant::planes::PLANE_TYPES;
use crate::quant::GgmlType;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Opens `model` on CUDA device `LIGER_CUDA_DEVICE` (default 0): the `cuda` backend.
pub fn open(model: &Arc<Model>) -> Result<Arc<dyn Backend>> {
    let dev = CudaDevice::new()?;
    Ok(OnDevice::open(CudaModel::new(dev, Arc::clone(model))?))
}

/// Every kernel source, by file name.
pub const SOURCES: [(&str, &str); 2] = [
    ("matvec.cu", include_str!("../../../kernels/matvec.cu")),
    ("step.cu", include_str!("../../../kernels/step.cu")),
];

/// The entry points of `step.cu`: the step plan's kernels.
fn step_kernels() -> impl Iterator<Item = &'static str> {
    Kernel::ALL.iter().map(|k| k.entry_point())
}

/// Whether NVRTC (`libnvrtc.so*`) can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver library (`libcuda.so*`) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Runs `f`, turning a cudarc panic (a library or symbol missing) into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Err(Error::Unsupported(format!("CUDA: {what} failed: {msg}")))
    })
}

fn driver_error(what: &str) -> impl FnOnce(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Unsupported(format!("CUDA: {what}: {e}"))
}

/// Compiles one kernel source (`name` in messages) to PTX for a virtual architecture such as
/// `compute_90` — the path both the backend and CI's compile check take.
pub fn compile(name: &str, source: &str, arch: &str) -> Result<Ptx> {
    compile_with(name, source, arch, &[])
}

/// [`compile`] with preprocessor definitions (`NAME=VALUE`), the kernels' tuning knobs.
pub fn compile_with(name: &str, source: &str, arch: &str, defines: &[String]) -> Result<Ptx> {
    if !nvrtc_present() {
        return Err(Error::Unsupported(
            "NVRTC (libnvrtc.so) not found: install the CUDA toolkit's NVRTC, or `pip install \
             nvidia-cuda-nvrtc-cu12` and add its site-packages/nvidia/cuda_nvrtc/lib to \
             LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let mut options = vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()];
    options.extend(defines.iter().map(|d| format!("-D{d}")));
    let options = CompileOptions {
        options,
        name: Some(name.into()),
        ..Default::default()
    };
    guarded("NVRTC", || {
        cudarc::nvrtc::compile_ptx_with_opts(source, options).map_err(|e| match e {
            CompileError::CompileError { log, .. } => Error::Unsupported(format!(
                "NVRTC could not compile {name} for {arch}:\n{}",
                log.to_string_lossy()
            )),
            other => Error::Unsupported(format!("NVRTC on {name}: {other}")),
        })
    })
}

/// Rows each warp of `matvec_<type>` computes (`LIGER_CUDA_ROWS_PER_WARP`, 1 ..= 8; 1 unless
/// set): more rows read each unit of x once for all of them, fewer put more warps in flight.
fn rows_per_warp() -> Result<u32> {
    match std::env::var("LIGER_CUDA_ROWS_PER_WARP") {
        Err(_) => Ok(1),
        Ok(v) => match v.parse::<u32>() {
            Ok(r @ 1..=8) => Ok(r),
            _ => Err(Error::InvalidArgument(format!(
                "LIGER_CUDA_ROWS_PER_WARP={v}: expected 1 to 8"
            ))),
        },
    }
}

/// The compiled kernels of one device.
pub(crate) struct Kernels {
    /// Rows per warp of the `matvec_<type>` kernels.
    pub(crate) rows_per_warp: u32,
    /// Per weight type: (`matvec_<type>`, `matmul_<type>`).
    products: Vec<(GgmlType, CudaFunction, CudaFunction)>,
    step: Vec<(&'static str, CudaFunction)>,
    _modules: Vec<Arc<CudaModule>>,
}

impl Kernels {
    fn load(ctx: &Arc<CudaContext>, arch: &str) -> Result<Kernels> {
        let rows_per_warp = rows_per_warp()?;
        let defines = [format!("ROWS_PER_WARP={rows_per_warp}")];
        let mut modules = Vec::new();
        for (name, source) in SOURCES {
            let ptx = compile_with(name, source, arch, &defines)?;
            modules.push(
                ctx.load_module(ptx)
                    .map_err(driver_error("loading the kernels"))?,
            );
        }
        let function = |module: &Arc<CudaModule>, name: &str| {
            module
                .load_function(name)
                .map_err(|e| Error::Unsupported(format!("CUDA kernel {name}: {e}")))
        };
        let mut products = Vec::new();
        for (ty, name) in PLANE_TYPES {
            products.push((
                ty,
                function(&modules[0], &format!("matvec_{name}"))?,
                function(&modules[0], &format!("matmul_{name}"))?,
            ));
        }
        let mut step = Vec::new();
        for name in step_kernels() {
            step.push((name, function(&modules[1], name)?));
        }
        Ok(Kernels {
            rows_per_warp,
            products,
            step,
            _modules: modules,
        })
    }

    /// (`matvec`, `matmul`) of a weight type.
    pub(crate) fn product(&self, ty: GgmlType) -> Result<(&CudaFunction, &CudaFunction)> {
        self.products
            .iter()
            .find(|(t, ..)| *t == ty)
            .map(|(_, v, m)| (v, m))
            .ok_or_else(|| Error::Unsupported(format!("the CUDA backend has no {ty} kernel")))
    }

    /// A `step.cu` entry point.
    pub(crate) fn op(&self, name: &str) -> &CudaFunction {
        &self
            .step
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} is not a step kernel"))
            .1
    }
}

/// A CUDA device with its stream and kernels.
pub struct CudaDevice {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub(crate) kernels: Kernels,
}

impl CudaDevice {
    /// Device `LIGER_CUDA_DEVICE` (default 0), its kernels compiled for its architecture.
    pub fn new() -> Result<CudaDevice> {
        if !driver_present() {
            return Err(Error::Unsupported(
                "no CUDA driver found (libcuda.so): the CUDA backend needs an NVIDIA GPU and its \
                 driver"
                    .into(),
            ));
        }
        let ordinal = match std::env::var("LIGER_CUDA_DEVICE") {
            Ok(v) => v.parse::<usize>().map_err(|_| {
                Error::InvalidArgument(format!("LIGER_CUDA_DEVICE={v} is not a device number"))
            })?,
            Err(_) => 0,
        };
        guarded("device setup", || {
            let ctx = CudaContext::new(ordinal).map_err(driver_error("no usable device"))?;
            let name = ctx.name().map_err(driver_error("device name"))?;
            let cc = ctx
                .compute_capability()
                .map_err(driver_error("compute capability"))?;
            let kernels = Kernels::load(&ctx, &format!("compute_{}{}", cc.0, cc.1))?;
            // The device's stream uploads weights (synchronized when a model's upload ends); each
            // sequence has a stream of its own for its buffers and its captured graph (a graph
            // needs a stream that is not the legacy default one). No buffer is shared between
            // streams while written, so no cross-stream event tracking is needed.
            // SAFETY: weights are written on the device stream and synchronized before any
            // sequence stream reads them; every other buffer is used on one stream only, in
            // order (a sequence's on its own, a one-off product's on the device stream).
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.new_stream().map_err(driver_error("stream"))?;
            Ok(CudaDevice {
                ctx,
                stream,
                name,
                compute_capability: cc,
                kernels,
            })
        })
    }

    /// For tests: the device, or `None` with the reason printed — except where
    /// `LIGER_REQUIRE_CUDA` is set (the GPU machine), where a missing device panics.
    pub fn for_tests() -> Option<CudaDevice> {
        match CudaDevice::new() {
            Ok(dev) => {
                eprintln!("CUDA device: {}", dev.describe());
                Some(dev)
            }
            Err(e) if std::env::var_os("LIGER_REQUIRE_CUDA").is_some() => {
                panic!("LIGER_REQUIRE_CUDA is set but: {e}")
            }
            Err(e) => {
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    /// "name (sm_XY)".
    pub fn describe(&self) -> String {
        let (major, minor) = self.compute_capability;
        format!("{} (sm_{major}{minor})", self.name)
    }

    /// Bytes per second of a device-to-device copy (bytes read + written): the memory
    /// bandwidth a weight-reading kernel can hope for. 8 copies of 256 MiB after a warm-up.
    pub fn copy_bandwidth(&self) -> Result<f64> {
        let n = 64 << 20; // u32s
        let src = self
            .stream
            .alloc_zeros::<u32>(n)
            .map_err(driver_error("alloc"))?;
        let mut dst = self
            .stream
            .alloc_zeros::<u32>(n)
            .map_err(driver_error("alloc"))?;
        let mut copies = |k: usize| -> Result<f64> {
            let start = std::time::Instant::now();
            for _ in 0..k {
                self.stream
                    .memcpy_dtod(&src, &mut dst)
                    .map_err(driver_error("copy"))?;
            }
            self.stream.synchronize().map_err(driver_error("sync"))?;
            Ok(start.elapsed().as_secs_f64())
        };
        copies(1)?;
        let k = 8;
        Ok(2.0 * (4 * n * k) as f64 / copies(k)?)
    }
}

#[cfg(test)]
mod tests;
