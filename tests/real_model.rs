//! Real pretrained weights: SmolLM2-135M-Instruct from its llama.cpp GGUF (q/k rows
//! un-permuted on conversion), run as Liger-GLA without training, against the authors' code
//! (`tests/fixtures/liger-real/smollm2_gla`; tolerances from its README).

use liger::{DecodeMode, Model, ModelOptions, Session};
use liger_tests::*;
use std::sync::Arc;

/// Max |Δlogit| at every stored row (fixture README: an f32 runtime lands within a few 1e-4).
const TOLERANCE: f32 = 2e-3;

#[test]
fn smollm2_linearized_matches_the_reference() {
    let Some(gguf) = test_data("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smollm2.f32.gguf");
    convert_to(&gguf, &out, "f32", None).unwrap();
    let model = Arc::new(Model::load(&out, &ModelOptions::default()).unwrap());
    let case = fixtures().join("liger-real/smollm2_gla");
    let small = read_bytes(&case.join("reference.safetensors"));
    let ids: Vec<u32> = tensor_f32(&small, "input_ids")
        .0
        .iter()
        .map(|&v| v as u32)
        .collect();
    let rows: Vec<usize> = tensor_f32(&small, "rows")
        .0
        .iter()
        .map(|&v| v as usize)
        .collect();
    let meta = meta(&case);
    let prompt_len = meta["prompt_len"].as_u64().unwrap() as usize;
    let vocab = model.config.vocab_size;

    // The prompt through the rebuilt tokenizer gives the fixture's ids (llama.cpp's).
    let text = meta["prompt"]["text"].as_str().unwrap();
    assert_eq!(
        model
            .tokenizer
            .as_ref()
            .unwrap()
            .encode(text, true)
            .unwrap(),
        ids,
        "prompt ids"
    );

    let check_rows = |what: &str, all: &[f32], file: &str, name: &str| {
        let (want, _) = tensor_f32(&read_bytes(&case.join(file)), name);
        let mut worst = 0f32;
        for (i, &r) in rows.iter().enumerate() {
            let (g, w) = (
                &all[r * vocab..(r + 1) * vocab],
                &want[i * vocab..(i + 1) * vocab],
            );
            let (j, diff) = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .enumerate()
                .fold((0, 0f32), |b, (j, d)| if d > b.1 { (j, d) } else { b });
            assert!(
                diff <= TOLERANCE,
                "{what}: position {r}: |Δ| {diff:e} at token {j} (got {}, want {})",
                g[j],
                w[j]
            );
            assert_eq!(argmax(g), argmax(w), "{what}: argmax at position {r}");
            worst = worst.max(diff);
        }
        eprintln!("{what}: max |Δ| {worst:.2e} over {} rows", rows.len());
    };
    let mut window = Session::new(model.clone(), DecodeMode::Window);
    check_rows(
        "window",
        &window.feed_all_logits(&ids).unwrap(),
        "logits_full.safetensors",
        "logits_full",
    );
    let mut hf = Session::new(model.clone(), DecodeMode::HfCompat);
    let mut all = hf.feed_all_logits(&ids[..prompt_len]).unwrap();
    for &t in &ids[prompt_len..] {
        all.extend_from_slice(hf.feed(&[t]).unwrap());
    }
    check_rows(
        "hf-compat",
        &all,
        "logits_incremental.safetensors",
        "logits_incremental",
    );

    for (mode, key) in [
        (DecodeMode::Window, "window"),
        (DecodeMode::HfCompat, "hfcompat"),
    ] {
        let want: Vec<u32> = tensor_f32(&small, &format!("greedy_tokens_{key}"))
            .0
            .iter()
            .map(|&v| v as u32)
            .collect();
        let (top1, _) = tensor_f32(&small, &format!("greedy_top1_logit_{key}"));
        let mut s = Session::new(model.clone(), mode);
        s.feed(&ids).unwrap();
        let mut got = vec![];
        for (step, &want_top1) in top1.iter().enumerate().take(want.len()) {
            let logits = s.logits().to_vec();
            let next = argmax(&logits);
            assert!(
                (logits[next] - want_top1).abs() <= TOLERANCE,
                "{key} step {step}: top-1 logit {} vs {want_top1}",
                logits[next]
            );
            got.push(next as u32);
            s.feed(&[next as u32]).unwrap();
        }
        assert_eq!(got, want, "{key}: greedy tokens");
    }
}
