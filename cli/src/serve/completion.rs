//! `/v1/chat/completions` and `/v1/completions`: a request parsed, queued for the scheduler,
//! and its events turned into one OpenAI-shaped answer or a stream of server-sent events.
//!
//! A client that leaves — the connection closes, or a write stalls past its deadline — drops
//! the answer being built here; with it goes the [`Submitted`] guard, which tells the scheduler
//! to end the sequence at its next step, during prefill or decode.

use super::api::{json_body, log_request, Refused, Served, CLIENT_LEFT};
use super::batch::Event;
use super::{Completion, Server, Submitted};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use liger::openai::{openai_calls, parse_body, ApiError, Request};
use liger::sampler::TokenLogprob;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub(crate) async fn chat(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(server, headers, body, true).await
}

pub(crate) async fn text(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(server, headers, body, false).await
}

async fn answer(server: Arc<Server>, headers: HeaderMap, body: Body, chat: bool) -> Response {
    let start = Instant::now();
    let parsed = match json_body(&headers, body, server.read_timeout).await {
        Ok(bytes) => parse_body(&bytes, chat),
        Err(e) => Err(e),
    };
    let started = async {
        let req = parsed?;
        let prompt = server.prompt_ids(&req)?;
        let grammar = server.output_grammar(&req)?;
        let constraints = server.constraints(grammar, req.n).await?;
        let submitted = server.submit(&prompt, &req, constraints)?;
        Ok::<_, ApiError>((req, submitted))
    }
    .await;
    match started {
        Ok((req, submitted)) if req.stream => stream(server, req, submitted, chat, start),
        Ok((req, submitted)) => whole(&server, &req, submitted, chat, start)
            .await
            .unwrap_or_else(|e| Refused(e).into_response()),
        Err(e) => Refused(e).into_response(),
    }
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn usage(c: &Completion) -> Value {
    json!({
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": c.cached_tokens},
    })
}

fn served(c: &Completion, first_token: Option<std::time::Duration>, streamed: bool) -> Served {
    Served {
        prompt_tokens: c.prompt_tokens,
        cached_tokens: c.cached_tokens,
        completion_tokens: c.completion_tokens,
        first_token,
        streamed,
    }
}

fn new_id(chat: bool) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", if chat { "chatcmpl" } else { "cmpl" })
}

/// Tokens' log-probabilities as OpenAI writes them: chat's `{"content": [{token, logprob, bytes,
/// top_logprobs}]}`, or completions' `{tokens, token_logprobs, top_logprobs, text_offset}`
/// (`offsets`: where each token's text begins in the answer).
fn logprobs_json(server: &Server, chat: bool, tokens: &[TokenLogprob], offsets: &[usize]) -> Value {
    let text = |id: u32| server.tokenizer().decode(&[id], false).unwrap_or_default();
    if chat {
        let entry = |id: u32, logprob: f32| {
            let t = text(id);
            json!({"token": t, "logprob": logprob, "bytes": t.as_bytes()})
        };
        let content: Vec<Value> = tokens
            .iter()
            .map(|lp| {
                let mut v = entry(lp.id, lp.logprob);
                v["top_logprobs"] = lp.top.iter().map(|&(id, l)| entry(id, l)).collect();
                v
            })
            .collect();
        json!({"content": content})
    } else {
        let top: Vec<Value> = tokens
            .iter()
            .map(|lp| {
                let map: serde_json::Map<String, Value> =
                    lp.top.iter().map(|&(id, l)| (text(id), json!(l))).collect();
                Value::Object(map)
            })
            .collect();
        json!({
            "tokens": tokens.iter().map(|lp| text(lp.id)).collect::<Vec<_>>(),
            "token_logprobs": tokens.iter().map(|lp| lp.logprob).collect::<Vec<_>>(),
            "top_logprobs": top,
            "text_offset": offsets,
        })
    }
}

/// The usage of a request's answers together: the prompt once, every answer's tokens.
fn together(answers: &[Completion]) -> Completion {
    let mut total = answers[0].clone();
    total.completion_tokens = answers.iter().map(|c| c.completion_tokens).sum();
    total
}

/// A non-streamed answer's pieces as they come.
#[derive(Default)]
struct Gathered {
    logprobs: Vec<TokenLogprob>,
    /// Where each token's text begins in the answer.
    offsets: Vec<usize>,
    shown: usize,
    done: Option<Completion>,
}

