//! Shared helpers for the integration tests: fixture paths, safetensors reads, comparisons
//! that print the first mismatch.

pub mod alloc;
pub mod schema;

use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

/// `tests/fixtures` of this repository (copied from `../shared/fixtures`, see its README).
pub fn fixtures() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}

/// Every `tests/fixtures/liger/<case>` directory, sorted.
pub fn liger_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures().join("liger"))
        .expect("tests/fixtures/liger")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").exists())
        .collect();
    cases.sort();
    cases
}

/// The cache of large downloaded test inputs (`scripts/fetch-test-data.sh` fills it).
/// Returns `None` (and prints why) when `name` is absent, unless `LIGER_REQUIRE_TEST_DATA`
/// is set, as CI sets it: then a missing file fails the test.
pub fn test_data(name: &str) -> Option<PathBuf> {
    let path = test_data_dir().join(name);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("LIGER_REQUIRE_TEST_DATA").is_some() {
        panic!(
            "{} is missing: run scripts/fetch-test-data.sh",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: {} is missing (run scripts/fetch-test-data.sh)",
        path.display()
    );
    None
}

/// SmolLM2-135M-Instruct converted to a liger Q8_0 file (Liger-GLA, no recovery), made from
/// the downloaded GGUF on first use: see [`derived_test_data`]. `None` when the download is
/// absent (and not required).
pub fn smollm2_liger_q8_0() -> Option<PathBuf> {
    let source = test_data("SmolLM2-135M-Instruct.Q4_1.gguf")?;
    Some(derived_test_data("smollm2-liger.Q8_0.gguf", |out| {
        if let Err(e) = convert_to(&source, out, "q8_0", None) {
            panic!("converting {}: {e}", source.display());
        }
    }))
}

/// The demo model: SmolLM2 converted to Q8_0 with the recovery adapter this repository ships
/// (`recovery/adapter`), made like [`smollm2_liger_q8_0`]. The name carries the adapter's
/// hash, so a new adapter is converted anew.
pub fn smollm2_recovered_q8_0() -> Option<PathBuf> {
    let source = test_data("SmolLM2-135M-Instruct.Q4_1.gguf")?;
    let adapter = repo_root().join("recovery/adapter");
    let weights = read_bytes(&adapter.join("adapter_model.safetensors"));
    let hash = weights.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    Some(derived_test_data(
        &format!("smollm2-recovered-{hash:016x}.Q8_0.gguf"),
        |out| {
            if let Err(e) = convert_to(&source, out, "q8_0", Some(&adapter)) {
                panic!(
                    "converting {} with {}: {e}",
                    source.display(),
                    adapter.display()
                );
            }
        },
    ))
}

/// SmolLM2 as a liger F16 file, made like [`smollm2_liger_q8_0`]: for the GPU backends'
/// comparisons with the CPU (with F16 weights the CPU's products take f32 activations, as the
/// GPUs' do; Q8_0 and Q4 weights take 16- and 8-bit ones on the CPU).
pub fn smollm2_liger_f16() -> Option<PathBuf> {
    let source = test_data("SmolLM2-135M-Instruct.Q4_1.gguf")?;
    Some(derived_test_data("smollm2-liger.F16.gguf", |out| {
        if let Err(e) = convert_to(&source, out, "f16", None) {
            panic!("converting {}: {e}", source.display());
        }
    }))
}

/// Whether the wgpu backend's tests run: required where CI installs lavapipe (`CI`,
/// `LIGER_REQUIRE_GPU`); elsewhere when `liger_binary run --backend wgpu` works on a fixture
/// (else `SKIPPED` is printed).
pub fn wgpu_runs(liger_binary: &str) -> bool {
    if std::env::var_os("CI").is_some() || std::env::var_os("LIGER_REQUIRE_GPU").is_some() {
        return true;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = convert_case(&fixtures().join("liger/liger_gla"), "f32", dir.path());
    let out = std::process::Command::new(liger_binary)
        .args(["run", "-m", model.to_str().unwrap(), "--backend", "wgpu"])
        .args(["--prompt-ids", "1,2,3", "-n", "1", "--temp", "0", "--ids"])
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "SKIPPED: no wgpu adapter ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out.status.success()
}

/// A file made by the tests from the downloaded test data: `derived/<name>` in the cache,
/// made once by `make(path)` (which must write `path` atomically, as the converter does)
/// under an exclusive lock on `derived/<name>.lock`, so test binaries running in parallel
/// neither make it twice nor read it half-written. A file left by an older build that no
/// longer opens is made again.
pub fn derived_test_data(name: &str, make: impl FnOnce(&Path)) -> PathBuf {
    let dir = test_data_dir().join("derived");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let lock_path = dir.join(format!("{name}.lock"));
    let lock = std::fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));
    let path = dir.join(name);
    let usable = path.exists() && liger::GgufFile::open(&path).is_ok();
    if !usable {
        eprintln!("making {} (once per test-data cache)", path.display());
        make(&path);
        assert!(path.exists(), "{} was not made", path.display());
    }
    drop(lock);
    path
}

/// The cache of downloaded test inputs: `LIGER_TEST_DATA`, else `~/.cache/liger-test-data`.
fn test_data_dir() -> PathBuf {
    std::env::var_os("LIGER_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            home.join(".cache/liger-test-data")
        })
}

