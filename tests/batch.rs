//! Sequences decoded together (`Session::feed_many`) against the Liger authors' reference:
//! every fixture case decoded as part of a batch of 3 mixed sequences — the case itself in
//! window semantics (teacher-forced, vs `logits_full`) and greedily in hf-compat semantics (vs
//! `greedy_logits` / `greedy_tokens`), and another case's prompt of another length — joining
//! at different steps, so that a prompt chunk is fed in the same step as the others' decode
//! tokens.

use liger::{DecodeMode, Model, ModelOptions, Session};
use liger_tests::*;
use std::sync::Arc;

/// Max |Δlogit| against the fp32 reference (DESIGN §5), as for one sequence alone.
const LOGIT_TOLERANCE: f32 = 1e-3;
/// Max |Δlogit| against the same sequence alone: f32 weights, the same products in the same
/// order (the four-row and row kernels do not depend on how many tokens run together).
const ALONE_TOLERANCE: f32 = 1e-4;

fn reference(case: &std::path::Path, name: &str) -> Vec<f32> {
    tensor_f32(&read_bytes(&case.join("reference.safetensors")), name).0
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// One sequence of the batch: what it feeds at each of its steps (its prompt first; a
/// `None` token is its own greedy choice), from step `start` on.
struct Script {
    mode: DecodeMode,
    start: usize,
    prompt: Vec<u32>,
    then: Vec<Option<u32>>,
}

/// The logits after each call and the tokens fed after the prompt, alone or in the batch.
fn run(model: &Arc<Model>, scripts: &[Script], together: bool) -> Vec<(Vec<Vec<f32>>, Vec<u32>)> {
    let mut sessions: Vec<Session> = scripts
        .iter()
        .map(|s| Session::new(model.clone(), s.mode))
        .collect();
    let mut out: Vec<(Vec<Vec<f32>>, Vec<u32>)> = vec![Default::default(); scripts.len()];
    let steps = scripts
        .iter()
        .map(|s| s.start + 1 + s.then.len())
        .max()
        .unwrap();
    for step in 0..steps {
        let feeds: Vec<(usize, Vec<u32>)> = scripts
            .iter()
            .enumerate()
            .filter(|(_, s)| step >= s.start && step <= s.start + s.then.len())
            .map(|(i, s)| match step - s.start {
                0 => (i, s.prompt.clone()),
                k => {
                    let t = s.then[k - 1].unwrap_or(argmax(sessions[i].logits()) as u32);
                    (i, vec![t])
                }
            })
            .collect();
        if together {
            let mut work: Vec<(&mut Session, &[u32])> = sessions
                .iter_mut()
                .enumerate()
                .filter_map(|(i, s)| Some((s, feeds.iter().find(|f| f.0 == i)?.1.as_slice())))
                .collect();
            Session::feed_many(&mut work).unwrap();
        } else {
            for (i, tokens) in &feeds {
                sessions[*i].feed(tokens).unwrap();
            }
        }
        for (i, tokens) in &feeds {
            if step > scripts[*i].start {
                out[*i].1.push(tokens[0]);
            }
            out[*i].0.push(sessions[*i].logits().to_vec());
        }
    }
    out
}

#[test]
fn every_fixture_case_decoded_in_a_mixed_batch_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let cases = liger_cases();
    for (n, case) in cases.iter().enumerate() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let model = Arc::new(
            Model::load(
                &convert_case(case, "f32", dir.path()),
                &ModelOptions::default(),
            )
            .unwrap(),
        );
        let vocab = model.config.vocab_size;
        let prompt_len = meta(case)["prompt_len"].as_u64().unwrap() as usize;
        let ids: Vec<u32> = reference(case, "input_ids")
            .iter()
            .map(|&v| v as u32)
            .collect();
        let greedy: Vec<u32> = reference(case, "greedy_tokens")
            .iter()
            .map(|&v| v as u32)
            .collect();
        // Another variant's prompt (ids folded into this vocabulary), of another length.
        let other = &cases[(n + 1) % cases.len()];
        let other_ids: Vec<u32> = reference(other, "input_ids")
            .iter()
            .map(|&v| v as u32 % vocab as u32)
            .take(prompt_len + 3)
            .collect();
        let scripts = [
            Script {
                mode: DecodeMode::Window,
                start: 0,
                prompt: ids[..prompt_len].to_vec(),
                then: ids[prompt_len..].iter().map(|&t| Some(t)).collect(),
            },
            Script {
                mode: DecodeMode::HfCompat,
                start: 1,
                prompt: ids[..prompt_len].to_vec(),
                then: vec![None; greedy.len()],
            },
            Script {
                mode: DecodeMode::Window,
                start: 2,
                prompt: other_ids,
                then: vec![None; 4],
            },
        ];
        let together = run(&model, &scripts, true);
        let alone = run(&model, &scripts, false);

        // The case in window semantics: logits_full at the last position of each call.
        let full = reference(case, "logits_full");
        for (k, got) in together[0].0.iter().enumerate() {
            let p = prompt_len - 1 + k;
            let d = max_diff(got, &full[p * vocab..(p + 1) * vocab]);
            assert!(
                d <= LOGIT_TOLERANCE,
                "{name} window, position {p}: max |Δ| {d:e} vs logits_full"
            );
        }
        // The case's greedy decoding in hf-compat semantics.
        let want = reference(case, "greedy_logits");
        assert_eq!(
            together[1].1, greedy,
            "{name}: greedy tokens decoded in the batch"
        );
        for (k, got) in together[1].0.iter().take(greedy.len()).enumerate() {
            let d = max_diff(got, &want[k * vocab..(k + 1) * vocab]);
            assert!(
                d <= LOGIT_TOLERANCE,
                "{name} hf-compat greedy step {k}: max |Δ| {d:e}"
            );
        }
        // Every sequence as it is alone.
        for (i, (t, a)) in together.iter().zip(&alone).enumerate() {
            assert_eq!(
                t.1, a.1,
                "{name} sequence {i}: tokens in the batch vs alone"
            );
            for (k, (g, w)) in t.0.iter().zip(&a.0).enumerate() {
                let d = max_diff(g, w);
                assert!(
                    d <= ALONE_TOLERANCE,
                    "{name} sequence {i} call {k}: max |Δ| {d:e} vs alone"
                );
            }
        }
        eprintln!(
            "{name}: 3 sequences in a batch: window, hf-compat greedy and a second prompt match"
        );
    }
}
