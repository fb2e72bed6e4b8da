//! The command line as a user meets it: Kubo-shaped verbs, clear errors with advice, pins that keep
//! shared blocks, GC that frees the rest, CAR round trips, bad input that loses nothing.

use std::path::Path;

use crate::corpus::Prng;
use crate::util::{eqnice, TestRepo, WandaCmd};

fn write(p: &Path, data: &[u8]) {
    std::fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Runs it, asserts it failed, and returns stderr.
fn fails(cmd: &mut WandaCmd) -> String {
    let out = cmd.run().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        out.stdout_str()
    );
    out.stderr_str()
}

fn repo_stat_objects(repo: &TestRepo) -> u64 {
    let s = repo.cmd().args(["repo", "stat", "--raw"]).stdout();
    s.lines()
        .find_map(|l| l.strip_prefix("NumObjects:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no NumObjects in {s}"))
}

#[test]
fn init_and_missing_repo_errors_give_advice() {
    let repo = TestRepo::new();
    let err = fails(
        repo.cmd()
            .args(["cat", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"]),
    );
    assert!(err.contains("wanda-ipfs init"), "{err}");
    repo.cmd().arg("init").assert_ok();
    let err = fails(repo.cmd().arg("init"));
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn bad_arguments_are_explained() {
    let repo = TestRepo::init();
    let f = repo.path().join("f");
    write(&f, b"x");
    for (args, needle) in [
        (vec!["cat", "not-a-cid"], "is not a valid CID"),
        (
            vec!["cat", "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"],
            "not in the local store",
        ),
        (vec!["add", "--chunker", "rabin"], "size-N"),
        (vec!["add", "--chunker", "size-0"], "out of range"),
        (vec!["add", "--hash", "blake3"], "only sha2-256"),
        (vec!["add", "--cid-version", "2"], "use 0 or 1"),
    ] {
        let mut c = repo.cmd();
        c.args(&args);
        if args[0] == "add" {
            c.arg(&f);
        }
        let err = fails(&mut c);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let err = fails(repo.cmd().args(["add"]).arg(repo.path().join("missing")));
    assert!(err.contains("check the path exists"), "{err}");
    let err = fails(repo.cmd().args(["add"]).arg(repo.path()));
    assert!(err.contains("-r"), "a directory without -r: {err}");
}

#[test]
fn add_cat_get_ls_round_trip() {
    let repo = TestRepo::init();
    let dir = repo.path().join("session one");
    std::fs::create_dir(&dir).unwrap();
    let img = Prng::new(7).bytes(700_000);
    write(&dir.join("image_0001.jpg"), &img);
    write(&dir.join("image_0002.jpg"), b"second");
    let out = repo.cmd().args(["add", "-r"]).arg(&dir).stdout();
    let added = crate::util::parse_added(&out).unwrap();
    let names: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
    eqnice!(
        vec![
            "session one/image_0001.jpg",
            "session one/image_0002.jpg",
            "session one"
        ],
        names
    );
    let root = &added[2].1;

    let cat = repo
        .cmd()
        .args(["cat", &format!("/ipfs/{root}/image_0001.jpg")])
        .assert_ok();
    assert!(cat.stdout == img, "cat through a path gives the bytes back");
    let ls = repo.cmd().args(["ls", root]).stdout();
    assert!(
        ls.contains("image_0001.jpg") && ls.contains(" 700000 "),
        "{ls}"
    );
    let dest = repo.path().join("out");
    repo.cmd().args(["get", root, "-o"]).arg(&dest).assert_ok();
    assert!(std::fs::read(dest.join("image_0001.jpg")).unwrap() == img);
    eqnice!(
        b"second".to_vec(),
        std::fs::read(dest.join("image_0002.jpg")).unwrap()
    );

    let q = repo
        .cmd()
        .args(["add", "-Q", "--cid-version", "1"])
        .arg(dir.join("image_0002.jpg"))
        .stdout();
    assert!(
        q.starts_with("bafkrei"),
        "a one-chunk CIDv1 file is its raw leaf: {q}"
    );
    let only = repo
        .cmd()
        .args(["add", "-q", "--only-hash", "-r"])
        .arg(&dir)
        .stdout();
    eqnice!(3, only.lines().count());
}

/// The same image captured twice shares blocks: removing one copy's pin must not take blocks the other
/// still needs, and removing both frees everything.
#[test]
fn shared_blocks_survive_unpinning_one_file() {
    let repo = TestRepo::init();
    let a = Prng::new(1).bytes(40 * 1024);
    let mut b = a.clone();
    b.extend_from_slice(&Prng::new(2).bytes(40 * 1024));
    write(&repo.path().join("a"), &a);
    write(&repo.path().join("b"), &b);
    let add = |name: &str| {
        repo.cmd()
            .args(["add", "-Q", "--raw-leaves", "--chunker", "size-1024"])
            .arg(repo.path().join(name))
            .stdout()
    };
    let (ca, cb) = (add("a"), add("b"));
    assert_ne!(ca, cb);
    let before = repo_stat_objects(&repo);
    repo.cmd().args(["pin", "rm", &ca]).assert_ok();
    let cat_b = repo.cmd().args(["cat", &cb]).assert_ok();
    assert!(cat_b.stdout == b, "b survives unpinning a");
    let err = fails(repo.cmd().args(["cat", &ca]));
    assert!(
        err.contains("not in the local store"),
        "a's own root is freed promptly: {err}"
    );
    let after = repo_stat_objects(&repo);
    assert!(
        after < before,
        "unpin freed a's blocks: {before} -> {after}"
    );
    repo.cmd().args(["repo", "verify"]).assert_ok();
    repo.cmd().args(["pin", "rm", &cb]).assert_ok();
    repo.cmd().args(["repo", "gc"]).assert_ok();
    eqnice!(0, repo_stat_objects(&repo));
}

#[test]
fn unpinned_adds_are_collected() {
    let repo = TestRepo::init();
    write(&repo.path().join("f"), &Prng::new(3).bytes(600_000));
    let c = repo
        .cmd()
        .args(["add", "-Q", "--pin=false"])
        .arg(repo.path().join("f"))
        .stdout();
    assert!(repo_stat_objects(&repo) >= 4);
    let pins = repo.cmd().args(["pin", "ls", "-q"]).stdout();
    assert!(!pins.contains(&c), "--pin=false pins nothing: {pins}");
    repo.cmd().args(["repo", "gc"]).assert_ok();
    eqnice!(0, repo_stat_objects(&repo));
    repo.cmd()
        .args(["pin", "add", &c])
        .run()
        .map(|o| assert!(!o.status.success()))
        .unwrap();
}

#[test]
fn dag_export_import_round_trip_and_bad_car_loses_nothing() {
    let a = TestRepo::init();
    let data = Prng::new(4).bytes(1_500_000);
    write(&a.path().join("f"), &data);
    let cid = a.cmd().args(["add", "-Q"]).arg(a.path().join("f")).stdout();
    let car = a.path().join("f.car");
    a.cmd()
        .args(["dag", "export", &cid, "-o"])
        .arg(&car)
        .assert_ok();

    let b = TestRepo::init();
    write(
        &b.path().join("keep"),
        b"content that must survive a bad import",
    );
    let keep = b
        .cmd()
        .args(["add", "-Q"])
        .arg(b.path().join("keep"))
        .stdout();
    let bytes = std::fs::read(&car).unwrap();
    // A flipped byte in the last block, then a truncated file, then garbage.
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 1] ^= 0xff;
    for (name, bad) in [
        ("flipped", flipped),
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("garbage", b"\x05hello world".to_vec()),
    ] {
        let p = b.path().join(name);
        write(&p, &bad);
        let err = fails(b.cmd().args(["dag", "import"]).arg(&p));
        assert!(err.contains("CAR"), "{name}: {err}");
        b.cmd().args(["repo", "verify"]).assert_ok();
        eqnice!(
            b"content that must survive a bad import".to_vec(),
            b.cmd().args(["cat", &keep]).assert_ok().stdout
        );
    }
    let out = b.cmd().args(["dag", "import"]).arg(&car).stdout();
    assert!(out.contains(&cid), "{out}");
    assert!(b.cmd().args(["cat", &cid]).assert_ok().stdout == data);
    let pins = b.cmd().args(["pin", "ls"]).stdout();
    assert!(pins.contains(&format!("{cid} recursive")), "{pins}");
}

#[test]
fn block_put_get_stat_rm() {
    let repo = TestRepo::init();
    let f = repo.path().join("blk");
    write(&f, b"raw block bytes");
    let cid = repo.cmd().args(["block", "put"]).arg(&f).stdout();
    assert!(cid.starts_with("bafkrei"), "{cid}");
    eqnice!(
        b"raw block bytes".to_vec(),
        repo.cmd().args(["block", "get", &cid]).assert_ok().stdout
    );
    let stat = repo.cmd().args(["block", "stat", &cid]).stdout();
    assert!(stat.contains("Size: 15"), "{stat}");
    repo.cmd().args(["block", "rm", &cid]).assert_ok();
    let err = fails(repo.cmd().args(["block", "get", &cid]));
    assert!(err.contains("not in the local store"), "{err}");
    write(&f, b"not protobuf \xff\xff");
    let err = fails(
        repo.cmd()
            .args(["block", "put", "--cid-codec", "dag-pb"])
            .arg(&f),
    );
    assert!(err.contains("dag-pb"), "{err}");
}

#[test]
fn fifo_is_refused_without_hanging() {
    let repo = TestRepo::init();
    let fifo = repo.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc_mkfifo(c.as_ptr(), 0o644) }, 0);
    let err = fails(
        repo.cmd()
            .arg("add")
            .arg(&fifo)
            .deadline(std::time::Duration::from_secs(30)),
    );
    assert!(err.contains("FIFO"), "{err}");
}

extern "C" {
    #[link_name = "mkfifo"]
    fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

#[test]
fn help_explains_itself() {
    let help = WandaCmd::new().args(["add", "--help"]).stdout();
    for flag in [
        "--cid-version",
        "--raw-leaves",
        "--chunker",
        "--trickle",
        "--only-hash",
        "--pin",
        "-w",
    ] {
        assert!(help.contains(flag), "add --help lacks {flag}");
    }
    let v = WandaCmd::new().arg("--version").stdout();
    assert!(v.starts_with("wanda-ipfs 0.") && v.contains('('), "{v}");
}

/// The stills (`image_NNNN.jpg`) in a session folder, sorted.
fn stills(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("image_") && n.ends_with(".jpg"))
        .collect();
    names.sort();
    names
}

/// The webcam source's errors reach the user: a node that is no camera, and one that is not there.
/// (No V4L2 device here: what can be checked without one.)
#[test]
fn capture_from_v4l2_explains_a_bad_device() {
    let repo = TestRepo::new();
    let captures = repo.path().join("captures");
    let capture = |device: &str| {
        let mut c = repo.cmd();
        c.args(["capture", "--dir"])
            .arg(&captures)
            .args(["--session", "webcam", "--count", "1", "--source", "v4l2"])
            .args(["--device", device]);
        fails(&mut c)
    };
    let err = capture("/dev/null");
    assert!(err.contains("/dev/null is not a V4L2 device"), "{err}");
    let err = capture("/nonexistent/video9");
    assert!(err.contains("no such device /nonexistent/video9"), "{err}");
    assert!(
        !captures.join("webcam").exists() || stills(&captures.join("webcam")).is_empty(),
        "no still from a failed camera"
    );
    // v4l2 takes both sides of the size or neither.
    let mut c = repo.cmd();
    c.args(["capture", "--dir"]).arg(&captures).args([
        "--session",
        "webcam",
        "--source",
        "v4l2",
        "--width",
        "640",
    ]);
    let err = fails(&mut c);
    assert!(err.contains("both width and height"), "{err}");
}

/// `[capture]` in the config file chooses the source and the session; the environment overrides
/// the file, and flags override both.
#[test]
fn capture_reads_its_settings_from_the_config() {
    let repo = TestRepo::new();
    let captures = repo.path().join("captures");
    let config = repo.path().join("capture.toml");
    write(
        &config,
        b"[capture]\nsource = \"test\"\ncount = 3\ninterval_secs = 0\n",
    );
    let capture = || {
        let mut c = repo.cmd();
        c.args(["capture", "--dir"])
            .arg(&captures)
            .args(["--session", "from config", "--size", "4096", "--config"])
            .arg(&config);
        c
    };
    let out = capture().stdout();
    assert!(out.contains("captured 3 stills"), "{out}");
    let dir = captures.join("from config");
    eqnice!(
        vec!["image_0001.jpg", "image_0002.jpg", "image_0003.jpg"],
        stills(&dir)
    );
    let jpeg = std::fs::read(dir.join("image_0001.jpg")).unwrap();
    assert!(jpeg.len() == 4096 && jpeg.starts_with(&[0xFF, 0xD8]));

    let out = capture().env("WANDA_CAPTURE_COUNT", "2").stdout();
    assert!(out.contains("captured 2 stills"), "env over file: {out}");
    let out = capture()
        .env("WANDA_CAPTURE_COUNT", "2")
        .args(["--count", "1"])
        .stdout();
    assert!(out.contains("captured 1 stills"), "flag over env: {out}");
    eqnice!(6, stills(&dir).len());

    // A bad value in the file is refused with its key, before any still is taken.
    write(&config, b"[capture]\nsource = \"test\"\nhours = 0\n");
    let err = fails(&mut capture());
    assert!(err.contains("capture: hours must be"), "{err}");
    write(&config, b"[capture]\nsource = \"webcam\"\n");
    let err = fails(&mut capture());
    assert!(err.contains("`rpicam`, `v4l2`, `test`"), "{err}");
    eqnice!(6, stills(&dir).len());
}

#[test]
fn capture_help_explains_the_sources() {
    let help = WandaCmd::new().args(["capture", "--help"]).stdout();
    for needle in [
        "--source",
        "v4l2",
        "--device",
        "/dev/video0",
        "--warmup-frames",
        "capture.count",
        "[capture]",
        "v4l2-ctl",
    ] {
        assert!(
            help.contains(needle),
            "capture --help lacks {needle}: {help}"
        );
    }
}
