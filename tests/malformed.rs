//! A corpus of malformed inputs — liger files, saved states, HF checkpoints, tokenizer
//! metadata — built from the fixtures: each must be a clean error (never a panic), leave
//! nothing changed, and allocate no more than a bound while being refused. Each test prints
//! how many inputs it tried (`cargo test malformed -- --nocapture`).

use liger::gguf::{GgufFile, GgufWriter, TensorDecl, Value, ValueType};
use liger::{DecodeMode, Model, ModelOptions, Session};
use liger_tests::alloc::peak_during;
use liger_tests::*;
use std::sync::Arc;

/// Most a refused input may allocate beyond its own bytes and the runtime's bounds: tables,
/// messages, scratch.
const SLACK: usize = 16 << 20;

/// What loading and running a liger file of `len` bytes may allocate: a copy of the file, a
/// sequence's state (at most the file's size or 64 MiB, `Model::from_file`), slack.
fn file_bound(len: usize) -> usize {
    2 * len + (64 << 20) + SLACK
}

fn one_thread() -> ModelOptions {
    ModelOptions {
        threads: Some(1),
        ..Default::default()
    }
}

/// Parses `bytes` as a liger file and, if it parses, loads and runs it: an error anywhere is
/// fine, a panic is not. Returns the error (None when everything worked) and the peak bytes.
fn load_and_run(bytes: &[u8]) -> (Option<String>, usize) {
    peak_during(|| {
        let file = match GgufFile::from_bytes(bytes.to_vec()) {
            Ok(f) => f,
            Err(e) => return Some(e.to_string()),
        };
        let model = match Model::from_file(file, &one_thread()) {
            Ok(m) => m,
            Err(e) => return Some(e.to_string()),
        };
        let mut session = Session::new(Arc::new(model), DecodeMode::Window);
        session.feed(&[0, 1]).err().map(|e| e.to_string())
    })
}

/// `file` rewritten with `edit` applied to its metadata (tensors unchanged).
fn with_metadata(file: &GgufFile, edit: impl FnOnce(&mut Vec<(String, Value)>)) -> Vec<u8> {
    let mut meta = file.metadata().to_vec();
    meta.retain(|(k, _)| k != "general.alignment");
    edit(&mut meta);
    let decls = file
        .tensors()
        .iter()
        .map(|t| TensorDecl {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: t.ggml_type,
        })
        .collect();
    let mut w = GgufWriter::new(Vec::new(), &meta, decls).unwrap();
    for t in file.tensors() {
        w.write_tensor(&t.name, file.tensor_data(t)).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn hostile_liger_files_are_clean_errors_within_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut tried = 0;
    let check = |what: &str, bytes: &[u8], must_fail: bool| {
        let (err, peak) = load_and_run(bytes);
        assert!(
            peak <= file_bound(bytes.len()),
            "{what}: allocated {peak} bytes for a {}-byte file",
            bytes.len()
        );
        if must_fail {
            let err = err.unwrap_or_else(|| panic!("{what}: loaded and ran"));
            assert!(!err.is_empty(), "{what}: an empty error message");
        }
    };
    for (case, ty) in [("liger_gla", "q8_0"), ("liger_gsa", "q4_k_m")] {
        let bytes = read_bytes(&convert_case(
            &fixtures().join("liger").join(case),
            ty,
            dir.path(),
        ));
        assert_eq!(load_and_run(&bytes).0, None, "{case} {ty} runs");
        let file = GgufFile::from_bytes(bytes.clone()).unwrap();
        // Truncated at every 1/64th of its length.
        for i in 0..64 {
            let len = bytes.len() * i / 64;
            check(&format!("{case} cut at {len}"), &bytes[..len], true);
            tried += 1;
        }
        // Every bit of the header and tensor directory flipped, one at a time (a flip in a
        // float's low bits may still load: only no panic and the bound are required).
        for at in 0..file.data_offset as usize {
            for bit in [0, 3, 7] {
                let mut b = bytes.clone();
                b[at] ^= 1 << bit;
                check(&format!("{case} bit {bit} of byte {at} flipped"), &b, false);
                tried += 1;
            }
        }
        // Every liger.* / tokenizer value replaced by one of the wrong type or an absurd one.
        let keys: Vec<String> = file
            .metadata()
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| k.starts_with("liger.") && k != "liger.convert.source")
            .collect();
        for key in &keys {
            for (label, wrong) in [
                ("a string", Value::String("x".into())),
                ("2^40", Value::U64(1 << 40)),
                ("-1", Value::I32(-1)),
                ("an array", Value::string_array(&["x"])),
            ] {
                let b = with_metadata(&file, |m| {
                    for (k, v) in m.iter_mut() {
                        if k == key {
                            *v = wrong.clone();
                        }
                    }
                });
                let (err, peak) = load_and_run(&b);
                assert!(peak <= file_bound(b.len()), "{key} = {label}: {peak} bytes");
                if let Some(err) = err {
                    let short = key.rsplit('.').next().unwrap_or(key);
                    assert!(
                        err.contains(short),
                        "{key} = {label}: '{err}' does not name it"
                    );
                }
                tried += 1;
            }
        }
        for key in [
            "liger.block_count",
            "liger.vocab_size",
            "liger.embedding_length",
        ] {
            let b = with_metadata(&file, |m| m.retain(|(k, _)| k != key));
            let (err, _) = load_and_run(&b);
            let err = err.unwrap_or_else(|| panic!("{case} without {key} loaded"));
            assert!(err.contains(key.trim_start_matches("liger.")), "{err}");
            tried += 1;
        }
    }

    // A state bomb: one layer whose head_dim and window ask for a 512 MiB window cache from a
    // file of a few hundred KiB (the weights do not grow with the window).
    let mut config = liger_convert::synth::shape_config("tiny", liger::Variant::Gla).unwrap();
    (
        config.n_layers,
        config.hidden,
        config.ffn,
        config.vocab_size,
    ) = (1, 32, 32, 32);
    (config.n_heads, config.n_kv_heads, config.head_dim) = (1, 1, 1024);
    config.gsa_slots = 1024;
    config.window = 1 << 16;
    let bomb = dir.path().join("bomb.gguf");
    liger_convert::synth::write_synthetic(&config, liger_convert::OutType::Q8_0, &bomb).unwrap();
    let bytes = read_bytes(&bomb);
    let (err, peak) = load_and_run(&bytes);
    let err = err.expect("a state of 512 MiB from a small file is refused");
    assert!(err.contains("state would take"), "{err}");
    assert!(
        peak <= bytes.len() + SLACK,
        "refusing the bomb allocated {peak}"
    );
    tried += 1;
    println!(
        "{tried} malformed liger files: each refused or run without a panic, within the bound"
    );
}

