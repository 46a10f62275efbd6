//! The GGUF reader and writer: round trips (ours and ggml's `gguf` Python package), and
//! hostile files — truncated at every 1/64th, corrupted counts, offsets, types, string
//! lengths, dimensions, random bit flips — each a clean error, never a panic.

use liger::gguf::{GgufFile, GgufWriter, TensorDecl, Value, ValueType};
use liger::quant::{dequantize, quantize};
use liger::GgmlType;
use liger_tests::*;
use rand::{Rng, SeedableRng};

fn sample_metadata() -> Vec<(String, Value)> {
    let m = |k: &str, v: Value| (k.to_string(), v);
    vec![
        m("general.architecture", Value::String("liger".into())),
        m("general.alignment", Value::U32(64)),
        m("test.u8", Value::U8(200)),
        m("test.i8", Value::I8(-100)),
        m("test.u16", Value::U16(60000)),
        m("test.i16", Value::I16(-30000)),
        m("test.u32", Value::U32(4_000_000_000)),
        m("test.i32", Value::I32(-2_000_000_000)),
        m("test.u64", Value::U64(1 << 60)),
        m("test.i64", Value::I64(-(1 << 60))),
        m("test.f32", Value::F32(0.1)),
        m("test.f64", Value::F64(-2.5e-300)),
        m("test.bool", Value::Bool(true)),
        m("test.string", Value::String("héllo, ＧＧＵＦ 🦁".into())),
        m("test.empty_string", Value::String(String::new())),
        m(
            "test.array_i32",
            Value::array(
                ValueType::I32,
                vec![Value::I32(-1), Value::I32(2), Value::I32(3)],
            )
            .unwrap(),
        ),
        m(
            "test.array_f32",
            Value::array(ValueType::F32, vec![Value::F32(1.5), Value::F32(-0.25)]).unwrap(),
        ),
        m("test.array_string", Value::string_array(&["a", "", "ccc"])),
        m("test.array_empty", Value::u32_array(&[])),
    ]
}

const SAMPLE_TYPES: [GgmlType; 7] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

/// A file with every metadata value type and a 2-row tensor of every writable type.
fn sample_file() -> (Vec<u8>, Vec<(TensorDecl, Vec<u8>)>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let tensors: Vec<(TensorDecl, Vec<u8>)> = SAMPLE_TYPES
        .iter()
        .map(|&ty| {
            let x: Vec<f32> = (0..512).map(|_| rng.random_range(-2.0..2.0)).collect();
            let decl = TensorDecl {
                name: format!("t.{}", ty.name().to_lowercase()),
                dims: vec![256, 2],
                ggml_type: ty,
            };
            (decl, quantize(ty, &x).unwrap())
        })
        .collect();
    let mut buf = Vec::new();
    let mut w = GgufWriter::new(
        &mut buf,
        &sample_metadata(),
        tensors.iter().map(|t| t.0.clone()).collect(),
    )
    .unwrap();
    for (decl, data) in &tensors {
        w.write_tensor(&decl.name, data).unwrap();
    }
    w.finish().unwrap();
    (buf, tensors)
}

#[test]
fn writer_output_reads_back_identically() {
    let (bytes, tensors) = sample_file();
    let file = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(file.version, 3);
    assert_eq!(file.alignment, 64);
    assert_eq!(file.metadata(), &sample_metadata()[..]);
    for (decl, data) in &tensors {
        let info = file.tensor(&decl.name).unwrap();
        assert_eq!(
            (info.dims.clone(), info.ggml_type),
            (decl.dims.clone(), decl.ggml_type)
        );
        assert_eq!(info.offset % 64, 0, "{} is aligned", decl.name);
        assert_eq!(file.tensor_data(info), &data[..]);
    }
}

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(|v| json_value(&v)).collect())
        }
        Value::String(s) => s.clone().into(),
        Value::Bool(b) => (*b).into(),
        Value::F32(x) => (*x as f64).into(),
        Value::F64(x) => (*x).into(),
        Value::I8(_) | Value::I16(_) | Value::I32(_) | Value::I64(_) => {
            (v.as_f64().unwrap() as i64).into()
        }
        _ => v.as_u64().unwrap().into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v.value_type() {
        ValueType::U8 => "UINT8",
        ValueType::I8 => "INT8",
        ValueType::U16 => "UINT16",
        ValueType::I16 => "INT16",
        ValueType::U32 => "UINT32",
        ValueType::I32 => "INT32",
        ValueType::U64 => "UINT64",
        ValueType::I64 => "INT64",
        ValueType::F32 => "FLOAT32",
        ValueType::F64 => "FLOAT64",
        ValueType::Bool => "BOOL",
        ValueType::String => "STRING",
        ValueType::Array => "ARRAY",
    }
}

