//! The HTTP surface of `liger serve`: the routes, who may use them (API keys, CORS), the
//! request body's limits, and errors as OpenAI writes them.
//!
//! Layers, outermost first: CORS (answers a preflight itself, so it needs no key), the access
//! log, then per route: `/health` and the chat page `/` open; the API and `/metrics` behind the
//! key check.

use super::completion;
use super::Server;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use futures_util::StreamExt;
use liger::openai::{ApiError, MAX_BODY};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// An [`ApiError`] answered as OpenAI answers it: its status and `{"error": {...}}`.
pub(crate) struct Refused(pub ApiError);

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Refused {
        Refused(e)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0.body())).into_response()
    }
}

/// Who may come in: the API keys (none: everyone) and the origins a browser may call from.
#[derive(Clone, Default)]
pub(crate) struct Access {
    pub keys: Vec<String>,
    /// `*` for any origin; empty for none (no CORS headers at all).
    pub cors_origins: Vec<String>,
}

/// The router over `server`.
pub(crate) fn router(server: Arc<Server>) -> anyhow::Result<Router> {
    let origins = server.access.cors_origins.clone();
    let json_only = |route: MethodRouter<Arc<Server>>| route.fallback(method_not_allowed);
    let api = Router::new()
        .route("/v1/chat/completions", json_only(post(completion::chat)))
        .route("/v1/completions", json_only(post(completion::text)))
        .route("/v1/models", json_only(get(models)))
        .route("/metrics", json_only(get(metrics)))
        .route("/tokenize", json_only(post(tokenize)))
        .route("/detokenize", json_only(post(detokenize)))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&server),
            authorize,
        ));
    let mut router = Router::new()
        .route("/", get(page).fallback(method_not_allowed))
        .route("/health", get(health).fallback(method_not_allowed))
        .merge(api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&server),
            loopback_host,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&server),
            access_log,
        ))
        .with_state(server);
    if !origins.is_empty() {
        router = router.layer(cors(&origins)?);
    }
    Ok(router)
}

fn cors(origins: &[String]) -> anyhow::Result<CorsLayer> {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/'))
                    .map_err(|_| anyhow::anyhow!("--cors-origins: {o:?} is not an origin"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("x-api-key"),
        ])
        .max_age(Duration::from_secs(600)))
}

/// The key check: `Authorization: Bearer KEY` (or `X-Api-Key: KEY`), compared in constant
/// time; 401 as OpenAI answers it otherwise.
async fn authorize(State(server): State<Arc<Server>>, request: Request, next: Next) -> Response {
    if server.access.keys.is_empty() {
        return next.run(request).await;
    }
    let headers = request.headers();
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let known = presented.is_some_and(|p| {
        // Every key compared (no early exit on a match), each in constant time.
        server.access.keys.iter().fold(false, |hit, k| {
            hit | bool::from(k.as_bytes().ct_eq(p.as_bytes()))
        })
    });
    if known {
        return next.run(request).await;
    }
    server.metrics.unauthorized();
    let message = if presented.is_some() {
        "Incorrect API key provided."
    } else {
        "You didn't provide an API key: send it as `Authorization: Bearer KEY`."
    };
    let body = json!({"error": {"message": message, "type": "invalid_request_error",
                                "param": null, "code": "invalid_api_key"}});
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// What a completion tells the access log (set on the response by its handler; a stream logs
/// its own line when it ends).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Served {
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub first_token: Option<Duration>,
    /// The answer is a stream that logs when it ends.
    pub streamed: bool,
}

/// A server on loopback answers only requests addressed to a loopback name: a web page the
/// user visits cannot reach it through a DNS name rebound to 127.0.0.1 (421 otherwise). A
/// server on another address (`--host 0.0.0.0`) takes any Host: guard it with a key.
async fn loopback_host(
    State(server): State<Arc<Server>>,
    request: Request,
    next: Next,
) -> Response {
    if server.loopback_only {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        let loopback = name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Refused(ApiError {
                status: 421,
                message: format!(
                    "this server listens on loopback and answers only requests to a loopback host, not {host:?}"
                ),
            })
            .into_response();
        }
    }
    next.run(request).await
}

/// One line per request: method, path, status, tokens, time to first token and in all.
async fn access_log(State(server): State<Arc<Server>>, request: Request, next: Next) -> Response {
    let (method, path, start) = (
        request.method().clone(),
        request.uri().path().to_owned(),
        Instant::now(),
    );
    let mut unanswered = Unanswered {
        server: Arc::clone(&server),
        method: method.clone(),
        path: path.clone(),
        start,
    };
    let response = next.run(request).await;
    unanswered.path.clear(); // answered
    server.metrics.answered(response.status().as_u16());
    let served = response.extensions().get::<Served>().copied();
    if !served.is_some_and(|s| s.streamed) {
        log_request(
            &method,
            &path,
            response.status().as_u16(),
            served,
            start.elapsed(),
        );
    }
    response
}