/// `blob` with its checksum made right again (so the checks behind it are reached).
fn resealed(mut blob: Vec<u8>) -> Vec<u8> {
    let body = blob.len() - 8;
    let sum = liger::model::fnv1a(&blob[..body]);
    blob[body..].copy_from_slice(&sum.to_le_bytes());
    blob
}

#[test]
fn hostile_state_blobs_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let load = |case: &str| {
        let path = convert_case(&fixtures().join("liger").join(case), "f16", dir.path());
        Arc::new(Model::load(path, &one_thread()).unwrap())
    };
    let (gla, hgrn2) = (load("liger_gla"), load("liger_hgrn2"));
    let mut saver = Session::new(gla.clone(), DecodeMode::Window);
    saver.feed(&[5, 6, 7, 8, 9]).unwrap();
    let good = saver.save_state().unwrap();
    let put = |at: usize, v: &[u8]| {
        let mut b = good.clone();
        b[at..at + v.len()].copy_from_slice(v);
        resealed(b)
    };
    let mut other = Session::new(hgrn2, DecodeMode::Window);
    other.feed(&[1]).unwrap();
    let mut hf = Session::new(gla.clone(), DecodeMode::HfCompat);
    hf.feed(&[1]).unwrap();

    let mut cases: Vec<(String, Vec<u8>, &str)> = vec![
        ("empty".into(), vec![], "not a liger state"),
        ("magic only".into(), b"LGST".to_vec(), "not a liger state"),
        (
            "another model".into(),
            other.save_state().unwrap(),
            "another model",
        ),
        (
            "another decode mode".into(),
            hf.save_state().unwrap(),
            "decode mode",
        ),
        ("version 2".into(), put(4, &2u32.to_le_bytes()), "version 2"),
        ("version 0".into(), put(4, &0u32.to_le_bytes()), "version 0"),
        (
            "position 2^64-1".into(),
            put(24, &u64::MAX.to_le_bytes()),
            "beyond any sequence",
        ),
        (
            "position 2^48+1".into(),
            put(24, &((1u64 << 48) + 1).to_le_bytes()),
            "beyond",
        ),
        (
            "window longer than the position".into(),
            put(32, &6u64.to_le_bytes()),
            "impossible",
        ),
        (
            "window longer than W".into(),
            {
                let b = put(24, &1000u64.to_le_bytes());
                let mut b = b;
                b[32..40].copy_from_slice(&65u64.to_le_bytes());
                resealed(b)
            },
            "impossible",
        ),
        (
            "a byte more".into(),
            resealed([good.clone(), vec![0]].concat()),
            "bytes",
        ),
        ("a byte less".into(), good[..good.len() - 1].to_vec(), ""),
    ];
    for i in 0..64 {
        let len = good.len() * i / 64;
        cases.push((format!("cut at {len}"), good[..len].to_vec(), ""));
    }
    for at in 0..good.len().min(48) {
        for bit in 0..8 {
            let mut b = good.clone();
            b[at] ^= 1 << bit;
            cases.push((format!("bit {bit} of byte {at}"), b, ""));
        }
    }
    for at in (48..good.len() - 8).step_by(good.len() / 97) {
        let mut b = good.clone();
        b[at] ^= 0x10;
        cases.push((format!("payload byte {at} (not resealed)"), b, "checksum"));
    }

    let mut session = Session::new(gla, DecodeMode::Window);
    session.feed(&[1, 2, 3]).unwrap();
    let before = session.save_state().unwrap();
    for (what, blob, want) in &cases {
        let (result, peak) = peak_during(|| session.load_state(blob));
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"))
            .to_string();
        assert!(
            err.contains(want),
            "{what}: '{err}' should mention '{want}'"
        );
        assert!(
            peak <= blob.len() + good.len() + SLACK,
            "{what}: {peak} bytes"
        );
        assert!(
            session.save_state().unwrap() == before,
            "{what}: the session changed"
        );
    }
    session
        .load_state(&good)
        .expect("the good state still loads");
    assert_eq!(session.position(), 5);
    println!(
        "{} malformed states: each refused, the session unchanged",
        cases.len()
    );
}

