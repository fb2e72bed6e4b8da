//! Configuration: typed, defaulted, strict, layered.
//!
//! Precedence: built-in defaults < TOML file < `WANDA_<SECTION>_<KEY>`
//! environment variables < command-line flags (applied by `cli`). Unknown keys
//! are errors, so a typo does not silently fall back to a default. Environment
//! lookups go through a closure so tests never touch the process environment.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::unixfs::options::{self, Chunker, ImportOptions, Layout};

/// The shipped example configuration, also the default.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "WANDA_";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading config {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub import: ImportConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub swarm: SwarmConfig,
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    #[serde(default)]
    pub peering: PeeringConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub gateway: crate::gateway::GatewayConfig,
    #[serde(default)]
    pub capture: crate::capture::CaptureConfig,
    #[serde(default)]
    pub pipeline: crate::pipeline::PipelineConfig,
    #[serde(default)]
    pub cluster: crate::cluster::ClusterConfig,
}

/// Defaults of `add` (Kubo's `Import.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// 0 or 1. Default 0.
    #[serde(default)]
    pub cid_version: u64,
    /// Default: false for CIDv0, true for CIDv1.
    #[serde(default)]
    pub raw_leaves: Option<bool>,
    /// `size-N`. Default `size-262144`.
    #[serde(default = "default_chunker")]
    pub chunker: String,
    /// `balanced` or `trickle`. Default `balanced`.
    #[serde(default = "default_layout")]
    pub layout: String,
    /// Only `sha2-256`.
    #[serde(default = "default_hash")]
    pub hash: String,
    /// Default 262144.
    #[serde(default = "default_shard_threshold")]
    pub shard_threshold: usize,
}

fn default_chunker() -> String {
    Chunker::default().to_string()
}
fn default_layout() -> String {
    "balanced".into()
}
fn default_hash() -> String {
    "sha2-256".into()
}
fn default_shard_threshold() -> usize {
    options::DEFAULT_SHARD_THRESHOLD
}

impl Default for ImportConfig {
    fn default() -> Self {
        ImportConfig {
            cid_version: 0,
            raw_leaves: None,
            chunker: default_chunker(),
            layout: default_layout(),
            hash: default_hash(),
            shard_threshold: default_shard_threshold(),
        }
    }
}

impl ImportConfig {
    /// The import options these settings describe.
    pub fn to_options(&self) -> Result<ImportOptions, Error> {
        let invalid = |e: options::OptionsError| Error::Invalid(format!("import: {e}"));
        options::check_hash(&self.hash).map_err(invalid)?;
        let mut o = ImportOptions::default()
            .with_cid_version(self.cid_version, self.raw_leaves)
            .map_err(invalid)?;
        o.chunker = self.chunker.parse().map_err(invalid)?;
        o.layout = parse_layout(&self.layout)?;
        o.shard_threshold = self.shard_threshold;
        Ok(o)
    }
}

/// `add`'s flags (CLI) or query arguments (RPC) that override the `[import]` settings.
#[derive(Debug, Clone, Default)]
pub struct AddOverrides {
    pub cid_version: Option<u64>,
    pub raw_leaves: Option<bool>,
    pub chunker: Option<String>,
    pub trickle: bool,
    pub hash: Option<String>,
    pub hidden: bool,
    pub wrap: bool,
}

impl ImportConfig {
    /// The options of one `add`: these settings, then its flags on top, as Kubo applies them.
    pub fn with_overrides(&self, a: &AddOverrides) -> Result<ImportOptions, Error> {
        let mut ic = self.clone();
        if let Some(v) = a.cid_version {
            ic.cid_version = v;
        }
        if a.raw_leaves.is_some() {
            ic.raw_leaves = a.raw_leaves;
        } else if a.cid_version.is_some() {
            // An explicit --cid-version decides the leaf kind afresh, as in Kubo.
            ic.raw_leaves = None;
        }
        if let Some(c) = &a.chunker {
            ic.chunker = c.clone();
        }
        if a.trickle {
            ic.layout = "trickle".into();
        }
        if let Some(h) = &a.hash {
            ic.hash = h.clone();
        }
        let mut o = ic.to_options()?;
        o.hidden = a.hidden;
        o.wrap = a.wrap;
        Ok(o)
    }
}

pub fn parse_layout(s: &str) -> Result<Layout, Error> {
    match s {
        "balanced" => Ok(Layout::Balanced),
        "trickle" => Ok(Layout::Trickle),
        other => Err(Error::Invalid(format!(
            "layout '{other}' is unknown: use balanced or trickle"
        ))),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter. Default `info`.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
        }
    }
}

