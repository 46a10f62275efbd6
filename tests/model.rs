//! The CPU model against the reference outputs of the Liger authors' code, for every fixture
//! case: `window` semantics = `logits_full`, `hf-compat` = `logits_incremental`, greedy tokens;
//! prefill = token-by-token; save / restore / fork; quantized files' agreement.

use liger::{DecodeMode, Model, ModelOptions, Session};
use liger_tests::*;
use std::path::Path;
use std::sync::Arc;

/// Max |Δlogit| allowed against the fp32 reference (docs/MATH.md §5).
const LOGIT_TOLERANCE: f32 = 1e-3;

fn load(path: &Path) -> Arc<Model> {
    Arc::new(Model::load(path, &ModelOptions::default()).unwrap())
}

fn reference(case: &Path, name: &str) -> (Vec<f32>, Vec<usize>) {
    tensor_f32(&read_bytes(&case.join("reference.safetensors")), name)
}

fn ids(case: &Path) -> Vec<u32> {
    reference(case, "input_ids")
        .0
        .iter()
        .map(|&v| v as u32)
        .collect()
}

/// Logits of every position: one call in window mode; prompt call + single tokens in hf-compat.
pub fn run_semantics(
    model: &Arc<Model>,
    tokens: &[u32],
    mode: DecodeMode,
    prompt_len: usize,
) -> Vec<f32> {
    let mut s = Session::new(model.clone(), mode);
    match mode {
        DecodeMode::Window => s.feed_all_logits(tokens).unwrap(),
        DecodeMode::HfCompat => {
            let mut out = s.feed_all_logits(&tokens[..prompt_len]).unwrap();
            for &t in &tokens[prompt_len..] {
                out.extend_from_slice(s.feed(&[t]).unwrap());
            }
            out
        }
    }
}

/// Compares [T, V] logits row by row; returns (max |Δ|, argmax agreement fraction).
fn compare(what: &str, got: &[f32], want: &[f32], vocab: usize, tol: Option<f32>) -> (f32, f64) {
    assert_eq!(got.len(), want.len(), "{what}: shape");
    let (mut worst, mut agree) = (0f32, 0usize);
    let rows = want.len() / vocab;
    for r in 0..rows {
        let (g, w) = (
            &got[r * vocab..(r + 1) * vocab],
            &want[r * vocab..(r + 1) * vocab],
        );
        let diff = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        if let Some(tol) = tol {
            if !(diff <= tol) || argmax(g) != argmax(w) {
                let i = g
                    .iter()
                    .zip(w)
                    .position(|(a, b)| (a - b).abs() == diff)
                    .unwrap_or(0);
                panic!(
                    "{what}: position {r}: max |Δ| {diff:e} at vocab {i} (got {}, want {}); argmax {} vs {} (tolerance {tol:e})",
                    g[i], w[i], argmax(g), argmax(w)
                );
            }
        }
        worst = worst.max(diff);
        agree += (argmax(g) == argmax(w)) as usize;
    }
    (worst, agree as f64 / rows as f64)
}

#[test]
fn f32_logits_match_the_reference_in_both_semantics() {
    let dir = tempfile::tempdir().unwrap();
    for case in liger_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let model = load(&convert_case(&case, "f32", dir.path()));
        let meta = meta(&case);
        let prompt_len = meta["prompt_len"].as_u64().unwrap() as usize;
        let tokens = ids(&case);
        let vocab = model.config.vocab_size;
        let (full, _) = reference(&case, "logits_full");
        let got = run_semantics(&model, &tokens, DecodeMode::Window, prompt_len);
        let (w1, _) = compare(
            &format!("{name} window vs logits_full"),
            &got,
            &full,
            vocab,
            Some(LOGIT_TOLERANCE),
        );
        let (inc, _) = reference(&case, "logits_incremental");
        let got = run_semantics(&model, &tokens, DecodeMode::HfCompat, prompt_len);
        let (w2, _) = compare(
            &format!("{name} hf-compat vs logits_incremental"),
            &got,
            &inc,
            vocab,
            Some(LOGIT_TOLERANCE),
        );
        eprintln!("{name}: max |Δ| window {w1:.2e}, hf-compat {w2:.2e}");
    }
}

