//! The `[cluster]` section: where the IPFS Cluster REST API is, how to authenticate, and the
//! replication asked for each pin.
//!
//! Parsed like the rest of the config (unknown keys are errors); [`ClusterConfig::validate`] checks
//! what serde cannot, and [`Endpoint::parse`] is the one place the API URL is understood.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bound on `timeout_secs`: a request that needs longer than this is not a REST call.
pub const MAX_TIMEOUT_SECS: u64 = 3600;

/// A mistake in `[cluster]`, named after the key that has it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cluster.api {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cluster: no `api` URL is set, so there is no cluster to talk to")]
    NoApi,
    #[error(
        "cluster.replication_min = {min} and replication_max = {max}: {reason} \
         (both -1 for every peer, both 0 for the cluster's defaults, or counts with min <= max)"
    )]
    Replication { min: i32, max: i32, reason: String },
    #[error("cluster: {0}")]
    Auth(&'static str),
    #[error("cluster.timeout_secs = {0}: must be between 1 and {MAX_TIMEOUT_SECS}")]
    Timeout(u64),
    #[error("cluster: TLS setup failed: {0}")]
    Tls(String),
}

/// `[cluster]`. Every key is optional; with no `api` there is no cluster.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The REST API URL, `http://` or `https://`, e.g. `http://127.0.0.1:9094` (the cluster's
    /// default listen address). A path is kept as a prefix (a reverse proxy's `/cluster`).
    /// Default: none (no cluster).
    #[serde(default)]
    pub api: Option<String>,
    /// HTTP Basic credentials (the cluster's `basic_auth_credentials`). Default: none.
    #[serde(default)]
    pub basic_auth_user: Option<String>,
    #[serde(default)]
    pub basic_auth_password: Option<String>,
    /// A JWT from the cluster's `POST /token`, sent as `Authorization: Bearer`. Default: none.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Cluster peers that must hold each pin before the cluster accepts it. Default 2.
    #[serde(default = "default_replication_min")]
    pub replication_min: i32,
    /// Cluster peers asked to hold each pin. Default 3.
    #[serde(default = "default_replication_max")]
    pub replication_max: i32,
    /// Seconds for one REST request, connection included. Default 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Accept any TLS certificate (a self-signed cluster API). The traffic is still encrypted but
    /// anyone on the path can impersonate the cluster. Default false.
    #[serde(default)]
    pub tls_insecure: bool,
    /// Seconds a pin may wait for its replicas over the swarm before the pipeline uploads the
    /// image's DAG as a CAR to `POST /add` instead (for a node the cluster's IPFS daemons cannot
    /// reach at all), and again after as long if that was not enough. 0: never. Default 600.
    #[serde(default = "default_car_fallback_secs")]
    pub car_fallback_secs: u64,
}

fn default_replication_min() -> i32 {
    2
}
fn default_replication_max() -> i32 {
    3
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_car_fallback_secs() -> u64 {
    600
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            api: None,
            basic_auth_user: None,
            basic_auth_password: None,
            bearer_token: None,
            replication_min: default_replication_min(),
            replication_max: default_replication_max(),
            timeout_secs: default_timeout_secs(),
            tls_insecure: false,
            car_fallback_secs: default_car_fallback_secs(),
        }
    }
}

// Hand-written so that passwords and tokens never reach a log line.
impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("ClusterConfig")
            .field("api", &self.api)
            .field("basic_auth_user", &self.basic_auth_user)
            .field("basic_auth_password", &redacted(&self.basic_auth_password))
            .field("bearer_token", &redacted(&self.bearer_token))
            .field("replication_min", &self.replication_min)
            .field("replication_max", &self.replication_max)
            .field("timeout_secs", &self.timeout_secs)
            .field("tls_insecure", &self.tls_insecure)
            .field("car_fallback_secs", &self.car_fallback_secs)
            .finish()
    }
}

