//! `liger info FILE`: what the file is, its metadata, its tensors, the state per sequence;
//! `--kernels`: which CPU kernel runs each product on this CPU.

use anyhow::Result;
use liger::cpu::kernels::SimdLevel;
use liger::cpu::linear::planned_paths;
use liger::gguf::{GgufFile, Value};
use liger::{GgmlType, LigerConfig};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

const CUT: usize = 96;

fn short(v: &Value, full: bool) -> String {
    let s = match v {
        Value::Array(items) if full => {
            format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        _ => v.to_string(),
    };
    let s = s.replace('\n', "\\n");
    if full || s.chars().count() <= CUT {
        return s;
    }
    let head: String = s.chars().take(CUT).collect();
    format!("{head}… ({} chars)", s.chars().count())
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// Prints the report; a closed pipe (`liger info F | head`) is not an error.
pub fn print(path: Option<&Path>, full: bool, kernels: bool) -> Result<()> {
    let mut text = match path {
        Some(path) => render(path, full)?,
        None => String::new(),
    };
    if kernels {
        let matrices = match path {
            Some(path) => product_matrices(&GgufFile::open(path)?),
            None => GgmlType::ALL.iter().map(|&t| (t, 4096)).collect(),
        };
        text += &kernel_table(&matrices);
    }
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

macro_rules! out {
    ($s:expr, $($arg:tt)*) => { { let _ = writeln!($s, $($arg)*); } };
}

fn render(path: &Path, full: bool) -> Result<String> {
    let mut o = String::new();
    let file = GgufFile::open(path)?;
    out!(
        o,
        "file: {} ({}, GGUF v{}, alignment {})",
        path.display(),
        mib(file.file_size()),
        file.version,
        file.alignment
    );
    let arch = file
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("?");
    if arch == liger::config::ARCHITECTURE {
        let c = LigerConfig::from_gguf(&file)?;
        out!(
            o,
            "model: Liger-{} over a {} base{}",
            c.variant.name().to_uppercase(),
            c.base.name(),
            if c.untrained {
                " — linearized WITHOUT Liger training or LoRA recovery (runs correctly, answers poorly)"
            } else {
                ""
            }
        );
        out!(
            o,
            "shape: {} layers, hidden {}, ffn {}, heads {} (kv {}), head dim {}, vocab {}{}{}",
            c.n_layers,
            c.hidden,
            c.ffn,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.vocab_size,
            if c.tie_embeddings {
                ", tied embeddings"
            } else {
                ""
            },
            if c.attention_bias {
                ", q/k/v biases"
            } else {
                ""
            }
        );
        let rope = match c.rope_scaling {
            None => String::new(),
            Some(liger::RopeScaling::Llama3 { factor, .. }) => {
                format!(", llama3 scaling ×{factor}")
            }
        };
        out!(
            o,
            "mix: {}·SWA({} keys + current) + {}·{}; RoPE θ {}{rope} (SWA branch only){}",
            c.mix_swa,
            c.window,
            1.0 - c.mix_swa,
            c.variant.name().to_uppercase(),
            c.rope_theta,
            if c.variant == liger::Variant::Gsa {
                format!("; GSA slots {}", c.gsa_slots)
            } else {
                String::new()
            }
        );
        let state = c.recurrent_state_bytes();
        out!(o,
            "state per sequence (fixed, any context length): recurrent {} (f32) + window {} (f32) = {}",
            mib(state),
            mib(c.window_cache_bytes(4)),
            mib(state + c.window_cache_bytes(4))
        );
    } else {
        out!(
            o,
            "model: architecture '{arch}' (not a liger file; `liger convert` it first)"
        );
    }

    out!(o, "\nmetadata ({} keys):", file.metadata().len());
    for (key, value) in file.metadata() {
        out!(o, "  {key:48} {}", short(value, full));
    }

    out!(o, "\ntensors ({}):", file.tensors().len());
    out!(
        o,
        "  {:32} {:6} {:>20} {:>12}",
        "name",
        "type",
        "shape (rows first)",
        "size"
    );
    let mut by_type = std::collections::BTreeMap::<&str, (usize, u64)>::new();
    for t in file.tensors() {
        let shape = t
            .shape_rows_first()
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×");
        out!(
            o,
            "  {:32} {:6} {:>20} {:>12}",
            t.name,
            t.ggml_type.name(),
            shape,
            mib(t.n_bytes)
        );
        let e = by_type.entry(t.ggml_type.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
    }
    let summary: Vec<String> = by_type
        .iter()
        .map(|(ty, (n, b))| format!("{ty}: {n} ({})", mib(*b)))
        .collect();
    out!(o, "  by type: {}", summary.join(", "));
    Ok(o)
}

/// Token counts `--kernels` shows: one token (decode), a few (decode of several sequences),
/// the panel threshold, a prompt chunk.
const KERNEL_TOKENS: [usize; 4] = [1, 4, 16, 512];

/// The (type, columns) of the file's product matrices: every 2-D tensor but the embedding
/// (gathered), unless it is tied to the output.
fn product_matrices(file: &GgufFile) -> Vec<(GgmlType, usize)> {
    let tied = file.tensor("output.weight").is_none();
    let mut found: Vec<(GgmlType, usize)> = file
        .tensors()
        .iter()
        .filter(|t| t.dims.len() == 2 && (tied || t.name != "token_embd.weight"))
        .map(|t| (t.ggml_type, t.dims[0] as usize))
        .collect();
    found.sort_by_key(|&(ty, cols)| (ty.name(), cols));
    found.dedup();
    found
}

/// The path each matrix takes at each of [`KERNEL_TOKENS`] on this CPU.
fn kernel_table(matrices: &[(GgmlType, usize)]) -> String {
    let level = SimdLevel::detect();
    let repack = !std::env::var("LIGER_REPACK").is_ok_and(|v| v == "0");
    let mut o = String::new();
    out!(
        o,
        "\nCPU kernels at {} (LIGER_SIMD forces a level{}):",
        level.name(),
        if repack {
            "; LIGER_REPACK=0 keeps rows in place"
        } else {
            "; rows in place: LIGER_REPACK=0"
        }
    );
    let head: Vec<String> = KERNEL_TOKENS.iter().map(|t| format!("{t} tok")).collect();
    out!(
        o,
        "  {:6} {:>6}  {:22} {:22} {:22} {}",
        "type",
        "cols",
        head[0],
        head[1],
        head[2],
        head[3]
    );
    for &(ty, cols) in matrices {
        if cols % ty.block_size() != 0 {
            continue;
        }
        let paths = planned_paths(ty, cols, level, repack, &KERNEL_TOKENS);
        let names: Vec<&str> = paths.iter().map(|p| p.name()).collect();
        out!(
            o,
            "  {:6} {:>6}  {:22} {:22} {:22} {}",
            ty.name(),
            cols,
            names[0],
            names[1],
            names[2],
            names[3]
        );
    }
    o
}
