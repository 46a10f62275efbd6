//! The wgpu backend end to end: every fixture, fed token by token through the GPU decode step,
//! against the reference logits of the authors' code in both semantics (window: one call;
//! hf-compat: the prompt call, then one call per token) with the CPU's tolerance. Without an
//! adapter: skipped with a printed reason, or failed in CI.

use liger::gpu::{GpuContext, GpuModel, GpuSequence};
use liger::{Model, ModelOptions};
use liger_tests::*;

/// Max |Δlogit| against the fp32 reference: the CPU's (DESIGN §5); the GPU computes in f32
/// with f32 weights here, only the summation order differs.
const LOGIT_TOLERANCE: f32 = 1e-3;

#[test]
fn gpu_decode_matches_the_reference_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for case in liger_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let path = convert_case(&case, "f32", dir.path());
        let model = Model::load(path, &ModelOptions::default()).unwrap();
        let Some(ctx) = GpuContext::for_tests() else {
            return;
        };
        let adapter = ctx.describe();
        let gpu = GpuModel::new(ctx, &model).unwrap();
        let reference = read_bytes(&case.join("reference.safetensors"));
        let (ids, _) = tensor_f32(&reference, "input_ids");
        let prompt_len = meta(&case)["prompt_len"].as_u64().unwrap() as usize;
        let vocab = model.config.vocab_size;
        for (semantics, logits) in [
            ("window", "logits_full"),
            ("hf-compat", "logits_incremental"),
        ] {
            let (want, _) = tensor_f32(&reference, logits);
            let mut seq = GpuSequence::new(&gpu).unwrap();
            let mut worst = 0f32;
            for (t, &id) in ids.iter().enumerate() {
                // hf-compat: the prompt is one call, then every token its own call.
                if semantics == "hf-compat" && (t == 0 || t >= prompt_len) {
                    seq.clear_window();
                }
                let got = seq.step(id as u32).unwrap();
                let row = &want[t * vocab..(t + 1) * vocab];
                for (v, (g, w)) in got.iter().zip(row).enumerate() {
                    let delta = (g - w).abs();
                    assert!(
                        delta <= LOGIT_TOLERANCE,
                        "{name} ({semantics}) on {adapter}: first mismatch at token {t}, \
                         vocab id {v}: gpu {g}, reference {w}"
                    );
                    worst = worst.max(delta);
                }
            }
            eprintln!(
                "{name} ({semantics}) on {adapter}: {} tokens, max |Δ| {worst:.2e}",
                ids.len()
            );
        }
        ran += 1;
    }
    assert_eq!(
        ran,
        liger_cases().len(),
        "every fixture case ran on the GPU"
    );
}

#[test]
fn matrices_over_the_binding_limit_are_split_and_agree() {
    // The tied embedding is the LM head: with a 2 KiB binding limit it (and every other
    // matrix) is uploaded in parts, as a Llama-3 embedding is on a 128 MiB adapter.
    let case = fixtures().join("liger").join("liger_gla_tied");
    let dir = tempfile::tempdir().unwrap();
    let model = Model::load(
        convert_case(&case, "f32", dir.path()),
        &ModelOptions::default(),
    )
    .unwrap();
    let Some(mut ctx) = GpuContext::for_tests() else {
        return;
    };
    ctx.max_binding_bytes = 2048;
    let gpu = GpuModel::new(ctx, &model).unwrap();
    let reference = read_bytes(&case.join("reference.safetensors"));
    let (ids, _) = tensor_f32(&reference, "input_ids");
    let (want, _) = tensor_f32(&reference, "logits_full");
    let vocab = model.config.vocab_size;
    let mut seq = GpuSequence::new(&gpu).unwrap();
    for (t, &id) in ids.iter().enumerate().take(24) {
        let got = seq.step(id as u32).unwrap();
        for (v, (g, w)) in got
            .iter()
            .zip(&want[t * vocab..(t + 1) * vocab])
            .enumerate()
        {
            assert!(
                (g - w).abs() <= LOGIT_TOLERANCE,
                "split bindings: first mismatch at token {t}, vocab id {v}: gpu {g}, reference {w}"
            );
        }
    }
}