impl ClusterConfig {
    /// Checks everything serde cannot: the URL, the replication range, one auth method, the timeout.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.api {
            Endpoint::parse(url)?;
        }
        validate_replication(self.replication_min, self.replication_max)?;
        match (
            &self.basic_auth_user,
            &self.basic_auth_password,
            &self.bearer_token,
        ) {
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(ConfigError::Auth(
                    "basic_auth_user and basic_auth_password go together: set both or neither",
                ))
            }
            (Some(_), Some(_), Some(_)) => {
                return Err(ConfigError::Auth(
                    "set either basic_auth_user/basic_auth_password or bearer_token, not both",
                ))
            }
            (Some(u), Some(_), None) if u.is_empty() || u.contains(':') => {
                // The cluster refuses an empty user, and Basic auth cannot carry a ':' in it.
                return Err(ConfigError::Auth(
                    "basic_auth_user must be non-empty and must not contain ':'",
                ));
            }
            (_, _, Some(t)) if t.trim().is_empty() => {
                return Err(ConfigError::Auth("bearer_token is empty"))
            }
            _ => {}
        }
        if self.timeout_secs == 0 || self.timeout_secs > MAX_TIMEOUT_SECS {
            return Err(ConfigError::Timeout(self.timeout_secs));
        }
        Ok(())
    }

    /// How long a pin waits on the swarm before its DAG is uploaded; `None`: never.
    pub fn car_fallback(&self) -> Option<Duration> {
        (self.car_fallback_secs > 0).then(|| Duration::from_secs(self.car_fallback_secs))
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// The cluster's rules (cluster_config.go `isReplicationFactorValid`), checked here so that a
/// bad config is reported at start-up instead of as a 500 on the first pin.
pub fn validate_replication(min: i32, max: i32) -> Result<(), ConfigError> {
    let bad = |reason: &str| {
        Err(ConfigError::Replication {
            min,
            max,
            reason: reason.to_string(),
        })
    };
    if min < -1 || max < -1 {
        return bad("values below -1 mean nothing");
    }
    if (min == 0) != (max == 0) {
        // The cluster would fill in its own default for the 0, which may not fit the other value.
        return bad("set both to 0 (the cluster's defaults) or neither");
    }
    if min == -1 && max != -1 {
        return bad("-1 (every peer) must be given to both");
    }
    if min > max {
        // Also for max = -1: the cluster compares the numbers as they are.
        return bad("replication_min is larger than replication_max");
    }
    Ok(())
}

/// A parsed `api` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https`?
    pub tls: bool,
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing `/` ("" when none).
    pub base_path: String,
    /// `scheme://authority` for messages and the `Host` header (no credentials ever appear here).
    pub origin: String,
    /// The `Host` header value.
    pub authority: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, ConfigError> {
        let bad = |reason: &str| ConfigError::BadUrl {
            url: redact_userinfo(url),
            reason: reason.to_string(),
        };
        let uri: hyper::Uri = url
            .trim()
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err(bad("the scheme must be http or https")),
            None => {
                return Err(bad(
                    "write it as http://HOST:PORT (e.g. http://127.0.0.1:9094)",
                ))
            }
        };
        let auth = uri.authority().ok_or_else(|| bad("no host in the URL"))?;
        if auth.as_str().contains('@') {
            return Err(bad(
                "credentials in the URL are not used: set basic_auth_user and basic_auth_password",
            ));
        }
        if uri.query().is_some() {
            return Err(bad("a query string has no place in the API URL"));
        }
        let host = auth.host();
        if host.is_empty() {
            return Err(bad("no host in the URL"));
        }
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_string();
        let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let base_path = uri.path().trim_end_matches('/').to_string();
        let scheme = if tls { "https" } else { "http" };
        Ok(Endpoint {
            tls,
            host,
            port,
            base_path,
            origin: format!("{scheme}://{}", auth.as_str()),
            authority: auth.as_str().to_string(),
        })
    }
}

