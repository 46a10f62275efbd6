//! The CUDA backend end to end: the shared device checks (`device.rs`) on the CUDA step (its
//! decode step from a captured graph, and with graphs off), and quantized models against the
//! CPU. Without a device: skipped with a printed reason, or failed where `LIGER_REQUIRE_CUDA`
//! is set (the GPU machine).

use crate::device::{self, Uploaded};
use liger::backend::{DeviceSequence, StepOnDevice};
use liger::cuda::{CudaDevice, CudaModel, CudaSequence};
use liger::{DecodeMode, Model, ModelOptions, Session};
use liger_tests::*;
use std::sync::Arc;

fn upload(model: Arc<Model>) -> Uploaded {
    let gpu = Arc::new(CudaModel::new(CudaDevice::new().unwrap(), model).unwrap());
    Box::new(move |batch| Box::new(CudaSequence::with_batch(&gpu, batch).unwrap()))
}

#[test]
fn cuda_decode_matches_the_reference_logits() {
    let Some(dev) = CudaDevice::for_tests() else {
        return;
    };
    device::decode_matches_the_reference(&dev.describe(), &upload);
}

#[test]
fn cuda_prefill_batches_match_the_reference_logits() {
    let Some(dev) = CudaDevice::for_tests() else {
        return;
    };
    device::prefill_batches_match_the_reference(&dev.describe(), &upload);
}

#[test]
fn quantized_models_on_cuda_agree_with_the_cpu() {
    // Every weight type with a kernel: 40 tokens decoded on the device (graph replays) and on
    // the CPU, both semantics. The CPU quantizes activations to 8 bits for quantized weights,
    // the device does not: within 5 % of the CPU logits' range, and the same argmax for at
    // least 90 % of the tokens.
    let Some(dev) = CudaDevice::for_tests() else {
        return;
    };
    drop(dev);
    let dir = tempfile::tempdir().unwrap();
    for case in ["liger_gla", "liger_gsa", "liger_hgrn2"] {
        let case = fixtures().join("liger").join(case);
        for ty in ["q4_0", "q4_k_m", "q8_0", "f16", "bf16"] {
            let path = convert_case(&case, ty, dir.path());
            let model = Arc::new(Model::load(path, &ModelOptions::default()).unwrap());
            let gpu =
                Arc::new(CudaModel::new(CudaDevice::new().unwrap(), Arc::clone(&model)).unwrap());
            let vocab = model.config.vocab_size;
            let ids: Vec<u32> = (0..40).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();
            for mode in [DecodeMode::Window, DecodeMode::HfCompat] {
                let mut cpu = Session::new(Arc::clone(&model), mode);
                let mut seq = CudaSequence::new(&gpu).unwrap();
                let mut same = 0;
                for (t, &id) in ids.iter().enumerate() {
                    let want = cpu.feed(&[id]).unwrap().to_vec();
                    let got = seq.feed(&[id], mode == DecodeMode::HfCompat).unwrap();
                    let range = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
                    let (v, worst) = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (g - w).abs())
                        .enumerate()
                        .fold((0, 0f32), |m, (i, d)| if d > m.1 { (i, d) } else { m });
                    assert!(
                        worst <= 0.05 * range,
                        "{case:?} {ty} {mode:?} token {t}: vocab id {v} differs by {worst} \
                         (range {range})"
                    );
                    same +=
                        usize::from(liger::sampler::argmax(got) == liger::sampler::argmax(&want));
                }
                assert!(
                    same * 10 >= ids.len() * 9,
                    "{case:?} {ty} {mode:?}: argmax agreed {same}/40"
                );
            }
        }
    }
}

#[test]
fn graph_replays_equal_kernels_queued_one_by_one() {
    // 70 decode steps (the window ring wraps) from a captured graph and without one: the same
    // kernels on the same data, so the logits must be bit-identical.
    let Some(dev) = CudaDevice::for_tests() else {
        return;
    };
    let case = fixtures().join("liger").join("liger_gsa");
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(
        Model::load(
            convert_case(&case, "q4_0", dir.path()),
            &ModelOptions::default(),
        )
        .unwrap(),
    );
    let gpu = Arc::new(CudaModel::new(dev, Arc::clone(&model)).unwrap());
    let vocab = model.config.vocab_size;
    let mut with_graph = CudaSequence::new(&gpu).unwrap();
    let mut without = CudaSequence::new(&gpu).unwrap();
    without.set_graphs(false);
    for t in 0..70 {
        let id = ((t * 104_729 + 7) % vocab) as u32;
        let a = with_graph.step(id).unwrap().to_vec();
        let b = without.step(id).unwrap();
        if let Some(v) = a
            .iter()
            .zip(b)
            .position(|(x, y)| x.to_bits() != y.to_bits())
        {
            panic!(
                "token {t}: first mismatch at vocab id {v}: graph {}, queued {}",
                a[v], b[v]
            );
        }
    }
}

