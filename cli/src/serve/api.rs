//! The HTTP surface of `liger serve`: routing, request parsing (bounded), OpenAI-shaped
//! responses, server-sent events, JSON errors.

use super::{sampling, Completion, Server};
use liger::chat::ChatMessage;
use liger::SamplerOptions;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};
use tiny_http::{Header, Method, Response, StatusCode};

/// Largest request body accepted (413 beyond).
const MAX_BODY: usize = 1 << 20;

/// An error answered as OpenAI's `{"error": {...}}` with an HTTP status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: u16,
    message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            message: message.into(),
        }
    }

    fn body(&self) -> Value {
        let kind = if self.status >= 500 {
            "server_error"
        } else {
            "invalid_request_error"
        };
        json!({"error": {"message": self.message, "type": kind, "code": self.status}})
    }
}

/// A completion request, chat or plain.
pub(crate) struct Request {
    /// Chat messages (`/v1/chat/completions`), or None for a plain `prompt`.
    pub messages: Option<Vec<ChatMessage>>,
    pub prompt: Option<String>,
    pub max_tokens: Option<usize>,
    pub sampling: SamplerOptions,
    pub stream: bool,
    pub include_usage: bool,
}

fn json_response(status: u16, body: &Value) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_data(body.to_string().into_bytes())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header")
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Answers one HTTP request (errors are answered, never propagated).
pub(crate) fn handle(server: &Server, mut request: tiny_http::Request) {
    let path = request.url().split('?').next().unwrap_or("").to_owned();
    let method = request.method().clone();
    let outcome = match (method, path.as_str()) {
        (Method::Get, "/health") => Ok(json!({"status": "ok"})),
        (Method::Get, "/v1/models") => Ok(json!({
            "object": "list",
            "data": [{"id": server.name, "object": "model", "created": 0, "owned_by": "liger"}],
        })),
        (Method::Post, "/v1/chat/completions" | "/v1/completions") => {
            let chat = path == "/v1/chat/completions";
            match read_body(&mut request).and_then(|body| parse(&body, chat)) {
                Ok(req) if req.stream => return stream(server, request, &req, chat),
                Ok(req) => complete(server, &req, chat),
                Err(e) => Err(e),
            }
        }
        (_, "/health" | "/v1/models" | "/v1/chat/completions" | "/v1/completions") => {
            Err(ApiError {
                status: 405,
                message: format!("{} is not allowed on {path}", request.method()),
            })
        }
        _ => Err(ApiError {
            status: 404,
            message: format!("no route {path}"),
        }),
    };
    let response = match outcome {
        Ok(body) => json_response(200, &body),
        Err(e) => json_response(e.status, &e.body()),
    };
    let _ = request.respond(response);
}

fn read_body(request: &mut tiny_http::Request) -> Result<Value, ApiError> {
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError {
            status: 413,
            message: format!("the body is larger than {MAX_BODY} bytes"),
        });
    }
    let mut body = Vec::new();
    let n = request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
    if n > MAX_BODY {
        return Err(ApiError {
            status: 413,
            message: format!("the body is larger than {MAX_BODY} bytes"),
        });
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

/// A request's fields, checked.
fn parse(body: &Value, chat: bool) -> Result<Request, ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(m));
    if !body.is_object() {
        return bad("the body must be a JSON object".into());
    }
    let number = |key: &str| -> Result<Option<f64>, ApiError> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("'{key}' must be a number"))),
        }
    };
    let count = |key: &str| -> Result<Option<u64>, ApiError> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                ApiError::bad_request(format!("'{key}' must be a non-negative integer"))
            }),
        }
    };
    if count("n")?.is_some_and(|n| n != 1) {
        return bad("only n = 1 is supported".into());
    }
    let temperature = number("temperature")?;
    if temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return bad("'temperature' must be in [0, 2]".into());
    }
    let top_p = number("top_p")?;
    if top_p.is_some_and(|p| !(0.0..=1.0).contains(&p) || p == 0.0) {
        return bad("'top_p' must be in (0, 1]".into());
    }
    let max_tokens = count("max_completion_tokens")?
        .or(count("max_tokens")?)
        .map(|n| n as usize);
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return bad("'stream' must be a boolean".into()),
    };
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (messages, prompt) = if chat {
        (Some(messages(body)?), None)
    } else {
        match body.get("prompt") {
            Some(Value::String(s)) => (None, Some(s.clone())),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                (None, a[0].as_str().map(str::to_owned))
            }
            _ => return bad("'prompt' must be a string".into()),
        }
    };
    Ok(Request {
        messages,
        prompt,
        max_tokens,
        sampling: sampling(
            temperature,
            top_p,
            count("top_k")?,
            number("min_p")?,
            count("seed")?,
        ),
        stream,
        include_usage,
    })
}