/// ggml's own reader (`gguf` on PyPI) reads our writer's output: every value, every tensor.
#[test]
fn gguf_python_package_reads_our_files() {
    let python_ok = std::process::Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !python_ok {
        assert!(
            std::env::var_os("LIGER_REQUIRE_TEST_DATA").is_none(),
            "python3 with gguf and numpy is required"
        );
        eprintln!(
            "SKIPPED: python3 -c 'import gguf, numpy' failed (pip install gguf==0.19.0 numpy)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (bytes, tensors) = sample_file();
    let path = dir.path().join("sample.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let metadata: serde_json::Map<String, serde_json::Value> = sample_metadata()
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!([type_name(v), json_value(v)])))
        .collect();
    let tensors: Vec<serde_json::Value> = tensors
        .iter()
        .map(|(d, data)| {
            serde_json::json!({"name": d.name, "type": d.ggml_type.name(), "dims": d.dims,
                               "values": dequantize(d.ggml_type, data).unwrap()})
        })
        .collect();
    let expected = dir.path().join("expected.json");
    std::fs::write(
        &expected,
        serde_json::to_vec(&serde_json::json!({"metadata": metadata, "tensors": tensors})).unwrap(),
    )
    .unwrap();

    // And a real converted model, every tensor dequantized by gguf-py equal to ours.
    let model = convert_case(
        &fixtures().join("liger/liger_qwen2_gla"),
        "q4_k_m",
        dir.path(),
    );
    let file = GgufFile::open(&model).unwrap();
    let model_expected = dir.path().join("model.json");
    let model_tensors: Vec<serde_json::Value> = file
        .tensors()
        .iter()
        .map(|t| {
            serde_json::json!({"name": t.name, "type": t.ggml_type.name(), "dims": t.dims,
                               "values": dequantize(t.ggml_type, file.tensor_data(t)).unwrap()})
        })
        .collect();
    let model_meta: serde_json::Map<String, serde_json::Value> = file
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!([type_name(v), json_value(v)])))
        .collect();
    std::fs::write(
        &model_expected,
        serde_json::to_vec(&serde_json::json!({"metadata": model_meta, "tensors": model_tensors}))
            .unwrap(),
    )
    .unwrap();

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/gguf_roundtrip.py");
    for (file, exp) in [(&path, &expected), (&model, &model_expected)] {
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(file)
            .arg(exp)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "gguf-py round trip of {}: {text}",
            file.display()
        );
        eprintln!("{}", text.trim());
    }
}

fn parse_err(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes) {
        Ok(_) => panic!("a corrupted file parsed"),
        Err(e) => e.to_string(),
    }
}

fn expect_err(bytes: &[u8], patch: impl FnOnce(&mut Vec<u8>), want: &str) {
    let mut b = bytes.to_vec();
    patch(&mut b);
    let err = parse_err(b);
    assert!(err.contains(want), "error '{err}' should contain '{want}'");
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Offset just after the first occurrence of `needle` (a key or tensor name) in the header.
fn after(bytes: &[u8], needle: &str) -> usize {
    let n = needle.as_bytes();
    bytes.windows(n.len()).position(|w| w == n).expect(needle) + n.len()
}

#[test]
fn truncated_at_every_64th_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = read_bytes(&convert_case(
        &fixtures().join("liger/liger_gla"),
        "q8_0",
        dir.path(),
    ));
    let (sample, _) = sample_file();
    for bytes in [model, sample] {
        assert!(GgufFile::from_bytes(bytes.clone()).is_ok());
        for i in 0..64 {
            let len = bytes.len() * i / 64;
            let err = parse_err(bytes[..len].to_vec());
            assert!(
                err.contains("truncated") || err.contains("past the end") || err.contains("only"),
                "cut at {len}/{}: {err}",
                bytes.len()
            );
        }
        // One byte short of the last tensor's end (the file may end in alignment padding).
        let file = GgufFile::from_bytes(bytes.clone()).unwrap();
        let end = file.data_end() as usize;
        assert!(parse_err(bytes[..end - 1].to_vec()).contains("past the end"));
    }
}

