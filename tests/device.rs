//! End-to-end checks shared by the GPU backends (wgpu, CUDA): every fixture, fed token by
//! token through the device's decode step and in prefill batches, against the reference logits
//! of the authors' code in both semantics (window: one call; hf-compat: the prompt call, then
//! one call per token) with the CPU's tolerance.

use liger::{Model, ModelOptions};
use liger_tests::*;
use std::sync::Arc;

/// Max |Δlogit| against the fp32 reference: the CPU's (docs/MATH.md §5); the GPUs compute in f32
/// with f32 weights here, only the summation order differs.
pub const LOGIT_TOLERANCE: f32 = 1e-3;

/// A sequence on a device, as these checks drive it (any backend's `DeviceSequence`).
pub trait Feeds {
    /// Feeds `tokens` as one call (`hf_compat`: the window emptied first); the last logits.
    fn feed_call(&mut self, tokens: &[u32], hf_compat: bool) -> liger::Result<&[f32]>;
}

impl<S: liger::backend::DeviceSequence> Feeds for S {
    fn feed_call(&mut self, tokens: &[u32], hf_compat: bool) -> liger::Result<&[f32]> {
        self.feed(tokens, hf_compat)
    }
}

/// A model uploaded to a device: makes sequences with prefill batches of the given size.
pub type Uploaded = Box<dyn Fn(usize) -> Box<dyn Feeds>>;

/// Asserts `got` is within the tolerance of the reference row; returns the largest |Δ|.
pub fn check_row(got: &[f32], want: &[f32], what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: logits length");
    let mut worst = 0f32;
    for (v, (g, w)) in got.iter().zip(want).enumerate() {
        let delta = (g - w).abs();
        assert!(
            delta <= LOGIT_TOLERANCE,
            "{what}: first mismatch at vocab id {v}: device {g}, reference {w}"
        );
        worst = worst.max(delta);
    }
    worst
}

/// A fixture case converted to f32 and uploaded, with its reference logits.
struct Case {
    name: String,
    vocab: usize,
    new_sequence: Uploaded,
    ids: Vec<u32>,
    prompt_len: usize,
    /// [T, vocab] of one full forward (window semantics) and of HF's cached generate().
    logits_full: Vec<f32>,
    logits_incremental: Vec<f32>,
}

impl Case {
    fn load(
        case: &std::path::Path,
        dir: &std::path::Path,
        upload: &dyn Fn(Arc<Model>) -> Uploaded,
    ) -> Case {
        let model = Model::load(convert_case(case, "f32", dir), &ModelOptions::default()).unwrap();
        let reference = read_bytes(&case.join("reference.safetensors"));
        let (ids, _) = tensor_f32(&reference, "input_ids");
        Case {
            name: case.file_name().unwrap().to_string_lossy().to_string(),
            vocab: model.config.vocab_size,
            new_sequence: upload(Arc::new(model)),
            ids: ids.iter().map(|&i| i as u32).collect(),
            prompt_len: meta(case)["prompt_len"].as_u64().unwrap() as usize,
            logits_full: tensor_f32(&reference, "logits_full").0,
            logits_incremental: tensor_f32(&reference, "logits_incremental").0,
        }
    }

    /// Token t's row of reference logits.
    fn row<'a>(&self, logits: &'a [f32], t: usize) -> &'a [f32] {
        &logits[t * self.vocab..(t + 1) * self.vocab]
    }
}

/// Every fixture token by token (batches of 1), in both semantics, on `device` (CUDA; wgpu's
/// is the backends test's, see `gpu.rs`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub fn decode_matches_the_reference(device: &str, upload: &dyn Fn(Arc<Model>) -> Uploaded) {
    let dir = tempfile::tempdir().unwrap();
    for case in liger_cases() {
        let c = Case::load(&case, dir.path(), upload);
        for (semantics, want) in [
            ("window", &c.logits_full),
            ("hf-compat", &c.logits_incremental),
        ] {
            let mut seq = (c.new_sequence)(1);
            let mut worst = 0f32;
            for (t, &id) in c.ids.iter().enumerate() {
                // hf-compat: the prompt is one call, then every token its own call.
                let clear = semantics == "hf-compat" && (t == 0 || t >= c.prompt_len);
                let got = seq.feed_call(&[id], clear).unwrap();
                let what = format!("{} ({semantics}) on {device}, token {t}", c.name);
                worst = worst.max(check_row(got, c.row(want, t), &what));
            }
            eprintln!(
                "{} ({semantics}) on {device}: {} tokens, max |Δ| {worst:.2e}",
                c.name,
                c.ids.len()
            );
        }
    }
}

/// Single-token calls after the hf-compat prompt in [`prefill_batches_match_the_reference`].
const HF_COMPAT_DECODE_CALLS: usize = 8;

/// Calls of 1..=7 tokens on sequences whose batches hold 3: calls of one batch, of several,
/// partial batches, and the window ring wrapping (96 tokens, a 64-token window); checked at
/// the end of every call.
pub fn prefill_batches_match_the_reference(device: &str, upload: &dyn Fn(Arc<Model>) -> Uploaded) {
    let dir = tempfile::tempdir().unwrap();
    for case in liger_cases() {
        let c = Case::load(&case, dir.path(), upload);
        let (name, ids, prompt_len) = (&c.name, &c.ids, c.prompt_len);

        // Window semantics: the whole sequence is one call, split into feeds of 1..=7.
        let mut seq = (c.new_sequence)(3);
        let (mut at, mut size, mut worst) = (0, 1, 0f32);
        while at < ids.len() {
            let end = (at + size).min(ids.len());
            let got = seq.feed_call(&ids[at..end], false).unwrap();
            let what = format!("{name} (window) on {device}, prefill of tokens {at}..{end}");
            worst = worst.max(check_row(got, c.row(&c.logits_full, end - 1), &what));
            (at, size) = (end, size % 7 + 1);
        }
        // hf-compat: the prompt in one call (three batches), then one call per token for a few
        // tokens (every token's call in this semantics is checked by the backends test).
        let want = &c.logits_incremental;
        let mut seq = (c.new_sequence)(3);
        let got = seq.feed_call(&ids[..prompt_len], true).unwrap();
        let what = format!("{name} (hf-compat) on {device}, prompt");
        worst = worst.max(check_row(got, c.row(want, prompt_len - 1), &what));
        for t in prompt_len..ids.len().min(prompt_len + HF_COMPAT_DECODE_CALLS) {
            let got = seq.feed_call(&ids[t..t + 1], true).unwrap();
            let what = format!("{name} (hf-compat) on {device}, token {t}");
            worst = worst.max(check_row(got, c.row(want, t), &what));
        }
        eprintln!("{name} on {device}: batched prefill, max |Δ| {worst:.2e}");
    }
}
