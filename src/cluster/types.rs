//! The REST API's JSON objects, as ipfs-cluster v1.1.6 writes them (api/types.go, api/add.go).
//!
//! Decoding is lenient where Go is loose and strict where it matters: unknown fields are ignored (a
//! newer cluster adds some), Go's `null` for an empty slice or map is an empty collection, omitted
//! fields take their zero value, an unknown tracker status is kept as [`TrackerStatus::Unknown`];
//! but a CID must parse. Everything here is pure: bytes in, values or [`DecodeError`] out.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use cid::Cid;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;

/// How much of an unparsable answer an error message quotes.
const SNIPPET_CHARS: usize = 120;

/// A pin as the cluster's shared state holds it (`POST`/`DELETE /pins/{cid}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pin {
    #[serde(deserialize_with = "de_cid")]
    pub cid: Cid,
    #[serde(default, deserialize_with = "de_null_default")]
    pub name: String,
    #[serde(default)]
    pub replication_factor_min: i32,
    #[serde(default)]
    pub replication_factor_max: i32,
    /// `recursive` or `direct`.
    #[serde(default, deserialize_with = "de_null_default")]
    pub mode: String,
    /// `pin` for what we send; `meta`, `clusterdag`, `shard` for sharded adds.
    #[serde(rename = "type", default, deserialize_with = "de_null_default")]
    pub pin_type: String,
    /// Cluster peer ids; empty when the pin is on every peer (replication -1).
    #[serde(default, deserialize_with = "de_null_default")]
    pub allocations: Vec<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub origins: Vec<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub max_depth: i32,
    /// RFC 3339; `0001-01-01T00:00:00Z` when the pin does not expire.
    #[serde(default, deserialize_with = "de_null_default")]
    pub expire_at: String,
    /// When the pin was committed to the shared state (RFC 3339).
    #[serde(default, deserialize_with = "de_null_default")]
    pub timestamp: String,
}

/// A pin's state on each cluster peer (`GET /pins/{cid}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GlobalPinInfo {
    /// `null` only when no peer reported at all.
    #[serde(default, deserialize_with = "de_opt_cid")]
    pub cid: Option<Cid>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub allocations: Vec<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub origins: Vec<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub created: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub metadata: BTreeMap<String, String>,
    /// By cluster peer id.
    #[serde(default, deserialize_with = "de_null_default")]
    pub peer_map: BTreeMap<String, PinInfo>,
}

impl GlobalPinInfo {
    /// Peers that hold the data. Only `pinned` counts: `pinning` may still fail, `remote` means
    /// "not allocated here".
    pub fn pinned_count(&self) -> usize {
        self.peer_map
            .values()
            .filter(|p| p.status == TrackerStatus::Pinned)
            .count()
    }

    /// Peers whose status is an error (they will not get the data without help).
    pub fn error_count(&self) -> usize {
        self.peer_map
            .values()
            .filter(|p| p.status.is_error())
            .count()
    }