#[test]
fn greedy_tokens_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    for case in liger_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let model = load(&convert_case(&case, "f32", dir.path()));
        let prompt_len = meta(&case)["prompt_len"].as_u64().unwrap() as usize;
        let want: Vec<u32> = reference(&case, "greedy_tokens")
            .0
            .iter()
            .map(|&v| v as u32)
            .collect();
        let (want_logits, _) = reference(&case, "greedy_logits");
        let mut s = Session::new(model.clone(), DecodeMode::HfCompat);
        let mut logits = s.feed(&ids(&case)[..prompt_len]).unwrap().to_vec();
        let mut got = vec![];
        let vocab = model.config.vocab_size;
        for (i, _) in want.iter().enumerate() {
            compare(
                &format!("{name} greedy step {i}"),
                &logits,
                &want_logits[i * vocab..(i + 1) * vocab],
                vocab,
                Some(LOGIT_TOLERANCE),
            );
            let next = argmax(&logits) as u32;
            got.push(next);
            logits = s.feed(&[next]).unwrap().to_vec();
        }
        assert_eq!(got, want, "{name}: greedy tokens");
    }
}

#[test]
fn prefill_equals_token_by_token() {
    let dir = tempfile::tempdir().unwrap();
    for case in ["liger_gla", "liger_hgrn2", "liger_gsa", "liger_qwen2_gla"] {
        let model = load(&convert_case(
            &fixtures().join("liger").join(case),
            "f32",
            dir.path(),
        ));
        let tokens = ids(&fixtures().join("liger").join(case));
        let mut chunked = Session::new(model.clone(), DecodeMode::Window);
        let all = chunked.feed_all_logits(&tokens).unwrap();
        let mut single = Session::new(model.clone(), DecodeMode::Window);
        let mut one_by_one = vec![];
        for &t in &tokens {
            one_by_one.extend_from_slice(single.feed(&[t]).unwrap());
        }
        assert_close(
            &format!("{case}: prefill vs token loop"),
            &all,
            &one_by_one,
            1e-4,
        );
    }
}

#[test]
fn save_restore_and_fork_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    for (case, mode) in [
        ("liger_gla", DecodeMode::Window),
        ("liger_gsa", DecodeMode::HfCompat),
        ("liger_hgrn2", DecodeMode::Window),
    ] {
        let model = load(&convert_case(
            &fixtures().join("liger").join(case),
            "q8_0",
            dir.path(),
        ));
        let tokens = ids(&fixtures().join("liger").join(case));
        let mut s = Session::new(model.clone(), mode);
        s.feed(&tokens[..30]).unwrap();
        let saved = s.save_state().unwrap();
        assert_eq!(saved.len(), s.state_size());
        let fork = s.fork().unwrap();
        let next: Vec<u32> = tokens[30..80].to_vec();
        let first: Vec<Vec<f32>> = next
            .iter()
            .map(|&t| s.feed(&[t]).unwrap().to_vec())
            .collect();
        s.load_state(&saved).unwrap();
        assert_eq!(s.position(), 30);
        let again: Vec<Vec<f32>> = next
            .iter()
            .map(|&t| s.feed(&[t]).unwrap().to_vec())
            .collect();
        assert_eq!(
            first, again,
            "{case}: feed 50 after restore gives identical logits"
        );
        let mut fork = fork;
        let forked: Vec<Vec<f32>> = next
            .iter()
            .map(|&t| fork.feed(&[t]).unwrap().to_vec())
            .collect();
        assert_eq!(first, forked, "{case}: a fork continues identically");
    }
}

