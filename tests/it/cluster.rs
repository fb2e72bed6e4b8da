//! The cluster client (`wanda_ipfs::cluster`) against [`ClusterDouble`], a test double of the
//! ipfs-cluster v1.1.6 REST API whose peers are real Kubo nodes: pinning through the swarm from a
//! running wanda-ipfs daemon, the cluster's refusals, transient failures (garbage, 5xx, a hang,
//! the API down), auth, NDJSON streams, HTTPS, and the CAR upload fallback.
//!
//! Everything is on 127.0.0.1; the Kubo peers have no bootstrap peers (kubo_peer.py). Under
//! `CI=true` a missing Kubo fails these tests. Narrow runs: `cargo test --test it cluster`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::str::FromStr;
use std::time::{Duration, Instant};

use cid::Cid;
use libp2p::Multiaddr;
use wanda_ipfs::cluster::{
    Backoff, ClusterClient, ClusterConfig, ErrorKind, GlobalPinInfo, PinOptions, Refusal,
    TrackerStatus,
};

use crate::cluster_double::{ClusterDouble, DoubleOptions, Fault, VERSION};
use crate::kubo::{kubo_or_skip, KuboPeer};
use crate::node::WandaDaemon;
use crate::util::{eqnice, sha256_file, TestRepo};

/// For the cluster's peers to fetch and pin a few MiB from the daemon.
const PIN_DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);
/// A CID nobody has (the sha256 of a block nobody stored).
const NOBODY: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `n` Kubo peers, or None (skipped loudly; a failure under CI=true).
fn kubos(n: usize) -> Option<Vec<KuboPeer>> {
    (0..n).map(|_| kubo_or_skip()).collect()
}

