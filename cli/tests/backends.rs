//! Every command on every backend through the `liger` binary: `--backend wgpu` (lavapipe in
//! CI) gives the CPU's logits, perplexity and greedy text; a chat saved on one backend goes on
//! on another; `--backend cuda` without a driver is a clear error on every command, and
//! `--backend auto` then runs on the CPU and says so.

use liger_tests::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const LIGER: &str = env!("CARGO_BIN_EXE_liger");

fn liger(args: &[&str]) -> Output {
    Command::new(LIGER).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(args: &[&str]) -> (String, String) {
    let out = liger(args);
    let err = text(&out.stderr);
    assert!(out.status.success(), "liger {}: {err}", args.join(" "));
    (text(&out.stdout), err)
}

fn read_npy(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// One fixture per mixer (GLA, GSA, HGRN2): every variant on wgpu in both semantics is the
/// integration test `backends::every_backend_reproduces_the_reference_logits_in_both_semantics`;
/// here the command and its output file, on lavapipe in CI, where every step is slow.
#[test]
fn score_on_wgpu_reproduces_a_fixture_of_each_mixer_in_both_semantics() {
    if !wgpu_runs(LIGER) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mixers = ["liger_gla", "liger_gsa", "liger_hgrn2"];
    let cases: Vec<_> = liger_cases()
        .into_iter()
        .filter(|c| mixers.iter().any(|m| c.ends_with(m)))
        .collect();
    assert_eq!(cases.len(), mixers.len(), "fixtures {mixers:?}");
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let model = convert_case(&case, "f32", dir.path());
        let reference = read_bytes(&case.join("reference.safetensors"));
        let ids: Vec<String> = tensor_f32(&reference, "input_ids")
            .0
            .iter()
            .map(|&v| (v as u32).to_string())
            .collect();
        let ids = ids.join(",");
        let prompt_len = meta(&case)["prompt_len"].as_u64().unwrap().to_string();
        for (mode, want) in [
            ("window", "logits_full"),
            ("hf-compat", "logits_incremental"),
        ] {
            let out = dir.path().join(format!("{name}.{mode}.npy"));
            let (_, err) = ok(&[
                "score",
                "-m",
                model.to_str().unwrap(),
                "--backend",
                "wgpu",
                "--ids",
                &ids,
                "--decode",
                mode,
                "--prompt-len",
                &prompt_len,
                "--out",
                out.to_str().unwrap(),
            ]);
            assert!(err.contains("backend wgpu"), "{err}");
            let want = tensor_f32(&reference, want).0;
            assert_close(
                &format!("{name} {mode} on wgpu"),
                &read_npy(&out),
                &want,
                1e-3,
            );
        }
    }
}

#[test]
fn perplexity_and_greedy_text_on_wgpu_equal_the_cpu() {
    let Some(model) = smollm2_liger_f16() else {
        return;
    };
    if !wgpu_runs(LIGER) {
        return;
    }
    let model = model.to_str().unwrap();
    let text_file = fixtures().join("text/gettysburg.txt");
    let on = |backend: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-m", model, "--backend", backend]);
        ok(&all)
    };
    // Mean log-probability = −ln(perplexity): within 1e-3.
    let perplexity = |backend| {
        let text = text_file.to_str().unwrap();
        let args = ["perplexity", "--text", text, "--max-tokens", "8"];
        let (out, _) = on(backend, &args);
        let ppl: f64 = out
            .split("perplexity ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no perplexity in {out}"));
        ppl.ln()
    };
    let (cpu, gpu) = (perplexity("cpu"), perplexity("wgpu"));
    assert!(
        (cpu - gpu).abs() <= 1e-3,
        "mean log-probability: CPU {:.6}, wgpu {:.6}",
        -cpu,
        -gpu
    );
    // Greedy text.
    let run = [
        "run",
        "-p",
        "The capital of France is",
        "-n",
        "4",
        "--temp",
        "0",
        "--ids",
    ];
    let (cpu, _) = on("cpu", &run);
    let (gpu, err) = on("wgpu", &run);
    assert_eq!(gpu, cpu, "greedy ids on wgpu vs the CPU ({err})");
}