    /// The IPFS addresses (each ending in `/p2p/<id>`) of the peers this pin concerns: every
    /// peer not marked `remote`. These are the peers that will fetch the DAG, so these are the
    /// ones a node that cannot be dialled (behind NAT) should dial itself. Unparsable addresses
    /// and addresses of peers whose IPFS id is unknown are left out; duplicates once.
    pub fn ipfs_addresses(&self) -> Vec<Multiaddr> {
        let mut out = Vec::new();
        for p in self.allocated() {
            for a in p.ipfs_addresses() {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// The peers the pin is allocated to: every peer not marked `remote`.
    pub fn allocated(&self) -> impl Iterator<Item = &PinInfo> {
        self.peer_map
            .values()
            .filter(|p| p.status != TrackerStatus::Remote)
    }
}

/// One peer's view of one pin (`PinInfoShort`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PinInfo {
    #[serde(default, deserialize_with = "de_null_default")]
    pub peername: String,
    /// The peer's IPFS daemon id; omitted when the cluster does not know it.
    #[serde(default)]
    pub ipfs_peer_id: Option<String>,
    /// Omitted when empty, `null` from some remote peers.
    #[serde(default, deserialize_with = "de_null_default")]
    pub ipfs_peer_addresses: Vec<String>,
    pub status: TrackerStatus,
    #[serde(default, deserialize_with = "de_null_default")]
    pub timestamp: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub error: String,
    #[serde(default)]
    pub attempt_count: i64,
    #[serde(default)]
    pub priority_pin: bool,
}

impl PinInfo {
    /// This peer's IPFS addresses, each ending in `/p2p/<ipfs_peer_id>`.
    pub fn ipfs_addresses(&self) -> Vec<Multiaddr> {
        dialable(&self.ipfs_peer_addresses, self.ipfs_peer_id.as_deref())
    }
}

/// A peer's pin tracker status (api/types.go `TrackerStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrackerStatus {
    Undefined,
    /// The cluster could not ask that peer (offline, or an RPC error).
    ClusterError,
    /// Its IPFS daemon failed to pin (the cluster retries every 12 minutes).
    PinError,
    UnpinError,
    /// Its IPFS daemon holds the data.
    Pinned,
    Pinning,
    Unpinning,
    Unpinned,
    /// Not allocated to that peer.
    Remote,
    PinQueued,
    UnpinQueued,
    Sharded,
    /// Pinned per the cluster, missing in its IPFS daemon.
    UnexpectedlyUnpinned,
    /// A status this client does not know (a newer cluster), kept verbatim.
    Unknown(String),
}

const STATUS_NAMES: [(&str, TrackerStatus); 13] = [
    ("undefined", TrackerStatus::Undefined),
    ("cluster_error", TrackerStatus::ClusterError),
    ("pin_error", TrackerStatus::PinError),
    ("unpin_error", TrackerStatus::UnpinError),
    ("pinned", TrackerStatus::Pinned),
    ("pinning", TrackerStatus::Pinning),
    ("unpinning", TrackerStatus::Unpinning),
    ("unpinned", TrackerStatus::Unpinned),
    ("remote", TrackerStatus::Remote),
    ("pin_queued", TrackerStatus::PinQueued),
    ("unpin_queued", TrackerStatus::UnpinQueued),
    ("sharded", TrackerStatus::Sharded),
    ("unexpectedly_unpinned", TrackerStatus::UnexpectedlyUnpinned),
];

impl TrackerStatus {
    /// The name the cluster uses.
    pub fn as_str(&self) -> &str {
        match self {
            TrackerStatus::Unknown(s) => s,
            known => STATUS_NAMES
                .iter()
                .find(|(_, s)| s == known)
                .map_or("undefined", |(n, _)| n),
        }
    }

    /// `cluster_error`, `pin_error`, `unpin_error`, `unexpectedly_unpinned`.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            TrackerStatus::ClusterError
                | TrackerStatus::PinError
                | TrackerStatus::UnpinError
                | TrackerStatus::UnexpectedlyUnpinned
        )
    }
}

impl FromStr for TrackerStatus {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(STATUS_NAMES.iter().find(|(n, _)| *n == s).map_or_else(
            || TrackerStatus::Unknown(s.to_string()),
            |(_, st)| st.clone(),
        ))
    }
}

impl fmt::Display for TrackerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TrackerStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse()
            .unwrap_or_else(|e: std::convert::Infallible| match e {}))
    }
}

/// A cluster peer (`GET /id`, one line of `GET /peers`). A peer the cluster could not reach has
/// only `id` and `error`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IdInfo {
    #[serde(default, deserialize_with = "de_null_default")]
    pub id: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub addresses: Vec<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub cluster_peers: Vec<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub cluster_peers_addresses: Vec<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub version: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub commit: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub rpc_protocol_version: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub error: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub ipfs: IpfsId,
    #[serde(default, deserialize_with = "de_null_default")]
    pub peername: String,
}

impl IdInfo {
    /// The addresses of this peer's IPFS daemon, each ending in `/p2p/<ipfs id>`: what a node
    /// behind NAT dials so that the cluster's IPFS daemons can fetch from it.
    pub fn ipfs_addresses(&self) -> Vec<Multiaddr> {
        dialable(&self.ipfs.addresses, self.ipfs.id.as_deref())
    }
}

