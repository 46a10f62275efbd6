//! The `liger` binary end to end: greedy tokens of every fixture through `liger run`, logits
//! through `liger score` (.npy), `liger info`, `liger chat` commands, and clean errors.

use liger_tests::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn liger(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_liger"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn convert(case: &Path, ty: &str, dir: &Path) -> String {
    let out = dir.join(format!(
        "{}.{ty}.gguf",
        case.file_name().unwrap().to_string_lossy()
    ));
    let mut args = vec![
        "convert",
        case.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        ty,
        "-q",
    ];
    let adapter = case.join("adapter");
    if adapter.exists() {
        args.extend(["--lora", adapter.to_str().unwrap()]);
    }
    let (ok, _, err) = liger(&args);
    assert!(ok, "convert {}: {err}", case.display());
    out.to_string_lossy().into_owned()
}

fn ref_ids(case: &Path, name: &str) -> Vec<u32> {
    tensor_f32(&read_bytes(&case.join("reference.safetensors")), name)
        .0
        .iter()
        .map(|&v| v as u32)
        .collect()
}

fn join(ids: &[u32], sep: &str) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

#[test]
fn run_reproduces_the_reference_greedy_tokens() {
    let dir = tempfile::tempdir().unwrap();
    // Every other case read into memory (--no-mmap): the same tokens.
    for (i, case) in liger_cases().into_iter().enumerate() {
        let model = convert(&case, "f32", dir.path());
        let prompt_len = meta(&case)["prompt_len"].as_u64().unwrap() as usize;
        let prompt = join(&ref_ids(&case, "input_ids")[..prompt_len], ",");
        let want = ref_ids(&case, "greedy_tokens");
        let n = want.len().to_string();
        let no_mmap = if i % 2 == 1 {
            "--no-mmap"
        } else {
            "--backend=cpu"
        };
        // The fixtures' greedy runs do not stop at EOS (liger_gsa's emits id 1, its eos).
        let (ok, out, err) = liger(&[
            "run",
            no_mmap,
            "-m",
            &model,
            "--prompt-ids",
            &prompt,
            "--temp",
            "0",
            "--decode",
            "hf-compat",
            "--ids",
            "-n",
            &n,
            "--ignore-eos",
        ]);
        assert!(ok, "{err}");
        assert_eq!(
            out.trim(),
            join(&want, " "),
            "{}: greedy tokens",
            case.display()
        );
        assert!(err.contains("tok/s"), "speed is reported on stderr: {err}");
    }
}

fn read_npy(path: &Path) -> (Vec<f32>, String) {
    let bytes = read_bytes(path);
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + len) % 64, 0, "header padded to 64 bytes");
    let header = String::from_utf8(bytes[10..10 + len].to_vec()).unwrap();
    let data = bytes[10 + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (data, header)
}

#[test]
fn score_writes_reference_logits_in_both_semantics() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["liger_gla", "liger_gsa", "liger_qwen2_gla"] {
        let case = fixtures().join("liger").join(name);
        let model = convert(&case, "f32", dir.path());
        let ids = join(&ref_ids(&case, "input_ids"), ",");
        let prompt_len = meta(&case)["prompt_len"].as_u64().unwrap().to_string();
        for (mode, reference, extra) in [
            ("window", "logits_full", vec![]),
            (
                "hf-compat",
                "logits_incremental",
                vec!["--prompt-len", &prompt_len],
            ),
        ] {
            let out = dir.path().join(format!("{name}.{mode}.npy"));
            let mut args = vec![
                "score",
                "-m",
                &model,
                "--ids",
                &ids,
                "--decode",
                mode,
                "--out",
                out.to_str().unwrap(),
            ];
            args.extend(extra);
            let (ok, _, err) = liger(&args);
            assert!(ok, "{err}");
            let (got, header) = read_npy(&out);
            assert!(
                header.contains("'descr': '<f4'") && header.contains("'shape': (96, 512)"),
                "{header}"
            );
            let (want, _) = tensor_f32(&read_bytes(&case.join("reference.safetensors")), reference);
            assert_close(&format!("{name} {mode} score"), &got, &want, 1e-3);
        }
    }
}

