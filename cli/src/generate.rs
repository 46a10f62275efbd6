//! `liger run` and `liger score`, and what every command that runs a model shares: the model
//! flags, the sampling flags, loading.

use anyhow::{bail, Context, Result};
use clap::Args;
use liger::chat::ChatTemplate;
use liger::constraint::{Grammar, GrammarKind};
use liger::generate::{GenerateOptions, Generator, StopReason};
use liger::{
    Backend, BackendKind, DecodeMode, Model, ModelOptions, Sampler, SamplerOptions, Session,
    Tokenizer,
};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A liger GGUF file.
    #[arg(short, long)]
    pub model: PathBuf,
    /// What the sliding-window branch sees: window (rolling cache; exact full-forward logits)
    /// or hf-compat (only the current call's tokens, as the reference HF generate()).
    #[arg(long, default_value = "window")]
    pub decode: String,
    /// CPU threads (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// Where the model runs: auto (CUDA when a device passes the self-test, else the CPU),
    /// cpu, wgpu (Vulkan / Metal / DX12) or cuda.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Read the model file into memory instead of mapping it: the file may then be replaced
    /// or truncated while the model runs (mapped, that would crash the process), at the cost
    /// of the file's size in memory.
    #[arg(long)]
    pub no_mmap: bool,
}

#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Subtracted once from each token seen in the last --repeat-last-n (as OpenAI's).
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Subtracted from each token seen in the last --repeat-last-n, once per time seen.
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// ID=BIAS added to token ID's logit (repeatable; -100 bans it, +100 forces it).
    #[arg(long, value_name = "ID=BIAS", value_parser = parse_logit_bias)]
    pub logit_bias: Vec<(u32, f32)>,
    /// End the answer where its text reaches STRING (not shown; repeatable).
    #[arg(long, value_name = "STRING")]
    pub stop: Vec<String>,
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Keep generating after an end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
}

impl SamplingArgs {
    pub(crate) fn options(&self) -> SamplerOptions {
        SamplerOptions {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: self.logit_bias.clone(),
            seed: self.seed,
        }
    }
}

/// `--logit-bias ID=BIAS`.
fn parse_logit_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, bias) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ID=BIAS"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("{id:?} is not a token id"))?;
    let bias: f32 = bias
        .trim()
        .parse()
        .map_err(|_| format!("{bias:?} is not a number"))?;
    if !bias.is_finite() {
        return Err(format!("the bias of {id} must be finite"));
    }
    Ok((id, bias))
}

pub struct Loaded {
    pub model: Arc<Model>,
    pub mode: DecodeMode,
    /// Where sessions run (`--backend`).
    pub backend: Arc<dyn Backend>,
}

impl Loaded {
    /// A new session on the chosen backend.
    pub fn session(&self) -> Result<Session> {
        Ok(Session::on(&self.backend, self.mode)?)
    }
}

pub fn load(args: &ModelArgs) -> Result<Loaded> {
    let mode: DecodeMode = args.decode.parse()?;
    let kind: BackendKind = args.backend.parse()?;
    let started = Instant::now();
    let model = Model::load(
        &args.model,
        &ModelOptions {
            threads: args.threads,
            simd: None,
            file_access: if args.no_mmap {
                liger::gguf::FileAccess::Read
            } else {
                liger::gguf::FileAccess::Map
            },
        },
    )
    .with_context(|| format!("loading {}", args.model.display()))?;
    let c = &model.config;
    eprintln!(
        "loaded {} in {:.2}s: Liger-{} ({} base{}), {} layers, {} threads, state {:.1} MiB per sequence",
        args.model.display(),
        started.elapsed().as_secs_f64(),
        c.variant.name().to_uppercase(),
        c.base.name(),
        if c.untrained { ", linearized without Liger training or LoRA: expect poor text" } else { "" },
        c.n_layers,
        model.threads(),
        model.state_bytes() as f64 / (1 << 20) as f64
    );
    let model = Arc::new(model);
    let opened = liger::backend::open(kind, &model)?;
    eprintln!("{}", opened.reason);
    Ok(Loaded {
        model,
        mode,
        backend: opened.backend,
    })
}

/// A text file ("-": standard input).
fn read_text(path: &std::path::Path) -> Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .with_context(|| format!("'{s}' is not a token id"))
        })
        .collect()
}

pub(crate) fn tokenizer(model: &Model) -> Result<&Tokenizer> {
    model
        .tokenizer
        .as_ref()
        .context("this file has no tokenizer: use --prompt-ids / --ids")
}

pub(crate) fn chat_template(tok: &Tokenizer) -> Result<ChatTemplate> {
    Ok(ChatTemplate::of(tok)?)
}

/// A failed write of generated text (a closed pipe, a full disk).
pub(crate) fn to_stdout(e: std::io::Error) -> liger::Error {
    liger::Error::io("standard output", e)
}

/// Set by Ctrl-C in `chat`: stops the answer being generated, not the program.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt text.
    #[arg(short, long, conflicts_with_all = ["prompt_ids", "file"])]
    pub prompt: Option<String>,
    /// Prompt text read from FILE ("-": standard input).
    #[arg(short = 'f', long, value_name = "FILE", conflicts_with = "prompt_ids")]
    pub file: Option<PathBuf>,
    /// Prompt as token ids: 1,2,3
    #[arg(long)]
    pub prompt_ids: Option<String>,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 128)]
    pub n_predict: usize,
    /// Wrap the prompt in the file's chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// With --chat: a system message before the prompt.
    #[arg(long, requires = "chat", conflicts_with = "system_file")]
    pub system: Option<String>,
    /// With --chat: the system message, read from FILE.
    #[arg(long, value_name = "FILE", requires = "chat")]
    pub system_file: Option<PathBuf>,
    /// Print the generated token ids (one line) instead of text.
    #[arg(long)]
    pub ids: bool,
    /// Generate only JSON that validates against the JSON schema in FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "grammar")]
    pub json_schema: Option<PathBuf>,
    /// Generate only text of the grammar in FILE (llguidance's Lark syntax: `start: ...`).
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

