//! OpenAI's completion requests, parsed and checked — the body's JSON into a [`Request`] or an
//! OpenAI-shaped [`ApiError`] — and what every front end that speaks OpenAI's API does with
//! one: its prompt ids, its output grammar, its tool calls as OpenAI writes them. `liger
//! serve` and the Python package's `create_completion` / `create_chat_completion` both go
//! through here (the fuzzer `server_request` too).

use crate::chat::{ChatMessage, ChatTemplate};
use crate::constraint::Grammar;
use crate::tokenizer::Tokenizer;
use crate::tools::{Tool, ToolCall, ToolChoice};
use crate::SamplerOptions;
use serde_json::{json, Value};

/// Largest request body a server accepts (413 beyond).
pub const MAX_BODY: usize = 1 << 20;

/// Most answers one request may ask for (`n`; the server may allow fewer: `--parallel`).
pub const MAX_CHOICES: u64 = 128;

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
    /// The answer ends where its text reaches one of these (`stop`).
    pub stop: Vec<String>,
    /// Report each generated token's log-probability and this many alternatives
    /// (`logprobs` / `top_logprobs` in chat, `logprobs: k` in completions).
    pub logprobs: Option<usize>,
    /// Answers to give (`n`): the prompt fed once, its state forked for each.
    pub n: usize,
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

/// The fields a request may carry: those honoured, and those that change nothing in the
/// answer (`model`: one model is served; `user`, `store`, `metadata`, `service_tier`).
/// Anything else is refused by name, never silently dropped.
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "user",
    "store",
    "metadata",
    "service_tier",
    "stream",
    "stream_options",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
    "repeat_last_n",
    "logit_bias",
    "stop",
    "logprobs",
    "top_logprobs",
    "ignore_eos",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "messages",
    "prompt",
    "echo",
    "best_of",
    "suffix",
];

/// Most alternatives `top_logprobs` may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A request's fields, checked.
fn parse(body: &Value, chat: bool) -> Result<Request, ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(m));
    let Some(fields) = body.as_object() else {
        return bad("the body must be a JSON object".into());
    };
    if let Some(unknown) = fields.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return bad(format!("'{unknown}' is not supported by this server"));
    }
    // Fields of the API that this server takes only at their default.
    for (key, default) in [
        ("echo", json!(false)),
        ("best_of", json!(1)),
        ("suffix", Value::Null),
    ] {
        if fields
            .get(key)
            .is_some_and(|v| !v.is_null() && *v != default)
        {
            return bad(format!(
                "'{key}' is not supported by this server (only {default})"
            ));
        }
    }
    if chat && fields.contains_key("prompt") {
        return bad("'prompt' belongs to /v1/completions; a chat takes 'messages'".into());
    }
    if !chat && fields.contains_key("messages") {
        return bad(
            "'messages' belongs to /v1/chat/completions; a completion takes 'prompt'".into(),
        );
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
    let n = match count("n")? {
        None => 1,
        Some(n @ 1..=MAX_CHOICES) => n as usize,
        Some(n) => return bad(format!("'n' is {n}; it must be in 1..={MAX_CHOICES}")),
    };
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
    let penalty =
        |key: &str, range: std::ops::RangeInclusive<f64>| -> Result<Option<f64>, ApiError> {
            let v = number(key)?;
            if v.is_some_and(|x| !range.contains(&x)) {
                return Err(ApiError::bad_request(format!(
                    "'{key}' must be in [{}, {}]",
                    range.start(),
                    range.end()
                )));
            }
            Ok(v)
        };
    let mut options = sampling(
        temperature,
        top_p,
        count("top_k")?,
        number("min_p")?,
        count("seed")?,
    );
    options.presence_penalty = penalty("presence_penalty", -2.0..=2.0)?.unwrap_or(0.0) as f32;
    options.frequency_penalty = penalty("frequency_penalty", -2.0..=2.0)?.unwrap_or(0.0) as f32;
    options.repeat_penalty = penalty("repeat_penalty", 0.0..=10.0)?.unwrap_or(1.0) as f32;
    if options.repeat_penalty == 0.0 {
        return bad("'repeat_penalty' must be positive".into());
    }
    if let Some(n) = count("repeat_last_n")? {
        options.repeat_last_n = n.min(1 << 16) as usize;
    }
    options.logit_bias = logit_bias(body)?;
    Ok(Request {
        messages,
        prompt,
        max_tokens,
        sampling: options,
        stop: stop(body)?,
        logprobs: logprobs(body, chat)?,
        n,
        stream,
        include_usage,
        ignore_eos,
        grammar,
        tools,
        tool_choice,
    })
}