/// A safetensors file: an 8-byte header length, the header, the data.
fn safetensors(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string();
    [&(h.len() as u64).to_le_bytes()[..], h.as_bytes(), data].concat()
}

#[test]
fn hostile_checkpoints_are_clean_errors_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("liger/liger_gla");
    let good = read_bytes(&src.join("model.safetensors"));
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&good[8..8 + n]).unwrap();
    let data = &good[8 + n..];
    let name = "model.layers.0.self_attn.q_proj.weight";
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut h = header.clone();
        f(&mut h[name]);
        safetensors(&h, data)
    };
    let size = data.len();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        (
            "header length past the end",
            [&u64::MAX.to_le_bytes()[..], &good[8..]].concat(),
        ),
        (
            "header length 2^40",
            [&(1u64 << 40).to_le_bytes()[..], &good[8..]].concat(),
        ),
        (
            "header not JSON",
            [&(n as u64).to_le_bytes()[..], &vec![b'{'; n], data].concat(),
        ),
        ("data cut", good[..good.len() - 100].to_vec()),
        (
            "shape overflows",
            edit(&|t| t["shape"] = serde_json::json!([1u64 << 40, 1u64 << 40])),
        ),
        (
            "shape disagrees with bytes",
            edit(&|t| t["shape"] = serde_json::json!([128, 64])),
        ),
        (
            "offsets past the end",
            edit(&|t| t["data_offsets"] = serde_json::json!([size, size + 65536])),
        ),
        (
            "offsets reversed",
            edit(&|t| t["data_offsets"] = serde_json::json!([65536, 0])),
        ),
        (
            "offsets of another tensor",
            edit(&|t| t["data_offsets"] = serde_json::json!([0, 65536])),
        ),
        ("dtype I64", edit(&|t| t["dtype"] = "I64".into())),
        ("dtype BOOL", edit(&|t| t["dtype"] = "BOOL".into())),
        ("dtype unknown", edit(&|t| t["dtype"] = "F3".into())),
        ("shape a string", edit(&|t| t["shape"] = "128".into())),
        (
            "rank 3",
            edit(&|t| t["shape"] = serde_json::json!([2, 64, 128])),
        ),
        ("scalar", edit(&|t| t["shape"] = serde_json::json!([]))),
    ];
    for i in 0..64 {
        cases.push(("cut at a 64th", good[..good.len() * i / 64].to_vec()));
    }
    let mut tried = 0;
    for (what, bytes) in &cases {
        let dir = tmp.path().join(format!("case{tried}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
        let out = tmp.path().join(format!("out{tried}"));
        std::fs::create_dir_all(&out).unwrap();
        let (result, peak) = peak_during(|| convert_to(&dir, &out.join("x.gguf"), "q8_0", None));
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{what}: converted"))
            .to_string();
        assert!(!err.is_empty());
        assert!(peak <= good.len() + SLACK, "{what}: allocated {peak} bytes");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "{what}: left a file"
        );
        tried += 1;
    }
    println!("{tried} malformed checkpoints: each a clean error, nothing written");
}

