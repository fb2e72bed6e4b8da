//! The files a Pi is installed with: config/wanda-ipfs.service and config/wanda-ipfs.toml.
//!
//! systemd cannot manage a service here (no systemd as PID 1 in a test), so the unit is checked by
//! `systemd-analyze verify` and `security --offline`, and its `ExecStart=` command line is run as
//! systemd would run it: the same arguments and environment, the state and configuration
//! directories made by the test, loopback-only overrides appended (no 0.0.0.0:4001, no mDNS, and
//! the example's cluster at a closed loopback port).

use std::path::Path;
use std::process::Command;

use crate::node::WandaDaemon;
use crate::util::{eqnice, repo_root, skip_or_fail, tempdir};

const UNIT: &str = "config/wanda-ipfs.service";
const INSTALLED_BIN: &str = "/usr/local/bin/wanda-ipfs";

fn unit_text() -> String {
    std::fs::read_to_string(repo_root().join(UNIT)).unwrap()
}

/// The value of the one `key=` line in the unit.
fn unit_value(text: &str, key: &str) -> String {
    let mut v = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")));
    let one = v.next().unwrap_or_else(|| panic!("no {key}= in {UNIT}"));
    assert!(v.next().is_none(), "{key}= set twice in {UNIT}");
    one.to_string()
}

fn systemd_analyze_or_skip() -> bool {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_or_fail("systemd-analyze", "apt-get install systemd");
    }
    ok
}

#[test]
fn install_unit_verifies_and_is_hardened() {
    if !systemd_analyze_or_skip() {
        return;
    }
    let dir = tempdir("unit");
    let unit = dir.path().join("wanda-ipfs.service");
    // verify checks that ExecStart's program exists: point it at this build.
    let text = unit_text();
    assert!(
        text.contains(INSTALLED_BIN),
        "ExecStart runs {INSTALLED_BIN}"
    );
    std::fs::write(
        &unit,
        text.replace(INSTALLED_BIN, env!("CARGO_BIN_EXE_wanda-ipfs")),
    )
    .unwrap();

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Complaints about the machine's own units are not ours; any line naming ours is.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("wanda-ipfs")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{err}",
        out.status
    );

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    eprintln!("measured: {}", overall.trim_start_matches(['→', ' ']));
    // "2.1 OK": systemd rates 0-10, lower is better; <= 3.0 is what it calls OK or better.
    let score: f64 = overall
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no score in {overall:?}"));
    assert!(
        score <= 3.0,
        "exposure {score} > 3.0: the hardening was weakened\n{report}"
    );

    for (key, want) in [
        ("User", "wanda-ipfs"),
        ("StateDirectory", "wanda-ipfs"),
        ("Restart", "on-failure"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
    ] {
        eqnice!(want, unit_value(&text, key), "{key}=");
    }
}

/// `ExecStart=` as systemd runs it: `--init` creates the repo in the state directory on the first
/// start, the example configuration loads, SIGTERM stops it cleanly within `TimeoutStopSec=`, and a
/// restart keeps the identity (`--init` never overwrites a repo).
#[test]
fn install_unit_command_line_starts_inits_once_and_stops_on_sigterm() {
    let text = unit_text();
    let exec = unit_value(&text, "ExecStart");
    let mut argv = exec.split_whitespace();
    eqnice!(Some(INSTALLED_BIN), argv.next());

    let root = tempdir("unit-run");
    let state = root.path().join("state");
    let etc = root.path().join("etc");
    let captures = root.path().join("captures");
    for d in [&state, &etc, &captures] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(
        repo_root().join("config/wanda-ipfs.toml"),
        etc.join("config.toml"),
    )
    .unwrap();
    let state_s = state.to_str().unwrap();
    let etc_s = etc.to_str().unwrap();
    // systemd's specifiers and variables, as it expands them for this unit.
    let args: Vec<String> = argv
        .map(|a| a.replace("${CONFIGURATION_DIRECTORY}", etc_s))
        .collect();
    let repo_env = unit_value(&text, "Environment");
    let repo_dir = repo_env
        .strip_prefix("WANDA_IPFS_PATH=")
        .expect("Environment=WANDA_IPFS_PATH=…")
        .replace("%S", state_s);
    let repo_dir = Path::new(&repo_dir);
    assert!(repo_dir.starts_with(&state), "{}", repo_dir.display());
    // The unit's arguments after `daemon`; start_args puts `daemon --api … --gateway …` first and
    // global flags (`--config`) may come after the verb.
    let pos = args
        .iter()
        .position(|a| a == "daemon")
        .expect("daemon verb");
    let unit_args: Vec<&str> = args[..pos]
        .iter()
        .chain(&args[pos + 1..])
        .map(String::as_str)
        .collect();
    let cluster = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", cluster.local_addr().unwrap());
    drop(cluster);
    let env = [
        ("WANDA_CLUSTER_API", closed.as_str()),
        ("WANDA_CAPTURES_DIR", captures.to_str().unwrap()),
    ];

    let first =
        WandaDaemon::start_args(repo_dir, &unit_args, &env).unwrap_or_else(|e| panic!("{e}"));
    let id = first.peer_id();
    assert!(
        repo_dir.join("config.toml").exists(),
        "--init made the repo"
    );
    let t = std::time::Instant::now();
    let (status, _) = first.terminate();
    let stop: u64 = unit_value(&text, "TimeoutStopSec").parse().unwrap();
    assert!(status.success(), "SIGTERM exit: {status}");
    assert!(t.elapsed().as_secs() < stop, "stopped in {:?}", t.elapsed());

    let second =
        WandaDaemon::start_args(repo_dir, &unit_args, &env).unwrap_or_else(|e| panic!("{e}"));
    eqnice!(
        id,
        second.peer_id(),
        "the identity survives a restart with --init"
    );
    let (status, _) = second.terminate();
    assert!(status.success(), "{status}");
}
