//! WANDA's HTTP API against a running daemon, over real HTTP (tests/it/http.rs): the envelope and
//! status codes, capture start/stop through the API with the pipeline importing what it takes,
//! the server-sent events of each step, node status, the access rules (token, browser origins,
//! body size), and the web page's assets.
//!
//! The capture source is `test` (deterministic, decodable JPEGs): no camera hardware here.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wanda_ipfs::blockstore::NullSink;
use wanda_ipfs::capture::control::TEST_STILL_BYTES;
use wanda_ipfs::capture::TestSource;
use wanda_ipfs::unixfs::file::import_bytes;
use wanda_ipfs::unixfs::ImportOptions;

use crate::http::{self, request};
use crate::node::WandaDaemon;
use crate::pipeline::set_key;
use crate::util::TestRepo;

const EVENT_DEADLINE: Duration = Duration::from_secs(90);

/// Reads `GET /api/events` on a thread; each `event:` name arrives on the channel.
fn subscribe(api: SocketAddr) -> Receiver<(String, Value)> {
    let mut s = TcpStream::connect(api).expect("connect for events");
    s.set_read_timeout(Some(EVENT_DEADLINE)).unwrap();
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: {api}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let (tx, rx) = mpsc::sync_channel(1024);
    let mut r = BufReader::new(s);
    // The status line and headers come at once (the stream opens with a comment).
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    std::thread::spawn(move || {
        let mut name = String::new();
        // Bounded by the read timeout and the test's end (the socket closes with the daemon).
        for _ in 0..100_000 {
            let mut l = String::new();
            match r.read_line(&mut l) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            // Chunked framing lines (sizes) are skipped: only SSE fields matter.
            let l = l.trim_end();
            if let Some(n) = l.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = l.strip_prefix("data: ") {
                let v = serde_json::from_str(d).unwrap_or(Value::Null);
                if tx.send((std::mem::take(&mut name), v)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Waits for events until `done` says enough; returns them all.
fn events_until(
    rx: &Receiver<(String, Value)>,
    mut done: impl FnMut(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let t0 = Instant::now();
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = EVENT_DEADLINE.saturating_sub(t0.elapsed());
        match rx.recv_timeout(left) {
            Ok(e) => seen.push(e),
            Err(_) => panic!("events did not come in time; got {seen:?}"),
        }
    }
    seen
}

fn count(events: &[(String, Value)], kind: &str) -> usize {
    events.iter().filter(|(k, _)| k == kind).count()
}

fn expected_cid(n: u32) -> String {
    let data = TestSource::new(TEST_STILL_BYTES, 1).still(n);
    import_bytes(&ImportOptions::default(), &data, &mut NullSink)
        .unwrap()
        .cid
        .to_string()
}

fn post_json(api: SocketAddr, path: &str, body: &Value) -> http::Response {
    request(
        api,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .unwrap()
}

/// `{"success": false, "code": code}` with `status`.
fn assert_failure(r: &http::Response, status: u16, code: &str) {
    let v = r.json();
    assert_eq!(r.status, status, "{v}");
    assert_eq!(v["success"], json!(false), "{v}");
    assert_eq!(v["code"], json!(code), "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.len() > 10),
        "a sentence says what went wrong: {v}"
    );
}

fn data(r: &http::Response) -> Value {
    let v = r.json();
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["success"], json!(true), "{v}");
    v["data"].clone()
}

fn capture_repo(captures: &std::path::Path) -> TestRepo {
    let repo = TestRepo::init();
    set_key(
        &repo,
        "[pipeline]",
        "captures_dir",
        &format!("{:?}", captures.display().to_string()),
    );
    set_key(&repo, "[pipeline]", "settle_ms", "200");
    set_key(&repo, "[pipeline]", "poll_ms", "100");
    set_key(&repo, "[capture]", "source", "\"test\"");
    repo
}

#[test]
fn api_capture_through_the_api_is_imported_and_reported_in_wandas_envelope() {
    let captures = crate::util::tempdir("api-captures");
    let repo = capture_repo(captures.path());
    let d = WandaDaemon::start(&repo);
    let api = d.api_addr();
    let events = subscribe(api);

    let name = "night one";
    let r = post_json(
        api,
        "/api/session/start",
        &json!({"session": name, "count": 3, "interval_secs": 0.5}),
    );
    let st = data(&r);
    assert_eq!(st["running"], json!(true));
    assert_eq!(st["session"], json!(name));
    // One capture at a time.
    assert_failure(
        &post_json(api, "/api/session/start", &json!({"session": "other"})),
        409,
        "CAPTURE_RUNNING",
    );
    let seen = events_until(&events, |e| {
        count(e, "imported") >= 3 && count(e, "capture_stopped") >= 1
    });
    assert_eq!(seen[0].0, "capture_started", "{seen:?}");
    let imported: Vec<u64> = seen
        .iter()
        .filter(|(k, _)| k == "imported")
        .map(|(_, v)| {
            assert_eq!(v["session"], json!(name));
            v["number"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(imported, [1, 2, 3], "imported in capture order");
    assert_failure(
        &http::post(api, "/api/session/stop"),
        409,
        "NO_CAPTURE_RUNNING",
    );

    // The session list.
    let list = data(&http::get(api, "/api/sessions"));
    let s = &list[0];
    assert_eq!(s["name"], json!(name));
    assert_eq!(s["images"], json!(3));
    assert_eq!(s["states"], json!({"imported": 3}));
    assert_eq!(s["local"], json!(3));

    // The session's metadata: the seed format, CIDs as `ipfs add` gives them.
    let doc = data(&http::get(api, "/api/session/night%20one/ipfs"));
    assert_eq!(doc["name"], json!(name));
    assert_eq!(doc["ipfs"]["enabled"], json!(true));
    let imgs = doc["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 3);
    for (i, img) in imgs.iter().enumerate() {
        let n = i as u32 + 1;
        assert_eq!(img["number"], json!(n));
        assert_eq!(img["cid"], json!(expected_cid(n)));
        assert_eq!(img["pinned"], json!(false));
    }
    // The same document as the file WANDA reads (give the writer its second).
    let file = captures.path().join(name).join("session_metadata.json");
    let t0 = Instant::now();
    loop {
        let on_disk: Option<Value> = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if on_disk
            .as_ref()
            .is_some_and(|f| f["images"] == doc["images"])
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "metadata file: {on_disk:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // One CID's status.
    let cid = expected_cid(2);
    let st = data(&http::get(api, &format!("/api/ipfs/status/{cid}")));
    assert_eq!(st["cid"], json!(cid));
    assert_eq!(st["local"], json!(true));
    assert_eq!(st["pinned_locally"], json!(true));
    assert_eq!(st["images"][0]["session"], json!(name));
    assert_eq!(st["images"][0]["number"], json!(2));
    assert_eq!(st["cluster"], json!({"configured": false}));

    // The node.
    let n = data(&http::get(api, "/api/node"));
    assert_eq!(n["peer_id"], json!(d.peer_id()));
    assert!(n["repo"]["blocks"].as_u64().unwrap() >= 3 * 20, "{n}");
    assert!(n["repo"]["free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(n["mdns"], json!([]));
    assert_eq!(n["capture"]["available"], json!(true));
    assert_eq!(n["capture"]["last_captured"], json!(3));
    assert_eq!(n["pipeline"]["outbox"], json!(0));

    // Errors: each a clear envelope with the right status.
    assert_failure(
        &http::get(api, "/api/ipfs/status/not-a-cid"),
        400,
        "INVALID_CID",
    );
    assert_failure(
        &http::get(api, "/api/session/no%20such/ipfs"),
        404,
        "SESSION_NOT_FOUND",
    );
    assert_failure(
        &request(
            api,
            "POST",
            "/api/session/start",
            &[("Content-Type", "application/json")],
            b"{not json",
        )
        .unwrap(),
        400,
        "INVALID_INPUT",
    );
    for bad in ["../up", "a/b", ""] {
        assert_failure(
            &post_json(api, "/api/session/start", &json!({"session": bad})),
            400,
            "INVALID_INPUT",
        );
    }
    assert_failure(
        &post_json(
            api,
            "/api/session/start",
            &json!({"session": "x", "count": 0}),
        ),
        400,
        "INVALID_INPUT",
    );
    let huge = vec![b' '; 4 << 20];
    let r = request(
        api,
        "POST",
        "/api/session/start",
        &[("Content-Type", "application/json")],
        &huge,
    )
    .unwrap();
    assert_failure(&r, 413, "PAYLOAD_TOO_LARGE");
    assert!(!captures.path().join("x").exists() && !captures.path().join("up").exists());

    // The page and its assets, compiled in.
    let page = http::get(api, "/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().contains("/assets/app.js"));
    assert_eq!(http::get(api, "/assets/app.js").status, 200);
    assert_eq!(http::get(api, "/assets/nope.js").status, 404);

    // The daemon is still fine after all that.
    assert_eq!(
        data(&http::get(api, "/api/sessions"))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, _) = d.terminate();
    assert!(status.success(), "{status}");
}

#[test]
fn api_token_guards_changes_and_browsers_from_elsewhere_are_refused() {
    let repo = TestRepo::init();
    let cfg = repo.repo_path().join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen("[api]\n", "[api]\ntoken = \"s3cret-token\"\n", 1),
    )
    .unwrap();
    set_key(
        &repo,
        "[api]",
        "cors_origins",
        "[\"http://wanda.local:5000\"]",
    );
    let d = WandaDaemon::start(&repo);
    let api = d.api_addr();
    let start = json!({"session": "s"}).to_string();
    let json_ct = ("Content-Type", "application/json");
    let auth = ("Authorization", "Bearer s3cret-token");

    let r = request(
        api,
        "POST",
        "/api/session/start",
        &[json_ct],
        start.as_bytes(),
    )
    .unwrap();
    assert_failure(&r, 401, "UNAUTHORIZED");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = request(
        api,
        "POST",
        "/api/session/start",
        &[json_ct, ("Authorization", "Bearer wrong")],
        start.as_bytes(),
    )
    .unwrap();
    assert_failure(&r, 401, "UNAUTHORIZED");
    // With the token it reaches the handler (which has no captures folder to write to).
    let r = request(
        api,
        "POST",
        "/api/session/start",
        &[json_ct, auth],
        start.as_bytes(),
    )
    .unwrap();
    assert_failure(&r, 409, "CAPTURE_NOT_CONFIGURED");
    // Kubo RPC: changes need it, reads of content do not.
    let r = http::post(api, "/api/v0/swarm/connect?arg=/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA");
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.json()["Message"].as_str().unwrap().contains("Bearer"));
    assert_eq!(http::post(api, "/api/v0/version").status, 200);
    assert_eq!(http::post(api, "/api/v0/id").status, 200);
    // Reads stay public.
    assert_eq!(http::get(api, "/api/sessions").status, 200);
    assert_eq!(http::get(api, "/api/node").status, 200);

    // The CLI finds the token in the repo's config: `add` goes through the daemon (which holds
    // the repo lock, so there is no other way).
    let f = repo.path().join("hello.txt");
    std::fs::write(&f, b"hello through a guarded RPC\n").unwrap();
    let cid = d.cli_ok(&["add", "-Q", f.to_str().unwrap()]);
    assert!(cid.trim().starts_with("Qm"), "{cid}");

    // A page elsewhere cannot drive the node, even with the token; a listed origin can.
    let evil = ("Origin", "http://evil.example");
    let r = request(
        api,
        "POST",
        "/api/session/start",
        &[json_ct, auth, evil],
        start.as_bytes(),
    )
    .unwrap();
    assert_failure(&r, 403, "FORBIDDEN");
    let listed = ("Origin", "http://wanda.local:5000");
    let r = request(
        api,
        "POST",
        "/api/session/start",
        &[json_ct, auth, listed],
        start.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 409);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://wanda.local:5000")
    );
    let r = request(
        api,
        "OPTIONS",
        "/api/session/start",
        &[listed, ("Access-Control-Request-Method", "POST")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 204);
    let r = request(api, "OPTIONS", "/api/session/start", &[evil], b"").unwrap();
    assert_eq!(r.status, 403);

    // Slow clients (headers that never end) hold nothing others need.
    let slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(api).unwrap();
            s.write_all(b"GET /api/sessions HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    assert_eq!(http::get(api, "/api/node").status, 200);
    drop(slow);

    // A public address without a token is refused before anything listens.
    let repo2 = TestRepo::init();
    let out = repo2
        .cmd()
        .args([
            "daemon",
            "--api",
            "/ip4/0.0.0.0/tcp/0",
            "--gateway",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .run()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        out.stderr_str().contains("[api] token"),
        "{}",
        out.stderr_str()
    );
    let (status, _) = d.terminate();
    assert!(status.success(), "{status}");
}
