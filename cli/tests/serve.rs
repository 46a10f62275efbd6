//! `liger serve` through real HTTP clients (ureq here; the official `openai` Python client in
//! `python/openai_client.py`): the routes, the prefix cache (a follow-up feeds only its new
//! tokens), streaming, concurrent clients, a client leaving mid-stream, 4xx JSON errors, and a
//! load of 16 clients in two waves (no state leaks between clients, bounded memory).

mod support;

use liger_tests::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use support::*;

#[test]
fn serve_answers_openai_requests_and_feeds_only_new_tokens() {
    let Some(model) = chat_model() else {
        return;
    };
    let s = serve(&model);
    let base = s.base.as_str();

    let (status, health) = get(base, "/health");
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    let (status, models) = get(base, "/v1/models");
    assert_eq!(status, 200);
    let name = models["data"][0]["id"].as_str().unwrap().to_owned();

    // A conversation, then its follow-up: the follow-up's cached tokens are the whole
    // first exchange, so only its new turn is fed.
    let question = json!({"role": "user", "content": "What is the capital of France?"});
    let (status, first) = post(
        base,
        "/v1/chat/completions",
        &json!({"model": name, "messages": [question], "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["choices"][0]["message"]["role"], "assistant");
    assert_eq!(usage(&first, "cached_tokens"), 0);
    let answer = first["choices"][0]["message"]["content"].clone();
    let history = json!([question, {"role": "assistant", "content": answer},
                         {"role": "user", "content": "And of Italy?"}]);
    let (status, follow) = post(
        base,
        "/v1/chat/completions",
        &json!({"messages": history, "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(status, 200, "{follow}");
    let earlier = usage(&first, "prompt_tokens") + usage(&first, "completion_tokens");
    assert_eq!(
        usage(&follow, "cached_tokens"),
        earlier,
        "the follow-up re-fed the conversation: {follow}"
    );
    assert!(usage(&follow, "prompt_tokens") > earlier);

    // Streaming: the role first, text deltas, a finish reason, the usage, [DONE].
    let mut r = agent()
        .post(format!("{base}/v1/chat/completions"))
        .send_json(
            json!({"messages": [{"role": "user", "content": "Count to five."}],
                          "max_tokens": 6, "temperature": 1.0, "seed": 7, "stream": true,
                          "stream_options": {"include_usage": true}}),
        )
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut body = String::new();
    r.body_mut().as_reader().read_to_string(&mut body).unwrap();
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert!(matches!(finish, Some("stop" | "length")), "{body}");
    let streamed = chunks.last().unwrap();
    assert!(usage(streamed, "completion_tokens") <= 6, "{body}");

    // Plain completions.
    let (status, text) = post(
        base,
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}),
    );
    assert_eq!(status, 200, "{text}");
    assert!(text["choices"][0]["text"].is_string());
    assert!(usage(&text, "completion_tokens") <= 5);

    // Bad requests: a 4xx with a JSON error, and the server goes on.
    let bad = |path: &str, body: &str| -> (u16, Value) {
        let mut r = agent()
            .post(format!("{base}{path}"))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_json().unwrap())
    };
    for (path, body, status) in [
        ("/v1/chat/completions", "{not json", 400),
        ("/v1/chat/completions", "[]", 400),
        ("/v1/chat/completions", r#"{"messages": []}"#, 400),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
            400,
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "x"}], "n": 0}"#,
            400,
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#,
            400,
        ),
        ("/v1/completions", r#"{"prompt": 3}"#, 400),
        ("/v1/nothing", "{}", 404),
    ] {
        let (got, error) = bad(path, body);
        assert_eq!(got, status, "{path} {body}: {error}");
        assert!(error["error"]["message"].is_string(), "{error}");
    }
    let big = format!(r#"{{"prompt": "{}"}}"#, "a".repeat(2 << 20));
    assert_eq!(bad("/v1/completions", &big).0, 413);
    let mut r = agent().delete(format!("{base}/health")).call().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert!(r.body_mut().read_json::<Value>().unwrap()["error"].is_object());

    // A client that leaves mid-stream, and 8 concurrent clients: all answered, still healthy.
    {
        let mut r = agent()
            .post(format!("{base}/v1/completions"))
            .send_json(
                json!({"prompt": "The", "max_tokens": 400, "temperature": 1.5,
                              "seed": 1, "stream": true}),
            )
            .unwrap();
        let mut first = [0u8; 16];
        r.body_mut().as_reader().read_exact(&mut first).unwrap();
    }
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let base = base.to_owned();
            std::thread::spawn(move || {
                post(
                    &base,
                    "/v1/chat/completions",
                    &json!({"messages": [{"role": "user", "content": format!("Hello {i}")}],
                            "max_tokens": 4, "temperature": 0.8, "seed": i}),
                )
            })
        })
        .collect();
    for c in clients {
        let (status, answer) = c.join().unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(get(base, "/health").0, 200);

    // The official openai Python client (CI installs it).
    if !has_openai() {
        return;
    }
    openai_script("openai_client.py", base);
}

/// Runs `tests/python/<script>` against the server at `base`; fails with its output.
fn openai_script(script: &str, base: &str) {
    python_script(script, &[&format!("{base}/v1")]);
}

/// A tool round trip through the openai client on the demo model's own template (ChatML,
/// no tools section: the tools are described in a system message, calls in `<tool_call>`
/// blocks) and on the Llama-3.2 template (its tools section, `{"name", "parameters"}` calls).
#[test]
fn serve_tool_calls_round_trip_through_the_openai_client() {
    let Some(model) = chat_model() else {
        return;
    };
    if !has_openai() {
        return;
    }
    let own = serve(&model);
    openai_script("openai_tools.py", &own.base);
    drop(own);
    let llama = repo_root().join("tests/fixtures/chat_templates/llama-3.2-3b-instruct.jinja");
    let llama = serve_with(&model, &["--chat-template-file", llama.to_str().unwrap()]);
    openai_script("openai_tools.py", &llama.base);
}

/// The text of a streamed completion (the SSE deltas joined).
fn streamed_text(base: &str, body: &Value) -> String {
    let mut r = agent()
        .post(format!("{base}/v1/completions"))
        .send_json(body)
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let reader = BufReader::new(r.body_mut().as_reader());
    let mut text = String::new();
    for line in reader.lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        text += v["choices"][0]["text"].as_str().unwrap_or("");
    }
    text
}

