//! `liger-convert`: turns a Liger checkpoint into one quantized, memory-mappable liger GGUF.
//!
//! Sources: an HF directory (`config.json` + safetensors, optionally with a PEFT LoRA adapter
//! merged in) or a llama.cpp Llama GGUF (linearized without Liger training). The output is
//! streamed tensor by tensor, in chunks of rows, so memory stays bounded whatever the model
//! size; it is written to a temporary file beside `OUT` and renamed into place only when
//! complete.

pub mod gguf_source;
pub mod hf;
pub mod lora;
pub mod names;
pub mod progress;
pub mod recipe;
pub mod source;
pub mod synth;
pub mod tokenizer_gguf;

use gguf_source::LlamaGgufSource;
use hf::HfSource;
use liger::gguf::{GgufWriter, TensorDecl, Value};
use liger::quant::quantize_row;
use liger::{Error, GgmlType, LigerConfig, Result};
use lora::LoraAdapter;
use names::PlannedTensor;
use rayon::prelude::*;
pub use recipe::OutType;
use source::{TokenizerInfo, WeightSource};
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

pub struct ConvertOptions {
    /// An HF checkpoint directory or a Llama GGUF file.
    pub src: PathBuf,
    pub out: PathBuf,
    pub out_type: OutType,
    /// A PEFT LoRA adapter directory to merge before quantizing.
    pub lora: Option<PathBuf>,
    /// `general.name`; defaults to the source's name.
    pub name: Option<String>,
    /// Show progress on stderr: a bar on a terminal, plain lines otherwise.
    pub progress: bool,
}

#[derive(Clone, Debug)]
pub struct ConvertedTensor {
    pub name: String,
    pub ggml_type: GgmlType,
    /// Rows-first shape.
    pub shape: Vec<usize>,
    pub n_bytes: u64,
    /// Why the type differs from what the recipe asked for, if it does.
    pub fallback: Option<String>,
}

#[derive(Debug)]
pub struct ConvertReport {
    pub config: LigerConfig,
    pub tensors: Vec<ConvertedTensor>,
    pub file_bytes: u64,
    /// Source tensors dropped, with the reason.
    pub ignored: Vec<(String, String)>,
    pub has_tokenizer: bool,
    pub lora_modules: usize,
}

/// Elements converted at once: bounds the f32 and quantized buffers (~64 MiB of f32).
const CHUNK_ELEMENTS: usize = 16 << 20;

struct OpenedSource {
    weights: Box<dyn WeightSource>,
    tokenizer: TokenizerInfo,
    name: String,
    description: String,
    ignored: Vec<(String, String)>,
}

