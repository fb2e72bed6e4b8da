//! The command line: flags in [`args`], one function per verb here. This is an
//! edge: it turns flags into library calls and results into Kubo-shaped output,
//! and holds no logic that another front end (the HTTP RPC) would need.

pub mod args;
mod daemon;
mod progress;
mod remote;
mod swarm;

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cid::Cid;
use clap::Parser;

use crate::blockstore::{BlockSink, BlockSource, NullSink, PinMode};
use crate::config::Config;
use crate::repo::{self, Repo};
use crate::unixfs::{self, ImportOptions};
use args::{AddArgs, BlockCmd, Cli, Command, DagCmd, PinCmd, RepoCmd};

/// `--version`: the crate version and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WANDA_GIT_HASH"), ")");

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Parses the process's arguments and runs the verb.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    let repo_path = repo::locate(cli.repo.as_deref(), env_var)?;
    init_tracing(&cli, &repo_path);
    run(cli, &repo_path)
}

fn init_tracing(cli: &Cli, repo_path: &Path) {
    use tracing_subscriber::EnvFilter;
    let filter = cli
        .log
        .clone()
        .or_else(|| env_var("RUST_LOG"))
        .or_else(|| {
            let cfg = cli
                .config
                .clone()
                .unwrap_or_else(|| repo_path.join(repo::CONFIG_FILE));
            Config::load(&cfg, env_var).ok().map(|c| c.log.level)
        })
        .unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in logs a pipe or journald keeps.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn open(cli_config: Option<&Path>, repo_path: &Path) -> Result<Repo> {
    Ok(Repo::open(repo_path, cli_config, env_var)?)
}

fn run(cli: Cli, repo_path: &Path) -> Result<()> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Init => {
            Repo::init(repo_path)?;
            let key = crate::node::identity::load(repo_path)?;
            println!("initialized wanda-ipfs repo at {}", repo_path.display());
            println!("peer identity: {}", key.public().to_peer_id());
            Ok(())
        }
        Command::Daemon(d) => daemon::run(d, config, repo_path),
        Command::Id => swarm::id(config, repo_path),
        Command::Swarm(s) => swarm::swarm(s, repo_path),
        Command::Capture(c) => capture(c, config, repo_path),
        Command::Add(a) => add(a, config, repo_path),
        Command::Cat { path } => {
            if let Some(c) = swarm::daemon(repo_path)? {
                return remote::cat(&c, &path);
            }
            let repo = open(config, repo_path)?;
            let cid = resolve(&repo.store, &path)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            unixfs::export::cat(&repo.store, &cid, &mut out)
                .with_context(|| format!("reading {path}"))?;
            out.flush()?;
            Ok(())
        }
        Command::Get { path, output } => {
            if let Some(c) = swarm::daemon(repo_path)? {
                return remote::get(&c, &path, output);
            }
            let repo = open(config, repo_path)?;
            let cid = resolve(&repo.store, &path)?;
            let dest = output.unwrap_or_else(|| PathBuf::from(cid.to_string()));
            unixfs::export::get(&repo.store, &cid, &dest)
                .with_context(|| format!("writing {path} to {}", dest.display()))?;
            eprintln!("Saving file(s) to {}", dest.display());
            Ok(())
        }
        Command::Ls { path } => {
            let repo = open(config, repo_path)?;
            let cid = resolve(&repo.store, &path)?;
            for e in unixfs::export::ls(&repo.store, &cid)? {
                let slash = if e.kind == unixfs::export::EntryKind::Directory {
                    "/"
                } else {
                    ""
                };
                println!("{} {} {}{slash}", e.cid, e.size, e.name);
            }
            Ok(())
        }
        Command::Block(b) => block(b, config, repo_path),
        Command::Pin(p) => pin(p, config, repo_path),
        Command::Repo(r) => repo_cmd(r, config, repo_path),
        Command::Dag(d) => dag(d, config, repo_path),
    }
}

/// Parses a CID, with advice when it is not one.
pub fn parse_cid(s: &str) -> Result<Cid> {
    Cid::try_from(s).map_err(|e| {
        anyhow::anyhow!("'{s}' is not a valid CID ({e}): expected e.g. Qm... or bafy...")
    })
}