/// `url` with any `user:password@` replaced, so that an error message cannot leak a password.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin, self.base_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_toml(text: &str) -> Result<ClusterConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_and_a_full_section_parse() {
        let d = parse_toml("").unwrap();
        assert_eq!(d, ClusterConfig::default());
        assert_eq!(d.api, None);
        assert_eq!((d.replication_min, d.replication_max), (2, 3));
        assert_eq!(d.timeout(), Duration::from_secs(30));
        assert!(!d.tls_insecure);
        d.validate().unwrap();

        let c = parse_toml(
            r#"
            api = "https://cluster.example:9094"
            basic_auth_user = "wanda"
            basic_auth_password = "s3cret"
            replication_min = -1
            replication_max = -1
            timeout_secs = 5
            tls_insecure = true
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "password in Debug: {dbg}");
        assert!(dbg.contains("<redacted>"));
        // A typo is an error, not a silent default.
        assert!(parse_toml("replication = 2").is_err());
    }

    #[test]
    fn replication_rules() {
        // (min, max, ok?, why)
        let table = [
            (2, 3, true, "the default"),
            (1, 1, true, "exactly one"),
            (3, 3, true, "min == max"),
            (
                2,
                -1,
                false,
                "the cluster compares plainly: 2 > -1 is refused",
            ),
            (-1, -1, true, "every peer"),
            (0, 0, true, "the cluster's defaults"),
            (3, 2, false, "min > max: the cluster answers 500"),
            (-1, 3, false, "-1 on one side only"),
            (0, 3, false, "0 on one side only"),
            (2, 0, false, "0 on one side only"),
            (-2, 3, false, "below -1"),
            (1, -5, false, "below -1"),
        ];
        for (min, max, ok, why) in table {
            assert_eq!(
                validate_replication(min, max).is_ok(),
                ok,
                "{min}/{max}: {why}"
            );
        }
        let e = validate_replication(3, 2).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn auth_and_timeout_rules() {
        let base = ClusterConfig {
            api: Some("http://127.0.0.1:9094".into()),
            ..ClusterConfig::default()
        };
        let user_only = ClusterConfig {
            basic_auth_user: Some("u".into()),
            ..base.clone()
        };
        assert!(user_only
            .validate()
            .unwrap_err()
            .to_string()
            .contains("both"));
        let both = ClusterConfig {
            basic_auth_user: Some("u".into()),
            basic_auth_password: Some("p".into()),
            bearer_token: Some("t".into()),
            ..base.clone()
        };
        assert!(both.validate().is_err());
        let colon = ClusterConfig {
            basic_auth_user: Some("a:b".into()),
            basic_auth_password: Some("p".into()),
            ..base.clone()
        };
        assert!(colon.validate().is_err());
        let token = ClusterConfig {
            bearer_token: Some("eyJ".into()),
            ..base.clone()
        };
        token.validate().unwrap();
        for t in [0, MAX_TIMEOUT_SECS + 1] {
            let c = ClusterConfig {
                timeout_secs: t,
                ..base.clone()
            };
            assert_eq!(c.validate(), Err(ConfigError::Timeout(t)));
        }
    }

    #[test]
    fn urls() {
        let e = Endpoint::parse("http://127.0.0.1:9094").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.base_path.as_str()),
            (false, "127.0.0.1", 9094, "")
        );
        assert_eq!(e.to_string(), "http://127.0.0.1:9094");
        let e = Endpoint::parse("https://cluster.example/api/").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.base_path.as_str()),
            (true, "cluster.example", 443, "/api")
        );
        let e = Endpoint::parse("http://[::1]:9094").unwrap();
        assert_eq!(
            (e.host.as_str(), e.authority.as_str()),
            ("::1", "[::1]:9094")
        );
        for bad in [
            "127.0.0.1:9094",
            "ftp://host",
            "http://user:pw@host:9094",
            "http://host:9094/?x=1",
            "/ip4/127.0.0.1/tcp/9094",
            "",
        ] {
            let r = Endpoint::parse(bad);
            assert!(r.is_err(), "{bad:?} accepted: {r:?}");
        }
        let msg = Endpoint::parse("http://wanda:s3cret@h:9094/x")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("basic_auth_user"), "{msg}");
        assert!(!msg.contains("s3cret"), "password in an error: {msg}");
    }
}
