//! `liger serve` put on a network: API keys and CORS (llama.cpp's server security tests,
//! ported), the limits every client meets (head size 431, body 413 / 415 / 408, open
//! connections: the idlest evicted past the cap, 503 when all are busy; idle and stalled
//! connections dropped), cancellation of a client that
//! leaves, and a graceful shutdown on SIGTERM.

mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

const CHAT: &str =
    r#"{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": 0}"#;

/// llama.cpp's `test_security.py`, ported: `/health` open, a missing or wrong key 401 (as
/// OpenAI answers it), the right key (Bearer or X-Api-Key) 200, 100 unauthenticated
/// completions of which none reaches the scheduler, CORS preflights answered for the allowed
/// origin only, a body that is not JSON 415.
#[test]
fn serve_keeps_out_who_has_no_key_and_answers_cors() {
    let Some(model) = chat_model() else {
        return;
    };
    let key = "sk-test-4f9c2";
    let s = serve_with(
        &model,
        &["--api-key", key, "--cors-origins", "http://allowed.example"],
    );
    let base = s.base.as_str();
    let bearer = format!("Bearer {key}");
    let json_type = ("Content-Type", "application/json");

    assert_eq!(exchange(base, "GET", "/health", &[], "").status, 200);
    let page = exchange(base, "GET", "/", &[], "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/v1/chat/completions"), "the chat page");

    for (headers, says) in [
        (vec![], "didn't provide"),
        (vec![("Authorization", "Bearer wrong-key")], "Incorrect"),
        (vec![("Authorization", key)], "didn't provide"), // no "Bearer "
        (vec![("X-Api-Key", "sk-test-4f9c")], "Incorrect"), // a prefix of the key
    ] {
        let a = exchange(base, "GET", "/v1/models", &headers, "");
        assert_eq!(a.status, 401, "{headers:?}: {}", a.body);
        let error = &a.json()["error"];
        assert_eq!(error["code"], "invalid_api_key", "{error}");
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    }
    let models = exchange(base, "GET", "/v1/models", &[("Authorization", &bearer)], "");
    assert_eq!(models.status, 200);
    let meta = &models.json()["data"][0]["meta"];
    assert!(
        meta["context_length"].is_null() && meta["state_bytes"].as_u64() > Some(0),
        "{meta}"
    );
    // On loopback, a request to another host name (DNS rebinding) is refused before the key.
    let with_host = |name: &str, path: &str| {
        let mut c = TcpStream::connect(host(base)).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: {name}\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        let _ = c.read_to_end(&mut raw);
        parse_answer(&raw).status
    };
    for host in ["evil.example", "evil.example:80", "127.0.0.1.nip.io"] {
        assert_eq!(with_host(host, "/v1/models"), 421, "Host: {host}");
    }
    for host in ["localhost:1", "[::1]:8080", "127.0.0.1"] {
        assert_eq!(with_host(host, "/health"), 200, "Host: {host}");
    }
    assert_eq!(
        exchange(base, "GET", "/v1/models", &[("X-Api-Key", key)], "").status,
        200
    );

    for i in 0..100 {
        let headers: &[(&str, &str)] = match i % 3 {
            0 => &[json_type],
            1 => &[json_type, ("Authorization", "Bearer nope")],
            _ => &[json_type, ("Authorization", "Basic c2stdGVzdA==")],
        };
        let path = if i % 2 == 0 {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        };
        let body = if i % 2 == 0 {
            CHAT
        } else {
            r#"{"prompt": "Hi", "max_tokens": 2}"#
        };
        assert_eq!(exchange(base, "POST", path, headers, body).status, 401);
    }
    assert_eq!(
        metric(base, key, "liger_jobs_total"),
        0.0,
        "an unauthenticated request was run"
    );
    assert_eq!(metric(base, key, "liger_unauthorized_total"), 100.0 + 4.0);

    let a = exchange(
        base,
        "POST",
        "/v1/chat/completions",
        &[json_type, ("Authorization", &bearer)],
        CHAT,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(metric(base, key, "liger_jobs_total"), 1.0);
    let a = exchange(
        base,
        "POST",
        "/v1/chat/completions",
        &[("Content-Type", "text/plain"), ("Authorization", &bearer)],
        CHAT,
    );
    assert_eq!(a.status, 415, "{}", a.body);

    // CORS: a preflight needs no key; the allowed origin gets its grant, another none.
    let preflight = |origin: &str| {
        exchange(
            base,
            "OPTIONS",
            "/v1/chat/completions",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
            ],
            "",
        )
    };
    let allowed = preflight("http://allowed.example");
    assert_eq!(allowed.status, 200, "{:?}", allowed.headers);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://allowed.example")
    );
    let methods = allowed.header("access-control-allow-methods").unwrap_or("");
    assert!(methods.contains("POST"), "{methods}");
    let headers = allowed
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(
        preflight("http://evil.example").header("access-control-allow-origin"),
        None
    );
    let a = exchange(
        base,
        "GET",
        "/v1/models",
        &[
            ("Origin", "http://allowed.example"),
            ("Authorization", &bearer),
        ],
        "",
    );
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("http://allowed.example")
    );
}