#[test]
fn corrupted_fields_name_what_is_wrong() {
    let (b, _) = sample_file();
    expect_err(&b, |b| b[0] = b'X', "not a GGUF file");
    expect_err(&b, |b| put_u32(b, 4, 99), "version 99");
    expect_err(
        &b,
        |b| put_u64(b, 8, u64::MAX),
        "tensor count at offset 8 is 18446744073709551615",
    );
    expect_err(
        &b,
        |b| put_u64(b, 16, 1 << 40),
        "metadata count at offset 16",
    );
    expect_err(&b, |b| put_u64(b, 24, 1 << 50), "length of metadata key #0");
    // general.architecture's value type, then the string length of its value.
    let arch = after(&b, "general.architecture");
    expect_err(&b, |b| put_u32(b, arch, 77), "unknown value type 77");
    expect_err(
        &b,
        |b| put_u64(b, arch + 4, u64::MAX / 2),
        "length of metadata 'general.architecture'",
    );
    let at = after(&b, "test.bool") + 4;
    expect_err(&b, |b| b[at] = 2, "bool byte is 2");
    let arr = after(&b, "test.array_string") + 4;
    expect_err(
        &b,
        |b| put_u32(b, arr, 42),
        "element type of metadata 'test.array_string'",
    );
    expect_err(
        &b,
        |b| put_u64(b, arr + 4, 1 << 62),
        "item count of metadata 'test.array_string'",
    );
    let at = after(&b, "general.alignment") + 4;
    expect_err(&b, |b| put_u32(b, at, 48), "power of two");
    let at = after(&b, "test.string") + 12;
    expect_err(&b, |b| b[at] = 0xff, "not valid UTF-8");
    // Duplicate key: rename test.u16 to test.u8's... same length trick: "test.i8" vs "test.u8".
    expect_err(
        &b,
        |b| {
            let at = after(b, "test.i8") - 2;
            b[at] = b'u';
        },
        "appears twice",
    );

    // Tensor directory: name, n_dims, dims, type, offset follow each name.
    let t = after(&b, "t.q8_0");
    expect_err(&b, |b| put_u32(b, t, 0), "0 dimensions");
    expect_err(&b, |b| put_u32(b, t, 5), "5 dimensions");
    expect_err(&b, |b| put_u64(b, t + 4, 0), "dimension 0 is 0");
    expect_err(
        &b,
        |b| {
            put_u64(b, t + 4, 1 << 40);
            put_u64(b, t + 12, 1 << 40);
        },
        "overflow",
    );
    expect_err(
        &b,
        |b| put_u64(b, t + 4, 100),
        "not a multiple of Q8_0's block size 32",
    );
    expect_err(&b, |b| put_u32(b, t + 20, 99), "unknown ggml type id 99");
    expect_err(
        &b,
        |b| put_u64(b, t + 24, 3),
        "not a multiple of the alignment",
    );
    expect_err(&b, |b| put_u64(b, t + 24, 1 << 40), "runs past the end");
    expect_err(
        &b,
        |b| put_u64(b, t + 24, u64::MAX - 63),
        "runs past the end",
    );
    // Point t.q8_0 at t.bf16's data: overlap.
    expect_err(
        &b,
        |b| {
            let bf16_offset =
                u64::from_le_bytes(b[after(b, "t.bf16") + 24..][..8].try_into().unwrap());
            put_u64(b, t + 24, bf16_offset);
        },
        "overlap",
    );
    expect_err(
        &b,
        |b| {
            let at = after(b, "t.q4_0") - 1;
            b[at] = b'k'; // "t.q4_k": a second tensor of that name
        },
        "appears twice",
    );
    let at = after(&b, "t.f16") - 5 - 8;
    expect_err(&b, |b| put_u64(b, at, 1000), "name of tensor");
}

#[test]
fn random_bit_flips_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let model = read_bytes(&convert_case(
        &fixtures().join("liger/liger_gsa"),
        "q4_0",
        dir.path(),
    ));
    let header_len = GgufFile::from_bytes(model.clone()).unwrap().data_offset as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
    let (mut ok, mut errors) = (0, 0);
    for _ in 0..3000 {
        let mut b = model[..].to_vec();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..header_len);
            b[at] ^= 1 << rng.random_range(0..8);
        }
        match GgufFile::from_bytes(b) {
            Ok(file) => {
                ok += 1;
                // Whatever parsed must be safe to use: config, every tensor's bytes.
                let _ = liger::LigerConfig::from_gguf(&file);
                for t in file.tensors() {
                    assert_eq!(file.tensor_data(t).len() as u64, t.n_bytes);
                }
            }
            Err(_) => errors += 1,
        }
    }
    assert!(
        errors > 100,
        "bit flips in the header should mostly be caught ({ok} parsed, {errors} errors)"
    );
}

/// `--no-mmap` (`FileAccess::Read`): a model read into memory decodes on after its file is
/// truncated and rewritten under it (a mapped one would fault), with the same logits.
#[test]
fn a_model_read_into_memory_outlives_its_file() {
    use liger::gguf::FileAccess;
    use liger::{DecodeMode, Model, ModelOptions, Session};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let path = convert_case(
        &fixtures().join("liger").join("liger_gla"),
        "q8_0",
        dir.path(),
    );
    let tokens: Vec<u32> = (0..40).map(|i| (i * 7 + 3) % 100).collect();
    let options = |file_access| ModelOptions {
        threads: Some(1),
        file_access,
        ..Default::default()
    };
    let mapped = Arc::new(Model::load(&path, &options(FileAccess::Map)).unwrap());
    let mut reference = Session::new(mapped, DecodeMode::Window);
    // Fed in the same two calls: a step's grouping changes the last bits.
    let mut want = reference.feed_all_logits(&tokens[..20]).unwrap();
    want.extend(reference.feed_all_logits(&tokens[20..]).unwrap());
    drop(reference);

    let read = Arc::new(Model::load(&path, &options(FileAccess::Read)).unwrap());
    let mut session = Session::new(read, DecodeMode::Window);
    let mut got = session.feed_all_logits(&tokens[..20]).unwrap();
    // The file cut to nothing, then rewritten with other bytes, while the session lives.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(0).unwrap();
    std::fs::write(&path, b"not a model any more").unwrap();
    got.extend(session.feed_all_logits(&tokens[20..]).unwrap());
    assert_eq!(got.len(), want.len());
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "logit {i}: {} after the file went, {} mapped",
            got[i], want[i]
        );
    }
}
