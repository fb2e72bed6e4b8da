//! The API listener and its access rules, for every route it carries (WANDA API, Kubo RPC,
//! `/ipfs/` reads, the page).
//!
//! - Loopback by default. Any other address needs `[api] token`: then every changing request
//!   (adding, pinning, connecting, starting a capture) must carry `Authorization: Bearer
//!   <token>`, while reads (GETs, the RPC's reads of content by CID, `id`, `version`) stay
//!   public, as a gateway's are. A configured token is enforced on loopback too.
//! - Browsers: a request with an `Origin` header that changes something is refused unless it
//!   comes from the daemon's own page (same origin) or a `[api] cors_origins` entry, so a web
//!   page elsewhere cannot drive the node (Kubo's API checks Origin for the same reason).
//!   Listed origins get CORS headers and preflight answers; nobody else does.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use libp2p::Multiaddr;
use tokio::sync::watch;

use crate::config::ApiConfig;
use crate::node::rpc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Address(#[from] rpc::Error),
    #[error("the API would listen on {0}, which is not loopback, without a token: set [api] token (env WANDA_API_TOKEN) so that changing requests need it, or listen on /ip4/127.0.0.1/tcp/PORT")]
    NeedsToken(String),
    #[error("cannot listen for the API on {addr}: {source} (is another daemon or Kubo using it? set [api] address or --api)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Checks `addr` against the rules above; the daemon calls this before anything starts.
pub fn check(addr: &Multiaddr, cfg: &ApiConfig) -> Result<SocketAddr, Error> {
    let a = rpc::socket_addr(addr)?;
    if !a.ip().is_loopback() && cfg.token.as_deref().is_none_or(str::is_empty) {
        return Err(Error::NeedsToken(addr.to_string()));
    }
    Ok(a)
}

/// A bound, not yet serving, API listener.
pub struct ApiServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    access: Access,
}

impl ApiServer {
    pub async fn bind(addr: &Multiaddr, cfg: &ApiConfig) -> Result<ApiServer, Error> {
        let want = check(addr, cfg)?;
        let (listener, addr) = listen(want)
            .await
            .map_err(|source| Error::Bind { addr: want, source })?;
        Ok(ApiServer {
            listener,
            addr,
            access: Access::new(cfg),
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn multiaddr(&self) -> Multiaddr {
        rpc::to_multiaddr(self.addr)
    }

    /// Serves `app` behind the access rules until `shutdown` turns true.
    pub async fn serve(self, app: Router, shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let access = std::sync::Arc::new(self.access);
        let app = app.layer(axum::middleware::from_fn(move |req, next| {
            let access = access.clone();
            async move { access.guard(req, next).await }
        }));
        serve_http(self.listener, app, shutdown).await;
        Ok(())
    }
}

/// Binds `want`; returns the listener and the address actually bound (port 0 resolved).
pub(crate) async fn listen(
    want: SocketAddr,
) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(want).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Returns once `rx` turns true (or its sender is gone). The guard `wait_for` returns is not
/// `Send`, so it must not live in a `select!` branch of a spawned task.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 256;
/// A client must finish sending a request's headers within this (slowloris), and an idle
/// keep-alive connection is closed after it.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `app` over HTTP/1.1 on `listener` until `shutdown` turns true, then lets the
/// requests under way finish. Unlike `axum::serve`, it bounds what slow or many clients can
/// hold: [`MAX_CONNECTIONS`] at once, [`HEADER_TIMEOUT`] to send a request's headers.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                    return;
                }
                () = stopped(&mut stop) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    // Every connection's permit back: all requests under way have finished.
    let _ = slots.acquire_many(MAX_CONNECTIONS as u32).await;
}

/// The rules, from `[api]`.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    token: Option<String>,
    cors: Vec<String>,
}

/// RPC routes that only read (content by CID, identity): public like a gateway.
const PUBLIC_RPC: [&str; 8] = [
    "/api/v0/cat",
    "/api/v0/get",
    "/api/v0/block/get",
    "/api/v0/block/stat",
    "/api/v0/dag/export",
    "/api/v0/id",
    "/api/v0/version",
    "/api/v0/ls",
];

impl Access {
    pub(crate) fn new(cfg: &ApiConfig) -> Access {
        Access {
            token: cfg.token.clone().filter(|t| !t.is_empty()),
            cors: cfg
                .cors_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
        }
    }

