//! Requests of `liger serve`, parsed and checked: the body's JSON into a [`Request`] or an
//! OpenAI-shaped [`ApiError`]. Depends on nothing but `liger` and `serde_json`, so the fuzzer
//! (`fuzz/fuzz_targets/server_request.rs`) includes this very file.

use liger::chat::ChatMessage;
use liger::constraint::Grammar;
use liger::SamplerOptions;
use serde_json::{json, Value};

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 1 << 20;

/// An error answered as OpenAI's `{"error": {...}}` with an HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }

    pub fn too_large() -> ApiError {
        ApiError {
            status: 413,
            message: format!("the body is larger than {MAX_BODY} bytes"),
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            message: message.into(),
        }
    }

    pub fn body(&self) -> Value {
        let kind = if self.status >= 500 {
            "server_error"
        } else {
            "invalid_request_error"
        };
        json!({"error": {"message": self.message, "type": kind, "code": self.status}})
    }
}

/// A completion request, chat or plain.
pub struct Request {
    /// Chat messages (`/v1/chat/completions`), or None for a plain `prompt`.
    pub messages: Option<Vec<ChatMessage>>,
    pub prompt: Option<String>,
    pub max_tokens: Option<usize>,
    pub sampling: SamplerOptions,
    pub stream: bool,
    pub include_usage: bool,
    /// Go on past the model's stop tokens (llama.cpp server's `ignore_eos`; benchmarks).
    pub ignore_eos: bool,
    /// `response_format`'s constraint on the output (JSON object or JSON schema).
    pub grammar: Option<Grammar>,
}

/// A request from its body's bytes (at most [`MAX_BODY`], which the caller bounds).
pub fn parse_body(body: &[u8], chat: bool) -> Result<Request, ApiError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    parse(&body, chat)
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
    let ignore_eos = match body.get("ignore_eos") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return bad("'ignore_eos' must be a boolean".into()),
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
        ignore_eos,
        grammar: response_format(body)?,
    })
}

/// OpenAI's `response_format`: `{"type": "text"}` (none), `{"type": "json_object"}`, or
/// `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}}`.
fn response_format(body: &Value) -> Result<Option<Grammar>, ApiError> {
    let Some(format) = body.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = |m: &str| Err(ApiError::bad_request(format!("'response_format' {m}")));
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Grammar::json_object())),
        Some("json_schema") => match format.pointer("/json_schema/schema") {
            Some(schema) if schema.is_object() || schema.is_boolean() => {
                Ok(Some(Grammar::json_schema(schema)))
            }
            Some(_) => bad("json_schema.schema must be a JSON schema object"),
            None => bad("of type json_schema needs json_schema.schema"),
        },
        _ => bad("type must be text, json_object or json_schema"),
    }
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

/// The sampling of a request (OpenAI's defaults: temperature 1, top-p 1).
pub fn sampling(
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u64>,
    min_p: Option<f64>,
    seed: Option<u64>,
) -> SamplerOptions {
    SamplerOptions {
        temperature: temperature.unwrap_or(1.0) as f32,
        top_p: top_p.unwrap_or(1.0) as f32,
        top_k: top_k.unwrap_or(0) as usize,
        min_p: min_p.unwrap_or(0.0) as f32,
        repeat_penalty: 1.0,
        repeat_last_n: 64,
        seed: seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        }),
    }
}
