//! One decode step (of one sequence, and of four together) and one prefill chunk of a SmolLM2-135M-shaped Liger-GLA model with random
//! weights (written to a temporary file by `liger_convert::synth`), at Q8_0 and Q4_0.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use liger::{DecodeMode, Model, ModelOptions, Session, Variant};
use std::sync::Arc;

fn bench_step(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = liger_convert::synth::shape_config("smollm2-135m", Variant::Gla).expect("shape");
    for ty in ["q8_0", "q4_0"] {
        let path = dir.path().join(format!("smollm2-shape.{ty}.gguf"));
        liger_convert::synth::write_synthetic(&config, ty.parse().expect("type"), &path)
            .expect("synth");
        let model = Arc::new(Model::load(&path, &ModelOptions::default()).expect("load"));
        let mut group = c.benchmark_group(format!("smollm2_135m_{ty}"));
        group.sample_size(20);
        let mut session = Session::new(model.clone(), DecodeMode::Window);
        session.feed(&[1, 2, 3]).expect("feed");
        group.throughput(Throughput::Elements(1));
        group.bench_function("decode_step", |b| {
            b.iter(|| session.feed(&[42]).expect("feed").len())
        });
        // Four sequences decoded together: one batched step (throughput: their 4 tokens).
        let mut four: Vec<Session> = (0..4).map(|_| session.fork().expect("fork")).collect();
        group.throughput(Throughput::Elements(4));
        group.bench_function("decode_step_x4_sequences", |b| {
            b.iter(|| {
                let mut work: Vec<(&mut Session, &[u32])> =
                    four.iter_mut().map(|s| (s, &[42u32][..])).collect();
                Session::feed_many(&mut work).expect("feed_many")
            })
        });
        let chunk: Vec<u32> = (0..128u32).map(|i| (i * 31) % 49152).collect();
        group.throughput(Throughput::Elements(chunk.len() as u64));
        group.bench_function("prefill_128", |b| {
            b.iter(|| {
                let mut s = Session::new(model.clone(), DecodeMode::Window);
                s.feed(&chunk).expect("feed").len()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_step);
criterion_main!(benches);