/// `liger chat` fed `script` on `backend`; returns its stdout and stderr.
fn chat(model: &str, backend: &str, script: &str) -> (String, String) {
    let mut child = Command::new(LIGER)
        .args([
            "chat",
            "-m",
            model,
            "--backend",
            backend,
            "--temp",
            "0",
            "-n",
            "3",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "chat on {backend}: {err}");
    (text(&out.stdout), err)
}

/// The "(… context N tokens)" notes of a chat's turns.
fn contexts(err: &str) -> Vec<&str> {
    err.lines()
        .filter_map(|l| l.split("context ").nth(1))
        .collect()
}

#[test]
fn a_chat_saved_on_the_cpu_goes_on_on_wgpu_and_back() {
    let Some(model) = smollm2_liger_f16() else {
        return;
    };
    if !wgpu_runs(LIGER) {
        return;
    }
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| dir.path().join(n).display().to_string();
    let (a, b) = (file("a.chat"), file("b.chat"));
    let turns = ["Hi", "Say yes", "Thanks"];
    // The CPU alone, three turns.
    let script = format!("{}\n{}\n{}\n/quit\n", turns[0], turns[1], turns[2]);
    let (want_out, want_err) = chat(model, "cpu", &script);
    // CPU, then wgpu from its file, then the CPU from wgpu's file.
    let (out1, err1) = chat(model, "cpu", &format!("{}\n/save {a}\n/quit\n", turns[0]));
    let (out2, err2) = chat(
        model,
        "wgpu",
        &format!("/load {a}\n{}\n/save {b}\n/quit\n", turns[1]),
    );
    assert!(err2.contains("backend wgpu"), "{err2}");
    let (out3, err3) = chat(model, "cpu", &format!("/load {b}\n{}\n/quit\n", turns[2]));
    let answers = |out: &str| -> Vec<String> {
        out.split("> ")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let got: Vec<String> = [out1, out2, out3].iter().flat_map(|o| answers(o)).collect();
    assert_eq!(
        got,
        answers(&want_out),
        "answers CPU → wgpu → CPU vs the CPU alone"
    );
    let got: Vec<&str> = [&err1, &err2, &err3]
        .iter()
        .flat_map(|e| contexts(e))
        .collect();
    assert_eq!(
        got,
        contexts(&want_err),
        "contexts CPU → wgpu → CPU vs the CPU alone"
    );
}

#[test]
fn cuda_without_a_driver_is_a_clear_error_on_every_command_and_auto_runs_on_the_cpu() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("SKIPPED: this machine has an NVIDIA device");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = convert_case(&fixtures().join("liger/liger_gla"), "f32", dir.path());
    let model = model.to_str().unwrap();
    let npy = dir.path().join("x.npy");
    let gettysburg = fixtures().join("text/gettysburg.txt");
    let commands: [Vec<&str>; 6] = [
        vec!["run", "--prompt-ids", "1,2", "-n", "1"],
        vec!["score", "--ids", "1,2", "--out", npy.to_str().unwrap()],
        vec!["chat"],
        vec!["serve", "--port", "0"],
        vec!["perplexity", "--text", gettysburg.to_str().unwrap()],
        vec!["bench", "-p", "4", "-n", "2", "-r", "1"],
    ];
    for command in &commands {
        let mut args = command.clone();
        args.extend(["-m", model, "--backend", "cuda"]);
        let out = Command::new(LIGER)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert!(
            !out.status.success(),
            "liger {}: succeeded without CUDA",
            args.join(" ")
        );
        assert!(
            err.contains("CUDA") && !err.contains("panicked"),
            "liger {}: {err}",
            args.join(" ")
        );
    }
    let (out, err) = ok(&[
        "run",
        "-m",
        model,
        "--prompt-ids",
        "1,2",
        "-n",
        "2",
        "--ids",
    ]);
    assert!(err.contains("backend cpu (auto:"), "{err}");
    assert_eq!(out.split_whitespace().count(), 2, "{out}");
}
