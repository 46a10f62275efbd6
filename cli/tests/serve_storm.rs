//! `liger serve` under hostile crowds, as the bar of the server's issue sets them: slow and
//! stalled clients beside normal ones, and a flood of idle connections under a low descriptor
//! limit. What is measured is printed; what must hold is asserted.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::*;

/// The tests here measure times: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a normal client asks: 32 greedy tokens.
const NORMAL: &str = r#"{"prompt": "The capital of France is", "max_tokens": 32, "temperature": 0, "ignore_eos": true}"#;

/// One normal request on its own connection: its time, or the failure.
fn normal_request(base: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let a = exchange(
        base,
        "POST",
        "/v1/completions",
        &[("Content-Type", "application/json")],
        NORMAL,
    );
    if a.status != 200 {
        return Err(format!("{}: {}", a.status, a.body));
    }
    Ok(start.elapsed())
}

/// One normal request: when it started (from `epoch`) and how long it took.
type Timed = (Duration, Duration);

/// Four normal clients, each making requests one after another until `stop` (or `rounds` each):
/// every request timed, and every failure.
fn normal_clients(
    base: &str,
    rounds: usize,
    stop: &Arc<AtomicBool>,
    epoch: Instant,
) -> (Vec<Timed>, Vec<String>) {
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (base, stop) = (base.to_owned(), Arc::clone(stop));
            thread::spawn(move || {
                let (mut times, mut failures) = (Vec::new(), Vec::new());
                for _ in 0..rounds {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let started = epoch.elapsed();
                    match normal_request(&base) {
                        Ok(t) => times.push((started, t)),
                        Err(e) => failures.push(e),
                    }
                }
                (times, failures)
            })
        })
        .collect();
    let (mut times, mut failures) = (Vec::new(), Vec::new());
    for c in clients {
        let (t, f) = c.join().unwrap();
        times.extend(t);
        failures.extend(f);
    }
    (times, failures)
}

/// The median and the largest of some requests' times.
fn median_max(times: &[Timed]) -> (Duration, Duration) {
    let mut t: Vec<Duration> = times.iter().map(|t| t.1).collect();
    t.sort();
    (t[t.len() / 2], t[t.len() - 1])
}

/// Polls `/health` every 50 ms until `stop`: each answer's time (a failure counts as forever).
fn health_poller(base: &str, stop: &Arc<AtomicBool>) -> thread::JoinHandle<Vec<Duration>> {
    let (base, stop) = (base.to_owned(), Arc::clone(stop));
    thread::spawn(move || {
        let mut times = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            let ok = exchange(&base, "GET", "/health", &[], "").status == 200;
            times.push(if ok { start.elapsed() } else { Duration::MAX });
            thread::sleep(Duration::from_millis(50));
        }
        times.sort();
        times
    })
}