fn client(cfg: &ClusterConfig) -> ClusterClient {
    ClusterClient::new(cfg).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls the status of `cid` until `done` holds, or panics after `deadline` with the last one.
fn wait_status(
    rt: &tokio::runtime::Runtime,
    c: &ClusterClient,
    cid: &Cid,
    deadline: Duration,
    what: &str,
    done: impl Fn(&GlobalPinInfo) -> bool,
) -> GlobalPinInfo {
    let start = Instant::now();
    loop {
        let g = rt.block_on(c.status(cid)).unwrap_or_else(|e| panic!("{e}"));
        if done(&g) {
            return g;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}; last status: {g:#?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `f` (bounded) until it returns true.
fn wait_until(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// The daemon adds a file; a cluster of three Kubos pins it with min 2 / max 3 and the daemon's
/// addresses as origins: the Kubos dial the daemon and fetch the DAG over bitswap, the status
/// reaches `pinned` on every allocated peer, and each of them really holds the bytes. `peers()`
/// and `id()` give the Kubos' IPFS addresses. Unpin frees them; a second unpin says "not pinned".
#[test]
fn cluster_pins_via_the_swarm_onto_three_kubo_peers() {
    let Some(ks) = kubos(3) else { return };
    let repo = TestRepo::init();
    let d = WandaDaemon::start(&repo);
    let data = crate::corpus::Prng::new(2024).bytes((3 << 20) + 77);
    let file = repo.path().join("image_0001.jpg");
    std::fs::write(&file, &data).unwrap();
    let cid_s = d
        .cli_ok(&["add", "-Q", file.to_str().unwrap()])
        .trim()
        .to_string();
    let cid = Cid::from_str(&cid_s).unwrap();

    let double = ClusterDouble::start(ks);
    let c = client(&double.config());
    let rt = rt();

    // The NDJSON stream of peers: three, each with its Kubo's real IPFS addresses.
    let peers = rt.block_on(c.peers()).unwrap();
    eqnice!(3, peers.len());
    for (i, p) in peers.iter().enumerate() {
        eqnice!(double.cluster_id(i), p.id);
        eqnice!(VERSION, p.version.as_str());
        eqnice!(Some(double.ipfs_id(i)), p.ipfs.id.clone());
        let got: Vec<String> = p.ipfs_addresses().iter().map(|a| a.to_string()).collect();
        eqnice!(double.ipfs_addrs(i), got, "peer {i}");
    }
    let id = rt.block_on(c.id()).unwrap();
    eqnice!(double.cluster_id(0), id.id);
    eqnice!(3, id.cluster_peers.len());
    eqnice!(double.ipfs_addrs(0).len(), id.ipfs_addresses().len());

    let origins: Vec<Multiaddr> = d.addrs.iter().map(|a| a.parse().unwrap()).collect();
    let name = "Nuit 1 – M42 & Orion, 30 s";
    let opts = PinOptions {
        replication_min: 2,
        replication_max: 3,
        ..PinOptions::from_config(&ClusterConfig::default())
    }
    .with_name(name)
    .with_meta("session", "nuit 1")
    .with_origins(origins.clone());
    let t = Instant::now();
    let pin = rt
        .block_on(c.pin(&cid, &opts))
        .unwrap_or_else(|e| panic!("{e}"));
    eqnice!(cid, pin.cid);
    eqnice!(
        name,
        pin.name.as_str(),
        "the name survives the query string"
    );
    eqnice!("nuit 1", pin.metadata["session"].as_str());
    eqnice!(
        (2, 3),
        (pin.replication_factor_min, pin.replication_factor_max)
    );
    eqnice!(3, pin.allocations.len());
    eqnice!(d.addrs, pin.origins);
    let sent = double.requests();
    assert!(
        sent.iter().any(|r| r.starts_with(&format!(
            "POST /pins/{cid_s}?replication-min=2&replication-max=3&name=Nuit%201%20%E2%80%93"
        ))),
        "{sent:#?}"
    );

    let g = wait_status(
        &rt,
        &c,
        &cid,
        PIN_DEADLINE,
        "every allocated peer to pin",
        |g| g.pinned_count() >= 2 && g.pinned_count() == pin.allocations.len(),
    );
    eprintln!(
        "measured: pin of {} bytes on 3 Kubo peers via the swarm in {:?}",
        data.len(),
        t.elapsed()
    );
    eqnice!(0, g.error_count());
    eqnice!(name, g.name.as_str());
    // Every peer's IPFS addresses, for a node behind NAT to dial.
    let addrs: Vec<String> = g.ipfs_addresses().iter().map(|a| a.to_string()).collect();
    for i in 0..double.peer_count() {
        for a in double.ipfs_addrs(i) {
            assert!(addrs.contains(&a), "{a} missing from {addrs:?}");
        }
    }
    // Each allocated Kubo holds the DAG: pinned there, and its bytes are the file's.
    for i in 0..double.peer_count() {
        eqnice!(
            Some("pinned".to_string()),
            double.peer_status(&cid_s, i),
            "peer {i}"
        );
        let pins = double.with_kubo(i, |k| k.pins()).unwrap();
        assert!(pins.to_string().contains(&cid_s), "peer {i} pins: {pins}");
        let got = repo.path().join(format!("from-kubo-{i}"));
        double
            .with_kubo(i, |k| k.download(&cid_s, &got, Duration::from_secs(60)))
            .unwrap();
        eqnice!(sha256_file(&file), sha256_file(&got), "peer {i}");
    }

    // Unpin: removed from the pinset at once, from the Kubos in the background.
    let removed = rt.block_on(c.unpin(&cid)).unwrap();
    eqnice!(Some(cid), removed.map(|p| p.cid));
    let g = rt.block_on(c.status(&cid)).unwrap();
    assert!(
        g.peer_map
            .values()
            .all(|p| p.status == TrackerStatus::Unpinned),
        "{g:#?}"
    );
    for i in 0..double.peer_count() {
        wait_until(PIN_DEADLINE, "the Kubo unpin", || {
            let pins = double.with_kubo(i, |k| k.pins()).unwrap();
            !pins.to_string().contains(&cid_s)
        });
    }
    eqnice!(None, rt.block_on(c.unpin(&cid)).unwrap().map(|p| p.cid));
    let (s, _) = d.terminate();
    assert!(s.success());
}

/// The cluster's refusals are permanent errors that say what to do: not enough peers (also when
/// one goes offline), follower mode; a bad replication range never leaves the client. A pin
/// nobody can fetch ends in `pin_error`; an offline allocated peer shows `cluster_error`.
#[test]
fn cluster_refusals_are_permanent_and_pin_errors_show() {
    let Some(ks) = kubos(2) else { return };
    let double = ClusterDouble::start_with(
        ks,
        DoubleOptions {
            pin_timeout: Duration::from_secs(3),
            ..DoubleOptions::default()
        },
    );
    let c = client(&double.config());
    let rt = rt();
    let cid = Cid::from_str(NOBODY).unwrap();
    let with = |min, max| PinOptions {
        replication_min: min,
        replication_max: max,
        ..PinOptions::from_config(&ClusterConfig::default())
    };

    let e = rt.block_on(c.pin(&cid, &with(3, 3))).unwrap_err();
    assert!(!e.is_transient(), "{e}");
    eqnice!(Some(500), e.status());
    eqnice!(
        Some(&Refusal::NotEnoughPeers {
            needed: Some(3),
            wanted: Some(3),
            available: Some(2)
        }),
        e.refusal()
    );
    let m = e.to_string();
    assert!(
        m.contains(&double.url())
            && m.contains("POST /pins/")
            && m.contains("(needs 3, has 2): add cluster peers or lower [cluster] replication_min"),
        "{m}"
    );
    // Nothing was pinned.
    let g = rt.block_on(c.status(&cid)).unwrap();
    assert!(
        g.peer_map
            .values()
            .all(|p| p.status == TrackerStatus::Unpinned),
        "{g:#?}"
    );

    double.set_peer_online(1, false);
    let e = rt.block_on(c.pin(&cid, &with(2, 2))).unwrap_err();
    assert!(
        matches!(
            e.refusal(),
            Some(Refusal::NotEnoughPeers {
                available: Some(1),
                ..
            })
        ),
        "{e}"
    );
    double.set_peer_online(1, true);

    // min > max is caught before sending: no request reaches the cluster.
    let before = double.requests().len();
    let e = rt.block_on(c.pin(&cid, &with(3, 2))).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Options(_)) && !e.is_transient(),
        "{e}"
    );
    eqnice!(before, double.requests().len());

    double.set_follower(true);
    let e = rt.block_on(c.pin(&cid, &with(1, 1))).unwrap_err();
    eqnice!(Some(&Refusal::FollowerMode), e.refusal());
    assert!(
        !e.is_transient() && e.to_string().contains("non-follower"),
        "{e}"
    );
    double.set_follower(false);

    // Nobody has the block: the allocated Kubo gives up after the pin timeout -> pin_error.
    let pin = rt.block_on(c.pin(&cid, &with(1, 1))).unwrap();
    eqnice!(1, pin.allocations.len());
    let g = wait_status(&rt, &c, &cid, Duration::from_secs(60), "pin_error", |g| {
        g.error_count() == 1
    });
    let (peer, info) = g
        .peer_map
        .iter()
        .find(|(_, p)| p.status == TrackerStatus::PinError)
        .unwrap();
    assert!(!info.error.is_empty(), "{info:?}");
    eqnice!(0, g.pinned_count());
    let other = g.peer_map.iter().find(|(p, _)| *p != peer).unwrap().1;
    eqnice!(TrackerStatus::Remote, other.status);
    // The allocated peer goes offline: the cluster cannot ask it.
    let i = (0..2).find(|&i| double.cluster_id(i) == *peer).unwrap();
    double.set_peer_online(i, false);
    let g = rt.block_on(c.status(&cid)).unwrap();
    eqnice!(TrackerStatus::ClusterError, g.peer_map[peer].status.clone());
    let peers = rt.block_on(c.peers()).unwrap();
    assert!(!peers[i].error.is_empty() && peers[i].ipfs_addresses().is_empty());
}

/// Garbage from a 200, a 500 and a 503, a hang past the timeout, a broken stream and a cluster
/// that is down are transient errors, each saying what happened; the client works again after,
/// and `Backoff` paces a retry loop through a run of failures.
#[test]
fn cluster_transient_failures_are_reported_and_retryable() {
    let Some(ks) = kubos(1) else { return };
    let mut double = ClusterDouble::start(ks);
    let cfg = ClusterConfig {
        timeout_secs: 1,
        ..double.config()
    };
    let c = client(&cfg);
    let rt = rt();
    let cid = Cid::from_str(NOBODY).unwrap();
    rt.block_on(c.id()).unwrap();

    double.fail_next(1, Fault::Garbage);
    let e = rt.block_on(c.id()).unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        matches!(e.kind(), ErrorKind::Garbage { status: 200, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("not the cluster's JSON") && e.to_string().contains("<html>"),
        "{e}"
    );

    double.fail_next(1, Fault::Status(500, "dial backoff".into()));
    let e = rt.block_on(c.status(&cid)).unwrap_err();
    assert!(e.is_transient() && e.status() == Some(500), "{e}");
    assert!(e.to_string().contains("dial backoff"), "{e}");

    double.fail_next(1, Fault::Status(503, "service unavailable".into()));
    let e = rt
        .block_on(c.pin(&cid, &PinOptions::from_config(&cfg)))
        .unwrap_err();
    assert!(e.is_transient() && e.status() == Some(503), "{e}");

    let t = Instant::now();
    double.fail_next(1, Fault::Delay(Duration::from_secs(5)));
    let e = rt.block_on(c.id()).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Timeout(_)) && e.is_transient(),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(e.to_string().contains("timeout_secs"), "{e}");

    double.stream_error_next(1, "rpc: peer gone");
    let e = rt.block_on(c.peers()).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Stream { .. }) && e.is_transient(),
        "{e}"
    );
    assert!(e.to_string().contains("rpc: peer gone"), "{e}");

    double.go_down();
    let e = rt.block_on(c.id()).unwrap_err();
    match e.kind() {
        ErrorKind::Connect { error } => {
            eqnice!(std::io::ErrorKind::ConnectionRefused, error.kind())
        }
        other => panic!("expected a refused connection, got {other:?}"),
    }
    assert!(
        e.is_transient() && e.to_string().contains("ipfs-cluster-service"),
        "{e}"
    );
    double.come_up();
    eqnice!(double.cluster_id(0), rt.block_on(c.id()).unwrap().id);

    // Four failures in a row, then success: a bounded retry loop paced by Backoff.
    double.fail_next(4, Fault::Status(502, "bad gateway".into()));
    let mut b = Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
    let id = loop {
        match rt.block_on(c.id()) {
            Ok(id) => break id,
            Err(e) if e.is_transient() && b.attempt() < 10 => {
                std::thread::sleep(b.next_delay(wanda_ipfs::cluster::entropy()))
            }
            Err(e) => panic!("{e}"),
        }
    };
    eqnice!(4, b.attempt());
    eqnice!(double.cluster_id(0), id.id);
}

/// Basic auth: none, wrong and bearer are 401s with the cluster's messages (permanent), the right
/// credentials work, `/health` needs none. Then the REST surface as raw HTTP: 307 for a trailing
/// slash, 404/400/405/500 bodies, the `WWW-Authenticate` challenges, `Trailer: X-Stream-Error`.
#[test]
fn cluster_basic_auth_and_the_rest_surface() {
    let Some(ks) = kubos(1) else { return };
    let double = ClusterDouble::start(ks);
    double.require_basic_auth("wanda", "night-sky");
    let rt = rt();
    let anonymous = client(&double.config());
    // By host name: `localhost` goes through the in-process resolver (src/cluster/resolve.rs: the
    // static binary cannot use glibc's), which may give ::1 first; the double listens on
    // 127.0.0.1 only, so the next address must be tried.
    let by_name = format!("http://localhost:{}", double.addr().port());
    let with = |user: &str, pw: &str| {
        client(&ClusterConfig {
            api: Some(by_name.clone()),
            basic_auth_user: Some(user.into()),
            basic_auth_password: Some(pw.into()),
            ..double.config()
        })
    };
    for (c, msg) in [
        (&anonymous, "unauthorized: no auth provided"),
        (&with("wanda", "wrong"), "unauthorized: access denied"),
        (
            &client(&ClusterConfig {
                bearer_token: Some("not-a-jwt".into()),
                ..double.config()
            }),
            "unauthorized: invalid token",
        ),
    ] {
        let e = rt.block_on(c.id()).unwrap_err();
        match e.kind() {
            ErrorKind::Unauthorized { message } => eqnice!(msg, message.as_str()),
            other => panic!("expected 401, got {other:?}"),
        }
        assert!(
            !e.is_transient() && e.to_string().contains("basic_auth_user"),
            "{e}"
        );
    }
    rt.block_on(anonymous.health()).unwrap();
    let ok = with("wanda", "night-sky");
    eqnice!(double.cluster_id(0), rt.block_on(ok.id()).unwrap().id);
    eqnice!(1, rt.block_on(ok.peers()).unwrap().len());

    // ---- raw HTTP, as the cluster answers it
    let a = double.addr();
    let auth = format!(
        "Authorization: Basic {}\r\n",
        data_encoding::BASE64.encode(b"wanda:night-sky")
    );
    let r = raw(a, "GET /health HTTP/1.1\r\n");
    eqnice!(204, r.status);
    let r = raw(a, "GET /id HTTP/1.1\r\n");
    eqnice!(401, r.status);
    eqnice!(
        vec![
            "Bearer realm=\"Restricted IPFS Cluster API\"".to_string(),
            "Basic realm=\"Restricted IPFS Cluster API\"".to_string(),
        ],
        r.headers_named("www-authenticate")
    );
    eqnice!(
        r#"{"code":401,"message":"unauthorized: no auth provided"}"#,
        r.body.trim()
    );
    let r = raw(
        a,
        &format!("POST /pins/{NOBODY}/?name=x HTTP/1.1\r\n{auth}"),
    );
    eqnice!(307, r.status);
    eqnice!(
        vec![format!("/pins/{NOBODY}?name=x")],
        r.headers_named("location")
    );
    let r = raw(a, &format!("GET /nope HTTP/1.1\r\n{auth}"));
    eqnice!(
        (404, r#"{"code":404,"message":"not found"}"#),
        (r.status, r.body.trim())
    );
    let r = raw(a, &format!("GET /pins/not-a-cid HTTP/1.1\r\n{auth}"));
    eqnice!(400, r.status);
    assert!(
        r.body.contains(r#""message":"error decoding Cid: "#),
        "{}",
        r.body
    );
    let r = raw(a, &format!("PUT /pins/{NOBODY} HTTP/1.1\r\n{auth}"));
    eqnice!(405, r.status);
    // Only replication-min: the max defaults to -1, and min > max.
    let r = raw(
        a,
        &format!("POST /pins/{NOBODY}?replication-min=2 HTTP/1.1\r\n{auth}"),
    );
    eqnice!(
        (
            500,
            r#"{"code":500,"message":"cluster.replication_factor_min is larger than max"}"#
        ),
        (r.status, r.body.trim())
    );
    let r = raw(
        a,
        &format!("POST /pins/{NOBODY}?origins=%2Fip4%2F127.0.0.1%2Ftcp%2F1 HTTP/1.1\r\n{auth}"),
    );
    eqnice!(400, r.status);
    assert!(
        r.body.contains("multiaddress does not contain peer ID"),
        "{}",
        r.body
    );
    let r = raw(a, &format!("GET /peers HTTP/1.1\r\nTE: trailers\r\n{auth}"));
    eqnice!(200, r.status);
    eqnice!(
        vec!["X-Stream-Error".to_string()],
        r.headers_named("trailer")
    );
    eqnice!(
        vec!["chunked".to_string()],
        r.headers_named("transfer-encoding")
    );
    assert!(
        r.body
            .to_ascii_lowercase()
            .contains("\r\nx-stream-error: \r\n"),
        "{:?}",
        r.body
    );
    let r = raw(a, &format!("GET /version HTTP/1.1\r\n{auth}"));
    eqnice!(
        format!(r#"{{"version":"{VERSION}"}}"#),
        r.body.trim().to_string()
    );

    // A bearer token (the double takes one literal token where the cluster checks a JWT).
    double.require_bearer("header.payload.sig");
    let bearer = client(&ClusterConfig {
        bearer_token: Some("header.payload.sig".into()),
        ..double.config()
    });
    eqnice!(double.cluster_id(0), rt.block_on(bearer.id()).unwrap().id);
}

/// `tls_insecure = false` refuses a self-signed certificate (permanent, says how to allow it);
/// `true` talks to it.
#[test]
fn cluster_https_with_a_self_signed_certificate() {
    let Some(ks) = kubos(1) else { return };
    let double = ClusterDouble::start_with(
        ks,
        DoubleOptions {
            tls: true,
            ..DoubleOptions::default()
        },
    );
    assert!(double.url().starts_with("https://"));
    let rt = rt();
    let e = rt.block_on(client(&double.config()).id()).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::Tls {
                certificate: true,
                ..
            }
        ) && !e.is_transient(),
        "{e:?}"
    );
    assert!(e.to_string().contains("tls_insecure = true"), "{e}");
    let c = client(&ClusterConfig {
        tls_insecure: true,
        ..double.config()
    });
    eqnice!(double.cluster_id(0), rt.block_on(c.id()).unwrap().id);
    eqnice!(1, rt.block_on(c.peers()).unwrap().len());
}

/// The fallback when the cluster's peers cannot fetch from us: `POST /add?format=car` with the
/// DAG as a CAR file, streamed from disk; the allocated Kubos end up pinning it. A CAR the
/// cluster cannot allocate gets the refusal in the stream's trailer, still permanent.
#[test]
fn cluster_add_car_uploads_when_the_swarm_cannot_work() {
    let Some(ks) = kubos(2) else { return };
    let repo = TestRepo::init();
    let data = crate::corpus::Prng::new(7).bytes((1 << 20) + 3);
    let file = repo.path().join("image_0002.jpg");
    std::fs::write(&file, &data).unwrap();
    let cid_s = repo.cmd().args(["add", "-Q"]).arg(&file).stdout();
    let car = repo.path().join("image_0002.car");
    repo.cmd()
        .args(["dag", "export", &cid_s, "-o"])
        .arg(&car)
        .assert_ok();
    let cid = Cid::from_str(&cid_s).unwrap();

    let double = ClusterDouble::start(ks);
    let c = client(&double.config());
    let rt = rt();
    let opts = PinOptions {
        replication_min: 2,
        replication_max: 2,
        ..PinOptions::from_config(&ClusterConfig::default())
    }
    .with_name("image_0002");
    let out = rt
        .block_on(c.add_car(car.clone(), &opts))
        .unwrap_or_else(|e| panic!("{e}"));
    eqnice!(1, out.len());
    eqnice!(cid, out[0].cid);
    eqnice!("image_0002.car", out[0].name.as_str());
    eqnice!(Some(data.len() as u64), out[0].size);
    eqnice!(2, out[0].allocations.len());
    wait_status(&rt, &c, &cid, PIN_DEADLINE, "both peers to pin", |g| {
        g.pinned_count() == 2
    });
    for i in 0..2 {
        let pins = double.with_kubo(i, |k| k.pins()).unwrap();
        assert!(pins.to_string().contains(&cid_s), "peer {i}: {pins}");
    }

    let three = PinOptions {
        replication_min: 3,
        replication_max: 3,
        ..opts.clone()
    };
    let bytes = std::fs::read(&car).unwrap();
    let e = rt.block_on(c.add_car(bytes, &three)).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Stream { .. }), "{e:?}");
    assert!(
        matches!(e.refusal(), Some(Refusal::NotEnoughPeers { .. })) && !e.is_transient(),
        "{e}"
    );
    let e = rt
        .block_on(c.add_car(repo.path().join("missing.car"), &opts))
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::ReadFile { .. }) && !e.is_transient(),
        "{e}"
    );
}

// ---- raw HTTP ------------------------------------------------------------------------------------

struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawAnswer {
    fn headers_named(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Sends `head` (request line and headers, each ending in CRLF) plus Host and `Connection:
/// close`, and reads the whole answer, body undecoded.
fn raw(addr: SocketAddr, head: &str) -> RawAnswer {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("{head}Host: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    RawAnswer {
        status,
        headers,
        body: body.to_string(),
    }
}
