//! The converter on every fixture checkpoint at every --type: the f32 file holds exactly the
//! fixture's weights (LoRA merged where the case has an adapter), quantized files hold each
//! tensor at the recipe's type within the type's error, and bad input fails cleanly without
//! leaving a file behind.

use liger::gguf::GgufFile;
use liger::quant::dequantize;
use liger::{GgmlType, LigerConfig};
use liger_convert::names::hf_to_gguf;
use liger_tests::*;
use std::collections::HashMap;
use std::path::Path;

const TYPES: [&str; 6] = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"];

/// HF tensors of a fixture by GGUF name, as f32 (rows-first shape).
fn fixture_weights(case: &Path) -> HashMap<String, (Vec<f32>, Vec<usize>)> {
    let bytes = read_bytes(&case.join("model.safetensors"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = HashMap::new();
    for name in st.names() {
        if let Some(gguf) = hf_to_gguf(name) {
            out.insert(gguf, tensor_f32(&bytes, name));
        }
    }
    out
}

/// W + (alpha / r) · B·A for every adapted weight, computed here in f64.
fn merge_lora(case: &Path, weights: &mut HashMap<String, (Vec<f32>, Vec<usize>)>) {
    let dir = case.join("adapter");
    let cfg: serde_json::Value =
        serde_json::from_slice(&read_bytes(&dir.join("adapter_config.json"))).unwrap();
    let scale = cfg["lora_alpha"].as_f64().unwrap() / cfg["r"].as_f64().unwrap();
    let bytes = read_bytes(&dir.join("adapter_model.safetensors"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut merged = 0;
    for name in st.names() {
        let Some(module) = name.strip_suffix(".lora_A.weight") else {
            continue;
        };
        let (a, a_shape) = tensor_f32(&bytes, name);
        let (b, b_shape) = tensor_f32(&bytes, &format!("{module}.lora_B.weight"));
        let gguf = hf_to_gguf(&format!(
            "{}.weight",
            module.strip_prefix("base_model.model.").unwrap()
        ))
        .unwrap();
        let (w, shape) = weights.get_mut(&gguf).unwrap();
        let (r, n_in, n_out) = (a_shape[0], a_shape[1], b_shape[0]);
        assert_eq!(shape, &vec![n_out, n_in]);
        for o in 0..n_out {
            for i in 0..n_in {
                let delta: f64 = (0..r)
                    .map(|k| b[o * r + k] as f64 * a[k * n_in + i] as f64)
                    .sum();
                w[o * n_in + i] = (w[o * n_in + i] as f64 + scale * delta) as f32;
            }
        }
        merged += 1;
    }
    assert!(merged > 0, "the adapter merged nothing");
}

fn file_tensors(file: &GgufFile) -> HashMap<String, (GgmlType, Vec<f32>, Vec<usize>)> {
    file.tensors()
        .iter()
        .map(|t| {
            let shape = t.shape_rows_first().iter().map(|&d| d as usize).collect();
            (
                t.name.clone(),
                (
                    t.ggml_type,
                    dequantize(t.ggml_type, file.tensor_data(t)).unwrap(),
                    shape,
                ),
            )
        })
        .collect()
}

/// Relative RMS error allowed per type (weights ~ N(0, 0.1..0.5)).
fn tolerance(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => 1e-3,
        GgmlType::BF16 => 5e-3,
        GgmlType::Q8_0 => 1e-2,
        GgmlType::Q6_K => 3e-2,
        GgmlType::Q4_K | GgmlType::Q4_0 => 0.15,
        other => panic!("unexpected type {other}"),
    }
}

#[test]
fn every_fixture_converts_at_every_type() {
    let dir = tempfile::tempdir().unwrap();
    for case in liger_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let mut want = fixture_weights(&case);
        let has_lora = case.join("adapter").exists();
        if has_lora {
            merge_lora(&case, &mut want);
        }
        let hf_config: serde_json::Value =
            serde_json::from_slice(&read_bytes(&case.join("config.json"))).unwrap();
        if hf_config["tie_word_embeddings"].as_bool() == Some(true) {
            want.remove("output.weight");
        }
        for out_type in TYPES {
            let path = convert_case(&case, out_type, dir.path());
            let file = GgufFile::open(&path).unwrap();
            let config = LigerConfig::from_gguf(&file).unwrap();
            assert_eq!(
                config.n_layers,
                hf_config["num_hidden_layers"].as_u64().unwrap() as usize
            );
            let got = file_tensors(&file);
            let mut names: Vec<&String> = want.keys().collect();
            names.sort();
            assert_eq!(got.len(), want.len(), "{name} {out_type}: tensor count");
            for tname in names {
                let (w, w_shape) = &want[tname];
                let (ty, g, g_shape) = got
                    .get(tname)
                    .unwrap_or_else(|| panic!("{name} {out_type}: {tname} missing"));
                assert_eq!(g_shape, w_shape, "{name} {out_type}: {tname} shape");
                let what = format!("{name} {out_type}: {tname} ({ty})");
                if out_type == "f32" {
                    // LoRA: our f32 merge vs the f64 one here differ by rounding only.
                    let tol = if has_lora && tname.contains("attn_") {
                        1e-6
                    } else {
                        0.0
                    };
                    assert_close(&what, g, w, tol);
                } else {
                    let err: f64 = g
                        .iter()
                        .zip(w)
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum::<f64>();
                    let norm: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum::<f64>();
                    let rel = (err / norm.max(1e-30)).sqrt();
                    assert!(
                        rel <= tolerance(*ty),
                        "{what}: relative RMS error {rel:.2e} > {:.0e}",
                        tolerance(*ty)
                    );
                    if w_shape.len() == 1 {
                        assert_eq!(*ty, GgmlType::F32, "{what}: vectors stay F32");
                    }
                }
            }
        }
    }
}

#[test]
fn config_fields_reach_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = fixtures().join("liger");
    let read = |case: &str| {
        let path = convert_case(&cases.join(case), "f32", dir.path());
        LigerConfig::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
    };
    let rope = read("liger_gla_llama3rope");
    assert_eq!(
        rope.rope_scaling,
        Some(liger::RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_context: 8192
        })
    );
    assert_eq!(rope.rope_theta, 500000.0);
    assert!(read("liger_gla_tied").tie_embeddings);
    let gsa = read("liger_gsa");
    assert_eq!((gsa.variant, gsa.gsa_slots), (liger::Variant::Gsa, 16));
    assert_eq!(read("liger_hgrn2").variant, liger::Variant::Hgrn2);
    let qwen2 = read("liger_qwen2_gla");
    assert!(qwen2.attention_bias && qwen2.base == liger::Base::Qwen2);
    let qwen3 = read("liger_qwen3_gla");
    assert!(
        !qwen3.attention_bias && qwen3.base == liger::Base::Qwen3,
        "q_norm/k_norm dropped, no biases"
    );
    assert_eq!(read("liger_mistral_gla").base, liger::Base::Mistral);
    let gla = read("liger_gla");
    assert_eq!(
        (gla.window, gla.mix_swa, gla.gate_normalizer),
        (64, 0.5, 16.0)
    );
    assert_eq!(gla.rms_eps, 1e-5);
}