/// The libp2p swarm (Kubo's `Addresses.Swarm` and `Swarm.ConnMgr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmConfig {
    /// Multiaddrs to listen on. Default: TCP and QUIC on port 4001, IPv4 and IPv6.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Seconds a connection no protocol uses stays open. Default 600.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Established connections, all peers together. Default 256.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Established connections to one peer. Default 4.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: u32,
    /// Connections being set up, each direction. Default 64.
    #[serde(default = "default_max_pending")]
    pub max_pending: u32,
    /// Seconds to wait for a block no connected peer has sent before `cat`/`get` fail. Default 120.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_secs: u64,
}

/// Default of `swarm.listen`, as Kubo's `Addresses.Swarm` (less WebTransport).
pub const DEFAULT_SWARM_LISTEN: [&str; 4] = [
    "/ip4/0.0.0.0/tcp/4001",
    "/ip6/::/tcp/4001",
    "/ip4/0.0.0.0/udp/4001/quic-v1",
    "/ip6/::/udp/4001/quic-v1",
];
/// Default of `swarm.idle_timeout_secs`: long, because peers are meant to stay connected
/// (Kubo keeps connections until its connection manager trims them).
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 600;
/// Default of `swarm.max_connections`: a Pi serves a handful of cluster peers, not a DHT.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;
/// Default of `swarm.max_connections_per_peer`: Kubo may hold a TCP and a QUIC connection at once.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Default of `swarm.max_pending`.
pub const DEFAULT_MAX_PENDING: u32 = 64;
/// Default of `swarm.fetch_timeout_secs`: peers on a mesh can be slow, but a reader must learn
/// that nobody has the block (Kubo waits for the caller to give up).
pub const DEFAULT_FETCH_TIMEOUT_SECS: u64 = 120;

fn default_listen() -> Vec<String> {
    DEFAULT_SWARM_LISTEN.iter().map(|s| s.to_string()).collect()
}
fn default_idle_timeout() -> u64 {
    DEFAULT_IDLE_TIMEOUT_SECS
}
fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}
fn default_max_connections_per_peer() -> u32 {
    DEFAULT_MAX_CONNECTIONS_PER_PEER
}
fn default_max_pending() -> u32 {
    DEFAULT_MAX_PENDING
}
fn default_fetch_timeout() -> u64 {
    DEFAULT_FETCH_TIMEOUT_SECS
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            listen: default_listen(),
            idle_timeout_secs: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_peer: default_max_connections_per_peer(),
            max_pending: default_max_pending(),
            fetch_timeout_secs: default_fetch_timeout(),
        }
    }
}

/// Finding peers without being told their addresses (Kubo's `Discovery`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// mDNS on the local network (`_p2p._udp.local`, as Kubo's `Discovery.MDNS.Enabled`). Default true.
    #[serde(default = "default_true")]
    pub mdns: bool,
}

fn default_true() -> bool {
    true
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig { mdns: true }
    }
}

/// Peers kept connected (Kubo's `Peering.Peers`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeeringConfig {
    /// Multiaddrs ending in `/p2p/<peer id>`. Default none.
    #[serde(default)]
    pub peers: Vec<String>,
}

/// The local control RPC (Kubo's `Addresses.API`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// A TCP multiaddr. Default `/ip4/127.0.0.1/tcp/5001`, Kubo's. Anything but loopback
    /// needs `token`.
    #[serde(default = "default_api_address")]
    pub address: String,
    /// A secret that every changing request must carry as `Authorization: Bearer <token>`
    /// (adding, pinning, connecting, starting a capture). Reads of content by CID and the
    /// status pages stay public. Default: none, which is allowed on loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Web origins (e.g. `http://wanda.local:5000`, WANDA's own app) allowed to call the API
    /// from a browser (CORS). Default none: only the daemon's own page.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

/// Default of `api.address`.
pub const DEFAULT_API_ADDRESS: &str = "/ip4/127.0.0.1/tcp/5001";

fn default_api_address() -> String {
    DEFAULT_API_ADDRESS.into()
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            address: default_api_address(),
            token: None,
            cors_origins: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::parse(DEFAULT_TOML, "built-in default", |_| None)
            .expect("the embedded default config parses")
    }
}

