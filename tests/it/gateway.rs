//! The HTTP gateway end to end: a running `wanda-ipfs daemon`, real HTTP (tests/it/http.rs), and
//! for the trustless formats an independent CAR reader (car.mjs) and a real Kubo peer.
//!
//! Every daemon listens on 127.0.0.1 port 0 (swarm, RPC, gateway) without mDNS; Kubo peers are
//! loopback-only. Narrow runs: `cargo test --test it gateway::`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cid::Cid;
use sha2::{Digest, Sha256};
use wanda_ipfs::capture::TestSource;

use crate::corpus::Prng;
use crate::http::{self, Response};
use crate::jsref::{car_verify, js_or_skip};
use crate::kubo::kubo_or_skip;
use crate::node::WandaDaemon;
use crate::util::{eqnice, parse_added, TestRepo};

const IMMUTABLE: &str = "public, max-age=29030400, immutable";
const CAR_TYPE: &str = "application/vnd.ipld.car; version=1; order=dfs; dups=n";
/// Kubo's chunk size: ranges are checked across these boundaries.
const CHUNK: u64 = 256 << 10;

fn get(gw: SocketAddr, target: &str) -> Response {
    http::get(gw, target)
}

fn get_with(gw: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Response {
    http::request(gw, "GET", target, headers, b"").unwrap_or_else(|e| panic!("{e}"))
}

fn owned(v: Option<&str>) -> Option<String> {
    v.map(str::to_string)
}

fn sha256_hex(b: &[u8]) -> String {
    crate::util::hex(&Sha256::digest(b))
}

/// Asserts a status, showing the body when it differs.
fn status(r: &Response, want: u16, what: &str) {
    assert_eq!(r.status, want, "{what}: {} {}", r.status, r.text());
}

/// `add -r` of `dir` into the (stopped) repo: CIDs by path relative to `dir`'s parent.
fn add_tree(repo: &TestRepo, dir: &Path) -> Vec<(String, String)> {
    let out = repo.cmd().args(["add", "-r"]).arg(dir).stdout();
    parse_added(&out).unwrap()
}

fn cid_of(added: &[(String, String)], name: &str) -> String {
    added
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not in {added:?}"))
        .1
        .clone()
}

/// The site every deserialized test serves.
struct Site {
    _tmp: tempfile::TempDir,
    still: Vec<u8>,
    root: String,
    added: Vec<(String, String)>,
}

const STILL_NAME: &str = "image 0001.jpg";
const TEXT_NAME: &str = "été notes.txt";
const HOSTILE_NAME: &str = "a<b>&\"c\".txt";

fn make_site(repo: &TestRepo) -> Site {
    let tmp = crate::util::tempdir("gw-site");
    let site = tmp.path().join("site");
    std::fs::create_dir_all(site.join("sub")).unwrap();
    std::fs::create_dir_all(site.join("www")).unwrap();
    let still = TestSource::new(3 << 20, 11).still(1);
    std::fs::write(site.join(STILL_NAME), &still).unwrap();
    std::fs::write(
        site.join("still_noext"),
        TestSource::new(300 << 10, 12).still(2),
    )
    .unwrap();
    std::fs::write(site.join(TEXT_NAME), "des notes, pas d'image\n").unwrap();
    std::fs::write(site.join(HOSTILE_NAME), "x").unwrap();
    std::fs::write(site.join("sub/x.txt"), "in sub\n").unwrap();
    std::fs::write(
        site.join("www/index.html"),
        "<!DOCTYPE html><title>hi</title><p>index page</p>\n",
    )
    .unwrap();
    let added = add_tree(repo, &site);
    let root = cid_of(&added, "site");
    Site {
        _tmp: tmp,
        still,
        root,
        added,
    }
}

/// A JPEG served inline, with the spec's caching and path headers, HEAD, ETag/304, sniffing,
/// Unicode names, directories (redirect, listing, index.html), and the refusals.
#[test]
fn gateway_serves_files_and_directories() {
    let repo = TestRepo::init();
    let site = make_site(&repo);
    let d = WandaDaemon::start(&repo);
    let gw = d.gateway_addr();
    let root = &site.root;
    let still_cid = cid_of(&site.added, &format!("site/{STILL_NAME}"));

    // The still: inline JPEG, whole, with every header the path gateway spec asks for.
    let path = format!("/ipfs/{root}/image%200001.jpg");
    let t = Instant::now();
    let r = get(gw, &path);
    eprintln!(
        "measured: 3 MiB still over the gateway in {:?}",
        t.elapsed()
    );
    status(&r, 200, "the still");
    eqnice!(Some("image/jpeg"), r.header("content-type"));
    assert!(
        r.header("content-disposition")
            .is_none_or(|v| v.starts_with("inline")),
        "{:?}",
        r.header("content-disposition")
    );
    let etag = format!("\"{still_cid}\"");
    eqnice!(Some(etag.as_str()), r.header("etag"));
    eqnice!(Some(IMMUTABLE), r.header("cache-control"));
    eqnice!(Some(path.as_str()), r.header("x-ipfs-path"));
    let roots = format!("{root},{still_cid}");
    eqnice!(Some(roots.as_str()), r.header("x-ipfs-roots"));
    eqnice!(Some("bytes"), r.header("accept-ranges"));
    let len = site.still.len().to_string();
    eqnice!(Some(len.as_str()), r.header("content-length"));
    assert!(r.body == site.still, "the still's bytes differ");

    // HEAD: the same headers, no body.
    let h = http::request(gw, "HEAD", &path, &[], b"").unwrap();
    status(&h, 200, "HEAD");
    eqnice!(Some(len.as_str()), h.header("content-length"));
    eqnice!(Some(etag.as_str()), h.header("etag"));
    eqnice!(Some("image/jpeg"), h.header("content-type"));
    assert!(h.body.is_empty());

    // If-None-Match: 304 without a body; another tag gets the content.
    for inm in [
        etag.clone(),
        format!("\"other\", W/{etag}"),
        "*".to_string(),
    ] {
        let r = get_with(gw, &path, &[("If-None-Match", &inm)]);
        status(&r, 304, &inm);
        assert!(r.body.is_empty());
        eqnice!(Some(etag.as_str()), r.header("etag"));
        eqnice!(Some(IMMUTABLE), r.header("cache-control"));
    }
    let r = get_with(gw, &path, &[("If-None-Match", "\"something-else\"")]);
    status(&r, 200, "a stale tag");

    // By CID alone, and under a name without an extension: sniffed.
    let r = get(gw, &format!("/ipfs/{still_cid}"));
    status(&r, 200, "by CID");
    eqnice!(Some("image/jpeg"), r.header("content-type"));
    eqnice!(Some(still_cid.as_str()), r.header("x-ipfs-roots"));
    let r = get(gw, &format!("/ipfs/{root}/still_noext"));
    eqnice!(Some("image/jpeg"), r.header("content-type"));
    // ?filename= names the download (and its type); download=true makes it an attachment.
    let r = get(
        gw,
        &format!("/ipfs/{still_cid}?filename=x.png&download=true"),
    );
    eqnice!(Some("image/png"), r.header("content-type"));
    eqnice!(
        Some("attachment; filename=\"x.png\""),
        r.header("content-disposition")
    );

    // A Unicode name with a space, percent-encoded.
    let r = get(gw, "/ipfs/");
    status(&r, 400, "no CID");
    let r = get(gw, &format!("/ipfs/{root}/%C3%A9t%C3%A9%20notes.txt"));
    status(&r, 200, "Unicode name");
    eqnice!(Some("text/plain; charset=utf-8"), r.header("content-type"));
    eqnice!("des notes, pas d'image\n", r.text());

    // Directories: the trailing slash first, as the spec requires, keeping the query.
    for (from, to) in [
        (format!("/ipfs/{root}"), format!("/ipfs/{root}/")),
        (format!("/ipfs/{root}/sub"), format!("/ipfs/{root}/sub/")),
        (
            format!("/ipfs/{root}/sub?a=b"),
            format!("/ipfs/{root}/sub/?a=b"),
        ),
    ] {
        let r = get(gw, &from);
        status(&r, 301, &from);
        eqnice!(Some(to.as_str()), r.header("location"), "{from}");
    }
    // A listing: escaped names, encoded links, sizes, CIDs.
    let r = get(gw, &format!("/ipfs/{root}/"));
    status(&r, 200, "listing");
    eqnice!(Some("text/html; charset=utf-8"), r.header("content-type"));
    let page = r.text();
    assert!(page.contains("href=\"image%200001.jpg\""), "{page}");
    assert!(page.contains(">image 0001.jpg</a>"), "{page}");
    assert!(
        page.contains("href=\"%C3%A9t%C3%A9%20notes.txt\""),
        "{page}"
    );
    assert!(page.contains("a&lt;b&gt;&amp;&quot;c&quot;.txt"), "{page}");
    assert!(!page.contains(HOSTILE_NAME), "{page}");
    assert!(page.contains("href=\"sub/\""), "{page}");
    assert!(page.contains("3.0 MiB"), "{page}");
    assert!(page.contains(&still_cid), "{page}");
    let dir_tag = r.header("etag").unwrap().to_string();
    assert!(
        dir_tag.starts_with("\"DirIndex-") && dir_tag.contains(root),
        "{dir_tag}"
    );
    eqnice!(Some(IMMUTABLE), r.header("cache-control"));
    let r = get_with(
        gw,
        &format!("/ipfs/{root}/"),
        &[("If-None-Match", &dir_tag)],
    );
    status(&r, 304, "listing If-None-Match");
    let r = get(gw, &format!("/ipfs/{root}/sub/"));
    assert!(r.text().contains("href=\"x.txt\"") && r.text().contains("href=\"../\""));
    // index.html wins over a listing.
    let r = get(gw, &format!("/ipfs/{root}/www/"));
    status(&r, 200, "index.html");
    eqnice!(Some("text/html; charset=utf-8"), r.header("content-type"));
    assert!(r.text().contains("index page"), "{}", r.text());
    let index_cid = cid_of(&site.added, "site/www/index.html");
    eqnice!(Some(format!("\"{index_cid}\"")), owned(r.header("etag")));

    // What is not there, and what is refused.
    let r = get(gw, &format!("/ipfs/{root}/missing.jpg"));
    status(&r, 404, "a missing name");
    assert!(r.text().contains("missing.jpg"), "{}", r.text());
    let r = get(gw, &format!("/ipfs/{root}/sub/x.txt/deeper"));
    status(&r, 404, "below a file");
    let r = get(gw, "/ipfs/QmNotACid");
    status(&r, 400, "a bad CID");
    assert!(r.text().contains("not a valid CID"), "{}", r.text());
    for bad in [
        format!("/ipfs/{root}/../{root}"),
        format!("/ipfs/{root}/sub/%2e%2e/x"),
        format!("/ipfs/{root}/sub%2Fx.txt"),
        format!("/ipfs/{root}//sub"),
    ] {
        let r = get(gw, &bad);
        status(&r, 400, &bad);
        assert!(r.text().starts_with("400 Bad Request: "), "{}", r.text());
    }
    for method in ["POST", "PUT", "DELETE"] {
        let r = http::request(gw, method, &path, &[], b"").unwrap();
        status(&r, 405, method);
        eqnice!(Some("GET, HEAD, OPTIONS"), r.header("allow"));
    }
    let r = http::request(gw, "OPTIONS", &path, &[], b"").unwrap();
    status(&r, 204, "OPTIONS");
    eqnice!(Some("GET, HEAD, OPTIONS"), r.header("allow"));
    status(&get(gw, "/ipns/example.org"), 501, "IPNS");
    status(&get(gw, "/"), 404, "not a content path");
    let r = get(gw, &format!("/ipfs/{still_cid}?format=dag-json"));
    status(&r, 501, "dag-json");

    let (st, out) = d.terminate();
    assert!(st.success(), "{st}\n{out}");

    // A gateway address that is not TCP is refused before anything listens.
    let out = repo
        .cmd()
        .args(["daemon", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args([
            "--api",
            "/ip4/127.0.0.1/tcp/0",
            "--gateway",
            "/ip4/127.0.0.1/udp/8080",
        ])
        .deadline(Duration::from_secs(60))
        .run()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        out.stderr_str().contains("gateway address") && out.stderr_str().contains("/tcp/"),
        "{}",
        out.stderr_str()
    );
    assert!(
        !out.stdout_str().contains("listening"),
        "{}",
        out.stdout_str()
    );
}

/// Single ranges of a 30 MiB still, across chunk boundaries and from the end, byte for byte; 416
/// past the end; ranges ignored when the RFC allows.
#[test]
fn gateway_serves_ranges_of_a_large_still() {
    let repo = TestRepo::init();
    let tmp = crate::util::tempdir("gw-range");
    let file = tmp.path().join("big still.jpg");
    let data = TestSource::new(30 << 20, 21).still(1);
    std::fs::write(&file, &data).unwrap();
    let cid = repo.cmd().args(["add", "-Q"]).arg(&file).stdout();
    let d = WandaDaemon::start(&repo);
    let gw = d.gateway_addr();
    let size = data.len() as u64;
    let path = format!("/ipfs/{cid}");

    let cases: Vec<(String, u64, u64)> = vec![
        ("bytes=0-0".into(), 0, 0),
        ("bytes=0-99".into(), 0, 99),
        (format!("bytes={}-{}", CHUNK - 1, CHUNK), CHUNK - 1, CHUNK),
        (
            format!("bytes={}-{}", 3 * CHUNK - 10, 5 * CHUNK + 10),
            3 * CHUNK - 10,
            5 * CHUNK + 10,
        ),
        (
            format!("bytes={}-{}", 7_000_001, 19_000_000),
            7_000_001,
            19_000_000,
        ),
        (format!("bytes={}-", size - 12_345), size - 12_345, size - 1),
        ("bytes=-1".into(), size - 1, size - 1),
        (
            format!("bytes=-{}", 2 * CHUNK + 7),
            size - 2 * CHUNK - 7,
            size - 1,
        ),
        (
            format!("bytes={}-{}", size - 10, size + 100),
            size - 10,
            size - 1,
        ),
        (format!("bytes=-{}", size + 5), 0, size - 1),
    ];
    let t = Instant::now();
    for (range, a, b) in &cases {
        let r = get_with(gw, &path, &[("Range", range)]);
        status(&r, 206, range);
        let want_cr = format!("bytes {a}-{b}/{size}");
        eqnice!(Some(want_cr.as_str()), r.header("content-range"), "{range}");
        let len = (b - a + 1).to_string();
        eqnice!(Some(len.as_str()), r.header("content-length"), "{range}");
        assert!(
            r.body == data[*a as usize..=*b as usize],
            "{range}: bytes differ"
        );
        eqnice!(Some("image/jpeg"), r.header("content-type"));
        eqnice!(Some(format!("\"{cid}\"")), owned(r.header("etag")));
    }
    eprintln!(
        "measured: {} range requests on a 30 MiB still in {:?}",
        cases.len(),
        t.elapsed()
    );
    for range in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 5, size + 10),
    ] {
        let r = get_with(gw, &path, &[("Range", &range)]);
        status(&r, 416, &range);
        let want = format!("bytes */{size}");
        eqnice!(Some(want.as_str()), r.header("content-range"));
    }
    // Several ranges, or a range with a stale If-Range, get the whole file (here asked by HEAD).
    for headers in [
        vec![("Range", "bytes=0-1,5-6")],
        vec![("Range", "bytes=0-1"), ("If-Range", "\"stale\"")],
    ] {
        let r = http::request(gw, "HEAD", &path, &headers, b"").unwrap();
        status(&r, 200, &format!("{headers:?}"));
        eqnice!(Some(size.to_string()), owned(r.header("content-length")));
    }
    let whole = get(gw, &path);
    status(&whole, 200, "whole");
    eqnice!(sha256_hex(&data), sha256_hex(&whole.body));
    d.terminate();
}

