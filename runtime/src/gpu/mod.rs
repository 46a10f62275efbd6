//! The portable GPU backend (cargo feature `wgpu`): WGSL compute shaders (`shaders/*.wgsl`) on
//! Vulkan, Metal or DX12 through `wgpu`: the device, weights uploaded in an aligned layout, the
//! product shaders, and the model step of every variant (decode, prefill batches, steps over
//! several sequences) — each tested against the CPU and the reference.

mod matvec;
mod step;
mod weights;

pub use matvec::MatvecPipelines;
pub use step::{GpuModel, GpuSequence};
pub use weights::GpuMatrix;

use crate::backend::{Backend, OnDevice};
use crate::error::{Error, Result};
use crate::model::Model;
use std::sync::Arc;

/// Opens `model` on the first GPU adapter wgpu finds (see [`GpuContext::new`]): the `wgpu`
/// backend.
pub fn open(model: &Arc<Model>) -> Result<Arc<dyn Backend>> {
    let ctx = GpuContext::new()?;
    Ok(OnDevice::open(GpuModel::new(ctx, Arc::clone(model))?))
}

/// A GPU device and what it offers.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The adapter has (and the device enabled) `SHADER_F16` / `SUBGROUP`.
    pub shader_f16: bool,
    pub subgroups: bool,
    /// Largest storage buffer one binding may view (tensors larger than this are split).
    pub max_binding_bytes: u64,
}

impl GpuContext {
    /// The first high-performance adapter wgpu finds (`WGPU_BACKEND` / `WGPU_ADAPTER_NAME`
    /// narrow the choice), with its optional features enabled when present.
    pub fn new() -> Result<GpuContext> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| {
            Error::Unsupported(format!(
                "no GPU adapter found ({e}); a Vulkan, Metal or DX12 driver is needed \
                 (on Linux without a GPU: mesa-vulkan-drivers gives the lavapipe software driver)"
            ))
        })?;
        let optional = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
        let features = adapter.features() & optional;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("liger"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::Unsupported(format!("GPU device request failed: {e}")))?;
        Ok(GpuContext {
            device,
            queue,
            info: adapter.get_info(),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            max_binding_bytes: limits.max_storage_buffer_binding_size as u64,
        })
    }

    /// For tests: the context, or `None` with the reason printed — except where `CI` or
    /// `LIGER_REQUIRE_GPU` is set (CI installs lavapipe), where a missing adapter panics.
    pub fn for_tests() -> Option<GpuContext> {
        match GpuContext::new() {
            Ok(ctx) => {
                eprintln!("wgpu adapter: {}", ctx.describe());
                Some(ctx)
            }
            Err(e)
                if std::env::var_os("CI").is_some()
                    || std::env::var_os("LIGER_REQUIRE_GPU").is_some() =>
            {
                panic!("CI needs a wgpu adapter (lavapipe): {e}")
            }
            Err(e) => {
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    /// "name (backend, device type)".
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// A host-mappable buffer of `bytes` to copy results into.
    pub fn staging(&self, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Copies a storage buffer back to the host as f32 (tests, one-off products).
    pub fn read_f32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let bytes = (len * 4) as u64;
        let staging = self.staging(bytes);
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        let mut out = Vec::new();
        self.read_staging(&staging, len, &mut out)?;
        Ok(out)
    }

    /// Waits for the submitted work, then reads `len` f32 of `staging` (filled by a copy in
    /// that work) into `out`.
    pub fn read_staging(
        &self,
        staging: &wgpu::Buffer,
        len: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let slice = staging.slice(..(len * 4) as u64);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| Error::Unsupported(format!("GPU wait failed: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Unsupported("GPU readback was dropped".into()))?
            .map_err(|e| Error::Unsupported(format!("GPU readback failed: {e}")))?;
        let data = slice
            .get_mapped_range()
            .map_err(|e| Error::Unsupported(format!("GPU readback mapping failed: {e}")))?;
        out.clear();
        out.extend(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        drop(data);
        staging.unmap();
        Ok(())
    }

    /// Bytes per second of a device-to-device buffer copy (bytes read + bytes written), the
    /// memory bandwidth a weight-reading kernel can hope for: 8 copies of up to 256 MiB after
    /// one warm-up.
    pub fn copy_bandwidth(&self) -> Result<f64> {
        let size = (256u64 << 20)
            .min(self.device.limits().max_buffer_size / 2)
            .max(4)
            & !3;
        let buffer = |usage| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bandwidth"),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        let src = buffer(wgpu::BufferUsages::COPY_SRC);
        let dst = buffer(wgpu::BufferUsages::COPY_DST);
        let copies = |n: usize| -> Result<std::time::Duration> {
            let start = std::time::Instant::now();
            let mut encoder = self.device.create_command_encoder(&Default::default());
            for _ in 0..n {
                encoder.copy_buffer_to_buffer(&src, 0, &dst, 0, size);
            }
            self.queue.submit([encoder.finish()]);
            self.device
                .poll(wgpu::PollType::Wait {
                    submission_index: None,
                    timeout: None,
                })
                .map_err(|e| Error::Unsupported(format!("GPU wait failed: {e}")))?;
            Ok(start.elapsed())
        };
        copies(1)?;
        let n = 8;
        Ok(2.0 * (size * n as u64) as f64 / copies(n)?.as_secs_f64())
    }

    /// A storage buffer holding `data`.
    pub fn upload(&self, label: &str, data: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        // wgpu buffers are at least 4 bytes and a multiple of 4.
        let size = data.len().max(4).next_multiple_of(4) as u64;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut padded = data.to_vec();
        padded.resize(size as usize, 0);
        self.queue.write_buffer(&buffer, 0, &padded);
        buffer
    }
}

#[cfg(test)]
mod tests;