/// Every resource a client can hold is bounded and every wait has a deadline: a head with no
/// end (431, memory flat), a body larger than 1 MiB (413), a body that trickles (408), idle
/// connections (closed), connections beyond the cap (503; a new one succeeds once they
/// close), a streaming client that never reads (dropped, its sequence freed), a client that
/// leaves during prefill (its sequence freed).
#[test]
fn serve_bounds_what_a_client_can_hold() {
    let Some(model) = chat_model() else {
        return;
    };
    let s = serve_with(
        &model,
        &[
            "--read-timeout",
            "2",
            "--write-timeout",
            "2",
            "--max-connections",
            "24",
            "--max-header-bytes",
            "16384",
            // Short steps: a client that leaves is seen within one (~0.2 s here).
            "--step-tokens",
            "64",
        ],
    );
    let (base, pid) = (s.base.clone(), s.child.id());
    let base = base.as_str();

    // A 64 MiB header line with no end: refused once past the limit, memory unmoved.
    let (rss_before, _) = rss(pid);
    let mut stream = TcpStream::connect(host(base)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nX-Long: ")
        .unwrap();
    let line = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..64 {
        match stream.write_all(&line) {
            Ok(()) => sent += line.len(),
            Err(_) => break, // the server closed the connection
        }
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = parse_answer(&answer);
    assert_eq!(answer.status, 431, "after {sent} bytes of header");
    let (_, hwm) = rss(pid);
    assert!(
        hwm < rss_before + (64 << 20),
        "RSS {rss_before} -> high-water {hwm}"
    );

    // A body too large, a body that is not JSON, a body that stops coming.
    let big = format!(r#"{{"prompt": "{}"}}"#, "a".repeat(1 << 20));
    assert_eq!(
        exchange(base, "POST", "/v1/completions", &[], &big).status,
        413
    );
    let mut slow = TcpStream::connect(host(base)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    write!(
        slow,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"pro"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = parse_answer(&answer);
    assert_eq!(answer.status, 408, "{}", answer.body);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "408 after {:?}",
        start.elapsed()
    );

    // Past the cap, the connection idle the longest makes room; idle connections are closed
    // after the read deadline.
    let idle: Vec<TcpStream> = (0..24)
        .map(|_| {
            let c = TcpStream::connect(host(base)).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let newcomer = exchange(base, "GET", "/health", &[], "");
    assert_eq!(newcomer.status, 200, "{}", newcomer.body);
    for (i, mut c) in idle.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        assert_eq!(
            n,
            0,
            "an idle connection got {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        let closed = start.elapsed();
        if i == 0 {
            assert!(
                closed < Duration::from_millis(1500),
                "evicted after {closed:?}"
            );
        }
        assert!(
            closed < Duration::from_secs(3),
            "idle {i} closed after {closed:?}"
        );
    }
    // Past the cap with every connection busy (a body on its way): 503 within a second, then
    // 408s.
    let busy: Vec<TcpStream> = (0..24)
        .map(|_| {
            let mut c = TcpStream::connect(host(base)).unwrap();
            c.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
                .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let over = exchange(base, "GET", "/health", &[], "");
    assert_eq!(over.status, 503, "{}", over.body);
    for mut c in busy {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        assert_eq!(parse_answer(&answer).status, 408);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        exchange(base, "GET", "/health", &[], "").status,
        200,
        "a new connection after the flood"
    );

    // A streaming client that never reads: dropped within the write deadline (+1 s), its
    // sequence freed.
    let body = r#"{"prompt": "Once upon a time", "max_tokens": 1024, "temperature": 1.0, "seed": 3, "stream": true, "ignore_eos": true}"#;
    let stalled = stalled_stream(base, body);
    wait_active(base);
    let freed = wait_idle(base, Duration::from_secs(30));
    drop(stalled);
    let freed = freed.unwrap_or_else(|h| panic!("the stalled stream still holds a slot: {h}"));
    println!("stalled stream freed after {freed:?}");

    // Ten clients that leave 100 ms into ~33,000-token prefills: no job is left 1 s after the
    // last one closed, long before a prompt could have been fed (10 x ~33,000 tokens at 64
    // per step would take over 5,000 steps).
    let steps_before = metric(base, "", "liger_steps_total");
    let refused_before = metric(base, "", "liger_requests_total{status=\"4xx\"}");
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(3000);
    let body = json!({"prompt": long, "max_tokens": 8}).to_string();
    let leaving: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut c = TcpStream::connect(host(base)).unwrap();
            write!(
                c,
                "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            c
        })
        .collect();
    wait_active(base);
    std::thread::sleep(Duration::from_millis(100));
    drop(leaving);
    let freed = wait_idle(base, Duration::from_secs(1))
        .unwrap_or_else(|h| panic!("1 s after the clients left: {h}"));
    let steps = metric(base, "", "liger_steps_total") - steps_before;
    println!("10 clients gone during prefill: every slot free {freed:?} after, {steps} steps");
    assert!(
        steps <= 10.0,
        "{steps} steps: the prefills went on after their clients left"
    );
    // Each counted (and logged) as a client that left: 499.
    let left = metric(base, "", "liger_requests_total{status=\"4xx\"}") - refused_before;
    assert!(left >= 10.0, "{left} requests counted as left");
}

/// SIGTERM during a stream: no new connections, the stream ends with its last chunk and
/// `[DONE]` once the grace period is over, the process exits cleanly.
#[test]
fn serve_shuts_down_gracefully_on_sigterm() {
    let Some(model) = chat_model() else {
        return;
    };
    let mut s = serve_with(&model, &["--shutdown-grace", "1"]);
    let base = s.base.clone();
    let mut stream = TcpStream::connect(host(&base)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = r#"{"prompt": "Once upon a time", "max_tokens": 100000, "temperature": 1.0, "seed": 1, "stream": true, "ignore_eos": true}"#;
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 256];
    let n = stream.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // SAFETY: kill sends a signal to our own child's pid.
    assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) }, 0);
    let start = Instant::now();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("data: [DONE]"),
        "the stream ended without [DONE]: ...{}",
        &rest[rest.len().saturating_sub(300)..]
    );
    assert!(
        rest.contains(r#""finish_reason":"cancelled""#),
        "no last chunk with a finish reason"
    );
    let status = s.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        start.elapsed()
    );
    assert!(
        TcpStream::connect(host(&base)).is_err(),
        "still accepting after shutdown"
    );
}