/// The multihash digest of `cid` must be the SHA-256 of `body`.
fn assert_hashes_to(cid: &str, body: &[u8]) {
    let c = Cid::try_from(cid).unwrap();
    eqnice!(0x12, c.hash().code(), "sha2-256 CID expected");
    assert!(
        c.hash().digest() == Sha256::digest(body).as_slice(),
        "the block of {cid} does not hash to its CID"
    );
}

/// Blocks (`format=raw`, `Accept`), CARs (car.mjs reads them; dag-scope; paths), and the CAR
/// imported into a second repo serves a real Kubo over bitswap.
#[test]
fn gateway_serves_blocks_and_cars_kubo_can_use() {
    let repo = TestRepo::init();
    let site = make_site(&repo);
    let d = WandaDaemon::start(&repo);
    let gw = d.gateway_addr();
    let root = site.root.clone();
    let still_cid = cid_of(&site.added, &format!("site/{STILL_NAME}"));
    let text_cid = cid_of(&site.added, &format!("site/{TEXT_NAME}"));

    // Raw blocks, hashed against their CIDs.
    for cid in [&root, &still_cid, &text_cid] {
        let r = get(gw, &format!("/ipfs/{cid}?format=raw"));
        status(&r, 200, "format=raw");
        eqnice!(Some("application/vnd.ipld.raw"), r.header("content-type"));
        eqnice!(Some("nosniff"), r.header("x-content-type-options"));
        eqnice!(Some(format!("\"{cid}.raw\"")), owned(r.header("etag")));
        let disp = format!("attachment; filename=\"{cid}.bin\"");
        eqnice!(Some(disp.as_str()), r.header("content-disposition"));
        assert_hashes_to(cid, &r.body);
    }
    let r = get_with(
        gw,
        &format!("/ipfs/{root}"),
        &[("Accept", "application/vnd.ipld.raw")],
    );
    status(&r, 200, "Accept raw");
    assert_hashes_to(&root, &r.body);
    let loc = format!("/ipfs/{root}?format=raw");
    eqnice!(Some(loc.as_str()), r.header("content-location"));
    let r = get_with(
        gw,
        &format!("/ipfs/{root}?format=raw"),
        &[("If-None-Match", &format!("\"{root}.raw\""))],
    );
    status(&r, 304, "raw If-None-Match");
    // The trustless spec's probe: the empty identity CID.
    let r = get(gw, "/ipfs/bafkqaaa?format=raw");
    status(&r, 200, "probe");
    assert!(r.body.is_empty());

    // The whole site as a CAR: car.mjs re-hashes every block and walks the DAG.
    let tmp = crate::util::tempdir("gw-car");
    let car_path = tmp.path().join("site.car");
    let r = get(gw, &format!("/ipfs/{root}?format=car"));
    status(&r, 200, "format=car");
    eqnice!(Some(CAR_TYPE), r.header("content-type"));
    eqnice!(Some("nosniff"), r.header("x-content-type-options"));
    let disp = format!("attachment; filename=\"{root}.car\"");
    eqnice!(Some(disp.as_str()), r.header("content-disposition"));
    let car_tag = r.header("etag").unwrap().to_string();
    assert!(
        car_tag.starts_with(&format!("W/\"{root}.car.")),
        "{car_tag}"
    );
    assert_ne!(car_tag, format!("\"{root}\""));
    std::fs::write(&car_path, &r.body).unwrap();
    let blocks_in_car = car_blocks(&r.body);
    assert!(blocks_in_car.len() > 12, "{}", blocks_in_car.len());
    eqnice!(root, blocks_in_car[0], "depth-first: the root first");
    let accepted = get_with(
        gw,
        &format!("/ipfs/{root}"),
        &[("Accept", "application/vnd.ipld.car; version=1; order=dfs")],
    );
    assert!(accepted.body == r.body, "Accept and format=car differ");
    let loc = format!("/ipfs/{root}?format=car");
    eqnice!(Some(loc.as_str()), accepted.header("content-location"));
    let r = get_with(
        gw,
        &format!("/ipfs/{root}?format=car"),
        &[("If-None-Match", &car_tag)],
    );
    status(&r, 304, "CAR If-None-Match");
    let r = get_with(
        gw,
        &format!("/ipfs/{root}"),
        &[("Accept", "application/vnd.ipld.car; version=2")],
    );
    status(&r, 400, "CARv2");
    assert!(r.text().contains("CARv2"), "{}", r.text());
    // Scopes and paths.
    let r = get(gw, &format!("/ipfs/{root}?format=car&dag-scope=block"));
    eqnice!(vec![root.clone()], car_blocks(&r.body));
    assert_ne!(r.header("etag"), Some(car_tag.as_str()));
    let r = get(
        gw,
        &format!("/ipfs/{root}/image%200001.jpg?format=car&dag-scope=entity"),
    );
    status(&r, 200, "path CAR");
    let cids = car_blocks(&r.body);
    eqnice!(vec![root.clone(), still_cid.clone()], cids[..2].to_vec());
    eqnice!(
        14,
        cids.len(),
        "the directory, the still's root and its 12 leaves"
    );
    let r = get(gw, "/ipfs/bafkqaaa?format=car");
    status(&r, 200, "probe CAR");
    assert!(
        car_blocks(&r.body).is_empty(),
        "identity blocks are not sent"
    );

    if js_or_skip() {
        let rep = car_verify(&car_path, None).unwrap();
        assert!(rep.ok, "car.mjs: {}", rep.json);
        eqnice!(vec![root.clone()], rep.roots);
        eqnice!(blocks_in_car.len() as u64, rep.blocks);
        let still_car = tmp.path().join("still.car");
        let r = get(gw, &format!("/ipfs/{still_cid}?format=car"));
        std::fs::write(&still_car, &r.body).unwrap();
        let back = tmp.path().join("still.back");
        let rep = car_verify(&still_car, Some(&back)).unwrap();
        assert!(rep.ok, "car.mjs: {}", rep.json);
        assert!(
            std::fs::read(&back).unwrap() == site.still,
            "car.mjs rebuilt other bytes"
        );
    }
    d.terminate();

    // A second repo holds only what the CAR carried; a real Kubo fetches the site from it.
    let Some(mut k) = kubo_or_skip() else { return };
    let repo2 = TestRepo::init();
    repo2
        .cmd()
        .args(["dag", "import"])
        .arg(&car_path)
        .assert_ok();
    let d2 = WandaDaemon::start(&repo2);
    k.connect(&d2.tcp_addr(), Duration::from_secs(30)).unwrap();
    let dest = tmp.path().join("from-kubo");
    let t = Instant::now();
    k.download(&root, &dest, Duration::from_secs(120)).unwrap();
    eprintln!(
        "measured: Kubo fetched the site from the CAR's repo in {:?}",
        t.elapsed()
    );
    assert!(
        std::fs::read(dest.join(STILL_NAME)).unwrap() == site.still,
        "Kubo's copy of the still differs"
    );
    eqnice!(
        "des notes, pas d'image\n",
        std::fs::read_to_string(dest.join(TEXT_NAME)).unwrap()
    );
    eqnice!(
        "in sub\n",
        std::fs::read_to_string(dest.join("sub/x.txt")).unwrap()
    );
    d2.terminate();
}