/// Splits `CID`, `/ipfs/CID/a/b` or `CID/a/b` and resolves the path part.
fn resolve(store: &impl BlockSource, path: &str) -> Result<Cid> {
    let p = path
        .strip_prefix("/ipfs/")
        .or_else(|| path.strip_prefix("ipfs://"))
        .unwrap_or(path);
    let (root, rest) = p.split_once('/').unwrap_or((p, ""));
    let root = parse_cid(root)?;
    if rest.trim_matches('/').is_empty() {
        return Ok(root);
    }
    unixfs::export::resolve(store, &root, rest).with_context(|| format!("resolving {path}"))
}

fn import_options(a: &AddArgs, config: &Config) -> Result<ImportOptions> {
    Ok(config.import.with_overrides(&add_overrides(a))?)
}

fn add_overrides(a: &AddArgs) -> crate::config::AddOverrides {
    crate::config::AddOverrides {
        cid_version: a.cid_version,
        raw_leaves: a.raw_leaves,
        chunker: a.chunker.clone(),
        trickle: a.trickle,
        hash: a.hash.clone(),
        hidden: a.hidden,
        wrap: a.wrap_with_directory,
    }
}

fn add(a: AddArgs, config_flag: Option<&Path>, repo_path: &Path) -> Result<()> {
    for p in &a.paths {
        std::fs::symlink_metadata(p)
            .with_context(|| format!("cannot add {}: check the path exists", p.display()))?;
    }
    if !a.only_hash {
        if let Some(c) = swarm::daemon(repo_path)? {
            let show = a
                .progress
                .unwrap_or(!(a.quiet || a.quieter || a.silent) && std::io::stderr().is_terminal());
            return remote::add(&c, &a, show);
        }
    }
    if a.init && !a.only_hash && !repo_path.join(repo::CONFIG_FILE).exists() {
        Repo::init(repo_path)?;
        eprintln!("initialized wanda-ipfs repo at {}", repo_path.display());
    }
    let repo = if a.only_hash {
        None
    } else {
        Some(open(config_flag, repo_path)?)
    };
    let config = match &repo {
        Some(r) => r.config.clone(),
        None => {
            let cfg =
                config_flag.map_or_else(|| repo_path.join(repo::CONFIG_FILE), Path::to_path_buf);
            Config::load(&cfg, env_var)?
        }
    };
    let opts = import_options(&a, &config)?;
    let show_progress = a
        .progress
        .unwrap_or(!(a.quiet || a.quieter || a.silent) && std::io::stderr().is_terminal());
    let bar = progress::AddProgress::new(show_progress, &a.paths, a.recursive);

    let print_entry = |e: &unixfs::dir::AddedEntry| {
        if a.silent || a.quieter {
            return;
        }
        let line = if a.quiet {
            e.cid.to_string()
        } else if e.path.is_empty() {
            format!("added {}", e.cid)
        } else {
            format!("added {} {}", e.cid, e.path)
        };
        bar.println(&line);
    };
    let mut on_progress = |n: u64| bar.set(n);

    // Kubo pins what it prints at the top: the wrapper with -w, else each
    // path given (entry names never contain '/').
    let mut top: Vec<Cid> = Vec::new();
    let mut on_entry = |e: &unixfs::dir::AddedEntry| {
        if a.wrap_with_directory {
            if e.path.is_empty() {
                top.push(e.cid);
            }
        } else if !e.path.contains('/') {
            top.push(e.cid);
        }
        print_entry(e);
    };
    let root = match &repo {
        None => unixfs::dir::add_paths(
            &opts,
            &a.paths,
            a.recursive,
            &mut NullSink,
            &mut on_entry,
            &mut on_progress,
        )?,
        Some(r) => {
            let mut w = r.store.writer();
            let root = unixfs::dir::add_paths(
                &opts,
                &a.paths,
                a.recursive,
                &mut w,
                &mut on_entry,
                &mut on_progress,
            )?;
            // Blocks become durable first; the guard keeps GC off them until
            // the pins that name them are recorded.
            let guard = w.commit().context("making the added blocks durable")?;
            if a.pin {
                for cid in &top {
                    r.store
                        .pin(cid, PinMode::Recursive)
                        .with_context(|| format!("pinning {cid}"))?;
                }
            }
            drop(guard);
            root
        }
    };
    bar.finish();
    if a.quieter && !a.silent {
        println!("{root}");
    }
    Ok(())
}

