//! Many sessions over shared mapped models from many threads: a mixed load of prefill,
//! decode, save/restore and fork for a bounded time, every result bit-identical to the same
//! work done serially.

use liger::{DecodeMode, Model, ModelOptions, Sampler, SamplerOptions, Session};
use liger_tests::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One piece of work: which model, decode mode, prompt and how much to generate.
struct Job {
    model: usize,
    mode: DecodeMode,
    prompt: Vec<u32>,
    generate: usize,
    seed: u64,
}

/// What a job observed: the tokens it sampled, the tokens after restoring a saved state and
/// after forking (both must repeat the originals), and the final state's bytes.
#[derive(PartialEq, Debug)]
struct Outcome {
    tokens: Vec<u32>,
    replay: Vec<u32>,
    forked: Vec<u32>,
    state: Vec<u8>,
}

fn sample_n(session: &mut Session, sampler: &mut Sampler, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let t = sampler.sample(session.logits());
            session.feed(&[t]).unwrap();
            t
        })
        .collect()
}

fn run(models: &[Arc<Model>], job: &Job) -> Outcome {
    let mut s = Session::new(models[job.model].clone(), job.mode);
    s.feed(&job.prompt).unwrap();
    let saved = s.save_state().unwrap();
    let forked_session = s.fork().unwrap();
    let options = SamplerOptions {
        seed: job.seed,
        ..Default::default()
    };
    let tokens = sample_n(&mut s, &mut Sampler::new(options.clone()), job.generate);
    let state = s.save_state().unwrap();
    s.load_state(&saved).unwrap();
    let replay = sample_n(&mut s, &mut Sampler::new(options.clone()), job.generate);
    let mut f = forked_session;
    let forked = sample_n(&mut f, &mut Sampler::new(options), job.generate);
    Outcome {
        tokens,
        replay,
        forked,
        state,
    }
}

#[test]
fn mixed_load_from_many_threads_equals_serial_work() {
    let dir = tempfile::tempdir().unwrap();
    let options = ModelOptions {
        threads: Some(2),
        ..Default::default()
    };
    let models: Vec<Arc<Model>> = [
        ("liger_gla", "q8_0"),
        ("liger_gsa", "q4_k_m"),
        ("liger_hgrn2", "f16"),
    ]
    .iter()
    .map(|(case, ty)| {
        let path = convert_case(&fixtures().join("liger").join(case), ty, dir.path());
        Arc::new(Model::load(path, &options).unwrap())
    })
    .collect();
    // Prompts of 1..70 tokens: single steps, chunked prefill, and the window wrapping.
    let jobs: Vec<Job> = (0..24u64)
        .map(|i| Job {
            model: i as usize % models.len(),
            mode: if i % 4 == 3 {
                DecodeMode::HfCompat
            } else {
                DecodeMode::Window
            },
            prompt: (0..1 + (i * 13) % 70)
                .map(|t| ((t * 7 + i) % 500) as u32)
                .collect(),
            generate: 3 + (i as usize % 6),
            seed: i,
        })
        .collect();
    let serial: Vec<Outcome> = jobs.iter().map(|j| run(&models, j)).collect();
    for (i, o) in serial.iter().enumerate() {
        assert_eq!(
            o.tokens, o.replay,
            "job {i}: restoring the saved state replays"
        );
        assert_eq!(
            o.tokens, o.forked,
            "job {i}: the fork continues identically"
        );
    }

    // 8 threads take jobs from a shared counter until every job ran at least twice and the
    // time is up (bounded at 20 s whatever the machine).
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let ran = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let mut ran = 0;
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let elapsed = start.elapsed();
                        if (k >= 2 * jobs.len() && elapsed > Duration::from_secs(2))
                            || elapsed > Duration::from_secs(20)
                        {
                            return ran;
                        }
                        let i = k % jobs.len();
                        let got = run(&models, &jobs[i]);
                        assert!(
                            got == serial[i],
                            "job {i} (run {k}) differs from the serial run"
                        );
                        ran += 1;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .sum::<usize>()
    });
    assert!(ran >= jobs.len(), "only {ran} jobs ran concurrently");
    println!(
        "{ran} jobs on 8 threads in {:.1} s, each identical to the serial run",
        start.elapsed().as_secs_f64()
    );
}
