//! Pin options and the query strings that carry them: the cluster reads pin options from the
//! query only (`PinOptions.FromQuery`), never from a body. Pure.

use std::collections::BTreeMap;

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

use super::config::{validate_replication, ClusterConfig};
use super::error::ErrorKind;
use crate::node::client::percent_encode;

/// What to ask of the cluster for one pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinOptions {
    /// -1 = every peer, 0 = the cluster's default. Always sent with `replication_max`, since the
    /// cluster answers 500 to a min alone.
    pub replication_min: i32,
    pub replication_max: i32,
    /// Free text (a session name: spaces, any Unicode).
    pub name: String,
    /// User metadata, sent as `meta-<key>=<value>`.
    pub metadata: BTreeMap<String, String>,
    /// Where the cluster's IPFS daemons can fetch the DAG, each ending in `/p2p/<peer id>`: this
    /// node's addresses. The cluster dials at most the first 10, and only tries.
    pub origins: Vec<Multiaddr>,
}

impl PinOptions {
    /// The replication from `[cluster]`, no name, metadata or origins.
    pub fn from_config(cfg: &ClusterConfig) -> PinOptions {
        PinOptions {
            replication_min: cfg.replication_min,
            replication_max: cfg.replication_max,
            name: String::new(),
            metadata: BTreeMap::new(),
            origins: Vec::new(),
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn with_origins(mut self, origins: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.origins = origins.into_iter().collect();
        self
    }
}

/// The query of `POST /pins/{cid}` (without `?`): replication-min, replication-max, name,
/// mode=recursive, meta-*, origins, in that order.
pub(crate) fn pin_query(o: &PinOptions) -> Result<String, ErrorKind> {
    validate_replication(o.replication_min, o.replication_max)?;
    let mut q = Query::default();
    q.push("replication-min", &o.replication_min.to_string());
    q.push("replication-max", &o.replication_max.to_string());
    if !o.name.is_empty() {
        q.push("name", &o.name);
    }
    q.push("mode", "recursive");
    for (k, v) in &o.metadata {
        if k.is_empty() {
            return Err(ErrorKind::EmptyMetadataKey);
        }
        q.push(&format!("meta-{k}"), v);
    }
    if !o.origins.is_empty() {
        let mut list = Vec::with_capacity(o.origins.len());
        for m in &o.origins {
            if !matches!(m.iter().last(), Some(Protocol::P2p(_))) {
                return Err(ErrorKind::OriginWithoutPeer {
                    addr: m.to_string(),
                });
            }
            list.push(m.to_string());
        }
        // Multiaddrs hold no commas; the cluster splits the decoded value on them.
        q.push("origins", &list.join(","));
    }
    Ok(q.0)
}

/// The query of `POST /add` for a CAR upload: the pin options plus the adder's.
pub(crate) fn add_car_query(o: &PinOptions, local: bool) -> Result<String, ErrorKind> {
    let pin = pin_query(o)?;
    let mut q = Query::default();
    q.push("format", "car");
    q.push("stream-channels", "true");
    q.push("local", if local { "true" } else { "false" });
    Ok(format!("{}&{pin}", q.0))
}

#[derive(Default)]
struct Query(String);

impl Query {
    fn push(&mut self, k: &str, v: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(&percent_encode(k));
        self.0.push('=');
        self.0.push_str(&percent_encode(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";

    /// How Go's url.ParseQuery reads a query (the cluster's side), for round-trip checks.
    fn go_parse(q: &str) -> Vec<(String, String)> {
        fn unescape(s: &str) -> String {
            let b = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'%' => {
                        let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                        out.push(u8::from_str_radix(h, 16).unwrap());
                        i += 3;
                    }
                    b'+' => {
                        out.push(b' ');
                        i += 1;
                    }
                    c => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8(out).unwrap()
        }
        q.split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (unescape(k), unescape(v))
            })
            .collect()
    }

    fn opts() -> PinOptions {
        PinOptions::from_config(&ClusterConfig::default())
    }

    #[test]
    fn the_minimal_query_has_both_factors_and_recursive() {
        assert_eq!(
            pin_query(&opts()).unwrap(),
            "replication-min=2&replication-max=3&mode=recursive"
        );
        let every = PinOptions {
            replication_min: -1,
            replication_max: -1,
            ..opts()
        };
        assert_eq!(
            pin_query(&every).unwrap(),
            "replication-min=-1&replication-max=-1&mode=recursive"
        );
    }

    #[test]
    fn free_text_round_trips_through_gos_parser() {
        let origin: Multiaddr = format!("/ip4/192.168.1.20/tcp/4001/p2p/{PEER}")
            .parse()
            .unwrap();
        let quic: Multiaddr = format!("/ip6/::1/udp/4001/quic-v1/p2p/{PEER}")
            .parse()
            .unwrap();
        let o = opts()
            .with_name("Nuit 1 – M42 & Orion+ 100%")
            .with_meta("session", "n1=a&b")
            .with_meta("lieu é", "Pic du Midi")
            .with_origins([origin.clone(), quic.clone()]);
        let q = pin_query(&o).unwrap();
        assert!(q.is_ascii() && !q.contains(' '), "{q}");
        let got = go_parse(&q);
        let want = vec![
            ("replication-min".to_string(), "2".to_string()),
            ("replication-max".into(), "3".into()),
            ("name".into(), "Nuit 1 – M42 & Orion+ 100%".into()),
            ("mode".into(), "recursive".into()),
            ("meta-lieu é".into(), "Pic du Midi".into()),
            ("meta-session".into(), "n1=a&b".into()),
            ("origins".into(), format!("{origin},{quic}")),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn bad_options_are_caught_before_sending() {
        let no_peer = opts().with_origins(["/ip4/1.2.3.4/tcp/4001".parse().unwrap()]);
        assert!(matches!(
            pin_query(&no_peer),
            Err(ErrorKind::OriginWithoutPeer { .. })
        ));
        let empty_key = opts().with_meta("", "x");
        assert!(matches!(
            pin_query(&empty_key),
            Err(ErrorKind::EmptyMetadataKey)
        ));
        let upside_down = PinOptions {
            replication_min: 3,
            replication_max: 2,
            ..opts()
        };
        let e = pin_query(&upside_down).unwrap_err();
        assert!(!e.is_transient() && e.to_string().contains("larger"), "{e}");
    }

    #[test]
    fn add_query() {
        let q = add_car_query(&opts().with_name("a b"), false).unwrap();
        assert_eq!(
            q,
            "format=car&stream-channels=true&local=false&replication-min=2&replication-max=3&name=a%20b&mode=recursive"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_name_and_metadata_round_trip(name in ".{0,40}", k in ".{1,12}", v in ".{0,40}") {
            let o = opts().with_name(name.clone()).with_meta(k.clone(), v.clone());
            let q = pin_query(&o).unwrap();
            let got = go_parse(&q);
            let want_name = ("name".to_string(), name.clone());
            let want_meta = (format!("meta-{k}"), v.clone());
            proptest::prop_assert!(name.is_empty() || got.contains(&want_name));
            proptest::prop_assert!(got.contains(&want_meta));
        }
    }
}
