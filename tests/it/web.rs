//! The daemon's web page in a real browser (Debian's Chromium, headless, driven by playwright-core
//! through tests/fixtures/js/page.mjs): a session whose stills the cluster pinned and the Pi then
//! freed still shows every still, loaded by CID through `/ipfs/` (the blocks come back over
//! bitswap from the cluster's real Kubo peer), each pixel as the still's JPEG says; a still
//! started from the page arrives through the event stream; a screenshot is kept.
//!
//! The cluster is the REST double of tests/it/cluster_double.rs (the real service cannot run
//! here) in front of a real Kubo node. Under CI=true a missing Kubo, Chromium or playwright-core
//! fails the test.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wanda_ipfs::capture::control::TEST_STILL_BYTES;
use wanda_ipfs::capture::TestSource;

use crate::cluster_double::ClusterDouble;
use crate::http;
use crate::kubo::kubo_or_skip;
use crate::node::WandaDaemon;
use crate::pipeline::{configure, set_key};
use crate::util::{repo_root, run_with_deadline, skip_or_fail, TestRepo};

const CHROMIUM: &str = "/usr/bin/chromium";
const BROWSER_DEADLINE: Duration = Duration::from_secs(300);
const PIN_DEADLINE: Duration = Duration::from_secs(180);

fn browser_available() -> Result<(), String> {
    if !Path::new(CHROMIUM).exists() {
        return Err(format!(
            "{CHROMIUM} missing (apt-get install chromium, as .ci/run does)"
        ));
    }
    let pw = repo_root().join("tests/fixtures/js/node_modules/playwright-core/package.json");
    if !pw.exists() {
        return Err(format!(
            "{} missing (npm ci in tests/fixtures/js)",
            pw.display()
        ));
    }
    Ok(())
}

/// Polls the session document until `done` holds for it.
fn wait_session(
    api: std::net::SocketAddr,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/api/session/{}/ipfs", name.replace(' ', "%20"));
    let t0 = Instant::now();
    loop {
        let r = http::get(api, &path);
        if r.status == 200 {
            let doc = r.json()["data"].clone();
            if done(&doc) {
                return doc;
            }
        }
        assert!(
            t0.elapsed() < PIN_DEADLINE,
            "{what}: last answer {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn web_page_shows_freed_stills_by_cid_and_follows_live_events() {
    if let Err(e) = browser_available() {
        skip_or_fail("headless Chromium with playwright-core", &e);
        return;
    }
    let Some(kubo) = kubo_or_skip() else { return };
    let cluster = ClusterDouble::start(vec![kubo]);
    let captures = crate::util::tempdir("web-captures");
    let repo = TestRepo::init();
    configure(&repo, captures.path(), &cluster.url(), 1, 1);
    set_key(&repo, "[capture]", "source", "\"test\"");
    let d = WandaDaemon::start(&repo);
    let api = d.api_addr();

    let name = "Comet night";
    let r = http::request(
        api,
        "POST",
        "/api/session/start",
        &[("Content-Type", "application/json")],
        json!({"session": name, "count": 2, "interval_secs": 0})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Pinned by the cluster's Kubo and freed here: the page must fetch them back.
    wait_session(api, name, "both stills pinned and freed", |doc| {
        let imgs = doc["images"].as_array().cloned().unwrap_or_default();
        imgs.len() == 2
            && imgs
                .iter()
                .all(|i| i["pinned"] == json!(true) && i["local"] == json!(false))
    });
    assert_eq!(
        std::fs::read_dir(captures.path().join(name))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("image_")
            })
            .count(),
        0,
        "the stills were deleted from the Pi"
    );

    // The cluster's IPFS peer stays connected after the pins are done: it is where the page's
    // stills come back from.
    let kubo_id = cluster.ipfs_id(0);
    let t0 = Instant::now();
    loop {
        let n = http::get(api, "/api/node").json()["data"].clone();
        let peers = n["peers"].as_array().cloned().unwrap_or_default();
        if peers.iter().any(|p| p["peer"] == json!(kubo_id)) {
            break;
        }
        assert!(
            t0.elapsed() < PIN_DEADLINE,
            "the cluster's Kubo is not kept connected: {n:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let doc = http::get(
        api,
        &format!("/api/session/{}/ipfs", name.replace(' ', "%20")),
    )
    .json();
    let got: Vec<_> = (0..2)
        .map(|i| {
            let cid = doc["data"]["images"][i]["cid"]
                .as_str()
                .unwrap()
                .to_string();
            std::thread::spawn(move || http::get(api, &format!("/ipfs/{cid}")))
        })
        .collect();
    for g in got {
        let r = g.join().unwrap();
        assert_eq!(
            r.status,
            200,
            "{} / daemon log:\n{}",
            r.text(),
            d.stderr_str()
        );
    }

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wanda-web-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = run_with_deadline(
        Command::new("node")
            .arg(repo_root().join("tests/fixtures/js/page.mjs"))
            .arg(format!("http://{api}/"))
            .arg(&shot)
            .arg(name)
            .arg("2"),
        BROWSER_DEADLINE,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "page.mjs failed: {}\n{}",
        out.stdout_str(),
        out.stderr_str()
    );
    let report: Value = serde_json::from_str(out.stdout_str().trim()).unwrap_or_else(|e| {
        panic!(
            "page.mjs printed no JSON ({e}): {}\n{}",
            out.stdout_str(),
            out.stderr_str()
        )
    });
    assert_eq!(report["errors"], json!([]), "{report:#}");
    assert_eq!(report["live"], json!("live"));
    assert!(report["sessionText"].as_str().unwrap().contains(name));

    let src = TestSource::new(TEST_STILL_BYTES, 1);
    let check = |imgs: &Value, n: usize| {
        let imgs = imgs.as_array().unwrap();
        assert_eq!(imgs.len(), n, "{imgs:?}");
        for img in imgs {
            let number = img["number"].as_u64().unwrap() as u32;
            let cid = img["cid"].as_str().unwrap();
            assert_eq!(img["src"], json!(format!("/ipfs/{cid}")), "loaded by CID");
            assert_eq!(img["width"], json!(8), "decoded: {img}");
            let grey = i64::from(src.grey(number));
            let px = img["pixel"].as_array().unwrap();
            for c in &px[..3] {
                let v = c.as_i64().unwrap();
                assert!(
                    (v - grey).abs() <= 3,
                    "still {number}: pixel {px:?}, its JPEG says grey {grey}"
                );
            }
            assert_eq!(px[3], json!(255));
        }
    };
    check(&report["before"], 2);
    for img in report["before"].as_array().unwrap() {
        assert!(img["caption"].as_str().unwrap().contains("freed"), "{img}");
    }
    assert_eq!(report["start"]["status"], json!(200), "{report:#}");
    check(&report["after"], 3);

    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 10_000,
        "a page with content, not a blank: {} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
    let (status, _) = d.terminate();
    assert!(status.success(), "{status}");
}
