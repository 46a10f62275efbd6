//! `liger serve`: an OpenAI-compatible HTTP server (`/v1/chat/completions`, streamed as
//! server-sent events or not, `/v1/completions`, `/v1/models`, `/health`, `/metrics`), on
//! loopback by default; hyper + axum on tokio, every client-held resource bounded (`http.rs`),
//! API keys and CORS (`api.rs`). A cache of recurrent states keyed by token prefix means a request that extends an
//! earlier conversation feeds only its new tokens: a recurrent state cannot be rewound, but it
//! can be copied (a few MiB, fixed whatever the length) — `usage.prompt_tokens_details.
//! cached_tokens` says how many were skipped. Requests are decoded together by one scheduler
//! (continuous batching, `batch.rs`): `--parallel` sequences per step.

mod api;
mod batch;
mod cache;
mod completion;
mod connections;
mod http;
mod metrics;

use crate::generate::{chat_template, load, Loaded, ModelArgs};
use anyhow::{Context, Result};
use api::Access;
use batch::{event_channel, EventReceiver, Job, Scheduler};
use cache::PrefixCache;
use clap::Args;
use liger::chat::ChatTemplate;
use liger::constraint::{Constraint, Grammar};
use liger::openai::{ApiError, Request};
use liger::{Model, Tokenizer};
use metrics::{Metrics, SchedulerState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on: loopback by default (0.0.0.0 exposes the model to the network:
    /// give it --api-key).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Requests decoded at once, in one batched step per token (each more waits for a slot).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Most tokens of one step: a new request's prompt is fed in chunks of what is left
    /// beside the others' decode tokens, so their next token waits for at most this many.
    #[arg(long, default_value_t = liger::backend::STEP_ROWS)]
    pub step_tokens: usize,
    /// Conversations whose state the prefix cache keeps.
    #[arg(long, default_value_t = 16)]
    pub cache: usize,
    /// Most tokens per answer (a request may ask for fewer).
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
    /// Most prompt tokens per request.
    #[arg(long, default_value_t = 32_768)]
    pub max_prompt_tokens: usize,
    /// A Jinja chat template to use instead of the file's (as llama.cpp's
    /// `--chat-template-file`), e.g. one with a tools section.
    #[arg(long, value_name = "FILE")]
    pub chat_template_file: Option<std::path::PathBuf>,
    /// A key clients must send (`Authorization: Bearer KEY`); `/health` stays open.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// A file of keys, one per line (blank lines and `#` comments skipped), with or beside
    /// --api-key: a key kept out of the process list.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<std::path::PathBuf>,
    /// Origins a web page may call the API from (CORS), comma-separated, or `*`; none by
    /// default (a page on another origin cannot read the answers).
    #[arg(long, value_name = "ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Open connections at most (lowered to fit the process's descriptor limit); for one
    /// more, the connection idle the longest is closed, or when all stay busy for a second it is
    /// answered 503.
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// Largest request head (request line and headers), bytes: 431 beyond.
    #[arg(long, default_value_t = 64 << 10)]
    pub max_header_bytes: usize,
    /// Seconds a client has to send a request's head (the connection is closed) or its body
    /// (408); also how long an idle keep-alive connection is kept.
    #[arg(long, default_value_t = 30.0)]
    pub read_timeout: f64,
    /// Seconds a client may take nothing while an answer waits to be written: then it is
    /// dropped and its sequence freed.
    #[arg(long, default_value_t = 30.0)]
    pub write_timeout: f64,
    /// Seconds in-flight answers have to finish on SIGTERM or Ctrl-C before they are ended.
    #[arg(long, default_value_t = 10.0)]
    pub shutdown_grace: f64,
}

/// What every request handler shares.
pub(crate) struct Server {
    model: Arc<Model>,
    name: String,
    template: ChatTemplate,
    /// The scheduler's queue.
    jobs: Sender<Job>,
    scheduler: Arc<SchedulerState>,
    metrics: Arc<Metrics>,
    access: Access,
    /// The device, as the backend describes it.
    backend: String,
    /// Bound to a loopback address: requests must name a loopback host.
    loopback_only: bool,
    slots: usize,
    max_tokens: usize,
    max_prompt_tokens: usize,
    read_timeout: Duration,
}

/// The outcome of one completion.
#[derive(Clone)]
pub(crate) struct Completion {
    pub text: String,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// "stop" (a stop token), "length" (max_tokens) or "cancelled" (the client left).
    pub finish_reason: &'static str,
}

/// A job in the scheduler's hands: its events, and on drop (the client left, or the answer
/// is done) the word to end it at the next step.
pub(crate) struct Submitted {
    pub events: EventReceiver,
    cancelled: Arc<AtomicBool>,
}

impl Drop for Submitted {
    fn drop(&mut self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

impl Server {
    fn tokenizer(&self) -> &Tokenizer {
        self.model.tokenizer.as_ref().expect("checked at start")
    }

    /// The prompt's token ids: a chat rendered with the model's template, or plain text.
    pub(crate) fn prompt_ids(&self, req: &Request) -> Result<Vec<u32>, ApiError> {
        liger::openai::prompt_ids(
            req,
            &self.template,
            self.tokenizer(),
            self.max_prompt_tokens,
        )
    }

    /// The grammar the answer must follow: `response_format`'s, or the tool calls' when tools
    /// are required.
    pub(crate) fn output_grammar(&self, req: &Request) -> Result<Option<Grammar>, ApiError> {
        liger::openai::output_grammar(req, &self.template)
    }

    /// `grammar` compiled `n` times (one state per answer) on a blocking thread, not the
    /// scheduler's: a schema that takes the engine seconds stalls no sequence, and one that
    /// makes it panic is the client's 400, said before anything runs.
    pub(crate) async fn constraints(
        self: &Arc<Self>,
        grammar: Option<Grammar>,
        n: usize,
    ) -> Result<Vec<Option<Constraint>>, ApiError> {
        let Some(grammar) = grammar else {
            return Ok((0..n).map(|_| None).collect());
        };
        let model = Arc::clone(&self.model);
        let compiled = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let grammars = model.grammars()?;
                (0..n)
                    .map(|_| grammars.constraint(&grammar).map(Some))
                    .collect::<liger::Result<Vec<_>>>()
            }))
        })
        .await
        .map_err(|e| ApiError::internal(format!("compiling the grammar: {e}")))?;
        match compiled {
            Ok(Ok(constraints)) => Ok(constraints),
            Ok(Err(e)) => Err(ApiError::bad_request(format!("response_format: {e}"))),
            Err(_) => Err(ApiError::bad_request(
                "response_format: the grammar engine failed on this schema",
            )),
        }
    }

    /// Queues a job for the scheduler; `constraints`: one per answer (`n`).
    pub(crate) fn submit(
        &self,
        prompt: &[u32],
        req: &Request,
        constraints: Vec<Option<Constraint>>,
    ) -> Result<Submitted, ApiError> {
        if let Some(reason) = self.scheduler.status().gone {
            return Err(ApiError {
                status: 503,
                message: format!("the scheduler is gone: {reason}"),
            });
        }
        let vocab = self.model.config.vocab_size;
        if let Some(&(id, _)) = req
            .sampling
            .logit_bias
            .iter()
            .find(|(id, _)| *id as usize >= vocab)
        {
            return Err(ApiError::bad_request(format!(
                "'logit_bias' names token {id}; the vocabulary has {vocab}"
            )));
        }
        if req.n > self.slots {
            return Err(ApiError::bad_request(format!(
                "'n' is {}; this server decodes at most {} sequences at once (--parallel)",
                req.n, self.slots
            )));
        }
        let (events, received) = event_channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let max_tokens = req
            .max_tokens
            .unwrap_or(self.max_tokens)
            .min(self.max_tokens);
        let job = Job {
            prompt: prompt.to_vec(),
            sampling: req.sampling.clone(),
            max_tokens,
            ignore_eos: req.ignore_eos,
            constraints: std::sync::Mutex::new(constraints),
            stop_strings: req.stop.clone(),
            logprobs: req.logprobs,
            choices: req.n,
            cancelled: Arc::clone(&cancelled),
            events,
        };
        self.scheduler.waiting.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(job).is_err() {
            self.scheduler.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::internal("the scheduler stopped"));
        }
        self.metrics.job();
        Ok(Submitted {
            events: received,
            cancelled,
        })
    }
}

