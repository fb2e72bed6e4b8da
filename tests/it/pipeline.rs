//! The capture pipeline end to end: `wanda-ipfs capture` writes a session into a folder, the
//! daemon (`[pipeline] captures_dir`) imports each still, asks IPFS Cluster to pin it, keeps the
//! cluster's IPFS daemons connected so they fetch the blocks from it over bitswap, waits for
//! `replication_min` replicas, then deletes the still and its blocks.
//!
//! The cluster is `cluster_double.rs`, a test double of ipfs-cluster v1.1.6's REST API built from
//! shared/cluster-api.md (the real service cannot be installed here); its peers are real Kubo
//! nodes, which really fetch every block from the daemon over the swarm. Under CI=true a missing
//! Kubo fails these tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wanda_ipfs::blockstore::NullSink;
use wanda_ipfs::capture::TestSource;
use wanda_ipfs::unixfs::file::import_bytes;
use wanda_ipfs::unixfs::ImportOptions;

use crate::cluster_double::{ClusterDouble, DoubleOptions, Fault};
use crate::kubo::{kubo_or_skip, KuboPeer};
use crate::node::WandaDaemon;
use crate::util::{TestRepo, WandaCmd};

/// Bytes per still: two 256 KiB chunks, so every image is a small DAG (root + 2 leaves).
const STILL_BYTES: usize = 300_000;
const SEED: u64 = 42;
/// How long a whole session may take to be pinned and freed.
const PIPELINE_DEADLINE: Duration = Duration::from_secs(300);

fn kubos(n: usize) -> Option<Vec<KuboPeer>> {
    (0..n).map(|_| kubo_or_skip()).collect()
}

/// Points the repo's config at `captures` and the double, with quick settle/poll times.
pub(crate) fn configure(repo: &TestRepo, captures: &Path, cluster: &str, min: i32, max: i32) {
    let path = repo.repo_path().join("config.toml");
    let text = std::fs::read_to_string(&path).expect("init wrote config.toml");
    let mut out = String::new();
    let mut section = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            section = line.to_string();
        }
        let key = line.split('=').next().unwrap_or("").trim();
        let replaced = match (section.as_str(), key) {
            ("[pipeline]", "captures_dir") => {
                format!("captures_dir = {:?}", captures.display().to_string())
            }
            ("[pipeline]", "settle_ms") => "settle_ms = 300".into(),
            ("[pipeline]", "poll_ms") => "poll_ms = 200".into(),
            ("[cluster]", "# api") => format!("api = {cluster:?}"),
            ("[cluster]", "replication_min") => format!("replication_min = {min}"),
            ("[cluster]", "replication_max") => format!("replication_max = {max}"),
            _ => line.to_string(),
        };
        out.push_str(&replaced);
        out.push('\n');
    }
    assert!(
        out.contains(&format!("api = {cluster:?}")),
        "config has a [cluster] api line"
    );
    std::fs::write(&path, out).unwrap();
}

/// Sets `key = value` in `section` of the repo's config (the key must be there already).
pub(crate) fn set_key(repo: &TestRepo, section: &str, key: &str, value: &str) {
    let path = repo.repo_path().join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut current = String::new();
    let mut found = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            current = line.to_string();
        }
        if current == section && line.split('=').next().unwrap_or("").trim() == key {
            out.push_str(&format!("{key} = {value}\n"));
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(found, "{section} {key} is in the default config");
    std::fs::write(&path, out).unwrap();
}