/// The IPFS daemon beside a cluster peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct IpfsId {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub addresses: Vec<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub error: String,
}

/// One line of `POST /add`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AddedOutput {
    #[serde(default, deserialize_with = "de_null_default")]
    pub name: String,
    #[serde(deserialize_with = "de_cid")]
    pub cid: Cid,
    /// Block bytes received (CAR uploads).
    #[serde(default)]
    pub bytes: Option<u64>,
    /// The UnixFS file size of the root, when it is a file.
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub allocations: Vec<String>,
}

/// The body of every error answer: `{"code":<int>,"message":"<text>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ApiErrorBody {
    #[serde(default)]
    pub(crate) code: Option<i64>,
    pub(crate) message: String,
}

/// An answer that is not the JSON we expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError {
    pub(crate) reason: String,
    /// The start of the answer, escaped.
    pub(crate) snippet: String,
}

/// Decodes one JSON value of type `T` (surrounding whitespace allowed, nothing else).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError {
        reason: e.to_string(),
        snippet: snippet(bytes),
    })
}

/// The first characters of `bytes`, lossily decoded and escaped, for an error message.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SNIPPET_CHARS * 4)]);
    let mut s: String = text.chars().take(SNIPPET_CHARS).collect();
    if text.chars().count() > SNIPPET_CHARS || bytes.len() > SNIPPET_CHARS * 4 {
        s.push('…');
    }
    format!("{s:?}")
}