/// `messages`: roles system / user / assistant (/ developer, as system), content a string or
/// an array of text parts.
fn messages(body: &Value) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(list) = body.get("messages").and_then(Value::as_array) else {
        return Err(ApiError::bad_request("'messages' must be an array"));
    };
    if list.is_empty() {
        return Err(ApiError::bad_request("'messages' is empty"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.get("role").and_then(Value::as_str) {
                Some("developer") => "system",
                Some(r @ ("system" | "user" | "assistant")) => r,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "messages[{i}].role must be system, user or assistant"
                    )))
                }
            };
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| match (p.get("type"), p.get("text")) {
                        (Some(t), Some(Value::String(text))) if t == "text" => Ok(text.as_str()),
                        _ => Err(ApiError::bad_request(format!(
                            "messages[{i}]: only text content parts are supported"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .concat(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "messages[{i}].content must be a string or text parts"
                    )))
                }
            };
            Ok(ChatMessage::new(role, &content))
        })
        .collect()
}

fn usage(c: &Completion) -> Value {
    json!({
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": c.cached_tokens},
    })
}

fn new_id(chat: bool) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", if chat { "chatcmpl" } else { "cmpl" })
}

/// A whole (non-streamed) completion.
fn complete(server: &Server, req: &Request, chat: bool) -> Result<Value, ApiError> {
    let prompt = server.prompt_ids(req)?;
    let c = server.complete(&prompt, req, |_| true)?;
    let choice = if chat {
        json!({"index": 0, "message": {"role": "assistant", "content": c.text},
               "finish_reason": c.finish_reason, "logprobs": null})
    } else {
        json!({"index": 0, "text": c.text, "finish_reason": c.finish_reason, "logprobs": null})
    };
    Ok(json!({
        "id": new_id(chat),
        "object": if chat { "chat.completion" } else { "text_completion" },
        "created": unix_time(),
        "model": server.name,
        "choices": [choice],
        "usage": usage(&c),
    }))
}

/// A streamed completion: server-sent events, one per piece of text, then `[DONE]`, written
/// and flushed as they come (the response is close-delimited). A client that leaves (a write
/// fails) stops generation at the next token.
fn stream(server: &Server, request: tiny_http::Request, req: &Request, chat: bool) {
    let prompt = match server.prompt_ids(req) {
        Ok(p) => p,
        Err(e) => {
            let _ = request.respond(json_response(e.status, &e.body()));
            return;
        }
    };
    let (id, created) = (new_id(chat), unix_time());
    let event = |choice: Value, usage: Option<Value>| -> Vec<u8> {
        let mut chunk = json!({
            "id": id,
            "object": if chat { "chat.completion.chunk" } else { "text_completion" },
            "created": created,
            "model": server.name,
            "choices": if choice.is_null() { json!([]) } else { json!([choice]) },
        });
        if let Some(u) = usage {
            chunk["usage"] = u;
        }
        format!("data: {chunk}\n\n").into_bytes()
    };
    let piece = |text: &str, finish: Option<&str>| {
        if chat {
            let delta = if finish.is_some() {
                json!({})
            } else {
                json!({"content": text})
            };
            json!({"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null})
        } else {
            json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": null})
        }
    };
    // The response is written here, event by event, each one chunk of a chunked body flushed
    // at once (tiny_http's own writer would buffer them).
    let mut out = request.into_writer();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    if out
        .write_all(head.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return;
    }
    let mut send = |bytes: &[u8]| {
        let framed = [format!("{:x}\r\n", bytes.len()).as_bytes(), bytes, b"\r\n"].concat();
        out.write_all(&framed).and_then(|()| out.flush()).is_ok()
    };
    if chat {
        let first = json!({"index": 0, "delta": {"role": "assistant", "content": ""},
                           "finish_reason": null, "logprobs": null});
        send(&event(first, None));
    }
    match server.complete(&prompt, req, |text| send(&event(piece(text, None), None))) {
        Ok(c) => {
            send(&event(piece("", Some(c.finish_reason)), None));
            if req.include_usage {
                send(&event(Value::Null, Some(usage(&c))));
            }
        }
        Err(e) => {
            send(format!("data: {}\n\n", e.body()).as_bytes());
        }
    }
    send(b"data: [DONE]\n\n");
    // The last chunk.
    let _ = out.write_all(b"0\r\n\r\n").and_then(|()| out.flush());
}
