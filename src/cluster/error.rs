//! What can go wrong talking to the cluster, and whether trying again later can help.
//!
//! The rule ([`Error::is_transient`]): a failure that says nothing about the request itself
//! (connection refused or reset, a timeout, a 502/503/504 from a proxy, a 500 the cluster gives for
//! a peer it could not reach) is transient: retry it with [`super::Backoff`]. A failure that will
//! repeat until a person changes something (401, 400, 404, "not enough peers to allocate",
//! "follower mode", a bad replication range, a certificate we do not trust) is permanent: surface
//! it, with the advice in its message.
//!
//! A 2xx answer whose body is not the cluster's JSON is classed transient: it is most likely a
//! proxy's page or a restart in progress, and a wrong port shows up as well through its
//! message, which says so.

use std::fmt;
use std::time::Duration;

use super::types::{decode, snippet, ApiErrorBody};

/// A failed request, with the cluster, the method and the path it concerned.
#[derive(Debug)]
pub struct Error(Box<Context>);

#[derive(Debug)]
struct Context {
    endpoint: String,
    method: &'static str,
    path: String,
    kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(
        endpoint: String,
        method: &'static str,
        path: String,
        kind: ErrorKind,
    ) -> Self {
        Error(Box::new(Context {
            endpoint,
            method,
            path,
            kind,
        }))
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// Worth retrying later (see the module docs).
    pub fn is_transient(&self) -> bool {
        self.0.kind.is_transient()
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        self.0.kind.status()
    }

    /// The cluster's known refusal, when it gave one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match &self.0.kind {
            ErrorKind::Api { refusal, .. } | ErrorKind::Stream { refusal, .. } => Some(refusal),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.0;
        write!(
            f,
            "cluster at {}: {} {}: {}",
            c.endpoint, c.method, c.path, c.kind
        )
    }
}

impl std::error::Error for Error {}

/// The failure itself. Messages say what to do when a person has to act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    #[error(
        "cannot connect ({error}): is ipfs-cluster-service running there, \
         and is [cluster] api the right address?"
    )]
    Connect { error: std::io::Error },
    #[error("cannot resolve the cluster's host {host:?} ({reason}): check /etc/resolv.conf and /etc/hosts, or give [cluster] api as an IP address")]
    Resolve { host: String, reason: String },
    #[error("TLS handshake failed ({reason}){}", if *certificate {
        ": for a self-signed certificate set [cluster] tls_insecure = true"
    } else { "" })]
    Tls { reason: String, certificate: bool },
    #[error("the connection failed during the request ({reason})")]
    Transport { reason: String },
    #[error(
        "no complete answer within {0:?}: raise [cluster] timeout_secs if the cluster is slow"
    )]
    Timeout(Duration),
    #[error(
        "unauthorized (401: {message}): check basic_auth_user/basic_auth_password \
         or bearer_token in [cluster]"
    )]
    Unauthorized { message: String },
    #[error("{}", api_message(*status, message, refusal))]
    Api {
        status: u16,
        message: String,
        refusal: Refusal,
    },
    #[error("{}", garbage_message(*status, reason, snippet))]
    Garbage {
        status: u16,
        reason: String,
        snippet: String,
    },
    #[error("answered {status} with more than {limit} bytes, far more than any cluster answer")]
    TooLarge { status: u16, limit: usize },
    #[error("the answer stream ended with an error: {message}{}", refusal.advice())]
    Stream { message: String, refusal: Refusal },
    #[error(
        "redirected ({status}) to {location:?}: set [cluster] api to where the cluster \
         really is (http vs https, path)"
    )]
    Redirect { status: u16, location: String },
    #[error("unexpected status {status} (answer starts with {snippet})")]
    UnexpectedStatus { status: u16, snippet: String },
    #[error("origin {addr} does not end in /p2p/<peer id>, which the cluster requires")]
    OriginWithoutPeer { addr: String },
    #[error("metadata with an empty key cannot be sent (the cluster drops it)")]
    EmptyMetadataKey,
    #[error(transparent)]
    Options(#[from] super::config::ConfigError),
    #[error("cannot build the request ({reason}): a wanda-ipfs bug")]
    BadRequestBuild { reason: String },
    #[error("reading {path}: {error}")]
    ReadFile {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
}

/// The refusals the cluster gives in plain text, recognised so that callers can act on them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Fewer eligible peers than `replication_min` (allocate.go). Nothing was pinned.
    NotEnoughPeers {
        needed: Option<i64>,
        wanted: Option<i64>,
        available: Option<i64>,
    },
    /// The peer behind the API is a follower: it takes no writes.
    FollowerMode,
    /// The replication factors are not valid for the cluster.
    ReplicationFactor,
    /// `DELETE`/status of a CID the cluster does not pin (404).
    NotInPinset,
    /// 404 `not found`: no such route, so not the cluster's API (or not this version).
    NoSuchRoute,
    /// 400: the cluster could not parse the request.
    BadRequest,
    /// Any other message.
    Other,
}

