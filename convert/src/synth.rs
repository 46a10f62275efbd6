//! Random-weight liger files of real models' shapes, written straight to GGUF (no HF
//! checkpoint), streaming tensor by tensor so an 8B-shaped file needs little memory: for
//! benchmarks here and on GPU machines.

use crate::recipe::{self, OutType};
use liger::config::{DEFAULT_GATE_NORMALIZER, DEFAULT_MIX_SWA, DEFAULT_WINDOW};
use liger::gguf::{GgufWriter, TensorDecl};
use liger::layout::tensor_specs;
use liger::quant::quantize_row;
use liger::{Base, Error, LigerConfig, Result, RopeScaling, Variant};
use rayon::prelude::*;
use std::io::BufWriter;
use std::path::Path;

/// Shapes of real models: (name, layers, hidden, ffn, heads, kv heads, vocab, tied, θ).
pub const SHAPES: [(&str, usize, usize, usize, usize, usize, usize, bool, f32); 5] = [
    ("tiny", 2, 128, 256, 4, 2, 512, false, 10000.0),
    ("smollm2-135m", 30, 576, 1536, 9, 3, 49152, true, 100000.0),
    (
        "llama-3.2-1b",
        16,
        2048,
        8192,
        32,
        8,
        128256,
        true,
        500000.0,
    ),
    (
        "llama-3.2-3b",
        28,
        3072,
        8192,
        24,
        8,
        128256,
        true,
        500000.0,
    ),
    (
        "llama-3-8b",
        32,
        4096,
        14336,
        32,
        8,
        128256,
        false,
        500000.0,
    ),
];

/// The config of a named shape, as a Liger model of `variant`.
pub fn shape_config(name: &str, variant: Variant) -> Result<LigerConfig> {
    let (_, layers, hidden, ffn, heads, kv, vocab, tied, theta) = SHAPES
        .iter()
        .find(|s| s.0 == name)
        .copied()
        .ok_or_else(|| {
            let names: Vec<&str> = SHAPES.iter().map(|s| s.0).collect();
            Error::InvalidArgument(format!("--like '{name}' (one of {})", names.join(", ")))
        })?;
    let head_dim = hidden / heads;
    let config = LigerConfig {
        variant,
        base: Base::Llama,
        n_layers: layers,
        hidden,
        ffn,
        n_heads: heads,
        n_kv_heads: kv,
        head_dim,
        vocab_size: vocab,
        rms_eps: 1e-5,
        rope_theta: theta,
        rope_scaling: name
            .starts_with("llama-3.2")
            .then_some(RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_context: 8192,
            }),
        context_length: 131072,
        window: DEFAULT_WINDOW,
        mix_swa: DEFAULT_MIX_SWA,
        gate_normalizer: DEFAULT_GATE_NORMALIZER,
        gsa_slots: if variant == Variant::Gsa {
            64.min(head_dim)
        } else {
            head_dim
        },
        tie_embeddings: tied,
        attention_bias: false,
        // Random weights, not a linearized base model: `general.name` says so.
        untrained: false,
    };
    config.validate()?;
    Ok(config)
}

/// Uniform noise in [−a, a] from a per-row seed (SplitMix64), reproducible and parallel.
fn fill_random(out: &mut [f32], seed: u64, amplitude: f32) {
    let mut z = seed;
    for v in out {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        *v = ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude;
    }
}

/// Writes a random-weight model of `config` at `out_type` to `out` (atomically).
pub fn write_synthetic(config: &LigerConfig, out_type: OutType, out: &Path) -> Result<u64> {
    let specs = tensor_specs(config);
    let types: Vec<_> = specs
        .iter()
        .map(|t| recipe::choose(out_type, t, config.n_layers, config.tie_embeddings).0)
        .collect();
    let metadata = crate::file_metadata(
        "synthetic (random weights)",
        out_type,
        config,
        "liger synth: random weights",
    );
    let decls = specs
        .iter()
        .zip(&types)
        .map(|(t, &ty)| TensorDecl {
            name: t.name.clone(),
            dims: t.ggml_dims(),
            ggml_type: ty,
        })
        .collect();
    let tmp = crate::temp_beside(out)?;
    let mut writer = GgufWriter::new(
        BufWriter::with_capacity(1 << 20, tmp.as_file()),
        &metadata,
        decls,
    )?;
    for (i, (t, &ty)) in specs.iter().zip(&types).enumerate() {
        let (rows, cols) = (t.n_rows(), t.row_len());
        let row_bytes = ty.row_bytes(cols)?;
        let chunk_rows = (1 << 22) / cols.max(1) + 1;
        let mut start = 0;
        while start < rows {
            let end = (start + chunk_rows).min(rows);
            let mut data = vec![0u8; (end - start) * row_bytes];
            data.par_chunks_mut(row_bytes)
                .enumerate()
                .try_for_each(|(r, dst)| {
                    let mut x = vec![0f32; cols];
                    if t.is_matrix() {
                        let amplitude = 1.7 / (cols as f32).sqrt();
                        fill_random(&mut x, ((i as u64) << 32) ^ (start + r) as u64, amplitude);
                    } else {
                        x.fill(1.0);
                    }
                    quantize_row(ty, &x, dst)
                })?;
            writer.write_tensor_part(&t.name, &data)?;
            start = end;
        }
        writer.end_tensor(&t.name)?;
    }
    writer.finish()?;
    crate::persist(tmp, out)?;
    std::fs::metadata(out)
        .map(|m| m.len())
        .map_err(|e| Error::io(out, e))
}