/// The CIDs of a CAR's blocks, in order, read by the library's verifying reader.
fn car_blocks(car: &[u8]) -> Vec<String> {
    let mut r = wanda_ipfs::car::CarReader::new(car).expect("a CAR header");
    let mut out = Vec::new();
    while let Some(b) = r.next_block().expect("a verified block") {
        out.push(b.cid.to_string());
    }
    out
}

/// A file only a Kubo peer holds comes through the gateway over bitswap, whole and by range.
#[test]
fn gateway_fetches_what_only_kubo_has() {
    let Some(mut k) = kubo_or_skip() else { return };
    let tmp = crate::util::tempdir("gw-kubo");
    let data = Prng::new(33).bytes((4 << 20) + 12_345);
    let src = tmp.path().join("kubo-only.bin");
    std::fs::write(&src, &data).unwrap();
    let cid = k.add(&src, false).unwrap();
    let more = Prng::new(34).bytes(3 << 20);
    let src2 = tmp.path().join("kubo-only-2.bin");
    std::fs::write(&src2, &more).unwrap();
    let cid2 = k.add(&src2, false).unwrap();

    let repo = TestRepo::init();
    let d = WandaDaemon::start(&repo);
    let kubo_addr = k.tcp_addr().expect("a TCP address").to_string();
    d.cli_ok(&["swarm", "connect", &kubo_addr]);
    let gw = d.gateway_addr();
    let t = Instant::now();
    let r = get(gw, &format!("/ipfs/{cid}"));
    eprintln!(
        "measured: 4 MiB from Kubo through the gateway in {:?}",
        t.elapsed()
    );
    status(&r, 200, "from Kubo");
    eqnice!(sha256_hex(&data), sha256_hex(&r.body));
    eqnice!(Some("application/octet-stream"), r.header("content-type"));
    // A range needs only its blocks.
    let (a, b) = (CHUNK * 5 + 3, CHUNK * 7 + 100);
    let r = get_with(
        gw,
        &format!("/ipfs/{cid2}"),
        &[("Range", &format!("bytes={a}-{b}"))],
    );
    status(&r, 206, "range from Kubo");
    assert!(
        r.body == more[a as usize..=b as usize],
        "range bytes differ"
    );
    d.terminate();
}

