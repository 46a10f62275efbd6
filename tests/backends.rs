//! Every backend through the one interface (`liger::backend`, `Session::on`): sessions on the
//! CPU, on wgpu (lavapipe in CI) and on CUDA (where a device is) reproduce the fixtures'
//! reference logits in both decode semantics, and a state saved on one backend continues on
//! another with the same next tokens.

use liger::backend::{self, BackendKind};
use liger::{DecodeMode, Model, ModelOptions, Session};
use liger_tests::*;
use std::sync::Arc;

/// Max |Δlogit| against the fp32 reference on f32 weights (docs/MATH.md §5), on every backend.
const LOGIT_TOLERANCE: f32 = 1e-3;

fn first_mismatch(got: &[f32], want: &[f32], vocab: usize, what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: logits length");
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let delta = (g - w).abs();
        assert!(
            delta <= LOGIT_TOLERANCE,
            "{what}: first mismatch at token {} vocab id {}: got {g}, reference {w} \
             (|Δ| {delta:.3e}, tolerance {LOGIT_TOLERANCE})",
            i / vocab,
            i % vocab
        );
        worst = worst.max(delta);
    }
    worst
}

fn load_case(case: &std::path::Path, dir: &std::path::Path) -> Arc<Model> {
    let path = convert_case(case, "f32", dir);
    Arc::new(Model::load(path, &ModelOptions::default()).unwrap())
}

#[test]
fn every_backend_reproduces_the_reference_logits_in_both_semantics() {
    let dir = tempfile::tempdir().unwrap();
    for case in liger_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let model = load_case(&case, dir.path());
        let vocab = model.config.vocab_size;
        let reference = read_bytes(&case.join("reference.safetensors"));
        let ids: Vec<u32> = tensor_f32(&reference, "input_ids")
            .0
            .iter()
            .map(|&v| v as u32)
            .collect();
        let prompt_len = meta(&case)["prompt_len"].as_u64().unwrap() as usize;
        let full = tensor_f32(&reference, "logits_full").0;
        let incremental = tensor_f32(&reference, "logits_incremental").0;
        for backend in every_backend(&model) {
            let on = backend.describe();
            // A sequence refuses a token outside the vocabulary itself (not only `Session`).
            let mut raw = backend.new_sequence(DecodeMode::Window).unwrap();
            let err = raw.feed(&[vocab as u32], None).unwrap_err().to_string();
            assert!(err.contains("outside the vocabulary"), "{on}: {err}");
            assert_eq!(raw.position(), 0, "{on}: a refused token was fed");
            // window: one full call; every token's logits.
            let mut s = Session::on(&backend, DecodeMode::Window).unwrap();
            let got = s.feed_all_logits(&ids).unwrap();
            let worst = first_mismatch(&got, &full, vocab, &format!("{name} window on {on}"));
            // hf-compat: the prompt as one call, then a call per token.
            let mut s = Session::on(&backend, DecodeMode::HfCompat).unwrap();
            let mut got = s.feed_all_logits(&ids[..prompt_len]).unwrap();
            for &t in &ids[prompt_len..] {
                got.extend_from_slice(s.feed(&[t]).unwrap());
            }
            let what = format!("{name} hf-compat on {on}");
            let worst = worst.max(first_mismatch(&got, &incremental, vocab, &what));
            assert_eq!(s.position(), ids.len());
            eprintln!("{name} on {on}: both semantics, max |Δ| {worst:.2e}");
        }
    }
}

/// Greedy tokens from a session's current logits, each fed.
fn greedy(s: &mut Session, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let t = liger::sampler::argmax(s.logits()) as u32;
            s.feed(&[t]).unwrap();
            t
        })
        .collect()
}