#[test]
fn info_describes_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert(&fixtures().join("liger/liger_gsa"), "q4_k_m", dir.path());
    let (ok, out, err) = liger(&["info", &model]);
    assert!(ok, "{err}");
    for want in [
        "Liger-GSA over a llama base",
        "GSA slots 16",
        "state per sequence",
        "liger.gsa.slots",
        "blk.1.ffn_down.weight",
        "Q6_K",
        "by type:",
    ] {
        assert!(out.contains(want), "info lacks '{want}':\n{out}");
    }
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let case = fixtures().join("liger/liger_gla");
    let out = dir.path().join("x.gguf");
    let (ok, _, err) = liger(&[
        "convert",
        case.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q3_k",
    ]);
    assert!(!ok && err.contains("--type 'q3_k'"), "{err}");
    assert!(!out.exists());
    let model = convert(&case, "q8_0", dir.path());
    let (ok, _, err) = liger(&["run", "-m", &model, "--prompt-ids", "1,2,999", "-n", "2"]);
    assert!(!ok && err.contains("id 999"), "{err}");
    let (ok, _, err) = liger(&["run", "-m", &model, "-p", "hello", "-n", "2"]);
    assert!(!ok && err.contains("no tokenizer"), "{err}");
    let (ok, _, err) = liger(&["info", case.join("config.json").to_str().unwrap()]);
    assert!(!ok && err.contains("not a GGUF file"), "{err}");
}