    /// Whether `method path` changes something (and so needs the token).
    pub(crate) fn changes(method: &Method, path: &str) -> bool {
        if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
            return false;
        }
        !PUBLIC_RPC.contains(&path.trim_end_matches('/'))
    }

    fn cors_allowed(&self, origin: &str) -> bool {
        self.cors.iter().any(|o| o == origin)
    }

    /// Same origin: the page this listener served (`Origin: http://<Host>`).
    fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        host.is_some_and(|h| origin == format!("http://{h}"))
    }

    fn token_ok(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(got.trim().as_bytes(), want.as_bytes())
    }

    async fn guard(&self, req: Request, next: Next) -> Response {
        let path = req.uri().path().to_string();
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .map(str::to_string);
        let listed = origin.as_deref().is_some_and(|o| self.cors_allowed(o));
        if req.method() == Method::OPTIONS {
            return match &origin {
                Some(o) if listed => preflight(o),
                _ => deny(
                    &path,
                    StatusCode::FORBIDDEN,
                    "FORBIDDEN",
                    "cross-origin requests are allowed only from [api] cors_origins",
                ),
            };
        }
        let changes = Access::changes(req.method(), &path);
        if changes {
            if let Some(o) = &origin {
                if !listed && !Access::same_origin(o, req.headers()) {
                    return deny(
                        &path,
                        StatusCode::FORBIDDEN,
                        "FORBIDDEN",
                        &format!("requests from the web origin {o:?} are refused: add it to [api] cors_origins to allow it"),
                    );
                }
            }
            if !self.token_ok(req.headers()) {
                let mut r = deny(
                    &path,
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "this request changes the node and needs 'Authorization: Bearer <[api] token>'",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
        }
        let mut resp = next.run(req).await;
        if let (Some(o), true) = (origin, listed) {
            if let Ok(v) = HeaderValue::from_str(&o) {
                let h = resp.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
                h.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
        resp
    }
}

fn preflight(origin: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, Range"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    r
}

/// A refusal in the shape the route's clients read: Kubo's error body under `/api/v0/`,
/// WANDA's envelope elsewhere.
fn deny(path: &str, status: StatusCode, code: &'static str, message: &str) -> Response {
    if path.starts_with("/api/v0/") {
        rpc::ApiError::new(status, message).into_response()
    } else {
        super::envelope::Failure::new(status, code, message).into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};

    fn app(cfg: &ApiConfig) -> Router {
        let access = std::sync::Arc::new(Access::new(cfg));
        Router::new()
            .route("/api/v0/add", post(|| async { "added" }))
            .route("/api/v0/cat", post(|| async { "bytes" }))
            .route("/api/session/start", post(|| async { "started" }))
            .route("/api/sessions", get(|| async { "list" }))
            .layer(axum::middleware::from_fn(move |req, next| {
                let access = access.clone();
                async move { access.guard(req, next).await }
            }))
    }

    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, HeaderMap) {
        use tower::ServiceExt;
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1:5001");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let r = app
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        (r.status().as_u16(), r.headers().clone())
    }

    fn cfg(token: Option<&str>, cors: &[&str]) -> ApiConfig {
        ApiConfig {
            token: token.map(str::to_string),
            cors_origins: cors.iter().map(|s| s.to_string()).collect(),
            ..ApiConfig::default()
        }
    }

    #[test]
    fn a_public_address_needs_a_token() {
        let public: Multiaddr = "/ip4/0.0.0.0/tcp/5001".parse().unwrap();
        assert!(matches!(
            check(&public, &cfg(None, &[])),
            Err(Error::NeedsToken(_))
        ));
        assert!(matches!(
            check(&public, &cfg(Some(""), &[])),
            Err(Error::NeedsToken(_))
        ));
        assert!(check(&public, &cfg(Some("s3cret"), &[])).is_ok());
        let lo: Multiaddr = "/ip6/::1/tcp/5001".parse().unwrap();
        assert!(check(&lo, &cfg(None, &[])).is_ok());
    }

    #[tokio::test]
    async fn the_token_guards_changes_only() {
        let a = app(&cfg(Some("s3cret"), &[]));
        assert_eq!(call(&a, "POST", "/api/v0/add", &[]).await.0, 401);
        assert_eq!(
            call(
                &a,
                "POST",
                "/api/v0/add",
                &[("authorization", "Bearer nope")]
            )
            .await
            .0,
            401
        );
        assert_eq!(
            call(
                &a,
                "POST",
                "/api/v0/add",
                &[("authorization", "Bearer s3cret")]
            )
            .await
            .0,
            200
        );
        assert_eq!(call(&a, "POST", "/api/session/start", &[]).await.0, 401);
        assert_eq!(call(&a, "POST", "/api/v0/cat", &[]).await.0, 200);
        assert_eq!(call(&a, "GET", "/api/sessions", &[]).await.0, 200);
        let open = app(&cfg(None, &[]));
        assert_eq!(call(&open, "POST", "/api/v0/add", &[]).await.0, 200);
    }

    #[tokio::test]
    async fn browsers_only_from_our_page_or_listed_origins() {
        let a = app(&cfg(None, &["http://wanda.local:5000"]));
        let evil = [("origin", "http://evil.example")];
        assert_eq!(call(&a, "POST", "/api/session/start", &evil).await.0, 403);
        assert_eq!(call(&a, "POST", "/api/v0/add", &evil).await.0, 403);
        // Reads carry no risk; the browser keeps the answer from the page without CORS headers.
        let (s, h) = call(&a, "GET", "/api/sessions", &evil).await;
        assert_eq!(s, 200);
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        let own = [("origin", "http://127.0.0.1:5001")];
        assert_eq!(call(&a, "POST", "/api/session/start", &own).await.0, 200);
        let listed = [("origin", "http://wanda.local:5000")];
        let (s, h) = call(&a, "POST", "/api/session/start", &listed).await;
        assert_eq!(s, 200);
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://wanda.local:5000"
        );
        let (s, h) = call(&a, "OPTIONS", "/api/session/start", &listed).await;
        assert_eq!(s, 204);
        assert!(h[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .contains("Authorization"));
        assert_eq!(
            call(&a, "OPTIONS", "/api/session/start", &evil).await.0,
            403
        );
    }
}
