//! The HTTP surface of `liger serve`: routing, request parsing (bounded), OpenAI-shaped
//! responses, server-sent events, JSON errors.

use super::request::{parse_body, ApiError, Request, MAX_BODY};
use super::{Completion, Server};
use liger::tools::ToolCall;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};
use tiny_http::{Header, Method, Response, StatusCode};

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
            match read_body(&mut request).and_then(|body| parse_body(&body, chat)) {
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

/// The body, at most [`MAX_BODY`] bytes (413 beyond).
fn read_body(request: &mut tiny_http::Request) -> Result<Vec<u8>, ApiError> {
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::too_large());
    }
    let mut body = Vec::new();
    let n = request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
    if n > MAX_BODY {
        return Err(ApiError::too_large());
    }
    Ok(body)
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

/// Calls as OpenAI writes them: ids, `"type": "function"`, arguments as a JSON string; in a
/// streamed delta each also carries its `index`.
fn openai_calls(calls: &[ToolCall], streamed: bool) -> Value {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
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

/// A whole (non-streamed) completion.
fn complete(server: &Server, req: &Request, chat: bool) -> Result<Value, ApiError> {
    let prompt = server.prompt_ids(req)?;
    let c = server.complete(&prompt, req, |_| true)?;
    let choice = if chat {
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
        json!({"index": 0, "message": message, "finish_reason": finish, "logprobs": null})
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
    // With tools, text that may begin a call is held back until the answer ends: then it is
    // either content after all or the calls, sent as one `tool_calls` delta.
    let format = server.template.tool_format();
    let tools = chat && req.uses_tools();
    let (mut answer, mut shown) = (String::new(), 0);
    let completed = server.complete(&prompt, req, |text| {
        if !tools {
            return send(&event(piece(text, None), None));
        }
        answer.push_str(text);
        let upto = format.shown_prefix(&answer);
        if upto <= shown {
            return true;
        }
        let fresh = &answer[shown..upto];
        shown = upto;
        send(&event(piece(fresh, None), None))
    });
    match completed {
        Ok(c) => {
            let mut finish = c.finish_reason;
            if tools {
                let (_, calls) = format.parse(&answer);
                if calls.is_empty() {
                    if answer.len() > shown {
                        send(&event(piece(&answer[shown..], None), None));
                    }
                } else {
                    let delta = json!({"tool_calls": openai_calls(&calls, true)});
                    send(&event(
                        json!({"index": 0, "delta": delta, "finish_reason": null, "logprobs": null}),
                        None,
                    ));
                    finish = "tool_calls";
                }
            }
            send(&event(piece("", Some(finish)), None));
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