fn block(b: BlockCmd, config: Option<&Path>, repo_path: &Path) -> Result<()> {
    let repo = open(config, repo_path)?;
    match b {
        BlockCmd::Get { cid } => {
            let cid = parse_cid(&cid)?;
            let data = repo.store.get(&cid)?;
            std::io::stdout().lock().write_all(&data)?;
        }
        BlockCmd::Stat { cid } => {
            let cid = parse_cid(&cid)?;
            let data = repo.store.get(&cid)?;
            println!("Key: {cid}\nSize: {}", data.len());
        }
        BlockCmd::Put {
            file,
            cid_codec,
            pin,
        } => {
            let codec = match cid_codec.as_str() {
                "raw" => crate::block::RAW,
                "dag-pb" | "protobuf" => crate::block::DAG_PB,
                other => bail!("codec '{other}' is not supported: use raw or dag-pb"),
            };
            let mut data = Vec::new();
            let limit = crate::blockstore::MAX_BLOCK_BYTES;
            match &file {
                Some(f) => std::fs::File::open(f)
                    .with_context(|| format!("opening {}", f.display()))?
                    .take(limit + 1)
                    .read_to_end(&mut data)?,
                None => std::io::stdin()
                    .lock()
                    .take(limit + 1)
                    .read_to_end(&mut data)?,
            };
            if data.len() as u64 > limit {
                bail!("block is larger than {limit} bytes: use `add` for large data");
            }
            if codec == crate::block::DAG_PB {
                crate::unixfs::pb::PbNode::decode(&bytes::Bytes::from(data.clone()))
                    .context("the data is not a valid dag-pb node")?;
            }
            let block = crate::block::Block::new(cid::Version::V1, codec, data);
            let mut w = repo.store.writer();
            w.put(&block)?;
            if pin {
                w.finish(&block.cid, PinMode::Direct)?;
            } else {
                drop(w.commit()?);
            }
            println!("{}", block.cid);
        }
        BlockCmd::Rm { cids } => {
            for c in cids {
                let cid = parse_cid(&c)?;
                if !repo.store.delete_block(&cid)? {
                    bail!("block {cid} is not in the local store");
                }
                println!("removed {cid}");
            }
        }
    }
    Ok(())
}

fn pin(p: PinCmd, config: Option<&Path>, repo_path: &Path) -> Result<()> {
    if let Some(c) = swarm::daemon(repo_path)? {
        return remote::pin(&c, p);
    }
    let repo = open(config, repo_path)?;
    match p {
        PinCmd::Add { cids, recursive } => {
            let mode = if recursive {
                PinMode::Recursive
            } else {
                PinMode::Direct
            };
            for c in cids {
                let cid = parse_cid(&c)?;
                repo.store.pin(&cid, mode)?;
                println!("pinned {cid} {}", mode_name(mode));
            }
        }
        PinCmd::Rm { cids } => {
            for c in cids {
                let cid = parse_cid(&c)?;
                let freed = repo.store.unpin(&cid)?;
                println!(
                    "unpinned {cid} (freed {} blocks, {} bytes)",
                    freed.blocks, freed.bytes
                );
            }
        }
        PinCmd::Ls { quiet } => {
            for (cid, mode) in repo.store.pins()? {
                if quiet {
                    println!("{cid}");
                } else {
                    println!("{cid} {}", mode_name(mode));
                }
            }
        }
    }
    Ok(())
}

fn mode_name(m: PinMode) -> &'static str {
    match m {
        PinMode::Recursive => "recursive",
        PinMode::Direct => "direct",
    }
}

fn repo_cmd(r: RepoCmd, config: Option<&Path>, repo_path: &Path) -> Result<()> {
    let repo = open(config, repo_path)?;
    match r {
        RepoCmd::Gc { quiet } => {
            let report = repo.store.gc()?;
            if quiet {
                println!("{}", report.blocks);
            } else {
                println!(
                    "removed {} blocks, freed {} bytes",
                    report.blocks, report.bytes
                );
            }
        }
        RepoCmd::Verify { repair } => {
            let report = repo.store.verify(repair)?;
            for c in &report.corrupt {
                println!("corrupt: {c}");
            }
            for c in &report.missing {
                println!("missing (needed by a pin): {c}");
            }
            if !report.missing.is_empty() {
                bail!(
                    "{} blocks that pins need are missing: re-add or fetch that content",
                    report.missing.len()
                );
            }
            if report.corrupt.is_empty() {
                println!("verified {} blocks: all good", report.checked);
            } else {
                let fix = if repair {
                    "removed them; fetch or re-add their content"
                } else {
                    "run `wanda-ipfs repo verify --repair` to remove them"
                };
                bail!(
                    "{} of {} blocks are corrupt: {fix}",
                    report.corrupt.len(),
                    report.checked
                );
            }
        }
        RepoCmd::Stat { raw } => {
            let s = repo.store.stat()?;
            let fmt = |n: u64| {
                if raw {
                    n.to_string()
                } else {
                    indicatif::HumanBytes(n).to_string()
                }
            };
            println!("NumObjects: {}", s.blocks);
            println!("RepoSize:   {}", fmt(s.bytes));
            println!("RepoPath:   {}", repo.path().display());
            println!("DiskFree:   {}", fmt(s.free_bytes));
        }
    }
    Ok(())
}

