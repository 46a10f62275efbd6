//! `liger serve`: an OpenAI-compatible HTTP server (`/v1/chat/completions`, streamed as
//! server-sent events or not, `/v1/completions`, `/v1/models`, `/health`), on loopback by
//! default. A cache of recurrent states keyed by token prefix means a request that extends an
//! earlier conversation feeds only its new tokens: a recurrent state cannot be rewound, but it
//! can be copied (a few MiB, fixed whatever the length) — `usage.prompt_tokens_details.
//! cached_tokens` says how many were skipped. Requests are decoded together by one scheduler
//! (continuous batching, `batch.rs`): `--parallel` sequences per step.

mod api;
mod batch;
mod cache;
mod request;

use crate::generate::{chat_template, load, Loaded, ModelArgs};
use anyhow::{Context, Result};
use batch::{Event, Job, Scheduler};
use cache::PrefixCache;
use clap::Args;
use liger::chat::ChatTemplate;
use liger::{Model, Tokenizer};
use request::{ApiError, Request};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on: loopback by default (0.0.0.0 exposes the model to the network).
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
}

/// What every HTTP thread shares.
pub(crate) struct Server {
    model: Arc<Model>,
    name: String,
    template: ChatTemplate,
    /// The scheduler's queue.
    jobs: Sender<Job>,
    max_tokens: usize,
    max_prompt_tokens: usize,
}

/// The outcome of one completion.
pub(crate) struct Completion {
    pub text: String,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// "stop" (a stop token), "length" (max_tokens) or "cancelled" (the client left).
    pub finish_reason: &'static str,
}

impl Server {
    fn tokenizer(&self) -> &Tokenizer {
        self.model.tokenizer.as_ref().expect("checked at start")
    }

    /// The prompt's token ids: a chat rendered with the model's template, or plain text.
    pub(crate) fn prompt_ids(&self, req: &Request) -> Result<Vec<u32>, ApiError> {
        let text = match &req.messages {
            Some(messages) => {
                let tools = if req.uses_tools() {
                    &req.tools[..]
                } else {
                    &[]
                };
                self.template
                    .render_with_tools(messages, tools, true)
                    .map_err(|e| ApiError::bad_request(format!("chat template: {e}")))?
            }
            None => req.prompt.clone().unwrap_or_default(),
        };
        // A chat's rendering carries its own BOS where the template has one.
        let add_special = req.messages.is_none();
        let ids = self
            .tokenizer()
            .encode(&text, add_special)
            .map_err(|e| ApiError::bad_request(format!("tokenizing the prompt: {e}")))?;
        if ids.is_empty() {
            return Err(ApiError::bad_request("the prompt is empty"));
        }
        if ids.len() > self.max_prompt_tokens {
            return Err(ApiError::bad_request(format!(
                "the prompt has {} tokens; this server takes at most {}",
                ids.len(),
                self.max_prompt_tokens
            )));
        }
        Ok(ids)
    }

    /// Runs a completion from `prompt` in the scheduler's batch, calling `on_text` with each
    /// piece of text; `on_text` returning false (the client left) ends it at the next step.
    pub(crate) fn complete(
        &self,
        prompt: &[u32],
        req: &Request,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Completion, ApiError> {
        let (events, received) = channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let max_tokens = req
            .max_tokens
            .unwrap_or(self.max_tokens)
            .min(self.max_tokens);
        let tool_grammar = self
            .template
            .tool_format()
            .grammar(&req.tools, &req.tool_choice)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let grammar = req.grammar.clone().or(tool_grammar);
        if let Some(g) = &grammar {
            // A schema the engine rejects is the client's error, said before anything runs.
            let grammars = self
                .model
                .grammars()
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            grammars
                .constraint(g)
                .map_err(|e| ApiError::bad_request(format!("response_format: {e}")))?;
        }
        let job = Job {
            prompt: prompt.to_vec(),
            sampling: req.sampling.clone(),
            max_tokens,
            ignore_eos: req.ignore_eos,
            grammar,
            cancelled: Arc::clone(&cancelled),
            events,
        };
        let stopped = || ApiError::internal("the scheduler stopped");
        self.jobs.send(job).map_err(|_| stopped())?;
        loop {
            match received.recv().map_err(|_| stopped())? {
                Event::Text(piece) => {
                    if !on_text(&piece) {
                        cancelled.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Event::Done(outcome) => return outcome,
            }
        }
    }
}

pub fn serve(args: ServeArgs) -> Result<()> {
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
    let scheduler = Scheduler {
        model: Arc::clone(&model),
        backend,
        cache: PrefixCache::new(args.cache, state_bytes),
        slots,
        step_rows: args.step_tokens.max(1),
    };
    let scheduling = std::thread::Builder::new()
        .name("liger-scheduler".into())
        .spawn(move || scheduler.run(queue))?;
    eprintln!(
        "continuous batching: up to {slots} sequences per step, {} tokens per step; memory: \
         the model once ({} MiB mapped, {} MiB of it repacked for the CPU kernels) + {slots} \
         states of {:.1} MiB + a prefix cache of up to {} states",
        args.step_tokens.max(1),
        std::fs::metadata(&args.model.model)
            .map(|m| m.len() >> 20)
            .unwrap_or(0),
        model.repacked_bytes() >> 20,
        state_bytes as f64 / (1 << 20) as f64,
        args.cache
    );
    let server = Arc::new(Server {
        model,
        name,
        template,
        jobs,
        max_tokens: args.max_tokens,
        max_prompt_tokens: args.max_prompt_tokens,
    });
    let address = format!("{}:{}", args.host, args.port);
    let http = Arc::new(
        tiny_http::Server::http(&address)
            .map_err(|e| anyhow::anyhow!("listening on {address}: {e}"))?,
    );
    let bound = http
        .server_addr()
        .to_ip()
        .map(|a| a.to_string())
        .unwrap_or(address);
    eprintln!(
        "serving {} on http://{bound} ({slots} sequences at once): /v1/chat/completions, \
         /v1/completions, /v1/models, /health",
        server.name,
    );
    // HTTP threads: one per slot (each streams its client's answer) and two more, so that
    // queued requests are read and /health answers while every slot is busy.
    let workers: Vec<_> = (0..slots + 2)
        .map(|_| {
            let (http, server) = (Arc::clone(&http), Arc::clone(&server));
            std::thread::spawn(move || {
                while let Ok(request) = http.recv() {
                    // A bug in one request must not take a worker with it (the request's
                    // connection is dropped unanswered).
                    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        api::handle(&server, request)
                    }));
                    if handled.is_err() {
                        eprintln!("serve: a request handler panicked; the worker goes on");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    drop(server);
    let _ = scheduling.join();
    Ok(())
}