fn open_source(src: &Path) -> Result<OpenedSource> {
    if src.is_dir() {
        let source = HfSource::open(src)?;
        let tokenizer = source::hf_tokenizer(src, &source.raw_config)?;
        let name = source
            .raw_config
            .get("_name_or_path")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(String::from)
            .unwrap_or_else(|| file_name(src));
        let ignored = source
            .ignored
            .iter()
            .map(|(n, why)| (n.clone(), why.to_string()))
            .collect();
        return Ok(OpenedSource {
            description: format!("HF checkpoint {}", file_name(src)),
            weights: Box::new(source),
            tokenizer,
            name,
            ignored,
        });
    }
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
    f.read_exact(&mut magic).map_err(|e| Error::io(src, e))?;
    if &magic != b"GGUF" {
        return Err(Error::InvalidArgument(format!(
            "{}: neither an HF checkpoint directory nor a GGUF file",
            src.display()
        )));
    }
    let source = LlamaGgufSource::open(src)?;
    let tokenizer = tokenizer_gguf::rebuild_tokenizer(&source.file)?;
    let name = source
        .file
        .get("general.name")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| file_name(src));
    Ok(OpenedSource {
        description: format!("llama GGUF {} (linearized here)", file_name(src)),
        weights: Box::new(source),
        tokenizer,
        // `convert` says whether an adapter recovered it
        name,
        ignored: vec![],
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// An adapter's folder as a name: with its parent's (`recovery/adapter`), since adapters'
/// folders are often named just `adapter`.
fn adapter_label(dir: &Path) -> String {
    let name = file_name(dir);
    match dir.parent().and_then(Path::file_name) {
        Some(parent) => format!("{}/{name}", parent.to_string_lossy()),
        None => name,
    }
}

/// Checks that the source has exactly the tensors the model needs, with their shapes.
fn check_tensors(weights: &dyn WeightSource, plan: &[PlannedTensor]) -> Result<()> {
    for t in plan {
        match weights.shape(&t.name) {
            None => {
                return Err(Error::Tensor(format!(
                    "'{}' is missing (shape {:?} expected)",
                    t.name, t.shape
                )))
            }
            Some(s) if s != t.shape => {
                return Err(Error::Tensor(format!(
                    "'{}' has shape {s:?}, the config implies {:?}",
                    t.name, t.shape
                )))
            }
            _ => {}
        }
    }
    let planned: std::collections::HashSet<&str> = plan.iter().map(|t| t.name.as_str()).collect();
    let mut extra: Vec<String> = weights
        .names()
        .into_iter()
        .filter(|n| !planned.contains(n.as_str()))
        .collect();
    extra.sort();
    if let Some(first) = extra.first() {
        return Err(Error::Tensor(format!(
            "'{first}' (and {} more) is not part of the model the config describes",
            extra.len() - 1
        )));
    }
    Ok(())
}

/// Converts `opts.src` into a liger GGUF at `opts.out`.
pub fn convert(opts: &ConvertOptions) -> Result<ConvertReport> {
    let source = open_source(&opts.src)?;
    let mut config = source.weights.config().clone();
    let plan = liger::layout::tensor_specs(&config);
    check_tensors(source.weights.as_ref(), &plan)?;
    let adapter = opts.lora.as_deref().map(LoraAdapter::open).transpose()?;
    if let Some(a) = &adapter {
        a.check_against(&plan)?;
    }
    source.tokenizer.validate(config.vocab_size)?;

    let mut tensors = Vec::with_capacity(plan.len());
    for t in &plan {
        let (ggml_type, fallback) =
            recipe::choose(opts.out_type, t, config.n_layers, config.tie_embeddings);
        let decl = TensorDecl {
            name: t.name.clone(),
            dims: t.ggml_dims(),
            ggml_type,
        };
        tensors.push(ConvertedTensor {
            name: t.name.clone(),
            ggml_type,
            shape: t.shape.clone(),
            n_bytes: decl.n_bytes()?,
            fallback,
        });
    }

    // A base model linearized here is untrained, unless an adapter recovers it (recovery/).
    let linearized_here = config.untrained;
    config.untrained = linearized_here && adapter.is_none();
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| match (linearized_here, &adapter) {
            (false, _) => source.name.clone(),
            (true, None) => format!("{} (Liger-GLA, untrained linearization)", source.name),
            (true, Some(a)) => format!(
                "{} (Liger-GLA, recovered with the LoRA adapter {})",
                source.name,
                adapter_label(&a.dir)
            ),
        });
    let mut metadata = file_metadata(&name, opts.out_type, &config, &source.description);
    if let Some(a) = &adapter {
        metadata.push((
            "liger.convert.lora".into(),
            Value::String(format!(
                "{} merged: {} modules, r {}, alpha {}{}",
                file_name(&a.dir),
                a.n_modules(),
                a.r,
                a.alpha,
                if a.rslora { ", rsLoRA" } else { "" }
            )),
        ));
    }
    metadata.extend(source.tokenizer.to_metadata());

    write_file(
        opts,
        &metadata,
        &plan,
        &tensors,
        source.weights.as_ref(),
        adapter.as_ref(),
        &config,
    )?;
    let file_bytes = std::fs::metadata(&opts.out)
        .map_err(|e| Error::io(&opts.out, e))?
        .len();
    Ok(ConvertReport {
        config,
        tensors,
        file_bytes,
        ignored: source.ignored,
        has_tokenizer: source.tokenizer.json.is_some(),
        lora_modules: adapter.as_ref().map_or(0, |a| a.n_modules()),
    })
}

fn write_file(
    opts: &ConvertOptions,
    metadata: &[(String, Value)],
    plan: &[PlannedTensor],
    tensors: &[ConvertedTensor],
    weights: &dyn WeightSource,
    adapter: Option<&LoraAdapter>,
    config: &LigerConfig,
) -> Result<()> {
    let out = &opts.out;
    let tmp = temp_beside(out)?;
    let decls = tensors
        .iter()
        .zip(plan)
        .map(|(c, t)| TensorDecl {
            name: t.name.clone(),
            dims: t.ggml_dims(),
            ggml_type: c.ggml_type,
        })
        .collect();
    let mut writer = GgufWriter::new(
        BufWriter::with_capacity(1 << 20, tmp.as_file()),
        metadata,
        decls,
    )?;

    let total: u64 = tensors.iter().map(|t| t.n_bytes).sum();
    let mut bar = progress::Progress::new(opts.progress, "converting", total);
    let mut data = Vec::new();
    for (t, c) in plan.iter().zip(tensors) {
        bar.set_message(&t.name);
        let row_len = t.row_len();
        let n_rows = t.n_rows();
        let row_bytes = c.ggml_type.row_bytes(row_len)?;
        // Whole heads per chunk (the GGUF source un-permutes q/k rows within a head).
        let head = config.head_dim;
        let chunk_rows = ((CHUNK_ELEMENTS / row_len.max(1)) / head * head)
            .max(head)
            .min(n_rows.max(1));
        let mut start = 0;
        while start < n_rows {
            let end = (start + chunk_rows).min(n_rows);
            let mut rows = weights.read_rows(&t.name, start..end)?;
            if let Some(a) = adapter {
                a.apply(&t.name, start..end, &mut rows);
            }
            if let Some(bad) = rows.iter().position(|v| !v.is_finite()) {
                return Err(Error::Tensor(format!(
                    "'{}' holds a non-finite value ({}) at row {}",
                    t.name,
                    rows[bad],
                    start + bad / row_len
                )));
            }
            data.resize((end - start) * row_bytes, 0);
            rows.par_chunks(row_len)
                .zip(data.par_chunks_mut(row_bytes))
                .try_for_each(|(src, dst)| quantize_row(c.ggml_type, src, dst))?;
            writer.write_tensor_part(&t.name, &data)?;
            bar.inc(data.len() as u64);
            start = end;
        }
        writer.end_tensor(&t.name)?;
    }
    writer.finish()?;
    bar.finish();
    persist(tmp, out)?;
    Ok(())
}

/// The `general.*` keys and the model config of an output file (architecture first).
pub(crate) fn file_metadata(
    name: &str,
    out_type: OutType,
    config: &LigerConfig,
    source: &str,
) -> Vec<(String, Value)> {
    let mut metadata = vec![
        (
            "general.architecture".to_string(),
            Value::String(liger::config::ARCHITECTURE.into()),
        ),
        ("general.name".into(), Value::String(name.into())),
        ("general.file_type".into(), Value::U32(out_type.file_type())),
        ("general.quantization_version".into(), Value::U32(2)),
        ("general.alignment".into(), Value::U32(32)),
    ];
    metadata.extend(
        config
            .to_metadata()
            .into_iter()
            .filter(|(k, _)| k != "general.architecture"),
    );
    metadata.push(("liger.convert.source".into(), Value::String(source.into())));
    metadata.push((
        "liger.convert.type".into(),
        Value::String(out_type.name().into()),
    ));
    metadata
}

/// A temporary file beside `out`, removed on drop unless [`persist`] renames it into place.
pub(crate) fn temp_beside(out: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(".liger-")
        .suffix(".part")
        .tempfile_in(&dir)
        .map_err(|e| Error::io(&dir, e))
}

/// Syncs the finished temporary file and renames it to `out`.
pub(crate) fn persist(tmp: tempfile::NamedTempFile, out: &Path) -> Result<()> {
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
    liger::durable::sync_parent_dir(out).map_err(|e| Error::io(out, e))
}
