//! One HTTP/1.1 exchange with the cluster's REST API, over TCP or TLS (rustls, Mozilla's roots
//! built in), with the auth header, and with every answer read within a size bound.
//!
//! A connection per request: the client pins an image every few seconds at most, so keeping
//! connections alive would save little and add a pool that can hold a dead socket.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;

use super::config::{ClusterConfig, ConfigError, Endpoint};
use super::error::{from_answer, stream_error, ErrorKind};
use super::ndjson::{self, Decoder, NdjsonError};
use super::resolve::HostResolver;

const USER_AGENT: &str = concat!("wanda-ipfs/", env!("CARGO_PKG_VERSION"));
/// Name of the trailer in which the cluster reports an error after a 200 stream has started.
const STREAM_ERROR: &str = "x-stream-error";

/// A request body: nothing, a few buffers, or chunks from a reader thread.
pub(crate) enum ReqBody {
    Empty,
    Parts(VecDeque<Bytes>),
    Channel {
        rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
        len: u64,
    },
}

impl hyper::body::Body for ReqBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Parts(q) => Poll::Ready(q.pop_front().map(|b| Ok(Frame::data(b)))),
            ReqBody::Channel { rx, .. } => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Parts(q) => q.is_empty(),
            ReqBody::Channel { .. } => false,
        }
    }

    // Exact sizes, so hyper sends a Content-Length instead of chunks (proxies prefer it).
    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Parts(q) => SizeHint::with_exact(q.iter().map(|b| b.len() as u64).sum()),
            ReqBody::Channel { len, .. } => SizeHint::with_exact(*len),
        }
    }
}

/// Aborts the task driving the connection when the answer has been read (or abandoned).
struct ConnGuard(tokio::task::JoinHandle<()>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A whole (bounded) answer.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn into_error(self) -> ErrorKind {
        from_answer(self.status, self.location.as_deref(), &self.body)
    }
}

/// How to reach the API: the parsed URL, TLS, and the auth header.
pub(crate) struct Transport {
    pub(crate) endpoint: Endpoint,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    auth: Option<HeaderValue>,
    resolver: HostResolver,
}

impl Transport {
    pub(crate) fn new(cfg: &ClusterConfig) -> Result<Transport, ConfigError> {
        cfg.validate()?;
        let url = cfg.api.as_deref().ok_or(ConfigError::NoApi)?;
        let endpoint = Endpoint::parse(url)?;
        let tls = if endpoint.tls {
            let name =
                ServerName::try_from(endpoint.host.clone()).map_err(|e| ConfigError::BadUrl {
                    url: endpoint.to_string(),
                    reason: format!("not a name TLS can check: {e}"),
                })?;
            if cfg.tls_insecure {
                tracing::warn!(api = %endpoint, "cluster: TLS certificates are not checked (tls_insecure = true)");
            }
            Some((tls_connector(cfg.tls_insecure)?, name))
        } else {
            None
        };
        let auth = match (
            &cfg.basic_auth_user,
            &cfg.basic_auth_password,
            &cfg.bearer_token,
        ) {
            (Some(u), Some(p), _) => Some(format!(
                "Basic {}",
                data_encoding::BASE64.encode(format!("{u}:{p}").as_bytes())
            )),
            (_, _, Some(t)) => Some(format!("Bearer {}", t.trim())),
            _ => None,
        };
        let auth = auth
            .map(|a| {
                let mut v = HeaderValue::from_str(&a).map_err(|_| {
                    ConfigError::Auth("credentials must be printable text without line breaks")
                })?;
                v.set_sensitive(true);
                Ok(v)
            })
            .transpose()?;
        Ok(Transport {
            endpoint,
            tls,
            auth,
            resolver: HostResolver::default(),
        })
    }

    /// Sends one request; the answer's head, with the body still to read.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: ReqBody,
        content_type: Option<&str>,
    ) -> Result<(u16, Option<String>, Incoming, ConnGuard), ErrorKind> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.endpoint.base_path))
            .header(header::HOST, &self.endpoint.authority)
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::ACCEPT, "application/json")
            // Go servers send trailers regardless; hyper-based ones only when asked.
            .header(header::TE, "trailers");
        if let Some(a) = &self.auth {
            req = req.header(header::AUTHORIZATION, a.clone());
        }
        if let Some(t) = content_type {
            req = req.header(header::CONTENT_TYPE, t);
        }
        let req = req.body(body).map_err(|e| ErrorKind::BadRequestBuild {
            reason: e.to_string(),
        })?;

        let tcp = self
            .resolver
            .connect(&self.endpoint.host, self.endpoint.port)
            .await?;
        // Requests are small and answered at once: do not let Nagle hold the last segment.
        let _ = tcp.set_nodelay(true);
        let (mut sender, guard) = match &self.tls {
            None => handshake(tcp).await?,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(tls_error)?;
                handshake(stream).await?
            }
        };
        let resp = sender.send_request(req).await.map_err(transport)?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Ok((status, location, resp.into_body(), guard))
    }

    /// A request whose answer is read whole, up to `limit` bytes.
    pub(crate) async fn whole(
        &self,
        method: Method,
        path_and_query: &str,
        body: ReqBody,
        content_type: Option<&str>,
        limit: usize,
    ) -> Result<Answer, ErrorKind> {
        let (status, location, mut incoming, _guard) = self
            .send(method, path_and_query, body, content_type)
            .await?;
        let body = read_bounded(&mut incoming, status, limit).await?;
        Ok(Answer {
            status,
            location,
            body,
        })
    }

    /// A request answered by an NDJSON stream (200), nothing (204), or an error object.
    pub(crate) async fn stream<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: ReqBody,
        content_type: Option<&str>,
        limits: ndjson::Limits,
    ) -> Result<Vec<T>, ErrorKind> {
        let (status, location, mut incoming, _guard) = self
            .send(method, path_and_query, body, content_type)
            .await?;
        match status {
            200 => read_ndjson(&mut incoming, limits).await,
            204 => Ok(Vec::new()),
            _ => {
                let body = read_bounded(&mut incoming, status, limits.max_line).await?;
                Err(from_answer(status, location.as_deref(), &body))
            }
        }
    }
}

