//! The connection layer of `liger serve`: our own accept loop over hyper 1 connections, so that
//! every resource a client can hold is bounded and every wait has a deadline.
//!
//! - open connections: at most `max_connections`; for one more, the connection idle the
//!   longest is closed (`connections.rs`), and only when all stay busy for a second is it
//!   answered 503 and closed. An `accept` error (EMFILE: out of descriptors) pauses accepting briefly,
//!   never ends it.
//! - request head: at most `max_header_bytes` (hyper answers 431 beyond), read within
//!   `read_timeout` (the connection is closed when it is not; the same deadline ends an idle
//!   keep-alive connection). The body's own limit (413) and deadline (408) are the router's.
//! - writing: a client that takes nothing for `write_timeout` while a response waits to be
//!   written is dropped; its answer is dropped with it and the scheduler frees its slot. At
//!   most 4 KiB wait unsent in the kernel for it (beyond what its receive window took).
//! - shutdown: accepting stops, in-flight answers finish up to `shutdown_grace`, then the
//!   scheduler ends what is left (streams get their last chunk and `[DONE]`).

use super::connections::Connections;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// What the connection layer allows a client (the `liger serve` flags).
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// What every connection's task shares.
struct Shared {
    http: hyper::server::conn::http1::Builder,
    router: axum::Router,
    limits: Limits,
    connections: Arc<Connections>,
    /// Turns true when the server shuts down.
    shutting_down: watch::Receiver<bool>,
}

/// How long a newcomer past the cap waits for a place before it is answered 503.
const ROOM_WAIT: Duration = Duration::from_secs(1);

/// How long an evicted connection has to close by itself (an idle keep-alive one closes at
/// once; one part-way through a request head, or flushing to a client that stopped reading, is
/// dropped after this).
const EVICTION_GRACE: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` resolves, then drains as the module says;
/// `end_answers` is called when the grace period is over.
pub(crate) async fn run(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    end_answers: impl FnOnce(),
) {
    let cap = limits.max_connections;
    let permits = Arc::new(Semaphore::new(cap));
    let (shut, shutting_down) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let shared = Arc::new(Shared {
        http,
        router,
        limits: limits.clone(),
        connections: Connections::new(),
        shutting_down,
    });
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors (or another passing error): wait for some to close.
                    tracing::warn!("accepting a connection: {e}; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(serve(Arc::clone(&shared), stream, permit));
            }
            Err(_) => {
                tokio::spawn(make_room(Arc::clone(&shared), Arc::clone(&permits), stream));
            }
        }
    }
    tracing::info!(
        "shutting down: no new connections; answers in flight have {:?} to finish",
        limits.shutdown_grace
    );
    let _ = shut.send(true);
    // Every connection closed: every permit back.
    let closed = permits.acquire_many(cap as u32);
    tokio::pin!(closed);
    if tokio::time::timeout(limits.shutdown_grace, &mut closed)
        .await
        .is_err()
    {
        tracing::info!("grace period over: the answers left end now");
        end_answers();
        let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
    }
}

/// A connection past the cap: idle connections are evicted for it, one at a time, until a
/// place is free (it waits its turn behind other newcomers); after [`ROOM_WAIT`] without one
/// (every connection busy), 503.
async fn make_room(shared: Arc<Shared>, permits: Arc<Semaphore>, stream: TcpStream) {
    let start = tokio::time::Instant::now();
    while start.elapsed() < ROOM_WAIT {
        shared.connections.evict_idlest();
        let waited = tokio::time::timeout(EVICTION_GRACE, Arc::clone(&permits).acquire_owned());
        if let Ok(Ok(permit)) = waited.await {
            return serve(shared, stream, permit).await;
        }
    }
    refuse(stream, shared.limits.write_timeout).await
}

/// One connection, from accepted to closed: HTTP/1.1 with keep-alive until the client leaves,
/// a deadline passes, it is evicted to make room, or the server shuts down.
async fn serve(shared: Arc<Shared>, stream: TcpStream, permit: OwnedSemaphorePermit) {
    let _ = stream.set_nodelay(true);
    bound_unsent_bytes(&stream);
    let registered = shared.connections.open();
    let service = shared
        .connections
        .tracked(shared.router.clone(), &registered);
    let io = TokioIo::new(WriteDeadline::new(stream, shared.limits.write_timeout));
    let connection = shared
        .http
        .serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut shutting_down = shared.shutting_down.clone();
    // Shutting down already (a newcomer that waited for room): it serves one request.
    let mut closing = *shutting_down.borrow_and_update();
    if closing {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!("connection ended: {e}");
                }
                break;
            }
            () = registered.connection.evict.notified(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
                let ended = tokio::time::timeout(EVICTION_GRACE, connection.as_mut()).await;
                if ended.is_ok() || !registered.connection.is_busy() {
                    break;
                }
                // A request began meanwhile: it finishes, then the connection closes.
            }
            _ = shutting_down.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
    drop(permit);
}

/// Bytes a connection may queue that the client has not taken into its receive window.
#[cfg(any(target_os = "linux", target_os = "android"))]
const UNSENT_BYTES: i32 = 4 << 10;

/// Makes the socket writable only while fewer than [`UNSENT_BYTES`] wait to be sent, so that a
/// client that stops reading stalls the writer at once (and meets the write deadline) instead
/// of the kernel growing the send buffer to megabytes for it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn bound_unsent_bytes(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt reads one int through a pointer to a live local, on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&UNSENT_BYTES as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!("TCP_NOTSENT_LOWAT: {}", io::Error::last_os_error());
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn bound_unsent_bytes(_: &TcpStream) {}

/// A connection beyond the cap: 503 and closed, without reading its request.
async fn refuse(mut stream: TcpStream, write_timeout: Duration) {
    let body = r#"{"error":{"message":"the server has too many open connections; try again","type":"server_error","code":503}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(write_timeout, stream.write_all(response.as_bytes())).await;
}

/// A socket whose writes fail with `TimedOut` once one has waited `limit` for the client to
/// take bytes (a reader that stopped reading); reads pass through.
struct WriteDeadline {
    stream: TcpStream,
    limit: Duration,
    /// Running while a write or flush is pending.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    fn new(stream: TcpStream, limit: Duration) -> WriteDeadline {
        WriteDeadline {
            stream,
            limit,
            stalled: None,
        }
    }

    /// Maps a pending write to an error once the deadline has passed.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
