//! `liger bench --backend wgpu`: the same tests on the GPU step (prompts and depth in prefill
//! batches, generation token by token); tg also reports the rate at which weights are read
//! (bytes of the matrices a token reads × tokens/s) and its fraction of the device's measured
//! copy bandwidth.

use crate::bench::{peak_resident, report, tokens, Backend, BenchArgs, TestResult};
use anyhow::Result;
use liger::gpu::{GpuContext, GpuModel, GpuSequence};
use liger::{Model, ModelOptions};
use std::sync::Arc;
use std::time::Instant;

pub fn bench(args: &BenchArgs, depths: &[u32]) -> Result<()> {
    let model = Arc::new(Model::load(&args.model, &ModelOptions::default())?);
    let ctx = GpuContext::new()?;
    let adapter = ctx.describe();
    let gpu = Arc::new(GpuModel::new(ctx, Arc::clone(&model))?);
    let vocab = model.config.vocab_size;
    // Warm-up: pipelines and first submissions before anything is timed.
    let mut warm = GpuSequence::new(&gpu)?;
    warm.feed(&tokens(4, vocab, 2), false)?;
    for &t in &tokens(4, vocab, 2) {
        warm.step(t)?;
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
                let mut seq = GpuSequence::new(&gpu)?;
                seq.feed(&context, false)?;
                let start = Instant::now();
                if n_gen == 0 {
                    seq.feed(&run, false)?;
                } else {
                    for &t in &run {
                        seq.step(t)?;
                    }
                }
                r.samples
                    .push(run.len() as f64 / start.elapsed().as_secs_f64());
            }
            r.peak_rss = peak_resident(false);
            results.push(r);
        }
    }
    let weight_bytes = gpu.weight_bytes_per_token();
    let copy = gpu.ctx.copy_bandwidth()?;
    eprintln!(
        "device-to-device copy: {:.1} GB/s (read + write)",
        copy / 1e9
    );
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
        name: format!("wgpu ({adapter})"),
        simd: String::new(),
        threads: 1,
    };
    report(args, &model, &backend, &results)
}