#[test]
fn states_from_elsewhere_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let gla = load(&convert_case(
        &fixtures().join("liger/liger_gla"),
        "f32",
        dir.path(),
    ));
    let hgrn2 = load(&convert_case(
        &fixtures().join("liger/liger_hgrn2"),
        "f32",
        dir.path(),
    ));
    let mut a = Session::new(gla.clone(), DecodeMode::Window);
    a.feed(&[1, 2, 3]).unwrap();
    let saved = a.save_state().unwrap();
    let mut b = Session::new(hgrn2, DecodeMode::Window);
    let err = b.load_state(&saved).unwrap_err().to_string();
    assert!(err.contains("another model"), "{err}");
    let mut c = Session::new(gla.clone(), DecodeMode::HfCompat);
    assert!(c
        .load_state(&saved)
        .unwrap_err()
        .to_string()
        .contains("decode mode"));
    let mut corrupt = saved.clone();
    corrupt[100] ^= 1;
    assert!(a
        .load_state(&corrupt)
        .unwrap_err()
        .to_string()
        .contains("checksum"));
    assert!(a.load_state(&saved[..saved.len() - 1]).is_err());
    let mut future = saved.clone();
    future[4] = 9;
    assert!(a
        .load_state(&future)
        .unwrap_err()
        .to_string()
        .contains("version 9"));
    assert_eq!(
        a.position(),
        3,
        "a failed load leaves the session as it was"
    );
    let err = a.feed(&[512]).unwrap_err().to_string();
    assert!(
        err.contains("id 512") && err.contains("vocabulary of 512"),
        "{err}"
    );
}

#[test]
fn quantized_files_agree_with_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let mut report = vec![];
    for case in liger_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let (full, _) = reference(&case, "logits_full");
        let tokens = ids(&case);
        let mut kls = Vec::new();
        for (ty, kl_bound) in KL_BOUNDS {
            let model = load(&convert_case(&case, ty, dir.path()));
            let vocab = model.config.vocab_size;
            let got = run_semantics(&model, &tokens, DecodeMode::Window, 0);
            let (worst, agree) = compare(&format!("{name} {ty}"), &got, &full, vocab, None);
            let kl = mean_kl(&full, &got, vocab);
            report.push(format!(
                "{name:22} {ty:7} argmax agreement {:5.1}%  mean KL {kl:.2e}  max |Δ| {worst:.3}",
                agree * 100.0
            ));
            if ty == "q8_0" {
                assert!(agree >= 0.95, "{name} q8_0: argmax agreement {agree} < 95%");
            }
            assert!(
                kl <= kl_bound,
                "{name} {ty}: mean KL {kl:.3e} to the f32 reference exceeds {kl_bound:.0e}"
            );
            kls.push(kl);
        }
        // As with ggml's types: 8 bits lose least, and Q4_K_M (K-quants, Q6_K where it
        // matters) less than Q4_0.
        assert!(
            kls[0] < kls[2] && kls[2] < kls[1],
            "{name}: mean KL q8_0 {:.2e}, q4_0 {:.2e}, q4_k_m {:.2e} out of order",
            kls[0],
            kls[1],
            kls[2]
        );
    }
    eprintln!("{}", report.join("\n"));
}

/// Mean KL bounds per type on the random-weight fixtures (their weights quantize as ggml's do,
/// byte for byte: `tests/quant.rs`). Measured (this suite, every case): q8_0 3.5e-4–1.9e-3,
/// q4_0 8.0e-2–3.7e-1, q4_k_m 9.5e-3–3.3e-2 — the tied-embedding case highest, its LM head at
/// the file's type. The bounds leave about 2× margin.
const KL_BOUNDS: [(&str, f64); 3] = [("q8_0", 5e-3), ("q4_0", 0.8), ("q4_k_m", 0.08)];

