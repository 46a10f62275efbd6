//! The open connections, so that room can be made: when the cap is reached, the connection
//! idle the longest — no request in progress: a keep-alive connection between requests, or
//! one that has not finished sending a request head — is closed for the newcomer (as nginx
//! reuses its idle keep-alive connections). Only when every connection is busy is the
//! newcomer answered 503. So a flood of idle connections cannot keep real clients out.

use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::Notify;

/// Every open connection, by id.
pub(crate) struct Connections {
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    epoch: Instant,
}

/// What is known of one open connection.
pub(crate) struct Connection {
    /// Requests in progress: from the head read to the response body done or dropped.
    busy: AtomicUsize,
    /// Milliseconds since `epoch` when the last request ended (or the connection opened).
    last_active: AtomicU64,
    /// Chosen to make room: told once.
    evicting: AtomicBool,
    /// Notified when the connection should close.
    pub evict: Notify,
}

impl Connection {
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0
    }
}

/// A connection's entry, removed on drop (when the connection's task ends).
pub(crate) struct Registered {
    connections: Arc<Connections>,
    id: u64,
    pub connection: Arc<Connection>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut open) = self.connections.open.lock() {
            open.remove(&self.id);
        }
    }
}

impl Connections {
    pub fn new() -> Arc<Connections> {
        Arc::new(Connections {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Registers a connection just accepted.
    pub fn open(self: &Arc<Self>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            busy: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now()),
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
        });
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, Arc::clone(&connection));
        }
        Registered {
            connections: Arc::clone(self),
            id,
            connection,
        }
    }

    /// Tells the connection idle the longest to close; false when every one is busy.
    pub fn evict_idlest(&self) -> bool {
        let Ok(open) = self.open.lock() else {
            return false;
        };
        let idlest = open
            .values()
            .filter(|c| !c.is_busy() && !c.evicting.load(Ordering::Relaxed))
            .min_by_key(|c| c.last_active.load(Ordering::Relaxed));
        match idlest {
            Some(c) => {
                c.evicting.store(true, Ordering::Relaxed);
                // `notify_one` keeps the word for a task not waiting yet.
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// The router for one connection, counting its requests in progress.
    pub fn tracked(self: &Arc<Self>, router: axum::Router, connection: &Registered) -> Tracked {
        Tracked {
            router,
            connections: Arc::clone(self),
            connection: Arc::clone(&connection.connection),
        }
    }
}

/// One request in progress on a connection; on drop the connection's last activity is now.
struct InProgress {
    connections: Arc<Connections>,
    connection: Arc<Connection>,
}

impl InProgress {
    fn new(connections: &Arc<Connections>, connection: &Arc<Connection>) -> InProgress {
        connection.busy.fetch_add(1, Ordering::AcqRel);
        InProgress {
            connections: Arc::clone(connections),
            connection: Arc::clone(connection),
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.connection
            .last_active
            .store(self.connections.now(), Ordering::Relaxed);
        self.connection.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router as one connection's service: a request is in progress until its response's
/// body is done or dropped (a stream counts as long as it runs).
#[derive(Clone)]
pub(crate) struct Tracked {
    router: axum::Router,
    connections: Arc<Connections>,
    connection: Arc<Connection>,
}

impl tower::Service<Request<Incoming>> for Tracked {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // axum's router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let in_progress = InProgress::new(&self.connections, &self.connection);
        let answered = tower::Service::call(&mut self.router, request);
        Box::pin(async move {
            let response = answered.await?;
            Ok(response.map(|body| {
                Body::new(Guarded {
                    body,
                    _in_progress: in_progress,
                })
            }))
        })
    }
}

/// A response body that keeps its request in progress while it lives.
struct Guarded {
    body: Body,
    _in_progress: InProgress,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