#[test]
fn a_state_moves_between_backends_with_the_same_next_tokens() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["liger_gla", "liger_gsa"] {
        let model = load_case(&fixtures().join("liger").join(name), dir.path());
        let backends = every_backend(&model);
        let prompt: Vec<u32> = (0..70).map(|i| (i * 37 % 200) as u32 + 3).collect();
        for mode in [DecodeMode::Window, DecodeMode::HfCompat] {
            // The CPU alone: prompt, then 12 greedy tokens.
            let mut cpu = Session::on(&backends[0], mode).unwrap();
            cpu.feed(&prompt).unwrap();
            let want = greedy(&mut cpu, 12);
            for other in &backends[1..] {
                // CPU → other → CPU, through saved bytes, 4 tokens on each.
                let mut s = Session::on(&backends[0], mode).unwrap();
                s.feed(&prompt).unwrap();
                let mut got = greedy(&mut s, 4);
                let mut there = Session::on(other, mode).unwrap();
                there.load_state(&s.save_state().unwrap()).unwrap();
                assert_eq!(there.position(), s.position());
                got.extend(greedy(&mut there, 4));
                let mut back = there.moved_to(&backends[0]).unwrap();
                got.extend(greedy(&mut back, 4));
                assert_eq!(
                    got,
                    want,
                    "{name} {}: CPU → {} → CPU",
                    mode.name(),
                    other.describe()
                );
                // A fork there, and a reset, behave as on the CPU.
                let mut fork = there.fork().unwrap();
                assert_eq!(fork.position(), there.position());
                assert_eq!(greedy(&mut fork, 2), greedy(&mut there, 2));
                there.reset().unwrap();
                assert_eq!(there.position(), 0);
                there.feed(&prompt).unwrap();
                assert_eq!(greedy(&mut there, 4), want[..4], "{name}: after reset");
            }
        }
    }
}

#[test]
fn a_backend_not_compiled_in_or_absent_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_case(&fixtures().join("liger").join("liger_gla"), dir.path());
    for kind in [BackendKind::Wgpu, BackendKind::Cuda] {
        if let Err(e) = backend::open(kind, &model) {
            let e = e.to_string();
            assert!(
                e.contains(kind.name()) || e.contains("CUDA") || e.contains("GPU"),
                "{}: {e}",
                kind.name()
            );
        }
    }
    // auto: CUDA where one runs, else the CPU, saying why.
    let auto = backend::open(BackendKind::Auto, &model).unwrap();
    let kind = auto.backend.kind();
    assert!(matches!(kind, BackendKind::Cpu | BackendKind::Cuda));
    assert!(auto.reason.contains(kind.name()), "{}", auto.reason);
    if kind == BackendKind::Cpu {
        assert!(auto.reason.contains("auto:"), "{}", auto.reason);
    }
    assert!("gpu".parse::<BackendKind>().is_err());
}

/// The CPU kernels' repacked copies of the weights are made when a CPU backend first opens the
/// model: a model that runs on a GPU holds none (its host memory is the mapped file), and a
/// second CPU backend makes no second copy.
#[test]
fn only_a_cpu_backend_makes_the_repacked_copies() {
    use liger::cpu::linear::WeightMatrix;
    use liger::cpu::model::CpuModel;
    let dir = tempfile::tempdir().unwrap();
    let case = fixtures().join("liger").join("liger_gla");
    let path = convert_case(&case, "q4_0", dir.path());
    let file_bytes = std::fs::metadata(&path).unwrap().len();
    let model = Arc::new(Model::load(path, &ModelOptions::default()).unwrap());
    for kind in [BackendKind::Wgpu, BackendKind::Cuda] {
        if !kind.compiled_in() {
            continue;
        }
        if let Ok(gpu) = backend::open(kind, &model) {
            assert_eq!(gpu.backend.repacked_bytes(), 0, "{}", kind.name());
            assert!(
                CpuModel::existing(&model).is_none(),
                "{} made a CPU model (threads, repacked copies)",
                kind.name()
            );
        }
    }
    let cpu = backend::open(BackendKind::Cpu, &model).unwrap().backend;
    let bytes = cpu.repacked_bytes();
    if WeightMatrix::repacks(liger::GgmlType::Q4_0, model.config.hidden, model.simd) {
        // Every product matrix (the embedding is only gathered, and is not tied here); no
        // layout is more than 3 % larger than the file's.
        assert!(
            bytes > file_bytes / 2 && bytes < file_bytes * 103 / 100,
            "{bytes} bytes repacked from a file of {file_bytes}"
        );
    } else {
        assert_eq!(bytes, 0, "repacked for {}", model.simd.name());
    }
    let again = backend::open(BackendKind::Cpu, &model).unwrap().backend;
    let shared = CpuModel::existing(&model).expect("the CPU backend's model");
    assert!(
        Arc::ptr_eq(&shared, &CpuModel::shared(&model).unwrap()) && again.repacked_bytes() == bytes,
        "a second CPU backend repacked again"
    );
    let mut s = Session::on(&again, DecodeMode::Window).unwrap();
    s.feed(&[3, 4, 5]).unwrap();
    assert_eq!(s.position(), 3);
    drop(cpu);
}