/// Mean over positions of KL(softmax(reference) || softmax(got)).
fn mean_kl(reference: &[f32], got: &[f32], vocab: usize) -> f64 {
    let log_softmax = |row: &[f32]| -> Vec<f64> {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = row
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln()
            + max;
        row.iter().map(|&v| v as f64 - lse).collect()
    };
    let rows = reference.len() / vocab;
    (0..rows)
        .map(|r| {
            let p = log_softmax(&reference[r * vocab..(r + 1) * vocab]);
            let q = log_softmax(&got[r * vocab..(r + 1) * vocab]);
            p.iter()
                .zip(&q)
                .map(|(a, b)| a.exp() * (a - b))
                .sum::<f64>()
        })
        .sum::<f64>()
        / rows as f64
}

/// Resident memory of this process (Linux `VmRSS`), bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// 100k tokens through one session: the state size never changes and the process memory
/// stays flat. Runs in a child process so that other tests' memory does not interfere.
#[test]
fn state_and_memory_stay_fixed_over_100k_tokens() {
    const CHILD: &str = "LIGER_TEST_100K_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "model::state_and_memory_stay_fixed_over_100k_tokens",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "child run failed:\n{text}"
        );
        eprintln!(
            "{}",
            text.lines()
                .filter(|l| l.contains("100k:"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = load(&convert_case(
        &fixtures().join("liger/liger_gla"),
        "q8_0",
        dir.path(),
    ));
    let mut s = Session::new(model.clone(), DecodeMode::Window);
    let size = s.state_size();
    let tokens: Vec<u32> = (0..1000u32).map(|i| (i * 7919 + 13) % 512).collect();
    s.feed(&tokens).unwrap();
    for &t in &tokens[..50] {
        s.feed(&[t]).unwrap();
    }
    let before = resident_bytes();
    while s.position() < 100_000 {
        let n = (100_000 - s.position()).min(1000);
        s.feed(&tokens[..n]).unwrap();
        if s.position() % 20_000 < 1000 {
            // Some single-token steps too (the decode path).
            for &t in &tokens[..10.min(100_000 - s.position())] {
                s.feed(&[t]).unwrap();
            }
        }
    }
    let after = resident_bytes();
    assert_eq!(s.position(), 100_000);
    assert_eq!(s.state_size(), size, "state size changed");
    assert_eq!(s.save_state().unwrap().len(), size);
    assert!(
        s.logits().iter().all(|v| v.is_finite()),
        "logits stay finite at 100k tokens"
    );
    let growth = after.saturating_sub(before);
    eprintln!(
        "100k: state {size} bytes; resident {:.1} MiB → {:.1} MiB (+{} KiB)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        growth / 1024
    );
    assert!(before > 0, "VmRSS readable");
    assert!(
        growth < 4 << 20,
        "resident memory grew by {growth} bytes over 100k tokens"
    );
}

/// Once its buffers exist, a decode step allocates nothing on the calling thread: the step
/// plan, the scratch rows and the activation blocks are reused token after token — on every
/// variant's mixer, repacked, in-place and float weights, past the window's wrap-around.
#[test]
fn a_decode_step_allocates_nothing() {
    use liger_tests::alloc::peak_during;
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("liger_gla", "q4_0"),
        ("liger_gsa", "q8_0"),
        ("liger_hgrn2", "f16"),
        ("liger_qwen2_gla", "f32"),
    ];
    for (name, ty) in cases {
        let path = convert_case(&fixtures().join("liger").join(name), ty, dir.path());
        let model = load(&path);
        let vocab = model.config.vocab_size as u32;
        let mut session = Session::new(Arc::clone(&model), DecodeMode::Window);
        session.feed(&[1, 2, 3]).unwrap();
        // The first decode step grows the buffers of one token.
        session.feed(&[4]).unwrap();
        for i in 0..100u32 {
            let token = (5 + 7 * i) % vocab;
            let (fed, peak) = peak_during(|| session.feed(&[token]).map(|_| ()));
            fed.unwrap();
            assert_eq!(
                peak, 0,
                "{name} {ty}: decode step {i} allocated {peak} bytes"
            );
        }
    }
}