/// A whole (non-streamed) completion: the events of its `n` answers gathered, then one JSON
/// answer.
async fn whole(
    server: &Server,
    req: &Request,
    mut submitted: Submitted,
    chat: bool,
    start: Instant,
) -> Result<Response, ApiError> {
    let mut first_token = None;
    let mut answers: Vec<Gathered> = (0..req.n).map(|_| Gathered::default()).collect();
    let mut left = req.n;
    while left > 0 {
        match submitted.events.recv().await {
            Some(Event::Token {
                choice,
                text,
                logprob,
            }) => {
                first_token.get_or_insert_with(|| start.elapsed());
                let g = &mut answers[choice];
                if let Some(lp) = logprob {
                    g.logprobs.push(lp);
                    g.offsets.push(g.shown);
                }
                g.shown += text.len();
            }
            Some(Event::Text { .. }) => {}
            Some(Event::Done { choice, outcome }) => {
                answers[choice].done = Some(outcome?);
                left -= 1;
            }
            None => return Err(ApiError::internal("the scheduler stopped")),
        }
    }
    let mut choices = Vec::with_capacity(req.n);
    let mut completions = Vec::with_capacity(req.n);
    for (index, g) in answers.into_iter().enumerate() {
        let Some(c) = g.done else {
            return Err(ApiError::internal("an answer never ended"));
        };
        let mut choice = if chat {
            let (content, calls) = if req.uses_tools() {
                server.template.tool_format().parse(&c.text)
            } else {
                (c.text.clone(), Vec::new())
            };
            let mut message = json!({"role": "assistant", "content": content});
            let mut finish = c.finish_reason;
            if !calls.is_empty() {
                message["content"] = if content.is_empty() {
                    Value::Null
                } else {
                    json!(content)
                };
                message["tool_calls"] = openai_calls(&calls, false);
                finish = "tool_calls";
            }
            json!({"index": index, "message": message, "finish_reason": finish, "logprobs": null})
        } else {
            json!({"index": index, "text": c.text, "finish_reason": c.finish_reason, "logprobs": null})
        };
        if req.logprobs.is_some() {
            choice["logprobs"] = logprobs_json(server, chat, &g.logprobs, &g.offsets);
        }
        choices.push(choice);
        completions.push(c);
    }
    let c = together(&completions);
    let mut response = axum::Json(json!({
        "id": new_id(chat),
        "object": if chat { "chat.completion" } else { "text_completion" },
        "created": unix_time(),
        "model": server.name,
        "choices": choices,
        "usage": usage(&c),
    }))
    .into_response();
    response
        .extensions_mut()
        .insert(served(&c, first_token, false));
    Ok(response)
}

/// One streamed answer between its events.
#[derive(Default)]
struct Answer {
    /// With tools, the answer so far and how much of it was shown: text that may begin a call
    /// is held back until the answer ends (then it is content after all, or the calls).
    text: String,
    shown: usize,
    /// Log-probabilities of tokens whose text is not out yet, and where each begins.
    logprobs: Vec<TokenLogprob>,
    offsets: Vec<usize>,
    /// Bytes of answer text sent.
    sent: usize,
    done: Option<Completion>,
}

/// What a stream carries from one event to the next.
struct Streaming {
    server: Arc<Server>,
    req: Request,
    submitted: Submitted,
    chat: bool,
    id: String,
    created: u64,
    start: Instant,
    first_token: Option<std::time::Duration>,
    answers: Vec<Answer>,
    /// Answers not ended yet.
    left: usize,
    /// Tokens sent so far (all answers).
    tokens: usize,
    /// The last event is out.
    ended: bool,
}