/// A client that sends a request head and then its 1000-byte body one byte every 2 s: the
/// time from the head to the server's answer, and that answer's status.
fn trickler(base: &str) -> thread::JoinHandle<(Duration, u16)> {
    let base = base.to_owned();
    thread::spawn(move || {
        let mut c = TcpStream::connect(host(&base)).unwrap();
        c.write_all(
            b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{",
        )
        .unwrap();
        let start = Instant::now();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if !answer.is_empty() {
                        break;
                    }
                    assert!(start.elapsed() < Duration::from_secs(60), "never answered");
                    if c.write_all(b" ").is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        (start.elapsed(), parse_answer(&answer).status)
    })
}

/// The scheduler's sequences every 100 ms until `stop`: (time, active, lagging).
fn sequence_sampler(
    base: &str,
    stop: &Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<(Duration, u64, u64)>> {
    let (base, stop) = (base.to_owned(), Arc::clone(stop));
    thread::spawn(move || {
        let start = Instant::now();
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let h = health(&base);
            let n = |k: &str| h[k].as_u64().unwrap_or(0);
            samples.push((start.elapsed(), n("active"), n("lagging")));
            thread::sleep(Duration::from_millis(100));
        }
        samples
    })
}

/// 50 clients trickle request bodies and 20 stream 1024 tokens without reading, while 4
/// normal clients run. `/health` answers (p99 < 1 s); the normal clients see no failure; every
/// trickler gets its 408 within the read deadline + 1 s; every stalled stream is dropped and its
/// slot freed (each within the write deadline of its socket filling: `serve_limits.rs`).
///
/// A stalled stream cannot be told from a slow reader until the socket's buffers fill (here
/// ~50 tokens), and on a CPU a step over 24 sequences costs several times a step over 4 (the
/// products are compute-bound at this size): until then a normal request gets its fair share
/// of the steps, no less (at most twice its time alone × 24 / 4); once the stalled streams are
/// gone, at most 1.5 × its time alone.
#[test]
fn serve_stays_fair_beside_slow_and_stalled_clients() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(model) = chat_model() else {
        return;
    };
    let (read_timeout, write_timeout) = (4u64, 3u64);
    let s = serve_with(
        &model,
        &[
            "--parallel",
            "32",
            "--read-timeout",
            &read_timeout.to_string(),
            "--write-timeout",
            &write_timeout.to_string(),
        ],
    );
    let base = s.base.as_str();
    normal_request(base).unwrap(); // warm

    let epoch = Instant::now();
    let never = Arc::new(AtomicBool::new(false));
    let (alone, failures) = normal_clients(base, 3, &never, epoch);
    assert!(failures.is_empty(), "{failures:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let polls = health_poller(base, &stop);
    let sampler = sequence_sampler(base, &stop);
    let storm = epoch.elapsed();
    let tricklers: Vec<_> = (0..50).map(|_| trickler(base)).collect();
    let stalled_body = r#"{"prompt": "Once upon a time", "max_tokens": 1024, "temperature": 1.0, "seed": 3, "stream": true, "ignore_eos": true}"#;
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| stalled_stream(base, stalled_body))
        .collect();
    let normal_stop = Arc::new(AtomicBool::new(false));
    let normal = {
        let (base, normal_stop) = (base.to_owned(), Arc::clone(&normal_stop));
        thread::spawn(move || normal_clients(&base, usize::MAX, &normal_stop, epoch))
    };
    let answered: Vec<(Duration, u16)> = tricklers.into_iter().map(|t| t.join().unwrap()).collect();
    // Until the stalled streams are gone: no more than the 4 normal sequences (90 s at most).
    let freed = loop {
        let h = health(base);
        if h["active"].as_u64().is_some_and(|n| n <= 4) && h["lagging"] == 0 {
            break epoch.elapsed();
        }
        assert!(
            epoch.elapsed() - storm < Duration::from_secs(90),
            "the stalled streams still hold their slots: {h}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    // Some requests of the normal clients after the crowd.
    thread::sleep(Duration::from_secs(4));
    normal_stop.store(true, Ordering::Relaxed);
    let (times, failures) = normal.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let health_times = polls.join().unwrap();
    let samples = sampler.join().unwrap();
    drop(stalled);

    let (during, after): (Vec<Timed>, Vec<Timed>) = times.into_iter().partition(|t| t.0 < freed);
    let (alone_median, alone_max) = median_max(&alone);
    let (during_median, during_max) = median_max(&during);
    let (after_median, after_max) = median_max(&after);
    let ratio = |t: Duration| t.as_secs_f64() / alone_median.as_secs_f64();
    println!(
        "normal request (32 tokens): alone median {alone_median:?} max {alone_max:?}; beside the \
         crowd median {during_median:?} ({:.2}x) max {during_max:?} ({} requests); after it median \
         {after_median:?} ({:.2}x) max {after_max:?} ({} requests)",
        ratio(during_median),
        during.len(),
        ratio(after_median),
        after.len()
    );
    let most_lagging = samples.iter().map(|s| s.2).max().unwrap_or(0);
    println!(
        "stalled streams: all gone {:?} into the crowd (most paused at once: {most_lagging})",
        freed - storm
    );
    let p99 = health_times[(health_times.len() * 99 / 100).min(health_times.len() - 1)];
    println!(
        "/health: {} polls, p99 {p99:?}, max {:?}",
        health_times.len(),
        health_times.last().unwrap()
    );
    assert!(failures.is_empty(), "normal clients failed: {failures:?}");
    assert!(p99 < Duration::from_secs(1), "/health p99 {p99:?}");
    assert!(
        ratio(during_median) <= 2.0 * 24.0 / 4.0,
        "beside the crowd a normal request took {:.2}x its time alone: less than its fair share",
        ratio(during_median)
    );
    assert!(
        !after.is_empty() && ratio(after_median) <= 1.5,
        "after the crowd a normal request took {:.2}x its time alone",
        ratio(after_median)
    );

    let slowest = answered.iter().map(|a| a.0).max().unwrap();
    println!("tricklers: all answered within {slowest:?} of their heads");
    for (took, status) in &answered {
        assert_eq!(*status, 408, "a trickler got {status} after {took:?}");
        assert!(
            *took < Duration::from_secs(read_timeout + 1),
            "a trickler answered after {took:?}"
        );
    }
}

/// A client that reads its stream slowly (256 bytes every 100 ms, slower than the model
/// writes) never stalls a write for the write deadline, but its sequence is paused while it
/// lags and resumes as it reads: the server decodes about as fast as the client reads, not
/// ahead of it.
#[test]
fn serve_paces_a_stream_to_a_slow_reader() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(model) = chat_model() else {
        return;
    };
    // A receive buffer made small after the connection opened reopens its window in bursts,
    // seconds apart: a write deadline longer than those.
    let s = serve_with(&model, &["--write-timeout", "15"]);
    let base = s.base.as_str();
    let steps_before = metric(base, "", "liger_steps_total");
    let body = r#"{"prompt": "Once upon a time", "max_tokens": 1000, "temperature": 1.0, "seed": 5, "stream": true, "ignore_eos": true}"#;
    let mut reader = stalled_stream(base, body);
    reader
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let start = Instant::now();
    let (mut got, mut pauses, mut resumes, mut lagging_before) = (Vec::new(), 0, 0, 0);
    let mut buf = [0u8; 256];
    while start.elapsed() < Duration::from_secs(8) {
        let n = reader.read(&mut buf).expect("the slow reader was dropped");
        assert!(
            n > 0,
            "the stream ended early after {:?}: {}",
            start.elapsed(),
            String::from_utf8_lossy(&got[got.len().saturating_sub(600)..])
        );
        got.extend_from_slice(&buf[..n]);
        thread::sleep(Duration::from_millis(100));
        let lagging = health(base)["lagging"].as_u64().unwrap();
        match (lagging_before, lagging) {
            (0, 1) => pauses += 1,
            (1, 0) => resumes += 1,
            _ => {}
        }
        lagging_before = lagging;
    }
    let steps = metric(base, "", "liger_steps_total") - steps_before;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let events = text.matches("data: ").count() as f64;
    println!(
        "slow reader: {pauses} pauses, {resumes} resumes in 8 s; {events} events read, {steps} steps decoded"
    );
    assert!(
        pauses >= 1 && resumes >= 1,
        "{pauses} pauses, {resumes} resumes"
    );
    assert!(
        steps <= events + 96.0,
        "{steps} steps for a client that read {events} events: decoded far ahead of it"
    );
}

/// Raises this process's own descriptor limit as far as it may go: the soft limit now.
fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit / setrlimit read and write one `rlimit` through a pointer to a local.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur as u64
}