impl RunArgs {
    /// The output grammar of `--json-schema` / `--grammar`, read and checked as JSON.
    fn output_grammar(&self) -> Result<Option<Grammar>> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        if let Some(path) = &self.json_schema {
            let schema: serde_json::Value = serde_json::from_str(&read(path)?)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            return Ok(Some(Grammar::json_schema(&schema)));
        }
        match &self.grammar {
            Some(path) => Ok(Some(Grammar {
                kind: GrammarKind::Lark,
                text: read(path)?,
            })),
            None => Ok(None),
        }
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let loaded = load(&args.model)?;
    let model = &loaded.model;
    let text = match (&args.prompt, &args.file) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(path)) => Some(read_text(path)?),
        (None, None) => None,
    };
    let prompt: Vec<u32> = match (text, &args.prompt_ids) {
        (_, Some(ids)) => parse_ids(ids)?,
        (Some(text), None) => {
            let tok = tokenizer(model)?;
            if args.chat {
                let system = match &args.system_file {
                    Some(path) => Some(read_text(path)?.trim_end().to_string()),
                    None => args.system.clone(),
                };
                let mut messages = Vec::new();
                if let Some(system) = system {
                    messages.push(liger::chat::ChatMessage::new("system", &system));
                }
                messages.push(liger::chat::ChatMessage::new("user", &text));
                let rendered = chat_template(tok)?.render(&messages, true)?;
                tok.encode(&rendered, false)?
            } else {
                tok.encode(&text, true)?
            }
        }
        (None, None) => bail!("give a prompt with -p TEXT, -f FILE or --prompt-ids 1,2,3"),
    };
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let mut session = loaded.session()?;
    run_on(&args, &loaded.model, loaded.mode, &prompt, &mut session)
}

/// `run` on a session of the chosen backend.
fn run_on(
    args: &RunArgs,
    model: &Arc<Model>,
    mode: DecodeMode,
    prompt: &[u32],
    session: &mut Session,
) -> Result<()> {
    let mut sampler = Sampler::new(args.sampling.options());
    prompt.iter().for_each(|&t| sampler.observe(t));
    let started = Instant::now();
    session.feed(prompt)?;
    let prefill = started.elapsed().as_secs_f64();
    let stdout = std::io::stdout();
    let text_out = !args.ids;
    let mut generator = Generator::new(
        model,
        GenerateOptions {
            max_tokens: args.n_predict,
            ignore_eos: args.sampling.ignore_eos,
            grammar: args.output_grammar()?,
            stop_strings: args.sampling.stop.clone(),
            ..Default::default()
        },
    )?;
    let outcome = generator.run(session, &mut sampler, |_, piece| {
        if text_out && !piece.is_empty() {
            let mut out = stdout.lock();
            out.write_all(piece.as_bytes())
                .and_then(|_| out.flush())
                .map_err(to_stdout)?;
        }
        Ok(true)
    })?;
    let (tokens, decode) = (&outcome.tokens, outcome.seconds);
    if let StopReason::StopToken(stop) = outcome.stop {
        let name = model
            .tokenizer
            .as_ref()
            .and_then(|t| t.id_to_token(stop))
            .unwrap_or_else(|| stop.to_string());
        eprintln!("(generation ended after {} tokens: the model produced the end-of-sequence token {name})", tokens.len());
    }
    let mut out = stdout.lock();
    if args.ids {
        let line: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        writeln!(out, "{}", line.join(" "))?;
    } else {
        writeln!(out)?;
    }
    eprintln!(
        "prompt: {} tokens in {:.3}s ({:.1} tok/s); generated: {} tokens in {:.3}s ({:.1} tok/s); decode mode {}",
        prompt.len(),
        prefill,
        prompt.len() as f64 / prefill,
        tokens.len(),
        decode,
        tokens.len() as f64 / decode.max(1e-9),
        mode.name()
    );
    Ok(())
}

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Token ids: 1,2,3,...
    #[arg(long)]
    pub ids: String,
    /// hf-compat: how many ids form the prompt (one forward); the rest are decoded one by one.
    #[arg(long)]
    pub prompt_len: Option<usize>,
    /// Output .npy file: float32 [T, vocab].
    #[arg(long)]
    pub out: PathBuf,
}

pub fn score(args: ScoreArgs) -> Result<()> {
    let loaded = load(&args.model)?;
    let (model, mode) = (&loaded.model, loaded.mode);
    let ids = parse_ids(&args.ids)?;
    if ids.is_empty() {
        bail!("--ids is empty");
    }
    let prompt_len = args.prompt_len.unwrap_or(ids.len());
    if prompt_len == 0 || prompt_len > ids.len() {
        bail!("--prompt-len {prompt_len} must be in 1..={}", ids.len());
    }
    let mut session = loaded.session()?;
    let logits = match mode {
        DecodeMode::Window => session.feed_all_logits(&ids)?,
        DecodeMode::HfCompat => {
            let mut out = session.feed_all_logits(&ids[..prompt_len])?;
            for &t in &ids[prompt_len..] {
                out.extend_from_slice(session.feed(&[t])?);
            }
            out
        }
    };
    crate::npy::write_f32(&args.out, &logits, &[ids.len(), model.config.vocab_size])
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({} × {})",
        args.out.display(),
        ids.len(),
        model.config.vocab_size
    );
    Ok(())
}