#[test]
fn sequences_on_two_threads_capture_their_graphs_at_once() {
    // Two sequences on one model, each on its own thread and stream, capture their decode graphs
    // at the same moment and decode 40 tokens side by side: each equals the same run alone. (On
    // one shared stream, one thread's kernels would land in the other's graph.)
    let Some(dev) = CudaDevice::for_tests() else {
        return;
    };
    let case = fixtures().join("liger").join("liger_gla");
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(
        Model::load(
            convert_case(&case, "q8_0", dir.path()),
            &ModelOptions::default(),
        )
        .unwrap(),
    );
    let gpu = Arc::new(CudaModel::new(dev, Arc::clone(&model)).unwrap());
    let vocab = model.config.vocab_size;
    let run = |salt: usize, start: Option<&std::sync::Barrier>| -> Vec<Vec<f32>> {
        let mut seq = CudaSequence::new(&gpu).unwrap();
        seq.feed(&[1, 2, 3], false).unwrap();
        if let Some(b) = start {
            b.wait();
        }
        (0..40)
            .map(|t| {
                let id = ((t * 7919 + salt * 104_729) % vocab) as u32;
                seq.step(id).unwrap().to_vec()
            })
            .collect()
    };
    let alone = [run(1, None), run(2, None)];
    let barrier = std::sync::Barrier::new(2);
    let together: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = [1, 2]
            .map(|salt| {
                let (run, barrier) = (&run, &barrier);
                scope.spawn(move || run(salt, Some(barrier)))
            })
            .into_iter()
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        for (t, (x, y)) in a.iter().zip(b).enumerate() {
            if let Some(v) = x
                .iter()
                .zip(y)
                .position(|(p, q)| p.to_bits() != q.to_bits())
            {
                panic!(
                    "sequence {i}, token {t}: first mismatch at vocab id {v}: alone {}, \
                     beside another thread {}",
                    x[v], y[v]
                );
            }
        }
    }
}

#[test]
fn states_move_between_cuda_and_the_cpu() {
    // A CUDA sequence's state, saved in the CPU's format, continues on a CPU session with the
    // same logits (within the fixtures' tolerance), and the other way round; a fork on the
    // device continues bit-identically.
    let Some(dev) = CudaDevice::for_tests() else {
        return;
    };
    let case = fixtures().join("liger").join("liger_gla");
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(
        Model::load(
            convert_case(&case, "f32", dir.path()),
            &ModelOptions::default(),
        )
        .unwrap(),
    );
    let gpu = Arc::new(CudaModel::new(dev, Arc::clone(&model)).unwrap());
    let vocab = model.config.vocab_size;
    let prompt: Vec<u32> = (0..70).map(|i| ((i * 7919 + 5) % vocab) as u32).collect();
    let next: Vec<u32> = (0..5).map(|i| ((i * 104_729 + 1) % vocab) as u32).collect();
    let mode = DecodeMode::Window;

    let mut seq = CudaSequence::new(&gpu).unwrap();
    seq.feed(&prompt, false).unwrap();
    let blob = liger::session::encode_state(&model, mode, &seq.state().unwrap());
    let mut cpu = Session::new(Arc::clone(&model), mode);
    cpu.load_state(&blob).unwrap();
    let mut copy = CudaSequence::new(&gpu).unwrap();
    copy.set_state(&seq.state().unwrap()).unwrap();
    assert_eq!(copy.position(), prompt.len());
    for (t, &id) in next.iter().enumerate() {
        let want = cpu.feed(&[id]).unwrap().to_vec();
        let got = seq.step(id).unwrap().to_vec();
        device::check_row(&got, &want, &format!("CUDA state on the CPU, token {t}"));
        let again = copy.step(id).unwrap();
        assert!(
            again
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "a restored CUDA copy differs at token {t}"
        );
    }
    // The CPU's state on the device.
    let mut from_cpu = CudaSequence::new(&gpu).unwrap();
    let state = liger::session::decode_state(&model, mode, &cpu.save_state().unwrap()).unwrap();
    from_cpu.set_state(&state).unwrap();
    let id = next[0];
    let want = cpu.feed(&[id]).unwrap().to_vec();
    let got = from_cpu.step(id).unwrap();
    device::check_row(got, &want, "the CPU's state on CUDA");
}