/// A request whose client leaves before its answer is ready (the handler is dropped): logged
/// as nginx does, 499.
struct Unanswered {
    server: Arc<Server>,
    method: Method,
    /// Emptied once the answer is ready.
    path: String,
    start: Instant,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if !self.path.is_empty() {
            self.server.metrics.answered(CLIENT_LEFT);
            tracing::info!(
                "{} {} {CLIENT_LEFT} (the client left before the answer): {:.0} ms",
                self.method,
                self.path,
                self.start.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}

/// The status logged for a request whose client left (nginx's).
pub(crate) const CLIENT_LEFT: u16 = 499;

pub(crate) fn log_request(
    method: &Method,
    path: &str,
    status: u16,
    served: Option<Served>,
    total: Duration,
) {
    match served {
        Some(s) => tracing::info!(
            "{method} {path} {status}: {} prompt tokens ({} cached), {} generated, first token {}, {:.0} ms",
            s.prompt_tokens,
            s.cached_tokens,
            s.completion_tokens,
            s.first_token
                .map(|t| format!("{:.0} ms", t.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "-".into()),
            total.as_secs_f64() * 1e3
        ),
        None => tracing::info!("{method} {path} {status}: {:.0} ms", total.as_secs_f64() * 1e3),
    }
}

/// The scheduler's real state: 503 with the reason once it is gone.
async fn health(State(server): State<Arc<Server>>) -> Response {
    let status = server.scheduler.status();
    match status.gone {
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "error", "reason": reason})),
        )
            .into_response(),
        None => axum::Json(json!({
            "status": "ok",
            "active": status.active,
            "waiting": status.waiting,
            "lagging": status.lagging,
            "slots": server.slots,
        }))
        .into_response(),
    }
}

/// The one model served, with what a client may want to know of it: no context limit (the
/// state has a fixed size), the state's bytes, the backend.
async fn models(State(server): State<Arc<Server>>) -> axum::Json<Value> {
    let c = &server.model.config;
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": server.name, "object": "model", "created": 0, "owned_by": "liger",
            "meta": {
                "architecture": format!("liger-{:?}", c.variant).to_lowercase(),
                "context_length": null,
                "trained_context_length": c.context_length,
                "state_bytes": server.model.state_bytes(),
                "n_vocab": c.vocab_size,
                "n_layers": c.n_layers,
                "n_embd": c.hidden,
                "backend": server.backend,
                "slots": server.slots,
                "untrained_linearization": c.untrained,
            },
        }],
    }))
}

/// The chat page (`page.html`, in the binary): open, since it holds nothing; it asks for the
/// key when the API answers 401.
async fn page() -> Response {
    let policy = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'";
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, policy),
        ],
        include_str!("page.html"),
    )
        .into_response()
}

async fn metrics(State(server): State<Arc<Server>>) -> Response {
    let text = server.metrics.render(&server.scheduler);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// llama-server's `POST /tokenize`: `{"content": TEXT, "add_special": bool}` → `{"tokens"}`.
async fn tokenize(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<Value>, Refused> {
    let body = json_object(&json_body(&headers, body, server.read_timeout).await?)?;
    let Some(text) = body.get("content").and_then(Value::as_str) else {
        return Err(ApiError::bad_request("'content' must be a string").into());
    };
    let add_special = body
        .get("add_special")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let tokens = server
        .tokenizer()
        .encode(text, add_special)
        .map_err(|e| ApiError::bad_request(format!("tokenizing: {e}")))?;
    Ok(axum::Json(json!({"tokens": tokens})))
}

/// llama-server's `POST /detokenize`: `{"tokens": [ids]}` → `{"content"}`.
async fn detokenize(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<Value>, Refused> {
    let body = json_object(&json_body(&headers, body, server.read_timeout).await?)?;
    let vocab = server.model.config.vocab_size;
    let tokens = body
        .get("tokens")
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter()
                .map(|v| {
                    v.as_u64()
                        .filter(|&id| (id as usize) < vocab)
                        .map(|id| id as u32)
                })
                .collect::<Option<Vec<u32>>>()
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "'tokens' must be an array of token ids below {vocab}"
            ))
        })?;
    let content = server
        .tokenizer()
        .decode(&tokens, false)
        .map_err(|e| ApiError::bad_request(format!("detokenizing: {e}")))?;
    Ok(axum::Json(json!({"content": content})))
}

fn json_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
    }
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Refused {
    Refused(ApiError {
        status: 404,
        message: format!("no route {method} {}", uri.path()),
    })
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Refused {
    Refused(ApiError {
        status: 405,
        message: format!("{method} is not allowed on {}", uri.path()),
    })
}

/// A body refused for its size is still read (and dropped) up to this many bytes, so that
/// its client, still sending, reads the 413 instead of a reset (a lingering close, as nginx's);
/// beyond it the connection is closed.
const DISCARD_LIMIT: usize = 16 << 20;

/// A POST's JSON body: at most [`MAX_BODY`] bytes (413), all of it within `deadline` (408);
/// a body declared as something other than JSON is refused (415) — so a browser on another
/// origin cannot send one without a CORS preflight.
pub(crate) async fn json_body(
    headers: &HeaderMap,
    body: Body,
    deadline: Duration,
) -> Result<Vec<u8>, ApiError> {
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        let essence = kind
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" {
            return Err(ApiError {
                status: 415,
                message: format!(
                    "the body must be JSON (Content-Type: application/json), not {:?}",
                    kind.to_str().unwrap_or("?")
                ),
            });
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DISCARD_LIMIT as u64) {
        return Err(ApiError::too_large());
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        let mut seen = 0;
        let mut too_large = declared.is_some_and(|n| n > MAX_BODY as u64);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(_) if too_large => break,
                Err(e) => return Err(ApiError::bad_request(format!("reading the body: {e}"))),
            };
            seen += chunk.len();
            too_large |= seen > MAX_BODY;
            if too_large && seen > DISCARD_LIMIT {
                break;
            }
            if !too_large {
                bytes.extend_from_slice(&chunk);
            }
        }
        if too_large {
            return Err(ApiError::too_large());
        }
        Ok(bytes)
    };
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| ApiError {
            status: 408,
            message: format!("the body did not arrive within {deadline:?}"),
        })?
}
