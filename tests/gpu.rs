//! The wgpu backend end to end: every fixture, fed token by token through the GPU decode step
//! and in prefill batches, against the reference logits of the authors' code in both semantics
//! (window: one call; hf-compat: the prompt call, then one call per token) with the CPU's
//! tolerance. Without an adapter: skipped with a printed reason, or failed in CI.

use liger::gpu::{GpuContext, GpuModel, GpuSequence};
use liger::{Model, ModelOptions};
use liger_tests::*;
use std::sync::Arc;

/// Max |Δlogit| against the fp32 reference: the CPU's (DESIGN §5); the GPU computes in f32
/// with f32 weights here, only the summation order differs.
const LOGIT_TOLERANCE: f32 = 1e-3;

/// Asserts `got` is within the tolerance of the reference row; returns the largest |Δ|.
fn check_row(got: &[f32], want: &[f32], what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: logits length");
    let mut worst = 0f32;
    for (v, (g, w)) in got.iter().zip(want).enumerate() {
        let delta = (g - w).abs();
        assert!(
            delta <= LOGIT_TOLERANCE,
            "{what}: first mismatch at vocab id {v}: gpu {g}, reference {w}"
        );
        worst = worst.max(delta);
    }
    worst
}

#[test]
fn gpu_decode_matches_the_reference_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for case in liger_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let path = convert_case(&case, "f32", dir.path());
        let model = Arc::new(Model::load(path, &ModelOptions::default()).unwrap());
        let Some(ctx) = GpuContext::for_tests() else {
            return;
        };
        let adapter = ctx.describe();
        let gpu = Arc::new(GpuModel::new(ctx, Arc::clone(&model)).unwrap());
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
                let what = format!("{name} ({semantics}) on {adapter}, token {t}");
                worst = worst.max(check_row(got, row, &what));
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
fn gpu_prefill_batches_match_the_reference_logits() {
    // Calls of 1..=7 tokens on a sequence whose batches hold 3: calls of one batch, of several,
    // partial batches, and the window ring wrapping (96 tokens, a 64-token window); checked
    // at the end of every call.
    let dir = tempfile::tempdir().unwrap();
    for case in liger_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let model = Arc::new(
            Model::load(
                convert_case(&case, "f32", dir.path()),
                &ModelOptions::default(),
            )
            .unwrap(),
        );
        let Some(ctx) = GpuContext::for_tests() else {
            return;
        };
        let gpu = Arc::new(GpuModel::new(ctx, Arc::clone(&model)).unwrap());
        let reference = read_bytes(&case.join("reference.safetensors"));
        let (ids, _) = tensor_f32(&reference, "input_ids");
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let prompt_len = meta(&case)["prompt_len"].as_u64().unwrap() as usize;
        let vocab = model.config.vocab_size;
        let row = |want: &[f32], t: usize| want[t * vocab..(t + 1) * vocab].to_vec();

        // Window semantics: the whole sequence is one call, split into feeds of 1..=7.
        let (want, _) = tensor_f32(&reference, "logits_full");
        let mut seq = GpuSequence::with_batch(&gpu, 3).unwrap();
        let (mut at, mut size, mut worst) = (0, 1, 0f32);
        while at < ids.len() {
            let end = (at + size).min(ids.len());
            let got = seq.feed(&ids[at..end], false).unwrap();
            let what = format!("{name} (window) prefill of tokens {at}..{end}");
            worst = worst.max(check_row(got, &row(&want, end - 1), &what));
            (at, size) = (end, size % 7 + 1);
        }
        // hf-compat: the prompt in one call (three batches), then one call per token.
        let (want, _) = tensor_f32(&reference, "logits_incremental");
        let mut seq = GpuSequence::with_batch(&gpu, 3).unwrap();
        let got = seq.feed(&ids[..prompt_len], true).unwrap();
        let what = format!("{name} (hf-compat) prompt");
        worst = worst.max(check_row(got, &row(&want, prompt_len - 1), &what));
        for t in prompt_len..ids.len() {
            let got = seq.feed(&ids[t..t + 1], true).unwrap();
            let what = format!("{name} (hf-compat) token {t}");
            worst = worst.max(check_row(got, &row(&want, t), &what));
        }
        eprintln!("{name}: batched prefill, max |Δ| {worst:.2e}");
    }
}

