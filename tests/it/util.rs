//! Test harness: a `TestRepo` tempdir, the `WandaCmd` builder for the wanda-ipfs binary, child processes
//! with a deadline, and `eqnice!`.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Like `assert_eq!`, but prints expected and got on their own lines (long CIDs, paths).
macro_rules! eqnice {
    ($expected:expr, $got:expr) => {
        eqnice!($expected, $got, "")
    };
    ($expected:expr, $got:expr, $($fmt:tt)+) => {{
        let expected = &$expected;
        let got = &$got;
        if expected != got {
            panic!(
                "\n{}\n==== expected ====\n{:?}\n====== got =======\n{:?}\n==================\n",
                format!($($fmt)+),
                expected,
                got
            );
        }
    }};
}
pub(crate) use eqnice;

/// True when running under CI (`CI=true`): a missing real peer is then a failure, never a skip.
pub(crate) fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The rule for real-peer tests: under CI, panic; elsewhere, say loudly that the test is skipped.
pub(crate) fn skip_or_fail(what: &str, why: &str) {
    if is_ci() {
        panic!("{what} is required under CI=true but is not available: {why}");
    }
    eprintln!("\n!!!! SKIPPED: {what} is not available here: {why}\n!!!! (under CI=true this fails; run .ci/run to install it)\n");
}

/// The repository root (where Cargo.toml is).
pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh temporary directory, removed on drop.
pub(crate) fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("wanda-it-{prefix}-"))
        .tempdir()
        .expect("create temp dir")
}

/// The output of a finished child process.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

impl Finished {
    pub(crate) fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub(crate) fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl From<Output> for Finished {
    fn from(o: Output) -> Self {
        Finished {
            status: o.status,
            stdout: o.stdout,
            stderr: o.stderr,
        }
    }
}

/// Runs `cmd` to completion, killing it (by PID, via `Child::kill`) if it is not done by `deadline`.
pub(crate) fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> Result<Finished, String> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {desc}: {e}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    // Bounded poll: the count is bounded by deadline / 5 ms.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < deadline => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{desc} still running after {deadline:?}: killed"));
            }
            Err(e) => return Err(format!("wait for {desc}: {e}")),
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// A child's output, read on background threads: stdout as lines on a channel, and the last `keep`
/// bytes of stderr for error messages (never printed live). The threads end when the child closes
/// its pipes.
pub(crate) fn pipe_child(
    child: &mut std::process::Child,
    keep: usize,
) -> (
    std::sync::mpsc::Receiver<String>,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    use std::io::{BufRead, BufReader};
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    let (tx, lines) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let tail = std::sync::Arc::clone(&stderr);
    thread::spawn(move || {
        let mut r = BufReader::new(err);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let mut k = tail.lock().unwrap_or_else(|p| p.into_inner());
            k.extend_from_slice(&buf);
            if k.len() > keep {
                let cut = k.len() - keep;
                k.drain(..cut);
            }
            buf.clear();
        }
    });
    (lines, stderr)
}

/// A wanda-ipfs repository in a temporary directory; `WANDA_IPFS_PATH` points at it for every command.
pub(crate) struct TestRepo {
    dir: tempfile::TempDir,
}

impl TestRepo {
    /// An empty directory; nothing is initialised.
    pub(crate) fn new() -> TestRepo {
        TestRepo {
            dir: tempdir("repo"),
        }
    }

    /// A repository on which `wanda-ipfs init` has run (panics with its output if it failed).
    pub(crate) fn init() -> TestRepo {
        let repo = TestRepo::new();
        repo.cmd().arg("init").assert_ok();
        repo
    }

    /// The directory tests may use for their own files (beside, not inside, the repo).
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The repository directory given to wanda-ipfs.
    pub(crate) fn repo_path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// A wanda-ipfs command on this repository.
    pub(crate) fn cmd(&self) -> WandaCmd {
        let mut c = WandaCmd::new();
        c.env("WANDA_IPFS_PATH", self.repo_path());
        c
    }
}

/// Which wanda-ipfs binary a test runs: this build (the host's), or the static aarch64 release
/// binary under qemu-user (`WANDA_ARM64_BIN`, built by scripts/build-static.sh; tests/it/arm64.rs).
#[derive(Clone, Debug)]
pub(crate) struct Exe {
    program: PathBuf,
    /// Arguments before the binary's own: the binary itself when `program` is an emulator.
    prefix: Vec<OsString>,
}