/// A llama.cpp-style GGUF holding only tokenizer metadata.
fn tokenizer_gguf(meta: Vec<(String, Value)>) -> GgufFile {
    let bytes = GgufWriter::new(Vec::new(), &meta, vec![])
        .unwrap()
        .finish()
        .unwrap();
    GgufFile::from_bytes(bytes).unwrap()
}

#[test]
fn hostile_tokenizer_metadata_is_a_clean_error() {
    let m = |k: &str, v: Value| (k.to_string(), v);
    let base = || {
        vec![
            m("tokenizer.ggml.model", Value::String("gpt2".into())),
            m("tokenizer.ggml.pre", Value::String("smollm".into())),
            m(
                "tokenizer.ggml.tokens",
                Value::string_array(&["a", "b", "ab", "<s>"]),
            ),
            m("tokenizer.ggml.merges", Value::string_array(&["a b"])),
            m("tokenizer.ggml.bos_token_id", Value::U32(3)),
        ]
    };
    let replace = |key: &str, v: Value| {
        let mut meta = base();
        meta.retain(|(k, _)| k != key);
        meta.push(m(key, v));
        meta
    };
    let ok = liger_convert::tokenizer_gguf::rebuild_tokenizer(&tokenizer_gguf(base()));
    assert!(ok.is_ok(), "the base case rebuilds: {:?}", ok.err());
    let cases = [
        (
            "model unknown",
            replace("tokenizer.ggml.model", Value::String("rwkv".into())),
            "rwkv",
        ),
        (
            "model a number",
            replace("tokenizer.ggml.model", Value::U32(1)),
            "model",
        ),
        (
            "pre unknown",
            replace("tokenizer.ggml.pre", Value::String("x".into())),
            "'x'",
        ),
        (
            "tokens not strings",
            replace("tokenizer.ggml.tokens", Value::u32_array(&[1, 2])),
            "tokens",
        ),
        (
            "tokens a string",
            replace("tokenizer.ggml.tokens", Value::String("a".into())),
            "tokens",
        ),
        (
            "merge without a space",
            replace("tokenizer.ggml.merges", Value::string_array(&["ab"])),
            "no space",
        ),
        (
            "bos out of range",
            replace("tokenizer.ggml.bos_token_id", Value::U32(4)),
            "bos",
        ),
        (
            "bos a string",
            replace("tokenizer.ggml.bos_token_id", Value::String("0".into())),
            "bos",
        ),
        (
            "eos out of range",
            replace("tokenizer.ggml.eos_token_id", Value::U64(u64::MAX)),
            "eos",
        ),
        (
            "types too short",
            replace("tokenizer.ggml.token_type", Value::u32_array(&[1])),
            "token_type",
        ),
        (
            "types not numbers",
            replace("tokenizer.ggml.token_type", Value::string_array(&["1"; 4])),
            "token_type",
        ),
        (
            "scores too long",
            {
                let mut meta = replace("tokenizer.ggml.model", Value::String("llama".into()));
                meta.push(m("tokenizer.ggml.scores", Value::u32_array(&[0; 9])));
                meta
            },
            "scores",
        ),
        (
            "no tokens",
            {
                let mut meta = base();
                meta.retain(|(k, _)| k != "tokenizer.ggml.tokens");
                meta
            },
            "tokens",
        ),
    ];
    for (what, meta, want) in &cases {
        let (result, peak) = peak_during(|| {
            liger_convert::tokenizer_gguf::rebuild_tokenizer(&tokenizer_gguf(meta.clone()))
        });
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{what}: rebuilt"))
            .to_string();
        assert!(
            err.contains(want),
            "{what}: '{err}' should mention '{want}'"
        );
        assert!(peak <= SLACK, "{what}: {peak} bytes");
    }

    // The tokenizer a liger file carries: not a string, not a tokenizer, stop ids outside it.
    let carried = [
        (
            "json a number",
            vec![m("tokenizer.huggingface.json", Value::U32(7))],
            "not a string",
        ),
        (
            "json not JSON",
            vec![m("tokenizer.huggingface.json", Value::String("{".into()))],
            "tokenizer",
        ),
        (
            "json not a tokenizer",
            vec![m("tokenizer.huggingface.json", Value::String("{}".into()))],
            "tokenizer",
        ),
    ];
    for (what, meta, want) in &carried {
        let file = tokenizer_gguf(meta.clone());
        let err = liger::Tokenizer::from_gguf(&file, 16)
            .err()
            .unwrap_or_else(|| panic!("{what}"));
        assert!(err.to_string().contains(want), "{what}: '{err}'");
    }
    let stops = [
        (
            "stop id outside",
            vec![m("liger.stop_token_ids", Value::u32_array(&[16]))],
            "below 16",
        ),
        (
            "stop ids a string",
            vec![m("liger.stop_token_ids", Value::String("1".into()))],
            "not an array",
        ),
        (
            "eos outside",
            vec![m("tokenizer.ggml.eos_token_id", Value::U32(99))],
            "outside",
        ),
    ];
    for (what, meta, want) in &stops {
        let err = liger::tokenizer::stop_ids(&tokenizer_gguf(meta.clone()), 16)
            .err()
            .unwrap_or_else(|| panic!("{what}"));
        assert!(err.to_string().contains(want), "{what}: '{err}'");
    }
    println!(
        "{} malformed tokenizer inputs: each a clean error naming the field",
        cases.len() + carried.len() + stops.len()
    );
}

