//! The wgpu backend end to end: the shared prefill check (`device.rs`) on the wgpu step, a
//! model split over binding limits, and C API sessions on the GPU. Without an adapter: skipped
//! with a printed reason, or failed in CI.

use crate::device::{self, check_row, Uploaded};
use liger::backend::{DeviceSequence, StepOnDevice};
use liger::gpu::{GpuContext, GpuModel, GpuSequence};
use liger::{Model, ModelOptions};
use liger_tests::*;
use std::sync::Arc;

/// Uploads `model` to the adapter (one context per model, as an app would have).
fn upload(model: Arc<Model>) -> Uploaded {
    let gpu = Arc::new(GpuModel::new(GpuContext::new().unwrap(), model).unwrap());
    Box::new(move |batch| Box::new(GpuSequence::with_batch(&gpu, batch).unwrap()))
}

// Every fixture token by token in both semantics on wgpu is
// `backends::every_backend_reproduces_the_reference_logits_in_both_semantics` (through the
// backend interface, one token per batch): the same steps as `device::decode_matches_the_reference`,
// which lavapipe would run a second time here.

#[test]
fn gpu_prefill_batches_match_the_reference_logits() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    device::prefill_batches_match_the_reference(&ctx.describe(), &upload);
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
        use_mmap: 1,
    };
    let mut model = std::ptr::null_mut();
    assert_eq!(
        liger_model_load(path.as_ptr(), &options, &mut model),
        LIGER_OK,
        "{}",
        last_error()
    );
    let cpu_options = LigerModelOptions {
        backend: LIGER_BACKEND_CPU,
        ..options
    };
    let mut cpu_model = std::ptr::null_mut();
    assert_eq!(
        liger_model_load(path.as_ptr(), &cpu_options, &mut cpu_model),
        LIGER_OK
    );
    // Greedy generation, one token at a time through sample + feed.
    let greedy_from = |session: *mut LigerSession| {
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
        got
    };
    let new_session = |model: *mut LigerModel| {
        let mut session = std::ptr::null_mut();
        assert_eq!(liger_session_new(model, &mut session), LIGER_OK);
        session
    };
    let save = |session: *mut LigerSession| {
        let mut size = 0;
        assert_eq!(liger_state_size(session, &mut size), LIGER_OK);
        let mut state = vec![0u8; size];
        let mut len = 0;
        assert_eq!(
            liger_state_save(session, state.as_mut_ptr(), size, &mut len),
            LIGER_OK,
            "{}",
            last_error()
        );
        assert_eq!(len, size);
        state
    };
    let load = |session: *mut LigerSession, state: &[u8]| {
        assert_eq!(
            liger_state_load(session, state.as_ptr(), state.len()),
            LIGER_OK,
            "{}",
            last_error()
        );
    };

    let gpu = new_session(model);
    assert_eq!(
        liger_session_feed(gpu, prompt.as_ptr(), prompt.len()),
        LIGER_OK
    );
    let after_prompt = save(gpu);
    let mut fork = std::ptr::null_mut();
    assert_eq!(liger_session_fork(gpu, &mut fork), LIGER_OK);
    assert_eq!(
        greedy_from(gpu),
        greedy,
        "greedy tokens on the GPU through the C API"
    );
    // The fork and a fresh GPU session restored from the saved state go on the same way.
    assert_eq!(greedy_from(fork), greedy, "greedy tokens of a GPU fork");
    let restored = new_session(model);
    load(restored, &after_prompt);
    assert_eq!(
        greedy_from(restored),
        greedy,
        "greedy tokens of a restored GPU state"
    );
    // States move between backends: the GPU's on the CPU, the CPU's on the GPU.
    let cpu = new_session(cpu_model);
    load(cpu, &after_prompt);
    assert_eq!(
        greedy_from(cpu),
        greedy,
        "the GPU's state continued on the CPU"
    );
    let cpu_prompt = new_session(cpu_model);
    assert_eq!(
        liger_session_feed(cpu_prompt, prompt.as_ptr(), prompt.len()),
        LIGER_OK
    );
    let on_gpu = new_session(model);
    load(on_gpu, &save(cpu_prompt));
    assert_eq!(
        greedy_from(on_gpu),
        greedy,
        "the CPU's state continued on the GPU"
    );
    // A corrupted state is refused and leaves the session as it was.
    let mut bad = after_prompt.clone();
    bad[60] ^= 1;
    assert_eq!(
        liger_state_load(on_gpu, bad.as_ptr(), bad.len()),
        LIGER_ERROR_STATE
    );
    assert!(last_error().contains("checksum"), "{}", last_error());
    for s in [gpu, fork, restored, cpu, cpu_prompt, on_gpu] {
        assert_eq!(liger_session_free(s), LIGER_OK);
    }
    assert_eq!(liger_model_free(model), LIGER_OK);
    assert_eq!(liger_model_free(cpu_model), LIGER_OK);
}

/// Real weights at 4 bits: SmolLM2-135M at Q4_0 opens on wgpu. Its self-test compares with the
/// CPU computing as the GPUs do (f32 activations): against the CPU's usual 8-bit activations
/// the gap was the CPU's own rounding (max |Δlogit| 1.7 for logits up to 18) and the backend
/// was refused.
#[test]
fn smollm2_at_q4_0_passes_the_wgpu_self_test() {
    use liger::backend::{self, BackendKind};
    let Some(gguf) = test_data("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    if GpuContext::for_tests().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smollm2.q4_0.gguf");
    convert_to(&gguf, &out, "q4_0", None).unwrap();
    let model = Arc::new(Model::load(&out, &ModelOptions::default()).unwrap());
    let opened = backend::open(BackendKind::Wgpu, &model).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(opened.backend.kind(), BackendKind::Wgpu);
}