#[test]
fn matrices_over_the_binding_limit_are_split_and_agree() {
    // The tied embedding is the LM head: with a 2 KiB binding limit it (and every other
    // matrix) is uploaded in parts, as a Llama-3 embedding is on a 128 MiB adapter.
    let case = fixtures().join("liger").join("liger_gla_tied");
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(
        Model::load(
            convert_case(&case, "f32", dir.path()),
            &ModelOptions::default(),
        )
        .unwrap(),
    );
    let Some(mut ctx) = GpuContext::for_tests() else {
        return;
    };
    ctx.max_binding_bytes = 2048;
    let gpu = Arc::new(GpuModel::new(ctx, Arc::clone(&model)).unwrap());
    let reference = read_bytes(&case.join("reference.safetensors"));
    let (ids, _) = tensor_f32(&reference, "input_ids");
    let (want, _) = tensor_f32(&reference, "logits_full");
    let vocab = model.config.vocab_size;
    // Calls of 5 tokens in batches of 4 (`matmul` over the parts), then single steps.
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    let mut seq = GpuSequence::with_batch(&gpu, 4).unwrap();
    for (i, call) in ids[..30].chunks(5).enumerate() {
        let got = seq.feed(call, false).unwrap();
        let t = i * 5 + call.len() - 1;
        let what = format!("split bindings, prefill to token {t}");
        check_row(got, &want[t * vocab..(t + 1) * vocab], &what);
    }
    for (t, &id) in ids.iter().enumerate().skip(30).take(6) {
        let got = seq.step(id).unwrap();
        let what = format!("split bindings, token {t}");
        check_row(got, &want[t * vocab..(t + 1) * vocab], &what);
    }
}

#[test]
fn c_api_runs_sessions_on_the_gpu_after_its_self_test() {
    use liger::capi::*;
    if GpuContext::for_tests().is_none() {
        return;
    }
    let case = fixtures().join("liger").join("liger_gla");
    let dir = tempfile::tempdir().unwrap();
    let path = convert_case(&case, "f32", dir.path());
    let path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let reference = read_bytes(&case.join("reference.safetensors"));
    let prompt_len = meta(&case)["prompt_len"].as_u64().unwrap() as usize;
    let (ids, _) = tensor_f32(&reference, "input_ids");
    let prompt: Vec<u32> = ids[..prompt_len].iter().map(|&v| v as u32).collect();
    let (greedy, _) = tensor_f32(&reference, "greedy_tokens");
    let greedy: Vec<u32> = greedy.iter().map(|&v| v as u32).collect();
    let last_error = || {
        // SAFETY: liger_last_error returns a valid NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(liger_last_error()) }
            .to_string_lossy()
            .into_owned()
    };

    let options = LigerModelOptions {
        backend: LIGER_BACKEND_WGPU,
        threads: 1,
        decode_mode: LIGER_DECODE_HF_COMPAT,
    };
    let mut model = std::ptr::null_mut();
    assert_eq!(
        liger_model_load(path.as_ptr(), &options, &mut model),
        LIGER_OK,
        "{}",
        last_error()
    );
    let mut session = std::ptr::null_mut();
    assert_eq!(liger_session_new(model, &mut session), LIGER_OK);
    assert_eq!(
        liger_session_feed(session, prompt.as_ptr(), prompt.len()),
        LIGER_OK
    );
    // Greedy generation, one token at a time through sample + feed.
    let mut got = Vec::new();
    for _ in 0..greedy.len() {
        let mut token = 0;
        assert_eq!(
            liger_session_sample(session, std::ptr::null(), &mut token),
            LIGER_OK
        );
        assert_eq!(liger_session_feed(session, &token, 1), LIGER_OK);
        got.push(token);
    }
    assert_eq!(got, greedy, "greedy tokens on the GPU through the C API");
    let mut size = 0;
    assert_eq!(
        liger_state_size(session, &mut size),
        LIGER_ERROR_UNSUPPORTED
    );
    assert!(last_error().contains("wgpu"), "{}", last_error());
    assert_eq!(liger_session_free(session), LIGER_OK);
    assert_eq!(liger_model_free(model), LIGER_OK);
}