/// A GGUF file whose only metadata is one array of `n` items of `element`, each byte
/// `fill` (the array's bytes left sparse on disk when `fill` is 0).
fn file_with_one_array(path: &std::path::Path, element: ValueType, n: u64, fill: u8) {
    use std::io::Write;
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&0u64.to_le_bytes()); // tensors
    head.extend_from_slice(&1u64.to_le_bytes()); // metadata
    let key = b"test.big_array";
    head.extend_from_slice(&(key.len() as u64).to_le_bytes());
    head.extend_from_slice(key);
    head.extend_from_slice(&(ValueType::Array as u32).to_le_bytes());
    head.extend_from_slice(&(element as u32).to_le_bytes());
    head.extend_from_slice(&n.to_le_bytes());
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&head).unwrap();
    if fill == 0 {
        f.set_len(head.len() as u64 + n).unwrap();
    } else {
        let chunk = vec![fill; 1 << 20];
        for _ in 0..n / chunk.len() as u64 {
            f.write_all(&chunk).unwrap();
        }
    }
}

/// Metadata arrays cost their bytes, not a boxed value per item: a 16 MiB file holding a
/// 16 Mi-item u8 array, or bool array, reads within the hostile-file bound (boxed, it took
/// 24-32× its size), and is then refused as a model; a 1 GiB one through the C ABI is an
/// error and this process lives on.
#[test]
fn metadata_arrays_cost_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("array.gguf");
    for (element, fill) in [(ValueType::U8, 7u8), (ValueType::Bool, 1u8)] {
        file_with_one_array(&path, element, 16 << 20, fill);
        let bytes = std::fs::read(&path).unwrap();
        let (err, peak) = load_and_run(&bytes);
        println!(
            "{element:?} array of 16 Mi items: {} MiB allocated at the peak for a {} MiB file",
            peak >> 20,
            bytes.len() >> 20
        );
        assert!(
            peak <= file_bound(bytes.len()),
            "{element:?}: allocated {peak} bytes for a {}-byte file",
            bytes.len()
        );
        assert!(
            err.is_some(),
            "{element:?}: a file of one array loaded as a model"
        );
        let file = GgufFile::from_bytes(bytes).unwrap();
        let array = file
            .get("test.big_array")
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!((array.element(), array.len()), (element, 16 << 20));
    }
    file_with_one_array(&path, ValueType::U8, 1 << 30, 0);
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut model = std::ptr::null_mut();
    let status = liger::capi::liger_model_load(c_path.as_ptr(), std::ptr::null(), &mut model);
    // SAFETY: liger_last_error returns a NUL-terminated string owned by the library.
    let message = unsafe { std::ffi::CStr::from_ptr(liger::capi::liger_last_error()) };
    println!("1 GiB array through the C ABI: status {status}: {message:?}");
    assert_ne!(status, liger::capi::LIGER_OK);
    assert!(model.is_null());
}