impl Config {
    /// Parses `text`, then applies environment overrides from `env`.
    pub fn parse(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Error> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        apply_env(&mut table, &env)?;
        let cfg: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| Error::Parse {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads `path`, or the embedded default when it does not exist.
    pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &path.display().to_string(), env),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "no config file; using the built-in default");
                Config::parse(DEFAULT_TOML, "built-in default", env)
            }
            Err(source) => Err(Error::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.import.to_options()?;
        if self.swarm.max_connections == 0 || self.swarm.max_connections_per_peer == 0 {
            return Err(Error::Invalid(
                "swarm: max_connections and max_connections_per_peer must be at least 1".into(),
            ));
        }
        if self.swarm.fetch_timeout_secs == 0 {
            return Err(Error::Invalid(
                "swarm: fetch_timeout_secs must be at least 1".into(),
            ));
        }
        if self.swarm.idle_timeout_secs == 0 {
            return Err(Error::Invalid(
                "swarm: idle_timeout_secs must be at least 1".into(),
            ));
        }
        self.gateway.validate().map_err(Error::Invalid)?;
        self.capture.validate().map_err(Error::Invalid)?;
        self.pipeline.validate().map_err(Error::Invalid)?;
        self.cluster
            .validate()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        // Addresses are parsed (and explained) by `node::NodeConfig`, which knows multiaddrs.
        Ok(())
    }
}

/// Every key of every section can be set by `WANDA_<SECTION>_<KEY>`. Known
/// sections and keys come from the default config plus the file, so an
/// override can also set a key the file leaves out.
fn apply_env(table: &mut toml::Table, env: &impl Fn(&str) -> Option<String>) -> Result<(), Error> {
    for (name, section, key) in SEED_ENV {
        if let Some(raw) = env(name) {
            tracing::debug!(%name, "config overridden from the environment (WANDA seed name)");
            set_key(table, section, key, seed_value(key, &raw))?;
        }
    }
    let defaults: toml::Table = DEFAULT_TOML.parse().expect("embedded default parses");
    let mut keys: Vec<(String, String)> = Vec::new();
    for t in [&defaults, &*table] {
        for (section, v) in t {
            if let Some(st) = v.as_table() {
                for k in st.keys() {
                    keys.push((section.clone(), k.clone()));
                }
            }
        }
    }
    // Keys commented out in the default file but valid.
    keys.push(("import".into(), "raw_leaves".into()));
    for k in [
        "api",
        "basic_auth_user",
        "basic_auth_password",
        "bearer_token",
    ] {
        keys.push(("cluster".into(), k.into()));
    }
    for k in crate::capture::CaptureConfig::UNSET_KEYS {
        keys.push(("capture".into(), k.into()));
    }
    keys.sort();
    keys.dedup();
    for (section, key) in keys {
        let name = format!(
            "{ENV_PREFIX}{}_{}",
            section.to_uppercase(),
            key.to_uppercase()
        );
        let Some(raw) = env(&name) else { continue };
        // Secrets are strings whatever they look like: a token of digits is not a number.
        let value = if key.ends_with("token") || key.ends_with("password") {
            toml::Value::String(raw)
        } else {
            parse_env_value(&raw)
        };
        tracing::debug!(%name, "config overridden from the environment");
        set_key(table, &section, &key, value)?;
    }
    Ok(())
}

/// Sets `[section] key = value`, creating the section if the file has none.
fn set_key(
    table: &mut toml::Table,
    section: &str,
    key: &str,
    value: toml::Value,
) -> Result<(), Error> {
    table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| Error::Invalid(format!("[{section}] is not a table")))?
        .insert(key.to_string(), value);
    Ok(())
}

/// The environment names of the WANDA app's seed configuration, and the keys they set. The
/// `WANDA_<SECTION>_<KEY>` names are applied after these, so they win.
pub const SEED_ENV: [(&str, &str, &str); 7] = [
    ("IPFS_ENABLED", "pipeline", "enabled"),
    ("IPFS_CLUSTER_API", "cluster", "api"),
    ("IPFS_DELETE_AFTER_PIN", "pipeline", "delete_after_pin"),
    ("IPFS_REPLICATION_MIN", "cluster", "replication_min"),
    ("IPFS_REPLICATION_MAX", "cluster", "replication_max"),
    ("IPFS_API_ADDR", "api", "address"),
    ("WANDA_CAPTURES_DIR", "pipeline", "captures_dir"),
];

/// A seed variable's value: Python-style booleans ("True", "1", "yes") for the two flags,
/// otherwise as any override.
fn seed_value(key: &str, raw: &str) -> toml::Value {
    if key == "enabled" || key == "delete_after_pin" {
        let b = matches!(
            raw.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        );
        return toml::Value::Boolean(b);
    }
    if key == "api" || key == "address" || key == "captures_dir" {
        return toml::Value::String(raw.to_string());
    }
    parse_env_value(raw)
}

