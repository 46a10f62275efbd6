//! Scalar reference quantize / dequantize throughput per type (the oracle's speed, a
//! baseline for the SIMD kernels of the CPU backend), and the activations' quantization.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use liger::cpu::act::{quantize_activations, quantize_activations_portable, ActBlock};
use liger::quant::{dequantize_row, quantize_row, GgmlType};

fn bench_quant(c: &mut Criterion) {
    let n = 4096 * 16;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut group = c.benchmark_group("scalar_reference");
    group.throughput(Throughput::Elements(n as u64));
    for ty in [
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let mut bytes = vec![0u8; ty.row_bytes(n).unwrap()];
        group.bench_function(format!("quantize_{ty}"), |b| {
            b.iter(|| quantize_row(ty, &x, &mut bytes).unwrap())
        });
        let mut y = vec![0f32; n];
        group.bench_function(format!("dequantize_{ty}"), |b| {
            b.iter(|| dequantize_row(ty, &bytes, &mut y).unwrap())
        });
    }
    group.finish();
    // The decode step's activation quantization (8-bit blocks of 32), portable and SIMD.
    let mut group = c.benchmark_group("activations_q8");
    group.throughput(Throughput::Elements(n as u64));
    let mut blocks = vec![ActBlock::default(); n / 32];
    group.bench_function("portable", |b| {
        b.iter(|| quantize_activations_portable(&x, &mut blocks))
    });
    group.bench_function("best", |b| b.iter(|| quantize_activations(&x, &mut blocks)));
    group.finish();
}

criterion_group!(benches, bench_quant);
criterion_main!(benches);