#[test]
fn chat_keeps_state_and_saves_loads_resets_undoes() {
    let Some(gguf) = test_data("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("smol.gguf");
    let (ok, _, err) = liger(&[
        "convert",
        gguf.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        "--type",
        "q8_0",
        "-q",
    ]);
    assert!(ok, "{err}");
    let saved = dir.path().join("chat.state");
    let script = format!(
        "What is the capital of France?\n/save {0}\n/reset\n/load {0}\nAnd of Italy?\n/undo\n\
         And of Italy?\n/quit\n",
        saved.display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_liger"))
        .args([
            "chat",
            "-m",
            model.to_str().unwrap(),
            "--temp",
            "0",
            "-n",
            "8",
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(saved.exists(), "state file written");
    assert!(
        err.contains("(saved 2 messages")
            && err.contains("(conversation reset)")
            && err.contains("(loaded 2 messages")
            && err.contains("(last turn undone: 2 messages"),
        "{err}"
    );
    // Each turn reports the new prompt tokens it fed; the second turn feeds only its own text.
    let fed: Vec<usize> = err
        .lines()
        .filter_map(|l| {
            l.strip_prefix('(')?
                .split(" new prompt tokens")
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(fed.len(), 3, "{err}");
    assert!(
        fed[1] < fed[0],
        "the second turn re-fed the history: {fed:?}\n{err}"
    );
    let contexts: Vec<usize> = err
        .lines()
        .filter(|l| l.contains("new prompt tokens"))
        .filter_map(|l| l.split("context ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(
        contexts[1] > contexts[0],
        "the loaded state carried the first turn: {contexts:?}"
    );
    // /undo restored the state before the second turn exactly: the same turn again feeds the
    // same tokens and (greedy) answers as long, ending at the same context.
    let undone = err.lines().find_map(|l| {
        l.strip_prefix("(last turn undone: 2 messages, context ")?
            .split(' ')
            .next()?
            .parse::<usize>()
            .ok()
    });
    assert_eq!(undone, Some(contexts[0]), "{err}");
    assert_eq!((fed[2], contexts[2]), (fed[1], contexts[1]), "{err}");
}

#[test]
fn synth_and_bench_json_report_llama_bench_fields() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    let (ok, _, err) = liger(&[
        "synth",
        "--like",
        "tiny",
        "--type",
        "q4_0",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = liger(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "32",
        "-n",
        "4",
        "-d",
        "0,70",
        "-r",
        "2",
        "-t",
        "1",
        "-o",
        "json",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(rows.len(), 4, "pp and tg at two depths: {out}");
    for row in &rows {
        for field in [
            "n_prompt",
            "n_gen",
            "n_depth",
            "avg_ts",
            "stddev_ts",
            "peak_rss_bytes",
        ] {
            assert!(row.get(field).is_some(), "{field} missing in {row}");
        }
        assert!(row["avg_ts"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(rows[3]["n_depth"], 70);
    assert_eq!(rows[3]["n_gen"], 4);
    let (ok, out, _) = liger(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "8",
        "-n",
        "2",
        "-r",
        "1",
    ]);
    assert!(
        ok && out.contains("| pp8 |") && out.contains("| tg2 |"),
        "{out}"
    );
}

/// The first number after `key` in `text`.
fn number_after(text: &str, key: &str) -> f64 {
    text.split(key)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no '{key}' number in: {text}"))
}

#[test]
fn perplexity_and_kl_divergence_measure_quantization() {
    let Some(gguf) = test_data("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = fixtures().join("text/gettysburg.txt");
    let text = text.to_str().unwrap();
    let reference = dir.path().join("f16.logprobs");
    let mut files = vec![];
    for ty in ["f16", "q4_0"] {
        let model = dir.path().join(format!("smol.{ty}.gguf"));
        let (ok, _, err) = liger(&[
            "convert",
            gguf.to_str().unwrap(),
            "-o",
            model.to_str().unwrap(),
            "--type",
            ty,
            "-q",
        ]);
        assert!(ok, "{err}");
        files.push(model.to_str().unwrap().to_owned());
    }
    let perplexity = |model: &str, extra: &[&str]| {
        let mut args = vec![
            "perplexity",
            "-m",
            model,
            "--text",
            text,
            "--max-tokens",
            "96",
        ];
        args.extend(extra);
        let (ok, out, err) = liger(&args);
        assert!(ok, "{err}");
        out
    };
    let f16 = perplexity(&files[0], &["--save-logprobs", reference.to_str().unwrap()]);
    let ppl_f16 = number_after(&f16, "perplexity");
    assert!(ppl_f16 > 1.0 && ppl_f16.is_finite(), "{f16}");
    // The same model against its own log-probabilities: KL ≈ 0 (f16 storage), same tokens.
    let same = perplexity(&files[0], &["--kl", reference.to_str().unwrap()]);
    assert_eq!(number_after(&same, "perplexity"), ppl_f16, "{same}");
    assert!(number_after(&same, "mean") < 1e-3, "{same}");
    assert_eq!(number_after(&same, "same top token"), 100.0, "{same}");
    // Q4_0 against f16: a positive divergence, a worse perplexity.
    let q4 = perplexity(&files[1], &["--kl", reference.to_str().unwrap()]);
    let kl = number_after(&q4, "mean");
    assert!(kl > 1e-3 && kl < 2.0, "{q4}");
    assert!(
        number_after(&q4, "perplexity") > ppl_f16 * 0.98,
        "{q4}\n{f16}"
    );
    // A reference of another text is refused.
    let (ok, _, err) = liger(&[
        "perplexity",
        "-m",
        &files[1],
        "--text",
        text,
        "--max-tokens",
        "50",
        "--kl",
        reference.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("not a log-probability file of this text"),
        "{err}"
    );
}

#[test]
fn convert_reads_a_hub_id_from_the_hugging_face_cache_offline() {
    // A cache laid out as huggingface_hub lays it out: models--ORG--NAME/refs/main names the
    // snapshot; the snapshot holds the files.
    let case = fixtures().join("liger/liger_gla");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("hub/models--liger-tests--tiny-gla");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(case.join(file), snapshot.join(file)).unwrap();
    }
    let from_hub = dir.path().join("hub.gguf");
    let from_dir = dir.path().join("dir.gguf");
    let convert = |src: &str, out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_liger"))
            .args([
                "convert",
                src,
                "-o",
                out.to_str().unwrap(),
                "-t",
                "f32",
                "--name",
                "t",
                "-q",
            ])
            .env("HF_HOME", dir.path())
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("HF_TOKEN")
            .output()
            .unwrap()
    };
    let out = convert("liger-tests/tiny-gla", &from_hub);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = convert(case.to_str().unwrap(), &from_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same tensors (the data after the header; only `liger.convert.source`, the snapshot's
    // directory name, differs in the metadata).
    let (hub, direct) = (
        std::fs::read(&from_hub).unwrap(),
        std::fs::read(&from_dir).unwrap(),
    );
    let data = direct.len() - 16_384;
    assert!(
        hub.len() >= data && hub[hub.len() - data..] == direct[direct.len() - data..],
        "the cached checkpoint converted differently from the directory"
    );
    // Not in the cache: a clear error naming it, and no output file.
    let missing = dir.path().join("missing.gguf");
    let out = convert("liger-tests/absent", &missing);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("liger-tests/absent"),
        "{err}"
    );
    assert!(err.contains("not in the Hugging Face cache"), "{err}");
    assert!(!missing.exists());
}

#[test]
fn ctrl_c_in_chat_does_not_end_the_program() {
    use std::io::{BufRead, Read};
    let Some(gguf) = smollm2_liger_q8_0() else {
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_liger"))
        .args([
            "chat",
            "-m",
            gguf.to_str().unwrap(),
            "--temp",
            "0",
            "-n",
            "4",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("chat: type a message") {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "chat exited: {seen}");
        seen.push_str(&line);
    }
    // SIGINT while chat waits for input: the handler notes it, the program goes on.
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Hello\n/quit\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{seen}{rest}");
    assert!(rest.contains("(Ctrl-C stops an answer"), "{seen}{rest}");
    assert!(
        rest.contains("new prompt tokens"),
        "the turn after Ctrl-C ran: {rest}"
    );
}

/// `liger` with `env` set (and nothing else of the caller's LIGER_* environment).
fn liger_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_liger"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LIGER_")) {
        cmd.env_remove(k);
    }
    let out = cmd.args(args).envs(env.iter().copied()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn flags_come_from_the_environment_files_and_completions() {
    let case = fixtures().join("liger/liger_gla");
    let dir = tempfile::tempdir().unwrap();
    let model = convert(&case, "f32", dir.path());
    let ids = |out: &str| out.split_whitespace().count();
    let run = ["run", "-m", &model, "--prompt-ids", "1,2,3", "--ids"];
    // Every flag from LIGER_<FLAG>; the command line wins over the environment.
    let env = [
        ("LIGER_TEMP", "0"),
        ("LIGER_N_PREDICT", "5"),
        ("LIGER_IGNORE_EOS", "1"),
    ];
    let (ok, from_env, err) = liger_env(&run, &env);
    assert!(ok && ids(&from_env) == 5, "{from_env}{err}");
    let (ok, from_flags, err) = liger_env(
        &[&run[..], &["--temp", "0", "-n", "5", "--ignore-eos"]].concat(),
        &[],
    );
    assert!(
        ok && from_flags == from_env,
        "{from_flags} vs {from_env}: {err}"
    );
    let (ok, out, err) = liger_env(&[&run[..], &["-n", "3"]].concat(), &env);
    assert!(ok && ids(&out) == 3, "{out}{err}");
    let (ok, _, err) = liger_env(&run, &[("LIGER_TOP_K", "many")]);
    assert!(!ok && err.contains("many"), "{err}");
    // The runtime's own variables are not taken by a flag.
    for command in [
        "run",
        "chat",
        "serve",
        "bench",
        "score",
        "perplexity",
        "convert",
        "info",
    ] {
        let (_, help, _) = liger_env(&[command, "--help"], &[]);
        assert!(help.contains("[env: LIGER_"), "{command}: {help}");
        for own in [
            "LIGER_SIMD",
            "LIGER_REPACK",
            "LIGER_LOG",
            "LIGER_CUDA_GRAPH",
            "LIGER_TEST_DATA",
            "LIGER_BIN",
        ] {
            assert!(
                !help.contains(&format!("[env: {own}=")),
                "{command} --help: {own}"
            );
        }
    }
    // Shell completions and the man page.
    let (ok, bash, _) = liger_env(&["completions", "bash"], &[]);
    assert!(
        ok && bash.contains("_liger()") && bash.contains("--top-k"),
        "{bash}"
    );
    let (ok, fish, _) = liger_env(&["completions", "fish"], &[]);
    assert!(ok && fish.contains("complete -c liger"), "{fish}");
    let (ok, man, _) = liger_env(&["man"], &[]);
    assert!(
        ok && man.contains(".TH liger 1") && man.contains("chat"),
        "{man}"
    );
}

#[test]
fn run_reads_its_prompt_and_system_message_from_files() {
    let Some(gguf) = smollm2_liger_q8_0() else {
        return;
    };
    let gguf = gguf.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (prompt, system) = (dir.path().join("prompt.txt"), dir.path().join("system.txt"));
    std::fs::write(&prompt, "The capital of France is").unwrap();
    std::fs::write(&system, "You answer in one word.\n").unwrap();
    let greedy = [
        "run",
        "-m",
        gguf,
        "--temp",
        "0",
        "-n",
        "6",
        "--ignore-eos",
        "--ids",
    ];
    let (ok, from_text, err) = liger_env(
        &[&greedy[..], &["-p", "The capital of France is"]].concat(),
        &[],
    );
    assert!(ok, "{err}");
    let (ok, from_file, err) = liger_env(
        &[&greedy[..], &["-f", prompt.to_str().unwrap()]].concat(),
        &[],
    );
    assert!(
        ok && from_file == from_text,
        "{from_file} vs {from_text}: {err}"
    );
    let chat = [&greedy[..], &["--chat", "-p", "The capital of France is"]].concat();
    let (ok, with_text, err) = liger_env(
        &[&chat[..], &["--system", "You answer in one word."]].concat(),
        &[],
    );
    assert!(ok, "{err}");
    let (ok, with_file, err) = liger_env(
        &[&chat[..], &["--system-file", system.to_str().unwrap()]].concat(),
        &[],
    );
    assert!(
        ok && with_file == with_text,
        "{with_file} vs {with_text}: {err}"
    );
    let (ok, without, _) = liger_env(&chat, &[]);
    assert!(
        ok && without != with_text,
        "the system message changed nothing"
    );
    let (ok, _, err) = liger_env(
        &[&greedy[..], &["-f", "/nonexistent/prompt.txt"]].concat(),
        &[],
    );
    assert!(!ok && err.contains("/nonexistent/prompt.txt"), "{err}");
}

#[test]
fn info_kernels_names_the_path_of_each_product() {
    let case = fixtures().join("liger/liger_gla");
    let dir = tempfile::tempdir().unwrap();
    let model = convert(&case, "q8_0", dir.path());
    let (ok, out, err) = liger_env(&["info", &model, "--kernels"], &[]);
    assert!(ok, "{err}");
    let table = out.split("CPU kernels at ").nth(1).expect("a kernel table");
    let q8 = table
        .lines()
        .find(|l| l.trim_start().starts_with("Q8_0"))
        .expect("a Q8_0 row");
    // Decode reads each weight row once for every token; a long prompt runs as panels.
    assert!(q8.contains("packed panels"), "{table}");
    // Without a file: every weight type.
    let (ok, all, _) = liger_env(&["info", "--kernels"], &[]);
    assert!(
        ok && ["Q4_0", "Q4_K", "Q6_K", "F16", "BF16"]
            .iter()
            .all(|t| all.contains(t)),
        "{all}"
    );
    let (ok, forced, _) = liger_env(&["info", "--kernels"], &[("LIGER_SIMD", "scalar")]);
    assert!(ok && forced.contains("CPU kernels at scalar"), "{forced}");
}
