//! `liger serve`: an OpenAI-compatible HTTP server (`/v1/chat/completions`, streamed as
//! server-sent events or not, `/v1/completions`, `/v1/models`, `/health`), on loopback by
//! default. A cache of recurrent states keyed by token prefix means a request that extends an
//! earlier conversation feeds only its new tokens: a recurrent state cannot be rewound, but it
//! can be copied (a few MiB, fixed whatever the length) — `usage.prompt_tokens_details.
//! cached_tokens` says how many were skipped.

mod api;
mod cache;
mod request;

use crate::generate::{chat_template, load, Loaded, ModelArgs};
use anyhow::{Context, Result};
use cache::PrefixCache;
use clap::Args;
use liger::chat::ChatTemplate;
use liger::generate::{GenerateOptions, Generator};
use liger::model::SequenceState;
use liger::{Backend, DecodeMode, Model, Sampler, Session, Tokenizer};
use request::{ApiError, Request};
use std::sync::{Arc, Mutex};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on: loopback by default (0.0.0.0 exposes the model to the network).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Requests served at once (each more waits for a free worker).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Conversations whose state the prefix cache keeps.
    #[arg(long, default_value_t = 16)]
    pub cache: usize,
    /// Most tokens per answer (a request may ask for fewer).
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
    /// Most prompt tokens per request.
    #[arg(long, default_value_t = 32_768)]
    pub max_prompt_tokens: usize,
}

/// What every worker shares.
pub(crate) struct Server {
    model: Arc<Model>,
    /// Where the sessions run (`--backend`).
    backend: Arc<dyn Backend>,
    name: String,
    template: ChatTemplate,
    /// Host copies of recent sequences' states (a GPU sequence's read back).
    cache: Mutex<PrefixCache<SequenceState>>,
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
            Some(messages) => self
                .template
                .render(messages, true)
                .map_err(|e| ApiError::bad_request(format!("chat template: {e}")))?,
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

    /// Runs a completion from `prompt`, calling `on_text` with each piece of text; `on_text`
    /// returning false (the client left) ends it. The final state goes to the prefix cache.
    pub(crate) fn complete(
        &self,
        prompt: &[u32],
        req: &Request,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Completion, ApiError> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .longest_prefix(prompt);
        let internal = |e: liger::Error| ApiError::internal(e.to_string());
        let mut session = Session::on(&self.backend, DecodeMode::Window).map_err(internal)?;
        let cached_tokens = match cached {
            Some((state, n)) => {
                session.set_state(state).map_err(internal)?;
                n
            }
            None => 0,
        };
        session.feed(&prompt[cached_tokens..]).map_err(internal)?;
        // The prompt's own state too: a follow-up whose history does not re-tokenize as the
        // answer was generated, or a regenerated answer, still starts from here.
        if cached_tokens < prompt.len() {
            let copy = session.state().map_err(internal)?;
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(prompt.to_vec(), copy);
        }
        let mut sampler = Sampler::new(req.sampling.clone());
        prompt.iter().for_each(|&t| sampler.observe(t));
        let max_tokens = req
            .max_tokens
            .unwrap_or(self.max_tokens)
            .min(self.max_tokens);
        let mut generator = Generator::new(
            &self.model,
            GenerateOptions {
                max_tokens,
                skip_special: true,
                ..Default::default()
            },
        )
        .map_err(internal)?;
        let mut text = String::new();
        let mut cancelled = false;
        let outcome = generator
            .run(&mut session, &mut sampler, |_, piece| {
                text.push_str(piece);
                if !piece.is_empty() && !cancelled && !on_text(piece) {
                    cancelled = true;
                }
                Ok(!cancelled)
            })
            .map_err(internal)?;
        let finish_reason = outcome.stop.finish_reason();
        let completion_tokens = outcome.tokens.len();
        let mut fed = prompt.to_vec();
        fed.extend_from_slice(&outcome.tokens);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fed, session.state().map_err(internal)?);
        Ok(Completion {
            text,
            prompt_tokens: prompt.len(),
            cached_tokens,
            completion_tokens,
            finish_reason,
        })
    }
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let Loaded { model, backend, .. } = load(&args.model)?;
    let tok = model
        .tokenizer
        .as_ref()
        .context("this file has no tokenizer: the server needs one")?;
    let template = chat_template(tok)?;
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
    let server = Arc::new(Server {
        cache: Mutex::new(PrefixCache::new(args.cache, state_bytes)),
        model,
        backend,
        name,
        template,
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
        "serving {} on http://{bound} ({} workers): /v1/chat/completions, /v1/completions, \
         /v1/models, /health",
        server.name,
        args.parallel.max(1)
    );
    let workers: Vec<_> = (0..args.parallel.max(1))
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
    Ok(())
}