pub fn read_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A tensor of a safetensors file as f32 (F32, I64 and U8 tensors are converted), with its shape.
pub fn tensor_f32(bytes: &[u8], name: &str) -> (Vec<f32>, Vec<usize>) {
    let st = SafeTensors::deserialize(bytes).expect("safetensors");
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
    let data = t.data();
    let v = match t.dtype() {
        safetensors::Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        safetensors::Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        safetensors::Dtype::U8 => data.iter().map(|&b| b as f32).collect(),
        d => panic!("tensor {name}: dtype {d:?} not handled"),
    };
    (v, t.shape().to_vec())
}

/// A U8 tensor of a safetensors file, with its shape.
pub fn tensor_u8(bytes: &[u8], name: &str) -> (Vec<u8>, Vec<usize>) {
    let st = SafeTensors::deserialize(bytes).expect("safetensors");
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
    (t.data().to_vec(), t.shape().to_vec())
}

/// Fails with the first position where `got` and `want` differ by more than `tol`
/// (`tol = 0` compares bits, so `-0.0 != 0.0` and NaNs must match).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let bad = if tol == 0.0 {
            g.to_bits() != w.to_bits()
        } else {
            !((g - w).abs() <= tol)
        };
        if bad {
            panic!("{what}: first mismatch at index {i}: got {g}, want {w} (|diff| {}, tolerance {tol})", (g - w).abs());
        }
        if (g - w).abs() > worst.1 {
            worst = (i, (g - w).abs());
        }
    }
}

/// Fails with the first differing byte.
pub fn assert_bytes_eq(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        panic!(
            "{what}: first differing byte at {i}: got {:#04x}, want {:#04x}",
            got[i], want[i]
        );
    }
}

/// The repository root: where the tests were built, or `LIGER_REPO_ROOT` (test binaries
/// carried to another machine, such as the GPU machine of `scripts/device-cuda.sh`).
pub fn repo_root() -> PathBuf {
    match std::env::var_os("LIGER_REPO_ROOT") {
        Some(root) => PathBuf::from(root),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ is in the repository")
            .to_owned(),
    }
}

/// A fixture's prompt ids and its reference greedy continuation (hf-compat semantics), each
/// comma-separated: the arguments of the C and Java test programs.
pub fn greedy_args(case: &Path) -> (String, String) {
    let reference = read_bytes(&case.join("reference.safetensors"));
    let prompt_len = meta(case)["prompt_len"].as_u64().expect("prompt_len") as usize;
    let csv = |values: &[f32]| {
        values
            .iter()
            .map(|v| (*v as u32).to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (ids, _) = tensor_f32(&reference, "input_ids");
    let (greedy, _) = tensor_f32(&reference, "greedy_tokens");
    (csv(&ids[..prompt_len]), csv(&greedy))
}

/// The fixture's `meta.json`.
pub fn meta(case: &Path) -> serde_json::Value {
    serde_json::from_slice(&read_bytes(&case.join("meta.json"))).expect("meta.json")
}

/// Converts a fixture case (with its adapter for the LoRA case) into `dir/<case>.<type>.gguf`.
pub fn convert_case(case: &Path, out_type: &str, dir: &Path) -> PathBuf {
    let name = case.file_name().unwrap().to_string_lossy().to_string();
    let out = dir.join(format!("{name}.{out_type}.gguf"));
    let adapter = case.join("adapter");
    let opts = liger_convert::ConvertOptions {
        src: case.to_owned(),
        out: out.clone(),
        out_type: out_type.parse().unwrap(),
        lora: adapter.exists().then_some(adapter),
        name: None,
        progress: false,
    };
    liger_convert::convert(&opts)
        .unwrap_or_else(|e| panic!("converting {name} at {out_type}: {e}"));
    out
}

/// Index of the first maximum (NaN never wins).
pub use liger::sampler::argmax;

/// Converts `src` (HF dir or GGUF) to `out` at `out_type`, optionally merging an adapter.
pub fn convert_to(
    src: &Path,
    out: &Path,
    out_type: &str,
    lora: Option<&Path>,
) -> liger::Result<liger_convert::ConvertReport> {
    let opts = liger_convert::ConvertOptions {
        src: src.to_owned(),
        out: out.to_owned(),
        out_type: out_type.parse()?,
        lora: lora.map(Path::to_owned),
        name: None,
        progress: false,
    };
    liger_convert::convert(&opts)
}

/// Whether a backend that fails to open fails the test: wgpu where CI installs lavapipe
/// (`CI`, `LIGER_REQUIRE_GPU`), CUDA on the GPU machine (`LIGER_REQUIRE_CUDA`).
pub fn backend_required(kind: liger::backend::BackendKind) -> bool {
    use liger::backend::BackendKind;
    let set = |v: &str| std::env::var_os(v).is_some();
    match kind {
        BackendKind::Wgpu => set("CI") || set("LIGER_REQUIRE_GPU"),
        BackendKind::Cuda => set("LIGER_REQUIRE_CUDA"),
        _ => true,
    }
}

/// `model` on every backend this build has and this machine runs (each after its self-test),
/// the CPU first.
pub fn every_backend(
    model: &std::sync::Arc<liger::Model>,
) -> Vec<std::sync::Arc<dyn liger::Backend>> {
    use liger::backend::{self, BackendKind};
    let mut out = Vec::new();
    for kind in [BackendKind::Cpu, BackendKind::Wgpu, BackendKind::Cuda] {
        if !kind.compiled_in() {
            eprintln!("{}: not compiled in", kind.name());
            continue;
        }
        match backend::open(kind, model) {
            Ok(opened) => out.push(opened.backend),
            Err(e) if backend_required(kind) => {
                panic!("the {} backend must run here: {e}", kind.name())
            }
            Err(e) => eprintln!("SKIPPED {}: {e}", kind.name()),
        }
    }
    out
}