/// A flood against a server under `ulimit -n 1024`: 2,000 idle connections and a 256 MiB
/// header with no line end, while 4 normal clients run. The server's memory grows by less
/// than 64 MiB, the normal clients see no failure (idle connections make room for them), and
/// a new connection succeeds afterwards.
#[test]
fn serve_outlasts_a_flood_of_idle_connections() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(model) = chat_model() else {
        return;
    };
    let own_limit = raise_descriptor_limit();
    let flood = 2000.min(own_limit.saturating_sub(200) as usize);
    if flood < 2000 {
        println!("this process may open {own_limit} files: a flood of {flood}");
    }
    let s = serve_with_descriptor_limit(&model, &["--read-timeout", "10"], 1024);
    let (base, pid) = (s.base.as_str(), s.child.id());
    for _ in 0..3 {
        normal_request(base).unwrap(); // warm: the scratch memory of a step
    }
    let (rss_before, _) = rss(pid);

    let epoch = Instant::now();
    let normal_stop = Arc::new(AtomicBool::new(false));
    let normal = {
        let (base, normal_stop) = (base.to_owned(), Arc::clone(&normal_stop));
        thread::spawn(move || normal_clients(&base, usize::MAX, &normal_stop, epoch))
    };
    // The header: refused at the head limit, whatever follows.
    let header = {
        let base = base.to_owned();
        thread::spawn(move || {
            let mut c = TcpStream::connect(host(&base)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            c.write_all(b"GET /health HTTP/1.1\r\nX-Flood: ").unwrap();
            let line = vec![b'a'; 1 << 20];
            let mut sent = 0usize;
            for _ in 0..256 {
                match c.write_all(&line) {
                    Ok(()) => sent += line.len(),
                    Err(_) => break,
                }
            }
            let mut answer = Vec::new();
            let _ = c.read_to_end(&mut answer);
            (parse_answer(&answer).status, sent)
        })
    };
    let mut idle = Vec::with_capacity(flood);
    let mut refused = 0;
    for _ in 0..flood {
        match TcpStream::connect(host(base)) {
            Ok(c) => idle.push(c),
            Err(_) => refused += 1,
        }
    }
    let opened = epoch.elapsed();
    thread::sleep(Duration::from_secs(3));
    let (status, sent) = header.join().unwrap();
    let (_, high_water) = rss(pid);
    normal_stop.store(true, Ordering::Relaxed);
    let (times, failures) = normal.join().unwrap();
    let fresh = exchange(base, "GET", "/health", &[], "");
    // How many of the flood's connections the server still holds.
    let mut still_open = 0;
    for c in &idle {
        c.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        if matches!((&*c).read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock) {
            still_open += 1;
        }
    }
    drop(idle);
    let (median, max) = median_max(&times);
    println!(
        "flood: {flood} connections opened in {opened:?} ({refused} refused by the kernel), {still_open} \
         still open 3 s later; the 256 MiB header: {status} after {} MiB sent; RSS {} -> high-water {} MiB; \
         normal clients: {} requests, median {median:?}, max {max:?}, {} failures",
        sent >> 20,
        rss_before >> 20,
        high_water >> 20,
        times.len(),
        failures.len()
    );
    assert_eq!(status, 431, "the endless header");
    assert!(failures.is_empty(), "normal clients failed: {failures:?}");
    assert!(
        high_water < rss_before + (64 << 20),
        "RSS {rss_before} -> high-water {high_water}"
    );
    assert_eq!(
        fresh.status, 200,
        "a new connection after the flood: {}",
        fresh.body
    );
}
