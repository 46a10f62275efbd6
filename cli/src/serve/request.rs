//! Requests of `liger serve`, parsed and checked: the body's JSON into a [`Request`] or an
//! OpenAI-shaped [`ApiError`]. Depends on nothing but `liger` and `serde_json`, so the fuzzer
//! (`fuzz/fuzz_targets/server_request.rs`) includes this very file.

use liger::chat::ChatMessage;
use liger::constraint::Grammar;
use liger::tools::{Tool, ToolCall, ToolChoice};
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
    /// The tools offered (`tools`) and `tool_choice`.
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
}

impl Request {
    /// Whether tools are shown to the model and calls read from its answer.
    pub fn uses_tools(&self) -> bool {
        !self.tools.is_empty() && self.tool_choice != ToolChoice::None
    }
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
    let (tools, tool_choice) = if chat {
        tools(body)?
    } else {
        (Vec::new(), ToolChoice::None)
    };
    let grammar = response_format(body)?;
    if grammar.is_some() && matches!(tool_choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return bad(
            "'response_format' and a required tool call cannot be asked for together".into(),
        );
    }
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
        grammar,
        tools,
        tool_choice,
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

/// `messages`: roles system / user / assistant (/ developer, as system) / tool, content a
/// string or an array of text parts (null for an assistant turn that only calls tools).
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
                Some(r @ ("system" | "user" | "assistant" | "tool")) => r,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "messages[{i}].role must be system, user, assistant or tool"
                    )))
                }
            };
            let tool_calls = match m.get("tool_calls") {
                None | Some(Value::Null) => None,
                Some(calls) if role == "assistant" => Some(tool_calls(i, calls)?),
                Some(_) => {
                    return Err(ApiError::bad_request(format!(
                        "messages[{i}]: only assistant messages carry tool_calls"
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
                None | Some(Value::Null) if tool_calls.is_some() => String::new(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "messages[{i}].content must be a string or text parts"
                    )))
                }
            };
            let mut message = ChatMessage::new(role, &content);
            message.tool_calls = tool_calls;
            if role == "tool" {
                message.tool_call_id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            Ok(message)
        })
        .collect()
}

/// An assistant message's OpenAI `tool_calls` in the form templates read: each
/// `{"type": "function", "function": {"name", "arguments"}}` with the arguments (a JSON string
/// in OpenAI's API) as the object they hold.
fn tool_calls(i: usize, calls: &Value) -> Result<Vec<Value>, ApiError> {
    let bad = |m: &str| ApiError::bad_request(format!("messages[{i}].tool_calls: {m}"));
    let calls = calls.as_array().ok_or_else(|| bad("must be an array"))?;
    calls
        .iter()
        .map(|c| {
            let f = c
                .get("function")
                .ok_or_else(|| bad("a call without 'function'"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a call without function.name"))?;
            let arguments = match f.get("arguments") {
                Some(Value::String(s)) => serde_json::from_str(s)
                    .map_err(|e| bad(&format!("function.arguments is not JSON: {e}")))?,
                Some(v @ Value::Object(_)) => v.clone(),
                None | Some(Value::Null) => json!({}),
                Some(_) => return Err(bad("function.arguments must be a JSON string")),
            };
            Ok(ToolCall {
                name: name.to_owned(),
                arguments,
            }
            .to_template())
        })
        .collect()
}

/// `tools` and `tool_choice` ("auto" where tools are given, else "none").
fn tools(body: &Value) -> Result<(Vec<Tool>, ToolChoice), ApiError> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|t| Tool::from_openai(t).map_err(|e| ApiError::bad_request(e.to_string())))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("'tools' must be an array")),
    };
    let choice = match body.get("tool_choice") {
        None | Some(Value::Null) if tools.is_empty() => ToolChoice::None,
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => {
                return Err(ApiError::bad_request(
                    "'tool_choice' must be auto, none, required or a function",
                ))
            }
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if v.get("type").and_then(Value::as_str) == Some("function") => {
                ToolChoice::Function(name.to_owned())
            }
            _ => {
                return Err(ApiError::bad_request(
                    "'tool_choice' must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                ))
            }
        },
    };
    if let ToolChoice::Function(name) = &choice {
        if !tools.iter().any(|t| &t.name == name) {
            return Err(ApiError::bad_request(format!(
                "'tool_choice' names {name:?}, which is not one of the tools"
            )));
        }
    }
    if choice == ToolChoice::Required && tools.is_empty() {
        return Err(ApiError::bad_request(
            "'tool_choice' is required but there are no tools",
        ));
    }
    Ok((tools, choice))
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