impl Exe {
    pub(crate) fn host() -> Exe {
        Exe {
            program: PathBuf::from(env!("CARGO_BIN_EXE_wanda-ipfs")),
            prefix: Vec::new(),
        }
    }

    /// `bin` run by the emulator `qemu`.
    pub(crate) fn emulated(qemu: PathBuf, bin: &Path) -> Exe {
        Exe {
            program: qemu,
            prefix: vec![bin.as_os_str().to_owned()],
        }
    }

    /// A command running this binary (inside network namespace `netns`, if given).
    pub(crate) fn command(&self, netns: Option<&str>) -> Command {
        let mut c = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        c.args(&self.prefix);
        c
    }
}

/// A builder for one run of the wanda-ipfs binary under test.
pub(crate) struct WandaCmd {
    cmd: Command,
    deadline: Duration,
}

impl WandaCmd {
    pub(crate) fn new() -> WandaCmd {
        WandaCmd::of(&Exe::host())
    }

    pub(crate) fn of(exe: &Exe) -> WandaCmd {
        let mut cmd = exe.command(None);
        cmd.env_remove("WANDA_IPFS_PATH").env("RUST_BACKTRACE", "1");
        WandaCmd {
            cmd,
            deadline: Duration::from_secs(300),
        }
    }

    pub(crate) fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut WandaCmd {
        self.cmd.arg(a);
        self
    }

    pub(crate) fn args<I, S>(&mut self, args: I) -> &mut WandaCmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub(crate) fn env(&mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> &mut WandaCmd {
        self.cmd.env(k, v);
        self
    }

    pub(crate) fn deadline(&mut self, d: Duration) -> &mut WandaCmd {
        self.deadline = d;
        self
    }

    /// Runs it; an error only if it could not be run or missed its deadline.
    pub(crate) fn run(&mut self) -> Result<Finished, String> {
        run_with_deadline(&mut self.cmd, self.deadline)
    }

    fn describe(&self) -> String {
        let args: Vec<OsString> = self.cmd.get_args().map(OsStr::to_owned).collect();
        format!("wanda-ipfs {args:?}")
    }

    /// Runs it and panics (with its stderr) unless it exits 0; returns the result.
    pub(crate) fn assert_ok(&mut self) -> Finished {
        let desc = self.describe();
        let out = self.run().unwrap_or_else(|e| panic!("{e}"));
        if !out.status.success() {
            panic!(
                "{desc} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.status,
                out.stdout_str(),
                out.stderr_str()
            );
        }
        out
    }

    /// Runs it, asserts success, and returns stdout trimmed.
    pub(crate) fn stdout(&mut self) -> String {
        self.assert_ok().stdout_str().trim().to_string()
    }
}

/// Parses `added <cid> <name>` lines (as `ipfs add`, wanda-ipfs add and import.mjs print them) into
/// (name, cid) pairs in output order. Names may contain spaces; the name of a `-w` root is "".
pub(crate) fn parse_added(stdout: &str) -> Result<Vec<(String, String)>, String> {
    let mut v = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("added ") else {
            continue;
        };
        let (cid, name) = match rest.split_once(' ') {
            Some((c, n)) => (c, n),
            None => (rest, ""),
        };
        if cid.is_empty() {
            return Err(format!("bad 'added' line: {line:?}"));
        }
        v.push((name.to_string(), cid.to_string()));
    }
    Ok(v)
}

/// SHA-256 of a file's bytes, hex, for comparing large files without holding two copies.
pub(crate) fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn parse_added_handles_spaces_and_empty_names() {
    let got = parse_added("added Qm1 a b c\nadded Qm2 \nadded Qm3\nnoise\n").unwrap();
    eqnice!(
        vec![
            ("a b c".to_string(), "Qm1".to_string()),
            (String::new(), "Qm2".to_string()),
            (String::new(), "Qm3".to_string()),
        ],
        got
    );
}

#[test]
fn run_with_deadline_kills_a_slow_child() {
    let t = Instant::now();
    let r = run_with_deadline(Command::new("sleep").arg("30"), Duration::from_millis(200));
    assert!(r.is_err(), "expected a deadline error, got {r:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
}
