//! Sequences decoded together (`Session::feed_many`) against the Liger authors' reference:
//! every fixture case decoded as part of a batch of 3 mixed sequences — the case itself in
//! window semantics (teacher-forced, vs `logits_full`) and greedily in hf-compat semantics (vs
//! `greedy_logits` / `greedy_tokens`), and another case's prompt of another length — joining
//! at different steps, so that a prompt chunk is fed in the same step as the others' decode
//! tokens — on every backend (the CPU; wgpu on lavapipe in CI; CUDA where a device is).

use liger::{Backend, DecodeMode, Model, ModelOptions, Session};
use liger_tests::*;
use std::sync::Arc;

/// Max |Δlogit| against the fp32 reference (docs/MATH.md §5), as for one sequence alone.
const LOGIT_TOLERANCE: f32 = 1e-3;
/// Max |Δlogit| against the same sequence alone: f32 weights, the same products in the same
/// order on the CPU (the four-row and row kernels do not depend on how many tokens run
/// together); on a GPU the product of one row (matvec) and of several (matmul) add in
/// different orders, which stays within this too.
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
fn run(
    backend: &Arc<dyn Backend>,
    scripts: &[Script],
    together: bool,
) -> Vec<(Vec<Vec<f32>>, Vec<u32>)> {
    let mut sessions: Vec<Session> = scripts
        .iter()
        .map(|s| Session::on(backend, s.mode).unwrap())
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
        for backend in every_backend(&model) {
            check_backend(&backend, case, &name, &scripts, prompt_len, &greedy);
        }
    }
}

/// The scripts on `backend` together and alone: the reference's logits and tokens, and each
/// sequence as it is alone.
fn check_backend(
    backend: &Arc<dyn Backend>,
    case: &std::path::Path,
    case_name: &str,
    scripts: &[Script],
    prompt_len: usize,
    greedy: &[u32],
) {
    let vocab = backend.model().config.vocab_size;
    let name = format!("{case_name} on {}", backend.kind().name());
    {
        let together = run(backend, scripts, true);
        // Each sequence alone: on the CPU all three; on a GPU the third only, the two others
        // being held to the reference (lavapipe in CI makes every GPU step slow).
        let first_alone = if backend.kind() == liger::backend::BackendKind::Cpu {
            0
        } else {
            2
        };
        let alone = run(backend, &scripts[first_alone..], false);

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
        // Each sequence that also ran alone (above) against that run.
        let mut worst = 0f32;
        for (i, (t, a)) in together[first_alone..].iter().zip(&alone).enumerate() {
            let i = i + first_alone;
            assert_eq!(
                t.1, a.1,
                "{name} sequence {i}: tokens in the batch vs alone"
            );
            for (k, (g, w)) in t.0.iter().zip(&a.0).enumerate() {
                let d = max_diff(g, w);
                worst = worst.max(d);
                assert!(
                    d <= ALONE_TOLERANCE,
                    "{name} sequence {i} call {k}: max |Δ| {d:e} vs alone"
                );
            }
        }
        eprintln!(
            "{name}: 3 sequences in a batch: window, hf-compat greedy and a second prompt match \
             (max |Δ| vs alone {worst:e})"
        );
    }
}

/// More sequences than one step takes ([`liger::backend::device_plan::MAX_TOGETHER`] on a GPU)
/// with prompts longer than a step's rows (256), so that steps run without logits and groups
/// follow one another: every sequence's logits and greedy tokens as alone, on every backend
/// at f32 weights, and on the CPU at Q8_0. Q8_0 on the CPU: 1e-4 of the largest |logit| — a
/// prompt is cut into other chunks beside other sequences, so a row may go through the panel
/// kernel rather than the four-row one, which add the blocks' partial sums in another order
/// (≈ 1 ulp), and the 16-bit quantization of the next product's activations can turn that into
/// one step of max|x|/32767 (measured 4e-5 of the largest |logit|; see `session::tests`). A GPU
/// runs the f32 model only (it dequantizes Q8_0 to f32), held to the f32 tolerance.
#[test]
fn many_sequences_with_long_prompts_together_equal_each_alone() {
    const Q8_0_CPU_RELATIVE: f32 = 1e-4;
    let dir = tempfile::tempdir().unwrap();
    let case = liger_cases()
        .into_iter()
        .find(|c| c.ends_with("liger_gla"))
        .expect("the liger_gla fixture");
    for ty in ["f32", "q8_0"] {
        let model = Arc::new(
            Model::load(
                &convert_case(&case, ty, dir.path()),
                &ModelOptions::default(),
            )
            .unwrap(),
        );
        let vocab = model.config.vocab_size as u32;
        let scripts: Vec<Script> = (0..18)
            .map(|i: u32| Script {
                mode: if i % 3 == 1 {
                    DecodeMode::HfCompat
                } else {
                    DecodeMode::Window
                },
                start: (i % 4) as usize,
                prompt: (0..[300, 5, 40, 1][i as usize % 4])
                    .map(|t| (t * 7 + i * 11 + 3) % vocab)
                    .collect(),
                then: vec![None; 3],
            })
            .collect();
        for backend in every_backend(&model) {
            let on_cpu = backend.kind() == liger::backend::BackendKind::Cpu;
            if ty == "q8_0" && !on_cpu {
                // A GPU dequantizes Q8_0 to f32 in its products (each checked against the CPU
                // in `gpu::tests`): how it batches sequences is the f32 run's.
                continue;
            }
            let together = run(&backend, &scripts, true);
            let alone = run(&backend, &scripts, false);
            let mut worst = 0f32;
            for (i, (t, a)) in together.iter().zip(&alone).enumerate() {
                let what = format!("{ty} on {} sequence {i}", backend.kind().name());
                assert_eq!(t.1, a.1, "{what}: greedy tokens together vs alone");
                assert_eq!(t.0.len(), a.0.len(), "{what}: calls");
                for (k, (g, w)) in t.0.iter().zip(&a.0).enumerate() {
                    let d = max_diff(g, w);
                    worst = worst.max(d);
                    let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let tolerance = match (ty, on_cpu) {
                        ("q8_0", true) => Q8_0_CPU_RELATIVE * scale,
                        _ => ALONE_TOLERANCE,
                    };
                    assert!(
                        d <= tolerance,
                        "{what} call {k}: max |Δ| {d:e} vs alone (tolerance {tolerance:e}, max |logit| {scale})"
                    );
                }
            }
            eprintln!(
                "{ty} on {}: 18 sequences with prompts of 1..300 tokens together: max |Δ| vs alone {worst:e}",
                backend.kind().name()
            );
        }
    }
}
