//! `liger bench`: prompt processing (pp), token generation (tg), and tg after a context of
//! depth d, in llama.cpp's `llama-bench` table form (or JSON with its field names), with the
//! peak resident memory of each test.

use anyhow::{bail, Result};
use clap::Args;
use liger::{DecodeMode, Model, ModelOptions, Session};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// A liger GGUF file.
    #[arg(short, long)]
    pub model: PathBuf,
    /// Prompt tokens of the pp test (0: none).
    #[arg(short = 'p', long, default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens of the tg test (0: none).
    #[arg(short = 'n', long, default_value_t = 128)]
    pub n_gen: usize,
    /// Context depths to run each test at, comma separated.
    #[arg(short = 'd', long, default_value = "0")]
    pub depth: String,
    /// Threads.
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Repetitions per test.
    #[arg(short = 'r', long, default_value_t = 3)]
    pub repetitions: usize,
    /// Output: md or json.
    #[arg(short = 'o', long, default_value = "md")]
    pub output: String,
    /// auto (CUDA when a device passes the self-test, else the CPU), cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Read the model file into memory instead of mapping it (timings then include no page
    /// faults on first touch).
    #[arg(long)]
    pub no_mmap: bool,
    /// Sequences run together, comma separated (llama-batched-bench's idea): each test runs
    /// with that many sequences in one batched step per token; t/s is their aggregate.
    #[arg(long, default_value = "1")]
    pub parallel: String,
}