impl Streaming {
    fn event(&self, choice: Value, usage: Option<Value>) -> String {
        let mut chunk = json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.server.name,
            "choices": if choice.is_null() { json!([]) } else { json!([choice]) },
        });
        if let Some(u) = usage {
            chunk["usage"] = u;
        }
        format!("data: {chunk}\n\n")
    }

    /// A chunk of answer `index`'s text (with the log-probabilities of the tokens it holds,
    /// when asked for), or its last chunk with its `finish`.
    fn piece(&mut self, index: usize, text: &str, finish: Option<&str>) -> String {
        let mut choice = if self.chat {
            let delta = if finish.is_some() {
                json!({})
            } else {
                json!({"content": text})
            };
            json!({"index": index, "delta": delta, "finish_reason": finish, "logprobs": null})
        } else {
            json!({"index": index, "text": text, "finish_reason": finish, "logprobs": null})
        };
        let a = &mut self.answers[index];
        if !a.logprobs.is_empty() {
            let (logprobs, offsets) = (
                std::mem::take(&mut a.logprobs),
                std::mem::take(&mut a.offsets),
            );
            choice["logprobs"] = logprobs_json(&self.server, self.chat, &logprobs, &offsets);
        }
        self.answers[index].sent += text.len();
        self.event(choice, None)
    }

    fn tools(&self) -> bool {
        self.chat && self.req.uses_tools()
    }

    /// The events for one generated token (none while its text may begin a tool call, or
    /// while it has no text: its log-probability then waits for the next piece).
    fn token(&mut self, index: usize, piece: &str, logprob: Option<TokenLogprob>) -> String {
        self.first_token.get_or_insert_with(|| self.start.elapsed());
        self.tokens += 1;
        if let Some(lp) = logprob {
            let a = &mut self.answers[index];
            a.logprobs.push(lp);
            a.offsets
                .push(a.sent + a.text.len().saturating_sub(a.shown));
        }
        self.text(index, piece)
    }

    /// The events for a piece of generated text.
    fn text(&mut self, index: usize, piece: &str) -> String {
        if piece.is_empty() {
            return String::new();
        }
        if !self.tools() {
            return self.piece(index, piece, None);
        }
        let a = &mut self.answers[index];
        a.text.push_str(piece);
        let upto = self.server.template.tool_format().shown_prefix(&a.text);
        if upto <= a.shown {
            return String::new();
        }
        let fresh = a.text[a.shown..upto].to_owned();
        a.shown = upto;
        self.piece(index, &fresh, None)
    }

    /// The last events of answer `index`: held-back text or the calls, its finish; after the
    /// last answer, the usage and `[DONE]`. An error ends the stream.
    fn done(&mut self, index: usize, outcome: Result<Completion, ApiError>) -> String {
        let c = match outcome {
            Ok(c) => c,
            Err(e) => {
                self.ended = true;
                return format!("data: {}\n\ndata: [DONE]\n\n", e.body());
            }
        };
        let mut out = String::new();
        let mut finish = c.finish_reason;
        if self.tools() {
            let a = &self.answers[index];
            let (_, calls) = self.server.template.tool_format().parse(&a.text);
            if calls.is_empty() {
                if a.text.len() > a.shown {
                    let rest = a.text[a.shown..].to_owned();
                    out += &self.piece(index, &rest, None);
                }
            } else {
                let delta = json!({"tool_calls": openai_calls(&calls, true)});
                out += &self.event(
                    json!({"index": index, "delta": delta, "finish_reason": null, "logprobs": null}),
                    None,
                );
                finish = "tool_calls";
            }
        }
        if !self.answers[index].logprobs.is_empty() {
            // Tokens whose text never came (a stop string's start, cut).
            out += &self.piece(index, "", None);
        }
        out += &self.piece(index, "", Some(finish));
        self.answers[index].done = Some(c);
        self.left -= 1;
        if self.left > 0 {
            return out;
        }
        self.ended = true;
        let completions: Vec<Completion> = self
            .answers
            .iter_mut()
            .filter_map(|a| a.done.take())
            .collect();
        let c = together(&completions);
        if self.req.include_usage {
            out += &self.event(Value::Null, Some(usage(&c)));
        }
        let path = if self.chat {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        };
        log_request(
            &Method::POST,
            path,
            200,
            Some(served(&c, self.first_token, true)),
            self.start.elapsed(),
        );
        out + "data: [DONE]\n\n"
    }
}

impl Drop for Streaming {
    /// A stream whose client left (the connection closed, or a write stalled past its
    /// deadline) logs its line here, 499.
    fn drop(&mut self) {
        if !self.ended {
            // Counted with its 200 already: only the log says how it ended.
            tracing::info!(
                "POST {} {CLIENT_LEFT} (the client left the stream): {} tokens sent, first token {}, {:.0} ms",
                if self.chat { "/v1/chat/completions" } else { "/v1/completions" },
                self.tokens,
                self.first_token
                    .map(|t| format!("{:.0} ms", t.as_secs_f64() * 1e3))
                    .unwrap_or_else(|| "-".into()),
                self.start.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}

/// A streamed completion: server-sent events, one per piece of text, then `[DONE]`.
fn stream(
    server: Arc<Server>,
    req: Request,
    submitted: Submitted,
    chat: bool,
    start: Instant,
) -> Response {
    let state = Streaming {
        server,
        submitted,
        chat,
        id: new_id(chat),
        created: unix_time(),
        start,
        first_token: None,
        answers: (0..req.n).map(|_| Answer::default()).collect(),
        left: req.n,
        tokens: 0,
        ended: false,
        req,
    };
    let opening = if chat {
        (0..state.req.n)
            .map(|index| {
                let first = json!({"index": index, "delta": {"role": "assistant", "content": ""},
                                   "finish_reason": null, "logprobs": null});
                state.event(first, None)
            })
            .collect()
    } else {
        String::new()
    };
    let head = futures_util::stream::iter(
        (!opening.is_empty()).then(|| Ok::<_, std::convert::Infallible>(Bytes::from(opening))),
    );
    let events = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if s.ended {
                return None;
            }
            let out = match s.submitted.events.recv().await {
                Some(Event::Token {
                    choice,
                    text,
                    logprob,
                }) => s.token(choice, &text, logprob),
                Some(Event::Text { choice, text }) => s.text(choice, &text),
                Some(Event::Done { choice, outcome }) => s.done(choice, outcome),
                None => s.done(0, Err(ApiError::internal("the scheduler stopped"))),
            };
            if !out.is_empty() {
                return Some((Ok(Bytes::from(out)), s));
            }
        }
    });
    let mut response = Response::new(Body::from_stream(futures_util::StreamExt::chain(
        head, events,
    )));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    response.extensions_mut().insert(Served {
        streamed: true,
        ..Served::default()
    });
    response
}