/// The API keys from --api-key and --api-key-file.
fn api_keys(args: &ServeArgs) -> Result<Vec<String>> {
    let mut keys: Vec<String> = args.api_key.iter().cloned().collect();
    if let Some(path) = &args.api_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the API keys in {}", path.display()))?;
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
        anyhow::ensure!(!keys.is_empty(), "{} holds no API key", path.display());
    }
    anyhow::ensure!(
        keys.iter()
            .all(|k| !k.is_empty() && !k.contains(char::is_whitespace)),
        "an API key is empty or holds white space"
    );
    Ok(keys)
}

/// Connections at most: the flag, lowered to leave room under the descriptor limit for the
/// model file, the listener and the runtime's own.
fn connection_cap(wanted: usize) -> usize {
    let Some(limit) = descriptor_limit() else {
        return wanted.max(1);
    };
    let room = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(64)
        .max(1);
    if wanted > room {
        tracing::warn!(
            "--max-connections {wanted} lowered to {room}: the descriptor limit is {limit} (ulimit -n)"
        );
    }
    wanted.min(room).max(1)
}

/// The soft limit on open descriptors (None: unlimited or unknown).
#[cfg(unix)]
fn descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live local.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (known && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
fn descriptor_limit() -> Option<u64> {
    None
}

fn seconds(flag: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{flag} must be a positive number of seconds, not {s}"))
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let access = Access {
        keys: api_keys(&args)?,
        cors_origins: args.cors_origins.clone(),
    };
    let limits = http::Limits {
        max_connections: connection_cap(args.max_connections),
        max_header_bytes: args.max_header_bytes,
        read_timeout: seconds("read-timeout", args.read_timeout)?,
        write_timeout: seconds("write-timeout", args.write_timeout)?,
        shutdown_grace: seconds("shutdown-grace", args.shutdown_grace)?,
    };
    let Loaded { model, backend, .. } = load(&args.model)?;
    let tok = model
        .tokenizer
        .as_ref()
        .context("this file has no tokenizer: the server needs one")?;
    let template = match &args.chat_template_file {
        Some(path) => {
            let source = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
            ChatTemplate::new(&source, &name(tok.bos), &name(tok.eos))
                .with_context(|| format!("{} is not a chat template", path.display()))?
        }
        None => chat_template(tok)?,
    };
    let name = model
        .file()
        .get("general.name")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            args.model
                .model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "liger".into())
        });
    let state_bytes = model.state_bytes() as usize;
    let slots = args.parallel.max(1);
    let (jobs, queue) = channel();
    let scheduler_state = Arc::new(SchedulerState::default());
    let metrics = Arc::new(Metrics::default());
    let backend_name = backend.describe();
    let repacked_mib = backend.repacked_bytes() >> 20;
    let scheduler = Scheduler {
        model: Arc::clone(&model),
        backend,
        cache: PrefixCache::new(args.cache, state_bytes),
        slots,
        step_rows: args.step_tokens.max(1),
        state: Arc::clone(&scheduler_state),
        metrics: Arc::clone(&metrics),
    };
    let watched = Arc::clone(&scheduler_state);
    let scheduling = std::thread::Builder::new()
        .name("liger-scheduler".into())
        .spawn(move || {
            // However it ends, /health says so.
            let ran =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scheduler.run(queue)));
            watched.set_gone(match ran {
                Ok(()) => "the scheduler stopped".into(),
                Err(panic) => format!(
                    "the scheduler thread panicked: {}",
                    panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("?")
                ),
            });
        })?;
    eprintln!(
        "continuous batching: up to {slots} sequences per step, {} tokens per step; memory: \
         the model once ({} MiB mapped, {} MiB of it repacked for the CPU kernels) + {slots} \
         states of {:.1} MiB + a prefix cache of up to {} states",
        args.step_tokens.max(1),
        std::fs::metadata(&args.model.model)
            .map(|m| m.len() >> 20)
            .unwrap_or(0),
        repacked_mib,
        state_bytes as f64 / (1 << 20) as f64,
        args.cache
    );
    let keyed = !access.keys.is_empty();
    let loopback_only = match args.host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => args.host.eq_ignore_ascii_case("localhost"),
    };
    let server = Arc::new(Server {
        model,
        name,
        template,
        jobs,
        scheduler: Arc::clone(&scheduler_state),
        metrics,
        access,
        backend: backend_name,
        loopback_only,
        slots,
        max_tokens: args.max_tokens,
        max_prompt_tokens: args.max_prompt_tokens,
        read_timeout: limits.read_timeout,
    });
    let router = api::router(Arc::clone(&server))?;
    // Two threads are plenty for HTTP: the model's work is the scheduler's and its pool's.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("liger-http")
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let address = format!("{}:{}", args.host, args.port);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("listening on {address}"))?;
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or(address);
        eprintln!(
            "serving {} on http://{bound} ({slots} sequences at once{}): /v1/chat/completions, \
             /v1/completions, /v1/models, /tokenize, /detokenize, /health, /metrics, / (chat page)",
            server.name,
            if keyed { ", API key required" } else { "" },
        );
        let ending = Arc::clone(&scheduler_state);
        http::run(listener, router, limits, shutdown_signal(), move || {
            ending.end_all.store(true, Ordering::Relaxed)
        })
        .await;
        anyhow::Ok(())
    })?;
    drop(runtime);
    drop(server);
    let _ = scheduling.join();
    Ok(())
}