/// Linux `VmHWM` (peak resident), bytes; resets the mark first when `reset`.
pub(crate) fn peak_resident(reset: bool) -> u64 {
    if reset {
        // Writing 5 to clear_refs resets the peak RSS counter (Linux 4.0+).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

pub(crate) struct TestResult {
    pub(crate) n_prompt: usize,
    pub(crate) n_gen: usize,
    pub(crate) n_depth: usize,
    /// Sequences run together; `samples` are their aggregate tokens/s.
    pub(crate) n_parallel: usize,
    pub(crate) samples: Vec<f64>,
    pub(crate) peak_rss: u64,
}

impl TestResult {
    pub(crate) fn mean(&self) -> f64 {
        self.samples.iter().sum::<f64>() / self.samples.len().max(1) as f64
    }
    fn stddev(&self) -> f64 {
        let m = self.mean();
        let n = self.samples.len();
        if n < 2 {
            return 0.0;
        }
        (self.samples.iter().map(|s| (s - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    }
    pub(crate) fn name(&self) -> String {
        let base = if self.n_prompt > 0 {
            format!("pp{}", self.n_prompt)
        } else {
            format!("tg{}", self.n_gen)
        };
        let base = if self.n_depth > 0 {
            format!("{base} @ d{}", self.n_depth)
        } else {
            base
        };
        if self.n_parallel > 1 {
            format!("{base} ×{}", self.n_parallel)
        } else {
            base
        }
    }
}

/// Deterministic token ids spread over the vocabulary.
pub(crate) fn tokens(n: usize, vocab: usize, salt: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + salt * 104_729 + 13) % vocab) as u32)
        .collect()
}

fn session_at_depth(backend: &Arc<dyn liger::Backend>, depth: usize) -> Result<Session> {
    let mut s = Session::on(backend, DecodeMode::Window)?;
    if depth > 0 {
        s.feed(&tokens(depth, backend.model().config.vocab_size, 1))?;
    }
    Ok(s)
}

/// Times `run` on `parallel` fresh forks of `at_depth` (each fed `untimed` tokens first),
/// `repetitions` times; `(n_prompt, n_gen, depth)` describe the test, and its tokens per
/// second count `n_prompt + n_gen` tokens per sequence and run.
fn measure(
    at_depth: &Session,
    untimed: &[u32],
    repetitions: usize,
    parallel: usize,
    (n_prompt, n_gen, n_depth): (usize, usize, usize),
    mut run: impl FnMut(&mut [Session]) -> liger::Result<()>,
) -> Result<TestResult> {
    let mut r = TestResult {
        n_prompt,
        n_gen,
        n_depth,
        n_parallel: parallel,
        samples: vec![],
        peak_rss: 0,
    };
    peak_resident(true);
    for _ in 0..repetitions {
        let mut sessions = (0..parallel)
            .map(|_| at_depth.fork())
            .collect::<liger::Result<Vec<_>>>()?;
        if !untimed.is_empty() {
            feed_together(&mut sessions, |_| untimed)?;
        }
        let t = Instant::now();
        run(&mut sessions)?;
        let tokens = (parallel * (n_prompt + n_gen)) as f64;
        r.samples.push(tokens / t.elapsed().as_secs_f64());
    }
    r.peak_rss = peak_resident(false);
    Ok(r)
}

/// Feeds every session `tokens(i)` in one batched call ([`Session::feed_many`]).
fn feed_together<'a>(
    sessions: &mut [Session],
    tokens: impl Fn(usize) -> &'a [u32],
) -> liger::Result<()> {
    if let [only] = sessions {
        return only.feed(tokens(0)).map(|_| ());
    }
    let mut work: Vec<(&mut Session, &[u32])> = sessions
        .iter_mut()
        .enumerate()
        .map(|(i, s)| (s, tokens(i)))
        .collect();
    Session::feed_many(&mut work)
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if args.output != "md" && args.output != "json" {
        bail!("-o {} (md or json)", args.output);
    }
    let depths = crate::generate::parse_ids(&args.depth)?;
    let parallel = crate::generate::parse_ids(&args.parallel)?;
    if parallel.is_empty() || parallel.contains(&0) {
        bail!("--parallel {}: counts of 1 or more", args.parallel);
    }
    let kind: liger::BackendKind = args.backend.parse()?;
    let model = Arc::new(Model::load(
        &args.model,
        &ModelOptions {
            threads: args.threads,
            simd: None,
            file_access: if args.no_mmap {
                liger::gguf::FileAccess::Read
            } else {
                liger::gguf::FileAccess::Map
            },
        },
    )?);
    let opened = liger::backend::open(kind, &model)?;
    eprintln!("{}", opened.reason);
    let backend = opened.backend;
    let vocab = model.config.vocab_size;
    let mut results = Vec::new();
    // Warm-up: pages the weights in, compiles pipelines and kernels, before anything is timed.
    let mut warm = session_at_depth(&backend, 0)?;
    warm.feed(&tokens(16, vocab, 2))?;
    for &t in &tokens(4, vocab, 2) {
        warm.feed(&[t])?;
    }
    for &depth in &depths {
        let depth = depth as usize;
        // The context is fed once per depth; each repetition starts from a fork of it.
        let at_depth = session_at_depth(&backend, depth)?;
        for &p in &parallel {
            let p = p as usize;
            if args.n_prompt > 0 {
                let prompt = tokens(args.n_prompt, vocab, 2);
                let r = measure(
                    &at_depth,
                    &[],
                    args.repetitions,
                    p,
                    (args.n_prompt, 0, depth),
                    |s| feed_together(s, |_| &prompt),
                )?;
                results.push(r);
            }
            if args.n_gen > 0 {
                let gen: Vec<Vec<u32>> = (0..p).map(|i| tokens(args.n_gen, vocab, 3 + i)).collect();
                let firsts: Vec<u32> = gen.iter().map(|g| g[0]).collect();
                // The first single-token step (untimed) sizes the decode buffers (on CUDA:
                // captures the decode graph).
                let r = measure(
                    &at_depth,
                    &firsts[..1],
                    args.repetitions,
                    p,
                    (0, args.n_gen, depth),
                    |s| (0..args.n_gen).try_for_each(|k| feed_together(s, |i| &gen[i][k..k + 1])),
                )?;
                results.push(r);
            }
        }
    }
    if let Some(copy) = backend.copy_bandwidth()? {
        eprintln!(
            "device-to-device copy: {:.1} GB/s (read + write)",
            copy / 1e9
        );
        let weight_bytes = backend.weight_bytes_per_token();
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
    }
    let on_cpu = backend.kind() == liger::BackendKind::Cpu;
    let ran_on = Ran {
        name: backend.describe(),
        simd: if on_cpu {
            model.simd.name().to_string()
        } else {
            String::new()
        },
        threads: if on_cpu { model.threads() } else { 1 },
    };
    report(&args, &model, &ran_on, &results)
}

/// Where a benchmark ran, for the table and the JSON.
pub(crate) struct Ran {
    pub name: String,
    pub simd: String,
    pub threads: usize,
}

/// Prints `results` as llama-bench's markdown table or JSON array.
pub(crate) fn report(
    args: &BenchArgs,
    model: &Model,
    backend: &Ran,
    results: &[TestResult],
) -> Result<()> {
    let size = std::fs::metadata(&args.model)?.len();
    let c = &model.config;
    let params: u64 = model.file().tensors().iter().map(|t| t.n_elements).sum();
    let model_type = format!(
        "liger-{} {} {}",
        c.variant.name(),
        c.base.name(),
        file_type(&model)
    );
    if args.output == "json" {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "model_filename": args.model.display().to_string(),
                    "model_type": model_type,
                    "model_size": size,
                    "model_n_params": params,
                    "backends": backend.name,
                    "simd": backend.simd,
                    "n_threads": backend.threads,
                    "n_prompt": r.n_prompt,
                    "n_gen": r.n_gen,
                    "n_depth": r.n_depth,
                    "n_parallel": r.n_parallel,
                    "avg_ts": r.mean(),
                    "avg_ts_per_sequence": r.mean() / r.n_parallel as f64,
                    "stddev_ts": r.stddev(),
                    "samples_ts": r.samples,
                    "peak_rss_bytes": r.peak_rss,
                    "state_bytes": model.state_bytes(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let batched = results.iter().any(|r| r.n_parallel > 1);
    let per_sequence = if batched { " t/s per sequence |" } else { "" };
    println!("| model | size | params | backend | threads | test | t/s |{per_sequence} peak RSS |");
    let rule = if batched { " ---: |" } else { "" };
    println!("| --- | ---: | ---: | --- | ---: | ---: | ---: |{rule} ---: |");
    for r in results {
        let per_sequence = if batched {
            format!(" {:.2} |", r.mean() / r.n_parallel as f64)
        } else {
            String::new()
        };
        println!(
            "| {model_type} | {:.2} MiB | {:.2} M | {} | {} | {} | {:.2} ± {:.2} |{per_sequence} {:.1} MiB |",
            size as f64 / (1 << 20) as f64,
            params as f64 / 1e6,
            backend.name,
            backend.threads,
            r.name(),
            r.mean(),
            r.stddev(),
            r.peak_rss as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

fn file_type(model: &Model) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for t in model.file().tensors().iter().filter(|t| t.dims.len() == 2) {
        *counts.entry(t.ggml_type.name()).or_insert(0u64) += t.n_bytes;
    }
    counts
        .into_iter()
        .max_by_key(|(_, b)| *b)
        .map(|(n, _)| n.to_string())
        .unwrap_or_default()
}