fn dag(d: DagCmd, config: Option<&Path>, repo_path: &Path) -> Result<()> {
    let repo = open(config, repo_path)?;
    match d {
        DagCmd::Export { cid, output } => {
            let root = parse_cid(&cid)?;
            let out: Box<dyn Write> = match &output {
                Some(p) => Box::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let out = std::io::BufWriter::with_capacity(1 << 20, out);
            crate::car::export_dag(&repo.store, &root, out)?;
        }
        DagCmd::Import { files, pin_roots } => {
            for f in files {
                let file =
                    std::fs::File::open(&f).with_context(|| format!("opening {}", f.display()))?;
                let mut reader = crate::car::CarReader::new(std::io::BufReader::new(file))
                    .with_context(|| format!("reading {}", f.display()))?;
                let roots = reader.roots().to_vec();
                let mut w = repo.store.writer();
                let mut n = 0u64;
                while let Some(b) = reader
                    .next_block()
                    .with_context(|| format!("reading {}", f.display()))?
                {
                    w.put(&b)?;
                    n += 1;
                }
                let guard = w.commit()?;
                eprintln!("imported {n} blocks from {}", f.display());
                if pin_roots {
                    for r in roots {
                        repo.store
                            .pin(&r, PinMode::Recursive)
                            .with_context(|| format!("pinning root {r} of {}", f.display()))?;
                        println!("pinned root {r} success");
                    }
                }
                drop(guard);
            }
        }
    }
    Ok(())
}

fn capture(a: args::CaptureArgs, config: Option<&Path>, repo_path: &Path) -> Result<()> {
    use crate::capture::run_session;
    let file = config.map_or_else(|| repo_path.join(repo::CONFIG_FILE), Path::to_path_buf);
    let cfg = Config::load(&file, env_var)?;
    let dir = match a.dir.clone() {
        Some(d) => d,
        None => cfg.pipeline.captures_dir().context(
            "no captures folder: pass --dir, or set pipeline.captures_dir (env WANDA_CAPTURES_DIR)",
        )?,
    };
    let settings = capture_settings(&a, &cfg.capture)?;
    for key in settings.unused_by_source() {
        let flag = match key {
            "shutter_us" => " (--shutter)",
            "gain" => " (--gain)",
            "extra_args" => " (--camera-arg)",
            _ => "",
        };
        tracing::warn!(
            "the {} source ignores capture.{key}{flag}",
            settings.source.as_str()
        );
    }
    let mode = settings.schedule().map_err(anyhow::Error::msg)?;
    let mut source = crate::capture::control::open_test_or(&settings, a.size, a.seed)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Ctrl-C ends the session between stills; the stills taken stay.
        let _ = ctrlc_flag(stop);
    }
    let r = run_session(source.as_mut(), &dir, &a.session, mode, &|| {
        stop.load(std::sync::atomic::Ordering::Relaxed)
    })?;
    println!(
        "captured {} stills into {} (image_{:04}.jpg on){}",
        r.captured,
        r.dir.display(),
        r.first,
        if r.late > 0 {
            format!(", {} late", r.late)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The `[capture]` settings with `capture`'s flags on top; a bad flag is refused under its own
/// name, for the same reason the config key would be.
fn capture_settings(
    a: &args::CaptureArgs,
    base: &crate::capture::CaptureConfig,
) -> Result<crate::capture::CaptureConfig> {
    use crate::capture::{self as cap, SourceKind};
    let flag = |name: &str, r: Result<(), String>| r.map_err(|m| anyhow::anyhow!("{name} {m}"));
    let mut c = base.clone();
    if let Some(s) = a.source {
        c.source = s;
    }
    if let Some(m) = a.mode {
        c.mode = m;
    }
    if let Some(v) = a.interval {
        flag("--interval", cap::check_interval_secs(v))?;
        c.interval_secs = v;
    }
    if let Some(v) = a.count {
        flag("--count", cap::check_count(v))?;
        c.count = v;
    }
    if let Some(v) = a.hours {
        flag("--hours", cap::check_hours(v))?;
        c.hours = v;
    }
    if let Some(v) = a.width {
        flag("--width", cap::check_pixels(v))?;
        c.width = Some(v);
    }
    if let Some(v) = a.height {
        flag("--height", cap::check_pixels(v))?;
        c.height = Some(v);
    }
    if let Some(v) = a.shutter {
        c.shutter_us = Some(v);
    }
    if let Some(v) = a.gain {
        flag("--gain", cap::check_gain(v))?;
        c.gain = Some(v);
    }
    if !a.camera_args.is_empty() {
        c.extra_args = a.camera_args.clone();
    }
    if let Some(d) = &a.device {
        c.device = d.clone();
    }
    if let Some(v) = a.warmup_frames {
        c.warmup_frames = v;
    }
    if c.source != SourceKind::V4l2 {
        for (name, given) in [
            ("--device", a.device.is_some()),
            ("--warmup-frames", a.warmup_frames.is_some()),
        ] {
            if given {
                tracing::warn!(
                    "the {} source ignores {name}, which is for --source v4l2",
                    c.source.as_str()
                );
            }
        }
    }
    c.validate().map_err(anyhow::Error::msg)?;
    Ok(c)
}

/// Sets `flag` on SIGINT/SIGTERM (a thread with a small runtime waiting for either).
fn ctrlc_flag(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("wanda-signals".into())
        .spawn(move || {
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut i), Ok(mut t)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = i.recv() => {}
                    _ = t.recv() => {}
                }
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            });
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{CaptureConfig, ModeKind, SourceKind};

    fn capture_args(flags: &[&str]) -> args::CaptureArgs {
        let argv = ["wanda-ipfs", "capture", "--session", "s"];
        match Cli::try_parse_from(argv.iter().chain(flags))
            .unwrap()
            .command
        {
            Command::Capture(c) => c,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn capture_flags_override_the_config_and_are_checked_under_their_names() {
        let base = CaptureConfig {
            source: SourceKind::Test,
            count: 3,
            shutter_us: Some(100),
            extra_args: vec!["--awb".into(), "daylight".into()],
            ..CaptureConfig::default()
        };
        // No flags: the config as it is.
        assert_eq!(capture_settings(&capture_args(&[]), &base).unwrap(), base);
        let c = capture_settings(
            &capture_args(&[
                "--source",
                "v4l2",
                "--mode",
                "timed",
                "--count",
                "7",
                "--hours",
                "0.25",
                "--interval",
                "0",
                "--width",
                "640",
                "--height",
                "480",
                "--device",
                "/dev/video3",
                "--warmup-frames",
                "2",
                "--camera-arg=--denoise",
            ]),
            &base,
        )
        .unwrap();
        assert_eq!((c.source, c.mode), (SourceKind::V4l2, ModeKind::Timed));
        assert_eq!((c.count, c.hours, c.interval_secs), (7, 0.25, 0.0));
        assert_eq!((c.width, c.height), (Some(640), Some(480)));
        assert_eq!(
            (c.device.as_path(), c.warmup_frames),
            (Path::new("/dev/video3"), 2)
        );
        assert_eq!(c.shutter_us, Some(100), "kept from the config");
        assert_eq!(
            c.extra_args,
            ["--denoise"],
            "--camera-arg replaces the list"
        );
        let o = c.v4l2_options().unwrap();
        assert_eq!((o.width, o.height, o.warmup_frames), (640, 480, 2));

        for (flags, needle) in [
            (&["--count", "0"][..], "--count must be at least 1"),
            (
                &["--interval=-1"][..],
                "--interval must be a number of seconds",
            ),
            (&["--interval", "NaN"][..], "--interval must be"),
            (&["--hours", "0"][..], "--hours must be"),
            (&["--width", "0"][..], "--width must be at least 1"),
            (&["--gain", "0"][..], "--gain must be"),
        ] {
            let e = capture_settings(&capture_args(flags), &base)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{flags:?}: {e}");
        }
        assert!(Cli::try_parse_from([
            "wanda-ipfs",
            "capture",
            "--session",
            "s",
            "--source",
            "usb"
        ])
        .is_err());
    }
}