/// `response_format`: 50 requests with 5 JSON schemas from 5 clients at once (batched
/// together) all parse and validate (checked by `liger_tests::schema`, not by the engine that
/// constrained them), streamed deltas join into valid JSON, and a schema the engine rejects or
/// a malformed `response_format` is a 400 that names it.
#[test]
fn serve_constrains_answers_by_response_format() {
    let Some(model) = chat_model() else {
        return;
    };
    let s = serve(&model);
    let base = s.base.clone();
    let schemas = [
        json!({"type": "object",
               "properties": {"name": {"type": "string", "maxLength": 16},
                              "age": {"type": "integer", "minimum": 0, "maximum": 120}},
               "required": ["name", "age"], "additionalProperties": false}),
        json!({"type": "object",
               "properties": {"answer": {"enum": ["yes", "no"]}},
               "required": ["answer"], "additionalProperties": false}),
        json!({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99},
               "minItems": 1, "maxItems": 5}),
        json!({"type": "object",
               "properties": {"city": {"type": "string", "maxLength": 20},
                              "at": {"type": "object",
                                     "properties": {"lat": {"type": "number", "minimum": -90, "maximum": 90},
                                                    "lon": {"type": "number", "minimum": -180, "maximum": 180}},
                                     "required": ["lat", "lon"], "additionalProperties": false}},
               "required": ["city", "at"], "additionalProperties": false}),
        json!({"$defs": {"step": {"type": "object",
                                  "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9},
                                                 "done": {"type": "boolean"}},
                                  "required": ["n", "done"], "additionalProperties": false}},
               "type": "object",
               "properties": {"steps": {"type": "array", "minItems": 1, "maxItems": 3,
                                        "items": {"$ref": "#/$defs/step"}}},
               "required": ["steps"], "additionalProperties": false}),
    ];
    let clients: Vec<_> = (0..5)
        .map(|client| {
            let (base, schemas) = (base.clone(), schemas.clone());
            std::thread::spawn(move || {
                (0..10)
                    .map(|r| {
                        let i = (client + r) % schemas.len();
                        let body = json!({
                            "messages": [{"role": "user", "content": format!("Request {client}.{r}, as JSON.")}],
                            "max_tokens": 400, "temperature": 0.8, "seed": 10 * client + r,
                            "response_format": {"type": "json_schema",
                                                "json_schema": {"name": "answer", "schema": schemas[i], "strict": true}}});
                        let (status, v) = post(&base, "/v1/chat/completions", &body);
                        (i, status, v)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut answered = 0;
    for c in clients {
        for (i, status, v) in c.join().unwrap() {
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
            let text = v["choices"][0]["message"]["content"].as_str().unwrap();
            let answer: Value =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("schema {i}: {e}: {text}"));
            let violation = schema::schema_violation(&schemas[i], &answer);
            assert!(violation.is_none(), "schema {i}: {text}: {violation:?}");
            answered += 1;
        }
    }
    assert_eq!(answered, 50);

    let streamed = {
        let mut r = agent()
            .post(format!("{base}/v1/chat/completions"))
            .send_json(json!({"messages": [{"role": "user", "content": "Yes or no?"}],
                              "max_tokens": 64, "temperature": 0, "stream": true,
                              "response_format": {"type": "json_schema",
                                                  "json_schema": {"name": "a", "schema": schemas[1]}}}))
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let mut text = String::new();
        for line in BufReader::new(r.body_mut().as_reader()).lines() {
            let line = line.unwrap();
            match line.strip_prefix("data: ") {
                Some("[DONE]") => break,
                Some(data) => {
                    let v: Value = serde_json::from_str(data).unwrap();
                    text += v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
                }
                None => {}
            }
        }
        text
    };
    let answer: Value =
        serde_json::from_str(&streamed).unwrap_or_else(|e| panic!("{e}: {streamed}"));
    assert!(
        answer["answer"] == "yes" || answer["answer"] == "no",
        "{streamed}"
    );

    for (format, says) in [
        (
            json!({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "frobnicate"}}}),
            "response_format",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "a"}}),
            "json_schema.schema",
        ),
        (json!({"type": "yaml"}), "response_format"),
    ] {
        let (status, v) = post(
            &base,
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "Hi"}], "response_format": format}),
        );
        assert_eq!(status, 400, "{format}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{format}: {message}");
    }
}