/// A copy of a fixture case in `dir` whose config.json / files a test can break.
fn broken_copy(case: &str, dir: &Path, edit: impl FnOnce(&Path)) -> std::path::PathBuf {
    let src = fixtures().join("liger").join(case);
    let dst = dir.join(format!("{case}-broken"));
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    edit(&dst);
    dst
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&read_bytes(&path)).unwrap();
    f(&mut cfg);
    std::fs::write(path, serde_json::to_vec(&cfg).unwrap()).unwrap();
}

/// Converting must fail with a message containing `want`, leaving nothing in `out_dir`.
fn assert_fails(src: &Path, lora: Option<&Path>, out_dir: &Path, want: &str) {
    std::fs::create_dir_all(out_dir).unwrap();
    let opts = liger_convert::ConvertOptions {
        src: src.to_owned(),
        out: out_dir.join("out.gguf"),
        out_type: "q8_0".parse().unwrap(),
        lora: lora.map(Path::to_owned),
        name: None,
        progress: false,
    };
    let err = liger_convert::convert(&opts)
        .expect_err("conversion should fail")
        .to_string();
    assert!(err.contains(want), "error '{err}' should mention '{want}'");
    let left: Vec<_> = std::fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "failed conversion left {left:?} behind");
}

#[test]
fn bad_checkpoints_fail_cleanly_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let unknown = broken_copy("liger_gla", tmp.path(), |d| {
        edit_config(d, |c| c["model_type"] = "liger_rwkv".into())
    });
    assert_fails(&unknown, None, &out, "model_type 'liger_rwkv'");

    let wrong_dims = broken_copy("liger_hgrn2", tmp.path(), |d| {
        edit_config(d, |c| c["intermediate_size"] = 300.into())
    });
    assert_fails(
        &wrong_dims,
        None,
        &out,
        "ffn_gate.weight' has shape [256, 128], the config implies [300, 128]",
    );

    let no_lm_head = broken_copy("liger_gsa", tmp.path(), |d| {
        edit_config(d, |c| c["tie_word_embeddings"] = false.into())
    });
    std::fs::remove_file(no_lm_head.join("model.safetensors")).unwrap();
    assert_fails(&no_lm_head, None, &out, "no model.safetensors");

    let truncated = broken_copy("liger_mistral_gla", tmp.path(), |d| {
        let p = d.join("model.safetensors");
        let bytes = read_bytes(&p);
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert_fails(&truncated, None, &out, "model.safetensors");

    let bad_rope = broken_copy("liger_gla_tied", tmp.path(), |d| {
        edit_config(d, |c| {
            c["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0})
        })
    });
    assert_fails(&bad_rope, None, &out, "rope_scaling type 'yarn'");

    // An adapter whose rank disagrees with its config, and one for another model's shapes.
    let lora_case = fixtures().join("liger/liger_gla_lora");
    let bad_rank = tmp.path().join("adapter-bad-rank");
    std::fs::create_dir_all(&bad_rank).unwrap();
    std::fs::copy(
        lora_case.join("adapter/adapter_model.safetensors"),
        bad_rank.join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&read_bytes(&lora_case.join("adapter/adapter_config.json")))
            .unwrap();
    cfg["r"] = 4.into();
    std::fs::write(
        bad_rank.join("adapter_config.json"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    assert_fails(&lora_case, Some(&bad_rank), &out, "do not match r = 4");
    // An adapter whose lora_A has the wrong input width for q_proj.
    let misshapen = tmp.path().join("adapter-misshapen");
    std::fs::create_dir_all(&misshapen).unwrap();
    std::fs::copy(
        lora_case.join("adapter/adapter_config.json"),
        misshapen.join("adapter_config.json"),
    )
    .unwrap();
    let (a, b) = (vec![0u8; 8 * 64 * 4], vec![0u8; 128 * 8 * 4]);
    let module = "base_model.model.model.layers.0.self_attn.q_proj";
    let tensors = vec![
        (
            format!("{module}.lora_A.weight"),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![8, 64], &a).unwrap(),
        ),
        (
            format!("{module}.lora_B.weight"),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![128, 8], &b)
                .unwrap(),
        ),
    ];
    std::fs::write(
        misshapen.join("adapter_model.safetensors"),
        safetensors::serialize(tensors, None).unwrap(),
    )
    .unwrap();
    assert_fails(
        &lora_case,
        Some(&misshapen),
        &out,
        "LoRA adapter for 'blk.0.attn_q.weight' is [128, 64], the weight is [128, 128]",
    );
    assert_fails(
        &lora_case,
        Some(&tmp.path().join("no-such-adapter")),
        &out,
        "adapter_config.json",
    );
    // A module of rank 0 (its rank_pattern says 0): its scale would be alpha / 0.
    let rank_zero = tmp.path().join("adapter-rank-zero");
    std::fs::create_dir_all(&rank_zero).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&read_bytes(&lora_case.join("adapter/adapter_config.json")))
            .unwrap();
    cfg["rank_pattern"] = serde_json::json!({"layers.0.self_attn.q_proj": 0});
    std::fs::write(
        rank_zero.join("adapter_config.json"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    let empty: [u8; 0] = [];
    let tensors = vec![
        (
            format!("{module}.lora_A.weight"),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![0, 128], &empty)
                .unwrap(),
        ),
        (
            format!("{module}.lora_B.weight"),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![128, 0], &empty)
                .unwrap(),
        ),
    ];
    std::fs::write(
        rank_zero.join("adapter_model.safetensors"),
        safetensors::serialize(tensors, None).unwrap(),
    )
    .unwrap();
    assert_fails(&lora_case, Some(&rank_zero), &out, "has rank 0");
}

#[test]
fn unwritable_output_is_an_error_naming_the_path() {
    let case = fixtures().join("liger/liger_gla");
    let opts = liger_convert::ConvertOptions {
        src: case,
        out: "/proc/liger-cannot-write-here/out.gguf".into(),
        out_type: "f16".parse().unwrap(),
        lora: None,
        name: None,
        progress: false,
    };
    let err = liger_convert::convert(&opts).unwrap_err().to_string();
    assert!(err.contains("/proc/liger-cannot-write-here"), "{err}");
}

/// A fixture re-saved as a sharded bf16 checkpoint (two shards + index) converts to exactly
/// the bf16-rounded weights.
#[test]
fn sharded_bf16_checkpoints_convert() {
    let tmp = tempfile::tempdir().unwrap();
    let case = fixtures().join("liger/liger_qwen2_gla");
    let src = tmp.path().join("sharded");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(case.join("config.json"), src.join("config.json")).unwrap();
    let bytes = read_bytes(&case.join("model.safetensors"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let to_bf16 = |name: &str| -> (Vec<u8>, Vec<usize>) {
        let (v, shape) = tensor_f32(&bytes, name);
        (
            v.iter()
                .flat_map(|x| liger::quant::bf16_from_f32_ggml(*x).to_le_bytes())
                .collect(),
            shape,
        )
    };
    let mut weight_map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let data: Vec<(String, (Vec<u8>, Vec<usize>))> =
            part.iter().map(|n| (n.clone(), to_bf16(n))).collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(n, (b, s))| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, s.clone(), b)
                        .unwrap(),
                )
            })
            .collect();
        std::fs::write(
            src.join(&file),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        for n in part {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    std::fs::write(
        src.join("model.safetensors.index.json"),
        serde_json::to_vec(&serde_json::json!({"metadata": {}, "weight_map": weight_map})).unwrap(),
    )
    .unwrap();
    let out = convert_case(&src, "f32", tmp.path());
    let file = GgufFile::open(&out).unwrap();
    let got = file_tensors(&file);
    let mut checked = 0;
    for name in &names {
        let Some(gguf) = hf_to_gguf(name) else {
            continue;
        };
        let (want, _) = tensor_f32(&bytes, name);
        let rounded: Vec<f32> = want
            .iter()
            .map(|x| liger::quant::bf16_to_f32(liger::quant::bf16_from_f32_ggml(*x)))
            .collect();
        assert_close(
            &format!("sharded bf16 {gguf}"),
            &got[&gguf].1,
            &rounded,
            0.0,
        );
        checked += 1;
    }
    assert_eq!(checked, got.len());
}

/// `use_rslora` scales the update by alpha / √r instead of alpha / r.
#[test]
fn rslora_adapters_scale_by_the_root_of_the_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let case = fixtures().join("liger/liger_gla_lora");
    let adapter = tmp.path().join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    std::fs::copy(
        case.join("adapter/adapter_model.safetensors"),
        adapter.join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&read_bytes(&case.join("adapter/adapter_config.json"))).unwrap();
    cfg["use_rslora"] = true.into();
    std::fs::write(
        adapter.join("adapter_config.json"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    let convert = |lora: Option<std::path::PathBuf>, name: &str| {
        let out = tmp.path().join(name);
        convert_to(&case, &out, "f32", lora.as_deref()).unwrap();
        file_tensors(&GgufFile::open(out).unwrap())
    };
    let base = convert(None, "base.gguf");
    let plain = convert(Some(case.join("adapter")), "plain.gguf");
    let rs = convert(Some(adapter), "rs.gguf");
    let (r, alpha) = (
        cfg["r"].as_f64().unwrap(),
        cfg["lora_alpha"].as_f64().unwrap(),
    );
    // delta_rs / delta_plain = (alpha/√r) / (alpha/r) = √r
    let name = "blk.0.attn_q.weight";
    let (b, p, s) = (&base[name].1, &plain[name].1, &rs[name].1);
    let (mut num, mut den) = (0f64, 0f64);
    for i in 0..b.len() {
        let (dp, ds) = ((p[i] - b[i]) as f64, (s[i] - b[i]) as f64);
        num += dp * ds;
        den += dp * dp;
    }
    let ratio = num / den;
    assert!(
        (ratio - r.sqrt()).abs() < 1e-3,
        "rsLoRA scale ratio {ratio}, want √{r} (alpha {alpha})"
    );
}
