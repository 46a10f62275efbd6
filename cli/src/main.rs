//! `liger` — convert Liger checkpoints into liger GGUF files, run them (`run`, `chat`,
//! `serve`, `score`, `perplexity`), measure them (`bench`) and inspect them (`info`). Every
//! flag can also be set from the environment: `--top-k` as `LIGER_TOP_K` (the flag wins).

mod bench;
mod chat;
mod chat_file;
mod generate;
mod hub;
mod info;
mod npy;
mod perplexity;
mod serve;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "liger",
    version,
    about = "Run Liger models (gated linear recurrence + sliding-window attention) on the edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert an HF Liger checkpoint directory (or a llama.cpp Llama GGUF) into a liger GGUF.
    Convert {
        /// HF checkpoint directory (config.json + safetensors), a Llama GGUF file, or a Hub
        /// model id ORG/NAME[@REVISION] (downloaded into the Hugging Face cache; HF_HOME,
        /// HF_TOKEN and HF_HUB_OFFLINE=1 are honoured).
        src: PathBuf,
        /// Output file.
        #[arg(short, long)]
        out: PathBuf,
        /// Weight type: f32, f16, bf16, q8_0, q4_0 or q4_k_m.
        #[arg(short = 't', long = "type", default_value = "q8_0")]
        out_type: String,
        /// A PEFT LoRA adapter directory (or Hub id) to merge before quantizing.
        #[arg(long)]
        lora: Option<PathBuf>,
        /// general.name of the output (default: the source's).
        #[arg(long)]
        name: Option<String>,
        /// No progress (a bar on a terminal, plain lines otherwise).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Generate text from a prompt (streams to stdout, speed to stderr).
    Run(generate::RunArgs),
    /// Write the logits of every position of a token sequence as a float32 .npy [T, vocab].
    Score(generate::ScoreArgs),
    /// An OpenAI-compatible HTTP server (chat, completions, streaming) on loopback.
    Serve(serve::ServeArgs),
    /// Perplexity on a text file, and KL divergence to a reference run (quantization quality).
    Perplexity(perplexity::PerplexityArgs),
    /// Chat with the file's chat template; earlier turns are never fed again.
    Chat(chat::ChatArgs),
    /// Measure prompt processing and generation speed (llama-bench's table or JSON).
    Bench(bench::BenchArgs),
    /// Write a random-weight model of a real model's shape (for benchmarks).
    Synth {
        /// Shape: tiny, smollm2-135m, llama-3.2-1b, llama-3.2-3b, llama-3-8b.
        #[arg(long, default_value = "llama-3.2-1b")]
        like: String,
        /// Variant: gla, hgrn2 or gsa.
        #[arg(long, default_value = "gla")]
        variant: String,
        /// Weight type: f32, f16, bf16, q8_0, q4_0 or q4_k_m.
        #[arg(short = 't', long = "type", default_value = "q4_0")]
        out_type: String,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Show what a GGUF file holds: model, metadata, tensors, state size per sequence.
    Info {
        #[arg(required_unless_present = "kernels")]
        file: Option<PathBuf>,
        /// Print metadata strings and arrays in full.
        #[arg(long)]
        full: bool,
        /// Which CPU kernel runs each matrix product at 1, 4, 16 and 512 tokens on this CPU
        /// (the file's matrices; without a file, every weight type).
        #[arg(long)]
        kernels: bool,
    },
    /// Print a shell completion script: `liger completions bash > ~/.local/share/bash-completion/completions/liger`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `liger man > liger.1; man ./liger.1`.
    Man,
}

/// The command line, with every flag also read from `LIGER_<FLAG>` (`--top-k`: `LIGER_TOP_K`).
fn command() -> clap::Command {
    with_env(Cli::command())
}

/// Gives every flag of `cmd` and its subcommands an environment variable, as clap's `env`.
fn with_env(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.mut_args(|arg| match arg.get_long() {
        Some(long) if !arg.is_positional() && long != "help" && long != "version" => {
            let name = format!("LIGER_{}", long.replace('-', "_").to_uppercase());
            // Made once per flag at start: clap keeps &'static names.
            let arg = arg.env(&*Box::leak(name.into_boxed_str()));
            // A switch from the environment: 1 / yes / on / true (0 / no / off / false).
            if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
                arg.value_parser(clap::builder::BoolishValueParser::new())
            } else {
                arg
            }
        }
        _ => arg,
    });
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    names
        .into_iter()
        .fold(cmd, |cmd, name| cmd.mut_subcommand(name, with_env))
}