fn parse_env_value(raw: &str) -> toml::Value {
    // A bare TOML value (42, true, "x", [..]) parses through a one-line document.
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pi_example_config_parses_and_says_what_it_claims() {
        let text = include_str!("../config/wanda-ipfs.toml");
        let c = Config::parse(text, "config/wanda-ipfs.toml", |_| None).unwrap();
        assert_eq!(
            c.pipeline.captures_dir(),
            Some(std::path::PathBuf::from("/home/pi/wanda/captures"))
        );
        assert!(c.pipeline.delete_after_pin);
        assert_eq!(
            (c.cluster.replication_min, c.cluster.replication_max),
            (2, 3)
        );
        assert!(c.cluster.api.is_some());
        assert_eq!(c.api.address, "/ip4/127.0.0.1/tcp/5001");
    }

    #[test]
    fn embedded_default_parses_and_matches_kubo() {
        let c = Config::default();
        // The shipped file and the serde defaults must say the same thing.
        let from_serde: Config = toml::from_str("").unwrap();
        assert_eq!(c, from_serde);
        assert_eq!(c.import.to_options().unwrap(), ImportOptions::default());
    }

    #[test]
    fn wanda_seed_environment_names_are_honoured_and_wanda_names_win() {
        let env = |k: &str| {
            match k {
                "IPFS_ENABLED" => Some("True"),
                "IPFS_CLUSTER_API" => Some("http://10.1.2.3:9094"),
                "IPFS_DELETE_AFTER_PIN" => Some("False"),
                "IPFS_REPLICATION_MIN" => Some("1"),
                "IPFS_REPLICATION_MAX" => Some("2"),
                "IPFS_API_ADDR" => Some("/ip4/127.0.0.1/tcp/5002"),
                "WANDA_CAPTURES_DIR" => Some("/home/pi/wanda/captures"),
                "WANDA_CLUSTER_REPLICATION_MAX" => Some("4"),
                _ => None,
            }
            .map(str::to_string)
        };
        let c = Config::parse(DEFAULT_TOML, "test", env).unwrap();
        assert!(c.pipeline.enabled);
        assert!(!c.pipeline.delete_after_pin);
        assert_eq!(c.cluster.api.as_deref(), Some("http://10.1.2.3:9094"));
        assert_eq!(
            (c.cluster.replication_min, c.cluster.replication_max),
            (1, 4)
        );
        assert_eq!(c.api.address, "/ip4/127.0.0.1/tcp/5002");
        assert_eq!(
            c.pipeline.captures_dir(),
            Some(std::path::PathBuf::from("/home/pi/wanda/captures"))
        );
        // Defaults: no cluster, no folder, delete after pin.
        let d = Config::default();
        assert!(d.cluster.api.is_none() && d.pipeline.captures_dir().is_none());
        assert!(d.pipeline.delete_after_pin);
        // A bad range is refused with the reason.
        let env = |k: &str| (k == "IPFS_REPLICATION_MIN").then(|| "5".to_string());
        let e = Config::parse(DEFAULT_TOML, "test", env).unwrap_err();
        assert!(e.to_string().contains("replication"), "{e}");
    }

    #[test]
    fn env_overrides_file() {
        let env = |k: &str| match k {
            "WANDA_IMPORT_CID_VERSION" => Some("1".to_string()),
            "WANDA_LOG_LEVEL" => Some("debug".to_string()),
            _ => None,
        };
        let c = Config::parse(DEFAULT_TOML, "test", env).unwrap();
        assert_eq!(c.import.cid_version, 1);
        assert_eq!(c.log.level, "debug");
        assert!(c.import.to_options().unwrap().raw_leaves);
        let env = |k: &str| match k {
            "WANDA_DISCOVERY_MDNS" => Some("false".to_string()),
            "WANDA_SWARM_LISTEN" => Some("[\"/ip4/127.0.0.1/tcp/0\"]".to_string()),
            "WANDA_PEERING_PEERS" => Some("[\"/ip4/10.0.0.1/tcp/4001/p2p/x\"]".to_string()),
            _ => None,
        };
        let c = Config::parse(DEFAULT_TOML, "test", env).unwrap();
        assert!(!c.discovery.mdns);
        assert_eq!(c.swarm.listen, vec!["/ip4/127.0.0.1/tcp/0".to_string()]);
        assert_eq!(c.peering.peers.len(), 1);
        let env = |k: &str| (k == "WANDA_IMPORT_RAW_LEAVES").then(|| "false".to_string());
        let c = Config::parse("[import]\ncid_version = 1\n", "test", env).unwrap();
        assert!(!c.import.to_options().unwrap().raw_leaves);
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let none = |_: &str| None;
        assert!(Config::parse("[import]\ncid_verison = 1\n", "t", none).is_err());
        assert!(Config::parse("[imprt]\n", "t", none).is_err());
        let e = Config::parse("[import]\nchunker = \"rabin\"\n", "t", none).unwrap_err();
        assert!(e.to_string().contains("size-N"), "{e}");
        assert!(Config::parse("[import]\nhash = \"blake3\"\n", "t", none).is_err());
        let bad_env = |k: &str| (k == "WANDA_IMPORT_CID_VERSION").then(|| "two".to_string());
        assert!(Config::parse("", "t", bad_env).is_err());
    }
}