impl Refusal {
    /// Recognises the cluster's own messages (from v1.1.6's source).
    pub(crate) fn classify(status: u16, message: &str) -> Refusal {
        if message.contains("not enough peers to allocate") {
            let num = |label: &str| -> Option<i64> {
                let rest = &message[message.find(label)? + label.len()..];
                let digits: String = rest
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '-')
                    .collect();
                digits.parse().ok()
            };
            Refusal::NotEnoughPeers {
                needed: num("Needed at least:"),
                wanted: num("Wanted at most:"),
                available: num("Available candidates:"),
            }
        } else if message.contains("follower mode") {
            Refusal::FollowerMode
        } else if message.contains("replication_factor_min")
            || message.contains("replication_factor_max")
        {
            Refusal::ReplicationFactor
        } else if message.contains("pin is not part of the pinset") {
            Refusal::NotInPinset
        } else if status == 404 {
            Refusal::NoSuchRoute
        } else if status == 400 {
            Refusal::BadRequest
        } else {
            Refusal::Other
        }
    }

    /// Whether the cluster will say the same thing next time, whatever the network does.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Refusal::Other)
    }

    fn advice(&self) -> String {
        match self {
            Refusal::NotEnoughPeers {
                needed, available, ..
            } => {
                let n = needed.map_or("?".to_string(), |n| n.to_string());
                let k = available.map_or("?".to_string(), |k| k.to_string());
                format!(
                    " (needs {n}, has {k}): add cluster peers or lower [cluster] replication_min"
                )
            }
            Refusal::FollowerMode => ": point [cluster] api at a trusted (non-follower) cluster peer".into(),
            Refusal::ReplicationFactor => {
                ": fix [cluster] replication_min/replication_max (min <= max, -1 = every peer)".into()
            }
            Refusal::NoSuchRoute => {
                ": is [cluster] api the cluster's REST API (default port 9094)?".into()
            }
            Refusal::BadRequest => {
                ": the cluster could not parse the request (a wanda-ipfs bug, or an unsupported cluster version)".into()
            }
            Refusal::NotInPinset | Refusal::Other => String::new(),
        }
    }
}

fn garbage_message(status: u16, reason: &str, snippet: &str) -> String {
    let starts = if snippet.is_empty() {
        String::new()
    } else {
        format!("; it starts with {snippet}")
    };
    format!(
        "answered {status} with something that is not the cluster's JSON ({reason}{starts}): \
         a proxy in the way, or [cluster] api names a port that is not the cluster's REST API \
         (default 9094)?"
    )
}

fn api_message(status: u16, message: &str, refusal: &Refusal) -> String {
    let lead = if refusal.is_permanent() && status >= 500 {
        "refused"
    } else {
        "error"
    };
    format!("{lead} ({status}): {message}{}", refusal.advice())
}

/// 408, 429 and 5xx except 501/505: the server or something in front of it may do better later.
fn status_is_transient(status: u16) -> bool {
    matches!(status, 408 | 429) || ((500..600).contains(&status) && !matches!(status, 501 | 505))
}