fn main() {
    let cli = command()
        .get_matches()
        .and_then_parse()
        .unwrap_or_else(|e| e.exit());
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// `Cli` from parsed matches.
trait ParseMatches {
    fn and_then_parse(self) -> Result<Cli, clap::Error>;
}

impl ParseMatches for clap::ArgMatches {
    fn and_then_parse(mut self) -> Result<Cli, clap::Error> {
        Cli::from_arg_matches_mut(&mut self)
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Convert {
            src,
            out,
            out_type,
            lora,
            name,
            quiet,
        } => {
            let out_type: liger_convert::OutType = out_type.parse()?;
            let started = std::time::Instant::now();
            let src = if hub::is_repo_id(&src) {
                hub::fetch(&src.to_string_lossy(), !quiet)?
            } else {
                src
            };
            let lora = match lora {
                Some(l) if hub::is_repo_id(&l) => Some(hub::fetch(&l.to_string_lossy(), !quiet)?),
                other => other,
            };
            let opts = liger_convert::ConvertOptions {
                src: src.clone(),
                out: out.clone(),
                out_type,
                lora,
                name,
                progress: !quiet,
            };
            let report = liger_convert::convert(&opts)
                .with_context(|| format!("converting {}", src.display()))?;
            for (name, why) in &report.ignored {
                eprintln!("note: dropped {name}: {why}");
            }
            let fell_back: Vec<_> = report
                .tensors
                .iter()
                .filter(|t| t.fallback.is_some())
                .collect();
            if let Some(first) = fell_back.first() {
                eprintln!(
                    "note: {} tensors got another type than the recipe's (e.g. {} → {}: {}); `liger info` lists each",
                    fell_back.len(),
                    first.name,
                    first.ggml_type,
                    first.fallback.as_deref().unwrap_or("")
                );
            }
            if !report.has_tokenizer {
                eprintln!("note: the source has no tokenizer.json; the file has no tokenizer (token ids only)");
            }
            if report.config.untrained {
                eprintln!(
                    "note: this is a base model linearized WITHOUT Liger training or LoRA recovery: it runs \
                     correctly but its answers are poor"
                );
            }
            eprintln!(
                "wrote {} ({:.1} MiB, {} tensors, {}{}) in {:.1}s",
                out.display(),
                report.file_bytes as f64 / (1 << 20) as f64,
                report.tensors.len(),
                out_type.name(),
                if report.lora_modules > 0 {
                    format!(", LoRA merged into {} weights", report.lora_modules)
                } else {
                    String::new()
                },
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Info {
            file,
            full,
            kernels,
        } => info::print(file.as_deref(), full, kernels),
        Command::Synth {
            like,
            variant,
            out_type,
            out,
        } => {
            let variant = liger::Variant::from_name(&variant)
                .with_context(|| format!("--variant '{variant}' (gla, hgrn2 or gsa)"))?;
            let config = liger_convert::synth::shape_config(&like, variant)?;
            let started = std::time::Instant::now();
            let bytes = liger_convert::synth::write_synthetic(&config, out_type.parse()?, &out)?;
            eprintln!(
                "wrote {} ({:.1} MiB, {like}-shaped Liger-{}, random weights) in {:.1}s",
                out.display(),
                bytes as f64 / (1 << 20) as f64,
                variant.name().to_uppercase(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Run(args) => generate::run(args),
        Command::Bench(args) => bench::bench(args),
        Command::Score(args) => generate::score(args),
        Command::Chat(args) => chat::chat(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut command(), "liger", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Perplexity(args) => perplexity::perplexity(args),
        Command::Serve(args) => serve::serve(args),
    }
}