/// A backend that runs the CPU's sequences and bends their logits: a GPU whose shaders a driver
/// miscompiled, for the load-time self-test to catch.
struct Bent {
    cpu: backend::CpuBackend,
    bend: fn(&mut [f32]),
}

struct BentSequence {
    inner: Box<dyn backend::Sequence>,
    bend: fn(&mut [f32]),
    logits: Vec<f32>,
}

impl liger::Backend for Bent {
    fn kind(&self) -> BackendKind {
        BackendKind::Wgpu
    }
    fn describe(&self) -> String {
        "a bent CPU".into()
    }
    fn model(&self) -> &Arc<Model> {
        self.cpu.model()
    }
    fn new_sequence(&self, mode: DecodeMode) -> liger::Result<Box<dyn backend::Sequence>> {
        Ok(Box::new(BentSequence {
            inner: self.cpu.new_sequence(mode)?,
            bend: self.bend,
            logits: Vec::new(),
        }))
    }
    fn weight_bytes_per_token(&self) -> u64 {
        self.cpu.weight_bytes_per_token()
    }
}

impl backend::Sequence for BentSequence {
    fn mode(&self) -> DecodeMode {
        self.inner.mode()
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn feed(&mut self, tokens: &[u32], all: Option<&mut Vec<f32>>) -> liger::Result<()> {
        self.inner.feed(tokens, all)?;
        self.logits = self.inner.logits().to_vec();
        (self.bend)(&mut self.logits);
        Ok(())
    }
    fn logits(&self) -> &[f32] {
        &self.logits
    }
    fn position(&self) -> usize {
        self.inner.position()
    }
    fn reset(&mut self) -> liger::Result<()> {
        self.inner.reset()
    }
    fn state(&self) -> liger::Result<std::borrow::Cow<'_, liger::model::SequenceState>> {
        self.inner.state()
    }
    fn set_state(&mut self, state: liger::model::SequenceState) -> liger::Result<()> {
        self.inner.set_state(state)
    }
    fn fork(&self) -> liger::Result<Box<dyn backend::Sequence>> {
        Ok(Box::new(BentSequence {
            inner: self.inner.fork()?,
            bend: self.bend,
            logits: self.logits.clone(),
        }))
    }
}

/// The largest |logit| (at least 1): the scale of the self-test's tolerance.
fn range(logits: &[f32]) -> f32 {
    logits.iter().fold(1f32, |m, v| m.max(v.abs()))
}

/// The self-test passes a backend whose logits are the CPU's up to float rounding and refuses
/// one whose logits are off: one logit by 2 % of their range, reversed, zeroed, or a NaN. (f32
/// weights: the CPU backend's products are then the unquantized ones the self-test compares to.)
#[test]
fn the_gpu_self_test_refuses_wrong_logits() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_case(&fixtures().join("liger").join("liger_gla"), dir.path());
    let bent = |bend| Bent {
        cpu: backend::CpuBackend::new(Arc::clone(&model)),
        bend,
    };
    let passing: [(&str, fn(&mut [f32])); 2] = [
        ("as computed", |_| {}),
        ("every logit off by 0.2 % of the range", |l| {
            let r = range(l);
            l.iter_mut().for_each(|v| *v += 0.002 * r);
        }),
    ];
    for (what, bend) in passing {
        backend::self_test(&bent(bend)).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    let failing: [(&str, fn(&mut [f32])); 4] = [
        ("one logit off by 2 % of the range", |l| {
            let r = range(l);
            l[7] += 0.02 * r;
        }),
        ("reversed", |l| l.reverse()),
        ("zeroed", |l| l.fill(0.0)),
        ("a NaN", |l| l[3] = f32::NAN),
    ];
    for (what, bend) in failing {
        let err = backend::self_test(&bent(bend))
            .err()
            .unwrap_or_else(|| panic!("{what}: passed the self-test"))
            .to_string();
        assert!(err.contains("failed its self-test"), "{what}: {err}");
    }
}