/// The data file of a block in a stopped repo (flatfs: `blocks/<XY>/<base32 multihash>.data`).
fn block_file(repo: &Path, multihash: &[u8]) -> PathBuf {
    let key = data_encoding::BASE32_NOPAD.encode(multihash);
    let blocks = repo.join("blocks");
    for shard in std::fs::read_dir(&blocks).unwrap() {
        let p = shard.unwrap().path().join(format!("{key}.data"));
        if p.exists() {
            return p;
        }
    }
    panic!("no block file {key}.data under {}", blocks.display());
}

/// Content nobody has: 504 naming the CID within the configured timeout, for every format; a
/// block lost mid-file cuts the response instead of finishing it; the daemon serves on.
#[test]
fn gateway_times_out_and_cuts_instead_of_lying() {
    let repo = TestRepo::init();
    let tmp = crate::util::tempdir("gw-timeout");
    let data = Prng::new(44).bytes(4 * CHUNK as usize);
    let file = tmp.path().join("four-chunks.bin");
    std::fs::write(&file, &data).unwrap();
    // CIDv1: raw leaves, whose multihash is the SHA-256 of the chunk.
    let cid = repo
        .cmd()
        .args(["add", "-Q", "--cid-version", "1"])
        .arg(&file)
        .stdout();
    let ok = tmp.path().join("ok.txt");
    std::fs::write(&ok, b"still here\n").unwrap();
    let ok_cid = repo.cmd().args(["add", "-Q"]).arg(&ok).stdout();
    let mut mh = vec![0x12, 0x20];
    mh.extend_from_slice(&Sha256::digest(
        &data[2 * CHUNK as usize..3 * CHUNK as usize],
    ));
    std::fs::remove_file(block_file(&repo.repo_path(), &mh)).unwrap();

    let d = WandaDaemon::start_env(&repo, &[("WANDA_GATEWAY_TIMEOUT_SECS", "2")]);
    let gw = d.gateway_addr();
    let nobody = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    for target in [
        format!("/ipfs/{nobody}"),
        format!("/ipfs/{nobody}?format=raw"),
        format!("/ipfs/{nobody}?format=car"),
        format!("/ipfs/{nobody}/a/b.jpg"),
    ] {
        let t = Instant::now();
        let r = get(gw, &target);
        let took = t.elapsed();
        status(&r, 504, &target);
        assert!(
            took < Duration::from_secs(15),
            "{target}: 504 after {took:?}"
        );
        assert!(
            took >= Duration::from_millis(1500),
            "{target}: 504 after only {took:?}"
        );
        assert!(r.text().contains(nobody), "{}", r.text());
        assert!(r.text().contains("timeout_secs"), "{}", r.text());
        assert!(r.header("retry-after").is_some());
    }
    // The status line went out before the lost block was needed: the body must stop short.
    let t = Instant::now();
    let cut = http::request(gw, "GET", &format!("/ipfs/{cid}"), &[], b"");
    let e = cut.expect_err("a file with a lost block must not arrive whole");
    assert!(e.contains("body bytes"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let cut = http::request(gw, "GET", &format!("/ipfs/{cid}?format=car"), &[], b"");
    let e = cut.expect_err("a CAR with a lost block must not end cleanly");
    assert!(e.contains("closed") || e.contains("chunk"), "{e}");
    // What is there is still served, ranges before the lost block too.
    let r = get_with(gw, &format!("/ipfs/{cid}"), &[("Range", "bytes=0-1000")]);
    status(&r, 206, "a range before the lost block");
    assert!(r.body == data[..=1000]);
    let r = get(gw, &format!("/ipfs/{ok_cid}"));
    status(&r, 200, "after the timeouts");
    eqnice!("still here\n", r.text());
    let (st, out) = d.terminate();
    assert!(st.success(), "{st}\n{out}");
}