/// HTTP/1.1 over `io`; the connection is driven by a task that the guard ends.
async fn handshake<S>(
    io: S,
) -> Result<(hyper::client::conn::http1::SendRequest<ReqBody>, ConnGuard), ErrorKind>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(transport)?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "cluster: connection ended with an error");
        }
    });
    Ok((sender, ConnGuard(task)))
}

fn transport(e: hyper::Error) -> ErrorKind {
    // hyper's own text is terse ("connection closed before message completed"); its source
    // (an io::Error) says more.
    let reason = match std::error::Error::source(&e) {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    };
    ErrorKind::Transport { reason }
}

fn tls_error(e: std::io::Error) -> ErrorKind {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        });
    ErrorKind::Tls {
        reason: e.to_string(),
        certificate,
    }
}

async fn read_bounded(body: &mut Incoming, status: u16, limit: usize) -> Result<Bytes, ErrorKind> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(transport)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ErrorKind::TooLarge { status, limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

async fn read_ndjson<T: DeserializeOwned>(
    body: &mut Incoming,
    limits: ndjson::Limits,
) -> Result<Vec<T>, ErrorKind> {
    let mut dec = Decoder::new(limits);
    let mut trailer_error = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(transport)?;
        match frame.into_data() {
            Ok(data) => dec.push(&data).map_err(ndjson_error)?,
            Err(frame) => {
                if let Some(t) = frame.trailers_ref() {
                    trailer_error =
                        stream_error(t.get_all(STREAM_ERROR).iter().map(HeaderValue::as_bytes));
                }
            }
        }
    }
    // The trailer explains a stream cut short, so it wins over a broken last line.
    if let Some(e) = trailer_error {
        return Err(e);
    }
    dec.finish().map_err(ndjson_error)
}

fn ndjson_error(e: NdjsonError) -> ErrorKind {
    match e {
        NdjsonError::TooLarge { limit } => ErrorKind::TooLarge { status: 200, limit },
        other => ErrorKind::Garbage {
            status: 200,
            reason: other.to_string(),
            snippet: String::new(),
        },
    }
}

fn tls_connector(insecure: bool) -> Result<TlsConnector, ConfigError> {
    // The provider libp2p's QUIC already builds; named explicitly so that a second provider
    // feature appearing in the dependency tree cannot make rustls's default ambiguous.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    let mut cfg = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// `tls_insecure`: any certificate is accepted, but the handshake signatures are still checked
/// against it, so the session is at least bound to the certificate that was presented.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_headers_and_tls_setup() {
        let mut cfg = ClusterConfig {
            api: Some("https://127.0.0.1:9094".into()),
            basic_auth_user: Some("wanda".into()),
            basic_auth_password: Some("pw".into()),
            ..ClusterConfig::default()
        };
        let t = Transport::new(&cfg).unwrap();
        let a = t.auth.as_ref().unwrap();
        assert!(a.is_sensitive());
        assert_eq!(a.to_str().unwrap(), "Basic d2FuZGE6cHc=");
        assert!(t.tls.is_some());
        cfg.basic_auth_user = None;
        cfg.basic_auth_password = None;
        cfg.bearer_token = Some("tok\nen".into());
        assert!(matches!(Transport::new(&cfg), Err(ConfigError::Auth(_))));
        cfg.bearer_token = Some("abc.def".into());
        cfg.tls_insecure = true;
        let t = Transport::new(&cfg).unwrap();
        assert_eq!(t.auth.unwrap().to_str().unwrap(), "Bearer abc.def");
        cfg.api = None;
        assert!(matches!(Transport::new(&cfg), Err(ConfigError::NoApi)));
    }

    #[test]
    fn body_sizes_are_exact() {
        use hyper::body::Body;
        let b = ReqBody::Parts(VecDeque::from([
            Bytes::from_static(b"ab"),
            Bytes::from_static(b"c"),
        ]));
        assert_eq!(b.size_hint().exact(), Some(3));
        assert_eq!(ReqBody::Empty.size_hint().exact(), Some(0));
    }
}
