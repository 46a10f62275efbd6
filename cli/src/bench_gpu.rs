//! `liger bench --backend wgpu|cuda`: the same tests on a GPU step (prompts and depth in
//! prefill batches, generation token by token); tg also reports the rate at which weights are
//! read (bytes of the matrices a token reads × tokens/s) and its fraction of the device's
//! measured copy bandwidth.

use crate::bench::{peak_resident, report, tokens, Backend, BenchArgs, TestResult};
use crate::generate::Decoder;
use anyhow::Result;
use liger::Model;
use std::sync::Arc;
use std::time::Instant;

/// What the bench needs of a GPU backend.
struct Device<'a> {
    /// "wgpu (adapter)" / "cuda (device)".
    name: String,
    /// A fresh sequence (window semantics).
    new_sequence: &'a dyn Fn() -> liger::Result<Box<dyn Decoder>>,
    /// Bytes of weight matrices one decode step reads.
    weight_bytes: u64,
    /// Device-to-device copy bandwidth, bytes/s (read + write).
    copy_bandwidth: &'a dyn Fn() -> liger::Result<f64>,
}

#[cfg(feature = "wgpu")]
pub fn bench_wgpu(args: &BenchArgs, depths: &[u32]) -> Result<()> {
    use crate::generate::GpuDecoder;
    use liger::gpu::{GpuContext, GpuModel, GpuSequence};
    let model = Arc::new(Model::load(&args.model, &Default::default())?);
    let ctx = GpuContext::new()?;
    let name = format!("wgpu ({})", ctx.describe());
    let gpu = Arc::new(GpuModel::new(ctx, Arc::clone(&model))?);
    let new_sequence = || -> liger::Result<Box<dyn Decoder>> {
        Ok(Box::new(GpuDecoder {
            seq: GpuSequence::new(&gpu)?,
            hf_compat: false,
        }))
    };
    let device = Device {
        name,
        new_sequence: &new_sequence,
        weight_bytes: gpu.weight_bytes_per_token(),
        copy_bandwidth: &|| gpu.ctx.copy_bandwidth(),
    };
    bench_on(args, depths, &model, &device)
}

#[cfg(feature = "cuda")]
pub fn bench_cuda(args: &BenchArgs, depths: &[u32]) -> Result<()> {
    use crate::generate::CudaDecoder;
    use liger::cuda::{CudaDevice, CudaModel, CudaSequence};
    let model = Arc::new(Model::load(&args.model, &Default::default())?);
    let dev = CudaDevice::new()?;
    let name = format!("cuda ({})", dev.describe());
    let gpu = Arc::new(CudaModel::new(dev, Arc::clone(&model))?);
    let new_sequence = || -> liger::Result<Box<dyn Decoder>> {
        Ok(Box::new(CudaDecoder {
            seq: CudaSequence::new(&gpu)?,
            hf_compat: false,
        }))
    };
    let device = Device {
        name,
        new_sequence: &new_sequence,
        weight_bytes: gpu.weight_bytes_per_token(),
        copy_bandwidth: &|| gpu.dev.copy_bandwidth(),
    };
    bench_on(args, depths, &model, &device)
}

fn bench_on(args: &BenchArgs, depths: &[u32], model: &Arc<Model>, device: &Device) -> Result<()> {
    let vocab = model.config.vocab_size;
    // Warm-up: kernels, pipelines and first submissions (a CUDA graph's capture) before
    // anything is timed.
    let mut warm = (device.new_sequence)()?;
    warm.feed_tokens(&tokens(4, vocab, 2))?;
    for &t in &tokens(4, vocab, 2) {
        warm.feed_tokens(&[t])?;
    }
    let mut results = Vec::new();
    for &depth in depths {
        let depth = depth as usize;
        let context = tokens(depth, vocab, 1);
        for (n_prompt, n_gen) in [(args.n_prompt, 0), (0, args.n_gen)] {
            if n_prompt + n_gen == 0 {
                continue;
            }
            let run = tokens(n_prompt + n_gen, vocab, if n_gen > 0 { 3 } else { 2 });
            let mut r = TestResult {
                n_prompt,
                n_gen,
                n_depth: depth,
                samples: vec![],
                peak_rss: 0,
            };
            peak_resident(true);
            for _ in 0..args.repetitions {
                let mut seq = (device.new_sequence)()?;
                seq.feed_tokens(&context)?;
                let start = Instant::now();
                if n_gen == 0 {
                    seq.feed_tokens(&run)?;
                } else {
                    for &t in &run {
                        seq.feed_tokens(&[t])?;
                    }
                }
                r.samples
                    .push(run.len() as f64 / start.elapsed().as_secs_f64());
            }
            r.peak_rss = peak_resident(false);
            results.push(r);
        }
    }
    let copy = (device.copy_bandwidth)()?;
    eprintln!(
        "device-to-device copy: {:.1} GB/s (read + write)",
        copy / 1e9
    );
    let weight_bytes = device.weight_bytes;
    for r in results.iter().filter(|r| r.n_gen > 0) {
        let rate = weight_bytes as f64 * r.mean();
        eprintln!(
            "{}: weights read at {:.1} GB/s ({:.1} MB per token), {:.0} % of the copy bandwidth",
            r.name(),
            rate / 1e9,
            weight_bytes as f64 / 1e6,
            100.0 * rate / copy
        );
    }
    let backend = Backend {
        name: device.name.clone(),
        simd: String::new(),
        threads: 1,
    };
    report(args, model, &backend, &results)
}
