//! Raw HTTP for the `liger serve` tests: requests written and answers read off the socket (for
//! what an HTTP client will not do: a stalled reader, a trickled body, a closed connection),
//! and the server's own view of itself (`/health`, `/metrics`).

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// An answer read off the wire.
pub struct Answer {
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

pub fn host(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// One request on its own connection (`Connection: close`), read to the end.
pub fn exchange(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = TcpStream::connect(host(base)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        host(base)
    );
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    if !body.is_empty() || method == "POST" {
        request += &format!("Content-Length: {}\r\n", body.len());
    }
    request += "\r\n";
    request += body;
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_answer(&raw)
}

pub fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // A chunked body joined (enough for these small answers).
    let body = if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out += &after[..n];
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// A value of `/metrics` (`key`: the server's API key, or "" for none).
pub fn metric(base: &str, key: &str, name: &str) -> f64 {
    let auth = format!("Bearer {key}");
    let headers: &[(&str, &str)] = if key.is_empty() {
        &[]
    } else {
        &[("Authorization", &auth)]
    };
    let a = exchange(base, "GET", "/metrics", headers, "");
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{}", a.body))
}

pub fn health(base: &str) -> Value {
    exchange(base, "GET", "/health", &[], "").json()
}

/// Waits up to `limit` for the scheduler to have no sequence and no waiting request.
pub fn wait_idle(base: &str, limit: Duration) -> Result<Duration, Value> {
    let start = Instant::now();
    loop {
        let h = health(base);
        if h["active"] == 0 && h["waiting"] == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(h);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to 30 s) until a sequence is running.
pub fn wait_active(base: &str) {
    let start = Instant::now();
    while health(base)["active"] == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no sequence started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Opens a streamed completion and reads nothing; the socket's receive buffer is made small
/// before it connects (so that the window it offers stays small) and the server's writes
/// stall soon.
pub fn stalled_stream(base: &str, body: &str) -> TcpStream {
    let stream = connect_with_receive_buffer(base, 4096);
    let mut s = &stream;
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
}

/// A connection to `base` (an IPv4 address) whose receive buffer is `bytes`, set before the
/// handshake: set later, the window already offered stays large.
pub fn connect_with_receive_buffer(base: &str, bytes: i32) -> TcpStream {
    use std::os::fd::FromRawFd;
    let addr: std::net::SocketAddrV4 = host(base).parse().expect("an IPv4 address");
    // SAFETY: plain socket calls on a descriptor this function owns until it is handed to
    // TcpStream; the option and address structs are live locals of the sizes given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
        assert_eq!(rc, 0);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(addr.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}