impl ErrorKind {
    pub fn is_transient(&self) -> bool {
        match self {
            ErrorKind::Connect { .. }
            | ErrorKind::Resolve { .. }
            | ErrorKind::Transport { .. }
            | ErrorKind::Timeout(_) => true,
            ErrorKind::Tls { certificate, .. } => !certificate,
            ErrorKind::Garbage { status, .. } | ErrorKind::TooLarge { status, .. } => {
                (200..300).contains(status) || status_is_transient(*status)
            }
            ErrorKind::Api {
                status, refusal, ..
            } => !refusal.is_permanent() && status_is_transient(*status),
            ErrorKind::Stream { refusal, .. } => !refusal.is_permanent(),
            ErrorKind::UnexpectedStatus { status, .. } => status_is_transient(*status),
            ErrorKind::Unauthorized { .. }
            | ErrorKind::Redirect { .. }
            | ErrorKind::OriginWithoutPeer { .. }
            | ErrorKind::EmptyMetadataKey
            | ErrorKind::Options(_)
            | ErrorKind::BadRequestBuild { .. }
            | ErrorKind::ReadFile { .. } => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ErrorKind::Unauthorized { .. } => Some(401),
            ErrorKind::Api { status, .. }
            | ErrorKind::Garbage { status, .. }
            | ErrorKind::TooLarge { status, .. }
            | ErrorKind::Redirect { status, .. }
            | ErrorKind::UnexpectedStatus { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A non-success answer as an error: the cluster's `{"code","message"}` when the body is one,
/// else garbage (a proxy's page, another program) classed by its status. Pure.
pub(crate) fn from_answer(status: u16, location: Option<&str>, body: &[u8]) -> ErrorKind {
    if (300..400).contains(&status) {
        return ErrorKind::Redirect {
            status,
            location: location.unwrap_or("").to_string(),
        };
    }
    match decode::<ApiErrorBody>(body) {
        Ok(e) if status == 401 => ErrorKind::Unauthorized { message: e.message },
        Ok(e) => ErrorKind::Api {
            status,
            refusal: Refusal::classify(status, &e.message),
            message: e.message,
        },
        Err(_) if (400..600).contains(&status) && status != 401 && body.trim_ascii().is_empty() => {
            ErrorKind::UnexpectedStatus {
                status,
                snippet: snippet(body),
            }
        }
        Err(_) if status == 401 => ErrorKind::Unauthorized {
            message: String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_string(),
        },
        Err(d) if (400..600).contains(&status) => ErrorKind::Garbage {
            status,
            reason: d.reason,
            snippet: d.snippet,
        },
        Err(_) => ErrorKind::UnexpectedStatus {
            status,
            snippet: snippet(body),
        },
    }
}

/// A trailer `X-Stream-Error` (all values joined), or None when empty.
pub(crate) fn stream_error<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<ErrorKind> {
    let msgs: Vec<String> = values
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if msgs.is_empty() {
        return None;
    }
    let message = msgs.join("; ");
    Some(ErrorKind::Stream {
        refusal: Refusal::classify(500, &message),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind) -> Error {
        Error::new(
            "http://127.0.0.1:9094".into(),
            "POST",
            "/pins/Qm".into(),
            kind,
        )
    }

    fn answer(status: u16, body: &str) -> Error {
        err(from_answer(status, None, body.as_bytes()))
    }

    const NOT_ENOUGH: &str = r#"{"code":500,"message":"not enough peers to allocate CID. Needed at least: 2. Wanted at most: 3. Available candidates: 1. See logs for more info."}"#;

    #[test]
    fn the_clusters_refusals_are_permanent_with_advice() {
        let e = answer(500, NOT_ENOUGH);
        assert!(!e.is_transient());
        assert_eq!(
            e.refusal(),
            Some(&Refusal::NotEnoughPeers {
                needed: Some(2),
                wanted: Some(3),
                available: Some(1)
            })
        );
        let m = e.to_string();
        assert!(
            m.starts_with(
                "cluster at http://127.0.0.1:9094: POST /pins/Qm: refused (500): not enough peers"
            ),
            "{m}"
        );
        assert!(
            m.ends_with("(needs 2, has 1): add cluster peers or lower [cluster] replication_min"),
            "{m}"
        );

        // (status, body, transient?, why)
        let table = [
            (
                500,
                r#"{"code":500,"message":"this peer is configured to be in follower mode. Write operations are disabled"}"#,
                false,
                "follower",
            ),
            (
                500,
                r#"{"code":500,"message":"cluster.replication_factor_min is larger than max"}"#,
                false,
                "min > max",
            ),
            (
                400,
                r#"{"code":400,"message":"error decoding Cid: selected encoding not supported"}"#,
                false,
                "bad CID",
            ),
            (
                404,
                r#"{"code":404,"message":"pin is not part of the pinset"}"#,
                false,
                "unknown pin",
            ),
            (
                404,
                r#"{"code":404,"message":"not found"}"#,
                false,
                "no such route",
            ),
            (
                401,
                r#"{"code":401,"message":"unauthorized: access denied"}"#,
                false,
                "bad credentials",
            ),
            (401, "", false, "401 without a body"),
            (
                500,
                r#"{"code":500,"message":"dial backoff"}"#,
                true,
                "a peer the cluster could not reach",
            ),
            (502, "<html>Bad Gateway</html>", true, "a proxy's page"),
            (503, "", true, "restarting"),
            (
                504,
                r#"{"code":504,"message":"upstream timeout"}"#,
                true,
                "a proxy's JSON",
            ),
            (429, "slow down", true, "rate limited"),
            (
                501,
                r#"{"code":501,"message":"not implemented"}"#,
                false,
                "will not change",
            ),
            (403, "forbidden", false, "a proxy's ACL"),
            (307, "", false, "redirect"),
        ];
        for (status, body, transient, why) in table {
            let e = answer(status, body);
            assert_eq!(e.is_transient(), transient, "{why}: {e}");
            assert_eq!(e.status(), Some(status), "{why}");
        }
        assert!(
            matches!(answer(401, r#"{"code":401,"message":"unauthorized: no auth provided"}"#).kind(),
            ErrorKind::Unauthorized { message } if message == "unauthorized: no auth provided")
        );
        assert!(answer(404, r#"{"code":404,"message":"not found"}"#)
            .to_string()
            .contains("9094"));
    }

    #[test]
    fn transport_failures_are_transient_config_ones_not() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(err(ErrorKind::Connect { error: refused }).is_transient());
        assert!(err(ErrorKind::Timeout(Duration::from_secs(3))).is_transient());
        assert!(err(ErrorKind::Transport {
            reason: "reset".into()
        })
        .is_transient());
        assert!(err(ErrorKind::Tls {
            reason: "eof".into(),
            certificate: false
        })
        .is_transient());
        let cert = err(ErrorKind::Tls {
            reason: "UnknownIssuer".into(),
            certificate: true,
        });
        assert!(!cert.is_transient());
        assert!(cert.to_string().contains("tls_insecure"), "{cert}");
        assert!(!err(ErrorKind::EmptyMetadataKey).is_transient());
    }

    #[test]
    fn garbage_from_a_200_is_transient_and_says_why() {
        let e = err(ErrorKind::Garbage {
            status: 200,
            reason: "expected value".into(),
            snippet: "\"<html>\"".into(),
        });
        assert!(e.is_transient());
        let m = e.to_string();
        assert!(
            m.contains("not the cluster's JSON") && m.contains("9094") && m.contains("<html>"),
            "{m}"
        );
    }

    #[test]
    fn stream_trailers() {
        assert!(stream_error([&b""[..]].into_iter()).is_none());
        assert!(stream_error(std::iter::empty()).is_none());
        let k = stream_error([&b""[..], b"peer gone"].into_iter()).unwrap();
        assert!(k.is_transient(), "{k}");
        let k = stream_error([NOT_ENOUGH.as_bytes()].into_iter()).unwrap();
        assert!(!k.is_transient(), "{k}");
    }

    proptest::proptest! {
        #[test]
        fn any_answer_classifies_without_panic(status in 100u16..600, body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let k = from_answer(status, Some("x"), &body);
            let _ = k.is_transient();
            let _ = k.to_string();
        }

        #[test]
        fn any_message_classifies_without_panic(msg in ".{0,200}") {
            let r = Refusal::classify(500, &msg);
            let _ = r.advice();
            let r = Refusal::classify(500, &format!("not enough peers to allocate CID. Needed at least: {msg}"));
            let _ = r.advice();
        }
    }
}