/// `stop`: a string or up to 4 strings, none empty.
fn stop(body: &Value) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::bad_request("'stop' must be a string or an array of up to 4 non-empty strings")
    };
    let stops = match body.get("stop") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) if list.len() <= 4 => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad()),
    };
    if stops.iter().any(String::is_empty) {
        return Err(bad());
    }
    Ok(stops)
}

/// `logit_bias`: `{"token id": bias in [-100, 100]}` (the ids checked against the vocabulary
/// when the request is queued).
fn logit_bias(body: &Value) -> Result<Vec<(u32, f32)>, ApiError> {
    let map = match body.get("logit_bias") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(ApiError::bad_request(
                "'logit_bias' must map token ids to numbers",
            ))
        }
    };
    if map.len() > 1024 {
        return Err(ApiError::bad_request(
            "'logit_bias' may hold at most 1024 tokens",
        ));
    }
    map.iter()
        .map(|(id, bias)| {
            let id: u32 = id.parse().map_err(|_| {
                ApiError::bad_request(format!("'logit_bias': {id:?} is not a token id"))
            })?;
            match bias.as_f64() {
                Some(b) if (-100.0..=100.0).contains(&b) => Ok((id, b as f32)),
                _ => Err(ApiError::bad_request(format!(
                    "'logit_bias' of token {id} must be a number in [-100, 100]"
                ))),
            }
        })
        .collect()
}

/// How many alternatives to report with each token's log-probability, if any: chat's
/// `logprobs: true` with `top_logprobs: k`, completions' `logprobs: k`.
fn logprobs(body: &Value, chat: bool) -> Result<Option<usize>, ApiError> {
    let top = |v: Option<&Value>, key: &str| -> Result<usize, ApiError> {
        match v {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v
                .as_u64()
                .filter(|&k| k as usize <= MAX_TOP_LOGPROBS)
                .map(|k| k as usize)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "'{key}' must be an integer in [0, {MAX_TOP_LOGPROBS}]"
                    ))
                }),
        }
    };
    if chat {
        let wanted = match body.get("logprobs") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            Some(_) => return Err(ApiError::bad_request("'logprobs' must be a boolean")),
        };
        let k = top(body.get("top_logprobs"), "top_logprobs")?;
        if k > 0 && !wanted {
            return Err(ApiError::bad_request(
                "'top_logprobs' needs 'logprobs': true",
            ));
        }
        Ok(wanted.then_some(k))
    } else {
        if body.get("top_logprobs").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::bad_request(
                "'top_logprobs' belongs to chat; a completion takes 'logprobs': k",
            ));
        }
        match body.get("logprobs") {
            None | Some(Value::Null) => Ok(None),
            v => Ok(Some(top(v, "logprobs")?)),
        }
    }
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
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        logit_bias: Vec::new(),
        seed: seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        }),
    }
}

/// The prompt's token ids: the messages rendered with `template` (the tools shown when the
/// request uses them), or the plain prompt with the tokenizer's BOS; at most `max_tokens`.
pub fn prompt_ids(
    req: &Request,
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    max_tokens: usize,
) -> Result<Vec<u32>, ApiError> {
    let text = match &req.messages {
        Some(messages) => {
            let tools = if req.uses_tools() {
                &req.tools[..]
            } else {
                &[]
            };
            template
                .render_with_tools(messages, tools, true)
                .map_err(|e| ApiError::bad_request(format!("chat template: {e}")))?
        }
        None => req.prompt.clone().unwrap_or_default(),
    };
    // A chat's rendering carries its own BOS where the template has one.
    let add_special = req.messages.is_none();
    let ids = tokenizer
        .encode(&text, add_special)
        .map_err(|e| ApiError::bad_request(format!("tokenizing the prompt: {e}")))?;
    if ids.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty"));
    }
    if ids.len() > max_tokens {
        return Err(ApiError::bad_request(format!(
            "the prompt has {} tokens; at most {max_tokens} are taken",
            ids.len(),
        )));
    }
    Ok(ids)
}

/// The grammar the answer must follow: `response_format`'s, or the tool calls' when a call is
/// required.
pub fn output_grammar(req: &Request, template: &ChatTemplate) -> Result<Option<Grammar>, ApiError> {
    let tool_grammar = template
        .tool_format()
        .grammar(&req.tools, &req.tool_choice)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(req.grammar.clone().or(tool_grammar))
}

/// Calls as OpenAI writes them: ids, `"type": "function"`, arguments as a JSON string; in a
/// streamed delta each also carries its `index`.
pub fn openai_calls(calls: &[ToolCall], streamed: bool) -> Value {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut call = json!({"id": format!("call_{stamp:x}_{i}"), "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments.to_string()}});
            if streamed {
                call["index"] = json!(i);
            }
            call
        })
        .collect()
}