/// Multiaddrs ending in `/p2p/<peer>`: the address as given if it already names a peer, else with
/// `peer` appended. Unparsable ones, and peerless ones when `peer` is unknown, are skipped.
fn dialable(addrs: &[String], peer: Option<&str>) -> Vec<Multiaddr> {
    let peer = peer.and_then(|p| PeerId::from_str(p).ok());
    let mut out: Vec<Multiaddr> = Vec::new();
    for a in addrs {
        let Ok(mut m) = Multiaddr::from_str(a) else {
            tracing::debug!(addr = %a, "cluster: skipping an IPFS address that does not parse");
            continue;
        };
        if !matches!(m.iter().last(), Some(Protocol::P2p(_))) {
            match peer {
                Some(p) => m.push(Protocol::P2p(p)),
                None => continue,
            }
        }
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// Go writes a nil slice or map as `null`: read it as the empty value.
fn de_null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A CID as a string; pre-1.0 clusters wrote `{"/": "<cid>"}`, which costs nothing to accept.
#[derive(Deserialize)]
#[serde(untagged)]
enum CidRepr {
    Str(String),
    Link {
        #[serde(rename = "/")]
        link: String,
    },
}

fn parse_cid<E: serde::de::Error>(r: CidRepr) -> Result<Cid, E> {
    let s = match r {
        CidRepr::Str(s) | CidRepr::Link { link: s } => s,
    };
    Cid::try_from(s.as_str()).map_err(|e| E::custom(format!("bad CID {s:?}: {e}")))
}

fn de_cid<'de, D: Deserializer<'de>>(d: D) -> Result<Cid, D::Error> {
    parse_cid(CidRepr::deserialize(d)?)
}

fn de_opt_cid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cid>, D::Error> {
    Option::<CidRepr>::deserialize(d)?
        .map(parse_cid)
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN";
    const IPFS_ID: &str = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";

    /// A Pin as v1.1.6's pinHandler writes it (json.Encoder: one line, newline-terminated).
    const PIN_JSON: &str = r#"{"replication_factor_min":2,"replication_factor_max":3,"name":"night 1 – M42","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z","metadata":{"session":"s1"},"pin_update":null,"origins":["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"],"cid":"QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN","type":"pin","allocations":["12D3KooWA","12D3KooWB","12D3KooWC"],"max_depth":-1,"reference":null,"timestamp":"2024-05-01T12:00:00.123456789Z"}
"#;

    #[test]
    fn pin_object() {
        let p: Pin = decode(PIN_JSON.as_bytes()).unwrap();
        assert_eq!(p.cid.to_string(), CID);
        assert_eq!(p.name, "night 1 – M42");
        assert_eq!((p.replication_factor_min, p.replication_factor_max), (2, 3));
        assert_eq!((p.mode.as_str(), p.pin_type.as_str()), ("recursive", "pin"));
        assert_eq!(p.allocations.len(), 3);
        assert_eq!(p.metadata["session"], "s1");
        assert_eq!(p.max_depth, -1);
        // Pin everywhere: allocations null; no origins: null; no metadata: null.
        let everywhere = PIN_JSON
            .replace(
                r#""allocations":["12D3KooWA","12D3KooWB","12D3KooWC"]"#,
                r#""allocations":null"#,
            )
            .replace(r#""metadata":{"session":"s1"}"#, r#""metadata":null"#);
        let p: Pin = decode(everywhere.as_bytes()).unwrap();
        assert!(p.allocations.is_empty() && p.metadata.is_empty());
        // The pre-1.0 CID object is accepted too.
        let old = PIN_JSON.replace(
            &format!(r#""cid":"{CID}""#),
            &format!(r#""cid":{{"/":"{CID}"}}"#),
        );
        assert_eq!(decode::<Pin>(old.as_bytes()).unwrap().cid.to_string(), CID);
        // A CID that does not parse is an error, not a default.
        let bad = PIN_JSON.replace(CID, "not-a-cid");
        let e = decode::<Pin>(bad.as_bytes()).unwrap_err();
        assert!(e.reason.contains("not-a-cid"), "{e:?}");
    }

    /// GlobalPinInfo with what real clusters send: omitted ipfs fields, null arrays from remote
    /// peers, a status this client does not know.
    #[test]
    fn global_pin_info() {
        let json = format!(
            r#"{{"cid":"{CID}","name":"img","allocations":["cA","cB"],"origins":null,"created":"2024-05-01T12:00:00Z","metadata":null,"peer_map":{{
            "cA":{{"peername":"a","ipfs_peer_id":"{IPFS_ID}","ipfs_peer_addresses":["/ip4/10.0.0.1/tcp/4001","/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{IPFS_ID}","not an addr"],"status":"pinned","timestamp":"2024-05-01T12:00:01Z","error":"","attempt_count":0,"priority_pin":false}},
            "cB":{{"peername":"b","ipfs_peer_addresses":null,"status":"pin_error","timestamp":"2024-05-01T12:00:01Z","error":"context deadline exceeded","attempt_count":2,"priority_pin":true}},
            "cC":{{"peername":"c","status":"remote","timestamp":"2024-05-01T12:00:01Z","error":"","attempt_count":0,"priority_pin":false}},
            "cD":{{"peername":"d","status":"frobnicating","timestamp":"x","error":"","attempt_count":0,"priority_pin":false}}
            }}}}"#
        );
        let g: GlobalPinInfo = decode(json.as_bytes()).unwrap();
        assert_eq!(g.cid.unwrap().to_string(), CID);
        assert_eq!(g.peer_map.len(), 4);
        assert_eq!(g.pinned_count(), 1);
        assert_eq!(g.error_count(), 1);
        assert_eq!(g.peer_map["cB"].error, "context deadline exceeded");
        assert_eq!(g.peer_map["cB"].attempt_count, 2);
        assert_eq!(
            g.peer_map["cD"].status,
            TrackerStatus::Unknown("frobnicating".into())
        );
        assert!(g.peer_map["cC"].ipfs_peer_id.is_none());
        // /p2p/ appended where missing, kept where present, garbage skipped; remote peers not asked.
        let addrs: Vec<String> = g.ipfs_addresses().iter().map(|a| a.to_string()).collect();
        assert_eq!(
            addrs,
            vec![
                format!("/ip4/10.0.0.1/tcp/4001/p2p/{IPFS_ID}"),
                format!("/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{IPFS_ID}"),
            ]
        );
        // An unknown CID: every peer unpinned; an empty map as null.
        let unknown = format!(
            r#"{{"cid":"{CID}","name":"","allocations":null,"origins":null,"created":"0001-01-01T00:00:00Z","metadata":null,"peer_map":null}}"#
        );
        let g: GlobalPinInfo = decode(unknown.as_bytes()).unwrap();
        assert_eq!((g.pinned_count(), g.peer_map.len()), (0, 0));
    }

    #[test]
    fn every_status_name_round_trips() {
        for (name, st) in STATUS_NAMES {
            let parsed: TrackerStatus = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(parsed, st);
            assert_eq!(parsed.as_str(), name);
        }
        assert_eq!(TrackerStatus::Unknown("new".into()).to_string(), "new");
    }

    #[test]
    fn id_info_full_and_unreachable() {
        let json = format!(
            r#"{{"id":"12D3KooWCluster","addresses":["/ip4/127.0.0.1/tcp/9096/p2p/12D3KooWCluster"],"cluster_peers":["12D3KooWCluster"],"cluster_peers_addresses":null,"version":"1.1.6","commit":"","rpc_protocol_version":"/ipfscluster/1.0/rpc","error":"","ipfs":{{"id":"{IPFS_ID}","addresses":["/ip4/127.0.0.1/tcp/4001","/ip6/::1/tcp/4001"],"error":""}},"peername":"p0"}}"#
        );
        let id: IdInfo = decode(json.as_bytes()).unwrap();
        assert_eq!(id.version, "1.1.6");
        assert_eq!(id.ipfs_addresses().len(), 2);
        assert!(id.ipfs_addresses()[1]
            .to_string()
            .ends_with(&format!("/p2p/{IPFS_ID}")));
        // A peer the cluster could not reach: id + error, zero values elsewhere.
        let down = r#"{"id":"12D3KooWGone","addresses":null,"cluster_peers":null,"cluster_peers_addresses":null,"version":"","commit":"","rpc_protocol_version":"","error":"dial backoff","ipfs":{"addresses":null,"error":""},"peername":""}"#;
        let id: IdInfo = decode(down.as_bytes()).unwrap();
        assert_eq!(id.error, "dial backoff");
        assert!(id.ipfs.id.is_none() && id.ipfs_addresses().is_empty());
    }

    #[test]
    fn added_output_and_error_body() {
        let a: AddedOutput = decode(
            format!(
                r#"{{"name":"night.car","cid":"{CID}","bytes":6,"size":6,"allocations":["cA"]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            (a.bytes, a.size, a.allocations.len()),
            (Some(6), Some(6), 1)
        );
        let a: AddedOutput = decode(format!(r#"{{"name":"x","cid":"{CID}"}}"#).as_bytes()).unwrap();
        assert_eq!((a.bytes, a.size), (None, None));
        let e: ApiErrorBody =
            decode(br#"{"code":400,"message":"error decoding Cid: invalid cid"}"#).unwrap();
        assert_eq!(e.code, Some(400));
        assert!(decode::<ApiErrorBody>(b"<html>502 Bad Gateway</html>").is_err());
    }

    #[test]
    fn snippets_are_short_and_escaped() {
        let s = snippet(&[b'a'; 10_000]);
        assert!(s.chars().count() < SNIPPET_CHARS + 5, "{s}");
        assert!(s.contains('…'));
        assert_eq!(snippet(b"x\ny"), "\"x\\ny\"");
        assert_eq!(snippet(&[0xff, b'a']), "\"\u{fffd}a\"");
    }

    proptest::proptest! {
        /// Arbitrary bytes: an error or a value, never a panic.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode::<Pin>(&bytes);
            let _ = decode::<GlobalPinInfo>(&bytes);
            let _ = decode::<IdInfo>(&bytes);
            let _ = decode::<AddedOutput>(&bytes);
            let _ = decode::<ApiErrorBody>(&bytes);
            let _ = snippet(&bytes);
        }

        /// Valid JSON of the right outline with arbitrary strings in it: never a panic either.
        #[test]
        fn decoders_survive_odd_strings(s in ".{0,64}", status in ".{0,16}") {
            let j = serde_json::json!({"cid": s, "peer_map": {"p": {"status": status, "ipfs_peer_id": s, "ipfs_peer_addresses": [s]}}});
            if let Ok(g) = decode::<GlobalPinInfo>(j.to_string().as_bytes()) {
                let _ = g.ipfs_addresses();
                let _ = g.pinned_count();
            }
        }
    }
}