fn capture(captures: &Path, session: &str, count: u32, interval: &str) -> std::process::Child {
    let bin = env!("CARGO_BIN_EXE_wanda-ipfs");
    std::process::Command::new(bin)
        .args(["capture", "--dir"])
        .arg(captures)
        .args(["--source", "test", "--mode", "rapid"])
        .args([
            "--session",
            session,
            "--count",
            &count.to_string(),
            "--interval",
            interval,
        ])
        .args([
            "--size",
            &STILL_BYTES.to_string(),
            "--seed",
            &SEED.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn capture")
}

/// Captures `count` stills into `session` at once; returns the session's folder.
fn capture_now(captures: &Path, session: &str, count: u32) -> PathBuf {
    assert!(
        capture(captures, session, count, "0")
            .wait()
            .unwrap()
            .success(),
        "capture failed"
    );
    captures.join(session)
}

/// The CID `ipfs add` gives the test source's still `n`.
fn expected_cid(n: u32) -> String {
    let data = TestSource::new(STILL_BYTES, SEED).still(n);
    import_bytes(&ImportOptions::default(), &data, &mut NullSink)
        .unwrap()
        .cid
        .to_string()
}

fn metadata(dir: &Path) -> Option<Value> {
    let bytes = std::fs::read(dir.join("session_metadata.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn images(meta: &Value) -> Vec<Value> {
    meta["images"].as_array().cloned().unwrap_or_default()
}

/// Waits until `done` holds for the session's metadata; panics with the last one seen.
fn wait_metadata(
    dir: &Path,
    what: &str,
    deadline: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let t0 = Instant::now();
    let mut last = Value::Null;
    while t0.elapsed() < deadline {
        if let Some(m) = metadata(dir) {
            if done(&m) {
                eprintln!("{what}: after {:?}", t0.elapsed());
                return m;
            }
            last = m;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not after {deadline:?}; last metadata:\n{last:#}");
}

/// `n` images, every one pinned by the cluster and gone from the node.
fn all_pinned_and_freed(meta: &Value, n: usize) -> bool {
    let imgs = images(meta);
    imgs.len() == n
        && imgs
            .iter()
            .all(|i| i["pinned"] == true && i["local"] == false)
}

fn count_state(meta: &Value, state: &str) -> usize {
    images(meta).iter().filter(|i| i["state"] == state).count()
}

#[test]
fn pipeline_session_is_pinned_by_the_cluster_over_the_swarm_then_freed_even_across_kill_9() {
    let Some(peers) = kubos(3) else { return };
    let double = ClusterDouble::start(peers);
    let repo = TestRepo::init();
    let captures: PathBuf = repo.path().join("captures");
    let session = "Sesión M42, noche 1";
    let dir = captures.join(session);
    // WANDA's own metadata, written before wanda-ipfs saw the session: every key must survive.
    std::fs::create_dir_all(&dir).unwrap();
    let wanda = json!({
        "name": session,
        "created": "2026-11-25T21:00:00",
        "mode": "rapid",
        "camera": {"type": "hq", "exposure_us": 20000},
        "ipfs": {"enabled": true, "cluster": "from WANDA"},
        "images": [{"number": 1, "filename": "image_0001.jpg", "gain": 8}]
    });
    std::fs::write(
        dir.join("session_metadata.json"),
        serde_json::to_vec_pretty(&wanda).unwrap(),
    )
    .unwrap();
    configure(&repo, &captures, &double.url(), 2, 3);

    let daemon = WandaDaemon::start(&repo);
    let mut cap = capture(&captures, session, 20, "0.1");
    // Kill the daemon -9 once part of the session is in, restart it, and let it finish.
    wait_metadata(
        &dir,
        "first stills imported",
        Duration::from_secs(60),
        |m| images(m).len() >= 6,
    );
    daemon.kill9();
    let daemon = WandaDaemon::start(&repo);
    assert!(cap.wait().unwrap().success(), "capture failed");

    let meta = wait_metadata(
        &dir,
        "all 20 stills pinned and freed",
        PIPELINE_DEADLINE,
        |m| all_pinned_and_freed(m, 20),
    );

    // WANDA's keys, top level and per image, are intact; ours are right.
    assert_eq!(meta["created"], "2026-11-25T21:00:00");
    assert_eq!(meta["mode"], "rapid");
    assert_eq!(meta["camera"]["exposure_us"], 20000);
    assert_eq!(meta["ipfs"]["enabled"], true);
    assert_eq!(meta["ipfs"]["cluster"], double.url());
    let imgs = images(&meta);
    assert_eq!(imgs[0]["filename"], "image_0001.jpg");
    assert_eq!(imgs[0]["gain"], 8);
    let mut numbers: Vec<u64> = imgs.iter().map(|i| i["number"].as_u64().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (1..=20).collect::<Vec<u64>>(),
        "each still exactly once"
    );
    for img in &imgs {
        let n = img["number"].as_u64().unwrap() as u32;
        assert_eq!(
            img["cid"],
            expected_cid(n),
            "still {n}: CID as `ipfs add` gives it"
        );
        assert_eq!(img["state"], "pinned");
        assert!(img["replicas"].as_u64().unwrap() >= 2, "{img}");
        assert_eq!(img["size"], STILL_BYTES as u64);
        assert!(
            !dir.join(format!("image_{n:04}.jpg")).exists(),
            "still {n} deleted after confirmation"
        );
    }

    // The cluster's Kubo nodes really hold every image: each CID pinned on >= 2 of them, and
    // exactly one pin per image in the cluster's pinset.
    let pinned_on: Vec<Value> = (0..3)
        .map(|i| double.with_kubo(i, |k| k.pins().expect("kubo pins")))
        .collect();
    for n in 1..=20 {
        let cid = expected_cid(n);
        let holders = pinned_on
            .iter()
            .filter(|p| p.to_string().contains(&cid))
            .count();
        assert!(
            holders >= 2,
            "still {n} ({cid}) is held by {holders} Kubo nodes"
        );
    }
    // Each still asked of the cluster once; a second time only for stills whose acceptance the
    // kill -9 cut off before it was recorded (the cluster's pinset is keyed by CID, so that is
    // still one pin).
    let posts = double.pin_posts();
    for n in 1..=20 {
        let c = posts.get(&expected_cid(n)).copied().unwrap_or(0);
        assert!((1..=2).contains(&c), "still {n} was POSTed {c} times");
    }
    assert!(
        posts.values().filter(|&&c| c > 1).count() <= 2,
        "only stills in flight at the kill are asked twice: {posts:?}"
    );

    // Nothing of the session is left on the node: stop it and look at the repo offline.
    drop(daemon);
    let out = WandaCmd::new()
        .env("WANDA_IPFS_PATH", repo.repo_path())
        .args(["pin", "ls"])
        .stdout();
    for n in 1..=20 {
        assert!(
            !out.contains(&expected_cid(n)),
            "still {n} is still pinned locally:\n{out}"
        );
    }
    let stat = WandaCmd::new()
        .env("WANDA_IPFS_PATH", repo.repo_path())
        .args(["block", "stat", &expected_cid(3)])
        .run()
        .unwrap();
    assert!(
        !stat.status.success(),
        "still 3's root block is still stored"
    );
    // And with the node gone, a Kubo gives the still back from its own copy.
    let back = repo.path().join("back.jpg");
    double
        .with_kubo(1, |k| {
            k.download(&expected_cid(7), &back, Duration::from_secs(30))
        })
        .unwrap();
    assert!(
        std::fs::read(&back).unwrap() == TestSource::new(STILL_BYTES, SEED).still(7),
        "Kubo's copy of still 7 differs"
    );
}

#[test]
fn pipeline_not_enough_cluster_peers_fails_clearly_and_keeps_the_still() {
    let Some(peers) = kubos(1) else { return };
    let double = ClusterDouble::start(peers);
    let repo = TestRepo::init();
    let captures = repo.path().join("captures");
    configure(&repo, &captures, &double.url(), 2, 3);
    let _daemon = WandaDaemon::start(&repo);
    let session = "too few peers";
    let dir = capture_now(&captures, session, 2);
    let meta = wait_metadata(&dir, "both stills failed", Duration::from_secs(60), |m| {
        count_state(m, "failed") == 2
    });
    for img in images(&meta) {
        let err = img["error"].as_str().unwrap_or_default();
        assert!(err.contains("not enough peers"), "error says why: {err}");
        assert_eq!(img["local"], true);
        assert_eq!(img["pinned"], false);
        let n = img["number"].as_u64().unwrap();
        assert!(
            dir.join(format!("image_{n:04}.jpg")).exists(),
            "a failed still is kept"
        );
    }
}

#[test]
fn pipeline_cluster_down_then_garbage_and_500s_then_back_loses_nothing() {
    let Some(peers) = kubos(2) else { return };
    let mut double = ClusterDouble::start(peers);
    let repo = TestRepo::init();
    let captures = repo.path().join("captures");
    configure(&repo, &captures, &double.url(), 1, 2);
    let _daemon = WandaDaemon::start(&repo);
    double.go_down();
    let session = "cluster outage";
    let dir = capture_now(&captures, session, 5);
    // Imported and kept, with the reason they wait, while the cluster is unreachable.
    let meta = wait_metadata(
        &dir,
        "stills imported and waiting",
        Duration::from_secs(60),
        |m| {
            let imgs = images(m);
            imgs.len() == 5 && imgs.iter().any(|i| i["error"].is_string())
        },
    );
    for img in images(&meta) {
        assert_eq!(img["state"], "imported", "{img}");
        assert_eq!(img["local"], true);
    }
    // Back, but answering a captive portal's page, then 500s, before it behaves.
    double.fail_next(2, Fault::Garbage);
    double.fail_next(2, Fault::Status(500, "dial backoff".into()));
    double.come_up();
    let meta = wait_metadata(
        &dir,
        "all pinned once the cluster is back",
        Duration::from_secs(120),
        |m| all_pinned_and_freed(m, 5),
    );
    for img in images(&meta) {
        assert!(
            img.get("error").is_none(),
            "a recovered image keeps no error: {img}"
        );
        assert!(img["replicas"].as_u64().unwrap() >= 1);
    }
    let posts = double.pin_posts();
    // A POST answered with garbage or a 500 is asked again; the double counts those too. The
    // four faults fall on whatever comes first, `GET /peers` or the first still's POST (when the
    // daemon learnt the peers before the outage, all four hit that POST): at most 1 + 4.
    let faulted: usize = posts.values().map(|c| c - 1).sum();
    assert!(faulted <= 4, "more retries than faults: {posts:?}");
    for n in 1..=5 {
        let c = posts.get(&expected_cid(n)).copied().unwrap_or(0);
        assert!(
            (1..=5).contains(&c),
            "still {n} was POSTed {c} times: {posts:?}"
        );
    }
}

/// A firewall both ways: the cluster publishes no IPFS addresses and its IPFS daemons cannot dial
/// the daemon's origins, so nothing arrives over the swarm. After `car_fallback_secs` the daemon
/// uploads each still's DAG as a CAR to the double's `POST /add` (which hands the file to each
/// allocated real Kubo), and the stills are pinned and freed all the same.
#[test]
fn pipeline_uploads_a_car_when_the_swarm_cannot_deliver() {
    let Some(peers) = kubos(2) else { return };
    let double = ClusterDouble::start_with(
        peers,
        DoubleOptions {
            // The swarm pins give up soon; the cluster's default is 2 minutes.
            pin_timeout: Duration::from_secs(8),
            swarm_unreachable: true,
            ..DoubleOptions::default()
        },
    );
    let repo = TestRepo::init();
    let captures = repo.path().join("captures");
    configure(&repo, &captures, &double.url(), 2, 2);
    set_key(&repo, "[cluster]", "car_fallback_secs", "2");
    let daemon = WandaDaemon::start(&repo);
    let session = "behind a firewall";
    let dir = capture_now(&captures, session, 2);
    let meta = wait_metadata(
        &dir,
        "pinned through CAR uploads",
        Duration::from_secs(120),
        |m| all_pinned_and_freed(m, 2),
    );
    for img in images(&meta) {
        assert_eq!(img["replicas"], 2, "{img}");
    }
    let adds = double.add_posts();
    assert!((2..=4).contains(&adds), "a CAR upload per still: {adds}");
    let me = daemon.peer_id();
    for i in 0..2 {
        let (pins, peers) = double.with_kubo(i, |k| (k.pins().unwrap(), k.peers().unwrap()));
        for n in 1..=2 {
            assert!(
                pins.to_string().contains(&expected_cid(n)),
                "Kubo {i} holds still {n}"
            );
        }
        assert!(
            !peers.iter().any(|p| p.contains(&me)),
            "Kubo {i} reached the daemon over the swarm after all: {peers:?}"
        );
    }
}

/// Kubo's CID of a folder holding the test source's stills `numbers` (`ipfs add -r`).
fn kubo_dir_cid(
    double: &ClusterDouble,
    work: &Path,
    numbers: std::ops::RangeInclusive<u32>,
) -> String {
    let dir = work.join(format!("expected-{}-{}", numbers.start(), numbers.end()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = TestSource::new(STILL_BYTES, SEED);
    for n in numbers {
        std::fs::write(dir.join(format!("image_{n:04}.jpg")), src.still(n)).unwrap();
    }
    double
        .with_kubo(0, |k| k.add(&dir, true))
        .expect("kubo add -r --only-hash")
}

fn directory_pinned(meta: &Value, n: usize, cid: Option<&str>) -> bool {
    all_pinned_and_freed(meta, n)
        && meta["ipfs"]["pinned"] == true
        && cid.is_none_or(|c| meta["ipfs"]["cid"] == c)
}

/// `pin_policy = "session"` (the seed's option B): once no still came for `session_idle_secs`,
/// the cluster is asked for one pin, the directory of the session's stills, whose CID is the one
/// `ipfs add -r` gives in real Kubo; its replicas on the Kubo peers confirm every still, and the
/// stills are freed. A still that comes later makes a new directory of all five, which replaces
/// the first pin on the cluster.
#[test]
fn pipeline_session_policy_pins_one_directory_per_complete_session() {
    let Some(peers) = kubos(2) else { return };
    let double = ClusterDouble::start(peers);
    let repo = TestRepo::init();
    let captures = repo.path().join("captures");
    configure(&repo, &captures, &double.url(), 2, 2);
    set_key(&repo, "[pipeline]", "pin_policy", "\"session\"");
    set_key(&repo, "[pipeline]", "session_idle_secs", "2");
    let first = kubo_dir_cid(&double, repo.path(), 1..=4);
    let _daemon = WandaDaemon::start(&repo);
    let session = "Luna llena";
    let dir = capture_now(&captures, session, 4);
    let meta = wait_metadata(
        &dir,
        "the session's directory pinned",
        Duration::from_secs(120),
        |m| directory_pinned(m, 4, None),
    );
    assert_eq!(
        meta["ipfs"]["cid"], first,
        "the directory is `ipfs add -r` of the stills"
    );
    for img in images(&meta) {
        assert_eq!(img["replicas"], 2, "{img}");
        let n = img["number"].as_u64().unwrap() as u32;
        assert_eq!(img["cid"], expected_cid(n));
    }
    let posts = double.pin_posts();
    assert_eq!(
        posts.get(&first),
        Some(&1),
        "one pin for the session: {posts:?}"
    );
    assert_eq!(posts.len(), 1, "no still is pinned on its own: {posts:?}");
    for i in 0..2 {
        let pins = double.with_kubo(i, |k| k.pins().unwrap()).to_string();
        assert!(pins.contains(&first), "Kubo {i} holds the directory");
    }

    // A late still: a new directory of all five replaces the first.
    let second = kubo_dir_cid(&double, repo.path(), 1..=5);
    capture_now(&captures, session, 1);
    let meta = wait_metadata(
        &dir,
        "the new directory pinned",
        Duration::from_secs(120),
        |m| directory_pinned(m, 5, Some(&second)),
    );
    assert_eq!(images(&meta)[4]["cid"], expected_cid(5));
    let t0 = Instant::now();
    let gone = loop {
        let pins = double.with_kubo(0, |k| k.pins().unwrap()).to_string();
        if !pins.contains(&first) || t0.elapsed() > Duration::from_secs(30) {
            break !pins.contains(&first);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        gone,
        "the replaced directory is unpinned from the cluster's peers"
    );
    // And a Kubo gives back the whole session from the new directory, the node's copies gone.
    let back = repo.path().join("back");
    double
        .with_kubo(1, |k| k.download(&second, &back, Duration::from_secs(30)))
        .unwrap();
    let src = TestSource::new(STILL_BYTES, SEED);
    for n in 1..=5 {
        let got = std::fs::read(back.join(format!("image_{n:04}.jpg"))).unwrap();
        assert!(got == src.still(n), "still {n} from the directory differs");
    }
}
