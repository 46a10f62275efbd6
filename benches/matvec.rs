//! Weight products per weight type per SIMD level, reported as bytes of weights read per
//! second: one token (the decode step is bound by this: the four-row kernels), four tokens
//! (decode of four sequences: the four-row kernels over several tokens, the four-token ones),
//! and 64 (prefill: the panel kernels where the type has them).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use liger::cpu::kernels::SimdLevel;
use liger::cpu::linear::{ActivationBuffers, Activations, WeightMatrix};
use liger::cpu::packed::{pack, packed_len};
use liger::cpu::pool::WorkerPool;
use liger::quant::quantize;
use liger::GgmlType;

fn bench_matvec(c: &mut Criterion) {
    // A 2048 × 2048 matrix (Llama-3.2-1B's q projection), one activation vector per token.
    let (rows, cols) = (2048, 2048);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05)
        .collect();
    let pool = WorkerPool::new(1).expect("pool");
    for tokens in [1, 4, 64] {
        let x: Vec<f32> = (0..tokens * cols)
            .map(|i| (i % 17) as f32 / 8.0 - 1.0)
            .collect();
        let name = match tokens {
            1 => "matvec_2048x2048_1thread".to_string(),
            t => format!("matmul_2048x2048_{t}tokens_1thread"),
        };
        let mut group = c.benchmark_group(name);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let data = quantize(ty, &w).expect("quantize");
            group.throughput(Throughput::Bytes(data.len() as u64));
            for &level in SimdLevel::available() {
                let m = WeightMatrix::new(ty, rows, cols, &data, level);
                // Q4_0, Q8_0, Q4_K and Q6_K also repacked in groups of 8 rows, as the model holds them on
                // x86.
                let repacks = WeightMatrix::repacks(ty, cols, level);
                let mut packed = vec![
                    0u8;
                    if repacks {
                        packed_len(ty, rows, cols)
                    } else {
                        0
                    }
                ];
                if repacks {
                    pack(ty, &data, rows, cols, &mut packed);
                }
                let repacked = repacks.then(|| m.with_packed(&packed, level));
                let layouts = [Some(("", m)), repacked.map(|p| ("/repacked", p))];
                for (layout, m) in layouts.into_iter().flatten() {
                    let mut buffers = ActivationBuffers::default();
                    let mut y = vec![0f32; tokens * rows];
                    group.bench_function(format!("{ty}{layout}/{}", level.name()), |b| {
                        b.iter(|| {
                            let acts = Activations::new(&x, &mut buffers, &pool);
                            m.matmul(&pool, &acts, tokens, &mut y);
                        })
                    });
                }
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench_matvec);
criterion_main!(benches);
