//! What the `liger serve` tests share: a server started on a free port (killed on drop) and
//! small HTTP helpers.
#![allow(dead_code)]

mod wire;

#[allow(unused_imports)]
pub use wire::*;

use liger_tests::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

/// A running `liger serve`, killed on drop.
pub struct Served {
    pub child: Child,
    pub base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(model: &str) -> Served {
    serve_on(model, "auto")
}

pub fn serve_on(model: &str, backend: &str) -> Served {
    serve_with(model, &["--backend", backend])
}

pub fn serve_with(model: &str, args: &[&str]) -> Served {
    serve_command(model, args, Command::new(env!("CARGO_BIN_EXE_liger")))
}

/// A server whose process may open at most `descriptors` files (`ulimit -n`).
#[cfg(unix)]
pub fn serve_with_descriptor_limit(model: &str, args: &[&str], descriptors: u64) -> Served {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_liger"));
    // SAFETY: between fork and exec only setrlimit runs (async-signal-safe), on a local.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: descriptors as libc::rlim_t,
                rlim_max: descriptors as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    serve_command(model, args, command)
}

fn serve_command(model: &str, args: &[&str], mut command: Command) -> Served {
    let mut child = command
        .args(["serve", "-m", model, "--port", "0"])
        .args(if args.contains(&"--parallel") {
            &[][..]
        } else {
            &["--parallel", "4"][..]
        })
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        if let Some(rest) = line.split(" on http://").nth(1) {
            break format!("http://{}", rest.split(' ').next().unwrap());
        }
    };
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || lines.for_each(drop));
    Served { child, base }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// POSTs `body` (JSON) to `path`: (status, JSON answer).
pub fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let mut r = agent()
        .post(format!("{base}{path}"))
        .send_json(body)
        .unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap())
}

pub fn get(base: &str, path: &str) -> (u16, Value) {
    let mut r = agent().get(format!("{base}{path}")).call().unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap())
}

pub fn usage(v: &Value, key: &str) -> u64 {
    v["usage"][key]
        .as_u64()
        .or_else(|| v["usage"]["prompt_tokens_details"][key].as_u64())
        .unwrap_or_else(|| panic!("no usage.{key} in {v}"))
}

/// SmolLM2 as a liger Q8_0 file, converted once per test-data cache.
pub fn chat_model() -> Option<String> {
    Some(smollm2_liger_q8_0()?.to_str().unwrap().to_owned())
}

/// The server's resident set now and at its peak (VmRSS, VmHWM), in bytes.
pub fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb << 10)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A raw HTTP exchange (for what ureq will not send): the status line's code, or 0.
pub fn raw(base: &str, request: &[u8], read_some_then_leave: bool) -> u16 {
    use std::io::Write;
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut buf = vec![0u8; if read_some_then_leave { 200 } else { 4096 }];
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        if !read_some_then_leave && buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf[..got]);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Whether the official openai Python client is installed (required in CI).
pub fn has_openai() -> bool {
    let has = Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(
            std::env::var_os("CI").is_none(),
            "the openai Python package is required in CI"
        );
        eprintln!("SKIPPED: the openai Python client (pip install openai)");
    }
    has
}

/// Runs `tests/python/<script> ARGS...`; fails with its output, else returns it.
pub fn python_script(script: &str, args: &[&str]) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script}: {said}");
    said
}