/// 16 clients at once, each sending a mix — greedy completions streamed and not (whose text
/// must equal the same prompt's answer served alone: no state leaks between clients through
/// the shared model or the prefix cache), streams left after a few bytes, oversized bodies,
/// broken JSON — in two waves. The server keeps answering and its memory stays bounded.
#[test]
fn serve_under_load_keeps_serving_within_bounded_memory() {
    let Some(model) = chat_model() else {
        return;
    };
    let model_bytes = std::fs::metadata(&model).unwrap().len();
    let s = serve(&model);
    let (base, pid) = (s.base.clone(), s.child.id());
    let prompts = [
        "The capital of France is",
        "Once upon a time",
        "1, 2, 3, 4,",
        "Water is",
    ];
    let greedy = |p: &str, stream: bool| json!({"prompt": p, "max_tokens": 8, "temperature": 0, "stream": stream});
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| {
            post(&base, "/v1/completions", &greedy(p, false)).1["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(alone.iter().all(|t| !t.is_empty()), "{alone:?}");
    let (rss_before, _) = rss(pid);

    let (clients, per_client) = (16, 6);
    let mut peaks = Vec::new();
    for wave in 0..2 {
        let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let sampling = sampling.clone();
            std::thread::spawn(move || {
                let mut peak = 0;
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(rss(pid).0);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                peak
            })
        };
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                let (base, alone) = (base.clone(), alone.clone());
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    for r in 0..per_client {
                        let k = (c + r) % prompts.len();
                        let host = base.trim_start_matches("http://");
                        match (c + r + wave) % 6 {
                            0 | 1 => {
                                let got = streamed_text(&base, &greedy(prompts[k], true));
                                if got != alone[k] {
                                    errors.push(format!("stream {k}: {got:?} != {:?}", alone[k]));
                                }
                            }
                            2 | 3 => {
                                let (status, v) = post(&base, "/v1/completions", &greedy(prompts[k], false));
                                let got = v["choices"][0]["text"].as_str().unwrap_or("");
                                if status != 200 || got != alone[k] {
                                    errors.push(format!("{status} {k}: {got:?} != {:?}", alone[k]));
                                }
                            }
                            4 => {
                                let body = json!({"prompt": prompts[k], "max_tokens": 300, "stream": true,
                                                  "temperature": 1.0, "seed": r}).to_string();
                                let req = format!("POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                                let status = raw(&base, req.as_bytes(), true);
                                if status != 200 {
                                    errors.push(format!("left stream: status {status}"));
                                }
                            }
                            _ => {
                                let (req, want) = if r % 2 == 0 {
                                    (format!("POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{{\"prompt\": \"", 64 << 20), 413)
                                } else {
                                    (format!("POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 9\r\n\r\n{{\"messag\""), 400)
                                };
                                let status = raw(&base, req.as_bytes(), false);
                                if status != want {
                                    errors.push(format!("wanted {want}, got {status}"));
                                }
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        let errors: Vec<String> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        peaks.push(sampler.join().unwrap());
        assert!(
            errors.is_empty(),
            "wave {wave}: {} errors: {errors:#?}",
            errors.len()
        );
        assert_eq!(get(&base, "/health").0, 200, "healthy after wave {wave}");
    }
    let (_, hwm) = rss(pid);
    println!(
        "{clients} clients x {per_client} requests x 2 waves = {} requests, 0 errors; server RSS \
         {} MiB before, peaks {} / {} MiB, high-water {} MiB (model file {} MiB)",
        2 * clients * per_client,
        rss_before >> 20,
        peaks[0] >> 20,
        peaks[1] >> 20,
        hwm >> 20,
        model_bytes >> 20
    );
    // Bounded: the mapped model, 4 workers' sessions, the prefix cache (≤ 16 states of 4.4 MB),
    // buffers; a second wave of the same load does not grow it (no per-request leak).
    assert!(hwm < model_bytes + (256 << 20), "high-water RSS {hwm}");
    assert!(
        peaks[1] < peaks[0] + (32 << 20),
        "the second wave grew the RSS: {peaks:?}"
    );
    // And it still answers as it did alone.
    assert_eq!(streamed_text(&base, &greedy(prompts[0], true)), alone[0]);
}

#[test]
fn serve_on_wgpu_answers_as_on_the_cpu() {
    let Some(model) = smollm2_liger_f16() else {
        return;
    };
    if !wgpu_runs(env!("CARGO_BIN_EXE_liger")) {
        return;
    }
    let model = model.to_str().unwrap();
    let body = json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0});
    let answer = |backend: &str| {
        let s = serve_on(model, backend);
        let (status, v) = post(&s.base, "/v1/completions", &body);
        assert_eq!(status, 200, "{v}");
        assert_eq!(usage(&v, "completion_tokens"), 4, "{v}");
        v["choices"][0]["text"].as_str().unwrap().to_owned()
    };
    let (cpu, gpu) = (answer("cpu"), answer("wgpu"));
    assert_eq!(gpu, cpu, "greedy completion on wgpu vs the CPU");
}
