//! Command-line flags: clap types only. Doc comments are the `--help` text;
//! each names the default and the Kubo equivalent where there is one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A native IPFS peer for WANDA camera nodes.
///
/// wanda-ipfs turns files into the same blocks and CIDs as Kubo's `ipfs add`,
/// keeps them in a crash-safe local repo, and reads them back. The verbs are
/// shaped like Kubo's, so `ipfs` users already know them.
///
/// The repo lives in --repo, else $WANDA_IPFS_PATH, else ~/.wanda-ipfs.
/// Configuration: <repo>/config.toml (or --config), overridden by
/// WANDA_<SECTION>_<KEY> environment variables, overridden by flags.
#[derive(Debug, Parser)]
#[command(name = "wanda-ipfs", version = crate::cli::VERSION, propagate_version = true)]
pub struct Cli {
    /// Repo directory [env: WANDA_IPFS_PATH] [default: ~/.wanda-ipfs]
    #[arg(long, global = true, value_name = "DIR")]
    pub repo: Option<PathBuf>,

    /// Configuration file [default: <repo>/config.toml, else the built-in one]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log filter (e.g. debug, wanda_ipfs=trace) [env: RUST_LOG] [default: config's log.level]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repo (like `ipfs init`). Refuses to touch an existing one.
    Init,
    /// Import files or directories and print their CIDs (like `ipfs add`).
    Add(AddArgs),
    /// Write a file's bytes to stdout (like `ipfs cat`).
    Cat {
        /// CID or /ipfs/CID[/path] of a file.
        path: String,
    },
    /// Write a file or directory to disk (like `ipfs get`).
    Get {
        /// CID or /ipfs/CID[/path].
        path: String,
        /// Where to write it [default: ./<CID>]
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// List a directory's entries (like `ipfs ls`).
    Ls {
        /// CID or /ipfs/CID[/path] of a directory.
        path: String,
    },
    /// Raw blocks (like `ipfs block`).
    #[command(subcommand)]
    Block(BlockCmd),
    /// Keep content from garbage collection (like `ipfs pin`).
    #[command(subcommand)]
    Pin(PinCmd),
    /// Repo maintenance (like `ipfs repo`).
    #[command(subcommand)]
    Repo(RepoCmd),
    /// CAR archives (like `ipfs dag`).
    #[command(subcommand)]
    Dag(DagCmd),
    /// Run the libp2p node in the foreground (like `ipfs daemon`).
    ///
    /// Listens on [swarm] listen (TCP and QUIC), finds peers with mDNS, keeps [peering] peers
    /// connected, and serves a local RPC on [api] address that `id` and `swarm` use. Stop it
    /// with Ctrl-C or SIGTERM (a second one forces).
    Daemon(DaemonArgs),
    /// Show the node's identity as JSON (like `ipfs id`); addresses only while the daemon runs.
    Id,
    /// Connections to other peers (like `ipfs swarm`); needs a running daemon.
    #[command(subcommand)]
    Swarm(SwarmCmd),
    /// Capture a session of stills into the captures folder, as WANDA names them
    /// (<dir>/<session>/image_NNNN.jpg); a daemon watching that folder imports and pins them.
    Capture(CaptureArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Every setting but --session, --dir, --size and --seed defaults to \
the [capture] section of the config (<repo>/config.toml or --config; env \
WANDA_CAPTURE_<KEY>); flags override it. Without a config file the built-in defaults apply: \
source rpicam, rapid mode, 10 stills 0.5 s apart."
)]
pub struct CaptureArgs {
    /// Session name: free text (spaces allowed), one folder under the captures folder.
    #[arg(long)]
    pub session: String,
    /// rapid: --count stills, one every --interval seconds; timed: --count stills spread evenly
    /// over --hours [default: config capture.mode, rapid]
    #[arg(long, value_enum)]
    pub mode: Option<crate::capture::ModeKind>,
    /// Seconds between stills in rapid mode, 0 or more [default: config capture.interval_secs, 0.5]
    #[arg(long, value_name = "SECS")]
    pub interval: Option<f64>,
    /// Stills to take, at least 1 [default: config capture.count, 10]
    #[arg(long, value_name = "N")]
    pub count: Option<u32>,
    /// Hours a timed session spans [default: config capture.hours, 1]
    #[arg(long)]
    pub hours: Option<f64>,
    /// Where stills come from [default: config capture.source, rpicam]. `rpicam`: a Pi camera
    /// through rpicam-still (or libcamera-still); `v4l2`: a USB webcam, or any V4L2 device that
    /// sends MJPEG, at --device; `test`: deterministic JPEG-shaped bytes, no hardware.
    #[arg(long, value_enum)]
    pub source: Option<crate::capture::SourceKind>,
    /// test: bytes per still.
    #[arg(long, default_value_t = 5_000_000)]
    pub size: usize,
    /// test: seed of the stills (same seed, same stills, same CIDs).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The captures folder [default: config pipeline.captures_dir, env WANDA_CAPTURES_DIR]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// rpicam, v4l2: image width in pixels (HQ camera: up to 4056) [default: config
    /// capture.width, else the camera's: rpicam-still's own, v4l2 1920]
    #[arg(long, value_name = "PIXELS")]
    pub width: Option<u32>,
    /// rpicam, v4l2: image height in pixels (HQ camera: up to 3040) [default: config
    /// capture.height, else the camera's: rpicam-still's own, v4l2 1080]. v4l2 takes both
    /// --width and --height, or neither; the webcam picks its nearest size.
    #[arg(long, value_name = "PIXELS")]
    pub height: Option<u32>,
    /// rpicam: exposure in microseconds [default: config capture.shutter_us, else automatic]
    #[arg(long, value_name = "US")]
    pub shutter: Option<u64>,
    /// rpicam: analogue gain [default: config capture.gain, else automatic]
    #[arg(long)]
    pub gain: Option<f64>,
    /// rpicam: one more argument for rpicam-still, as given; repeat (e.g. --camera-arg=--awb
    /// --camera-arg=daylight). Replaces config capture.extra_args.
    #[arg(long = "camera-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub camera_args: Vec<String>,
    /// v4l2: the webcam's device node; `v4l2-ctl --list-devices` lists them [default: config
    /// capture.device, /dev/video0]
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,
    /// v4l2: frames thrown away before each still while the webcam's auto-exposure and white
    /// balance settle; fewer is faster, 0 may give a dark or tinted still [default: config
    /// capture.warmup_frames, 5]
    #[arg(long, value_name = "N")]
    pub warmup_frames: Option<u32>,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Listen on this multiaddr instead of [swarm] listen; repeat for several
    /// (e.g. /ip4/0.0.0.0/tcp/4001, /ip4/0.0.0.0/udp/4001/quic-v1) [Kubo: Addresses.Swarm]
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// Do not use mDNS discovery [default: config discovery.mdns, true] [Kubo: Discovery.MDNS.Enabled]
    #[arg(long)]
    pub no_mdns: bool,
    /// Serve the RPC on this loopback multiaddr [default: config api.address,
    /// /ip4/127.0.0.1/tcp/5001] [Kubo: Addresses.API]
    #[arg(long, value_name = "MULTIADDR")]
    pub api: Option<String>,
    /// Serve the read-only HTTP gateway (/ipfs/<cid>) on this TCP multiaddr, any interface
    /// [default: config gateway.address, /ip4/127.0.0.1/tcp/8080] [Kubo: Addresses.Gateway]
    #[arg(long, value_name = "MULTIADDR")]
    pub gateway: Option<String>,
    /// Watch this captures folder (the WANDA app's <session name>/image_NNNN.jpg) and import
    /// each still once it is complete; pins go to [cluster] api when set [default: config
    /// pipeline.captures_dir, env WANDA_CAPTURES_DIR]
    #[arg(long, value_name = "DIR")]
    pub watch: Option<PathBuf>,
    /// Create the repo first if there is none, with the embedded default configuration (like
    /// `ipfs daemon --init`).
    #[arg(long)]
    pub init: bool,
}

#[derive(Debug, Subcommand)]
pub enum SwarmCmd {
    /// List connected peers as <addr>/p2p/<peer id>, one per line.
    Peers,
    /// Connect to peers at multiaddrs ending in /p2p/<peer id>.
    Connect {
        #[arg(required = true, value_name = "MULTIADDR")]
        addrs: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Files or directories to add.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Add directories recursively.
    #[arg(short, long)]
    pub recursive: bool,
    /// Create the repo first if there is none (like `ipfs daemon --init`).
    #[arg(long)]
    pub init: bool,
    /// Wrap the added paths in a directory.
    #[arg(short = 'w', long)]
    pub wrap_with_directory: bool,
    /// Include files whose names start with a dot.
    #[arg(short = 'H', long)]
    pub hidden: bool,
    /// Print only CIDs, one per line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print only the final (root) CID.
    #[arg(short = 'Q', long)]
    pub quieter: bool,
    /// Print nothing.
    #[arg(long)]
    pub silent: bool,
    /// Show a progress bar [default: on a terminal, unless quiet]
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub progress: Option<bool>,
    /// Compute CIDs without storing anything (no repo needed).
    #[arg(short = 'n', long)]
    pub only_hash: bool,
    /// CID version: 0 (Qm...) or 1 (bafy..., implies --raw-leaves) [default: config import.cid_version, 0]
    #[arg(long, value_name = "N")]
    pub cid_version: Option<u64>,
    /// Store leaves as raw blocks [default: false for CIDv0, true for CIDv1]
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub raw_leaves: Option<bool>,
    /// Chunker: size-N with 1 <= N <= 1048576 [default: config import.chunker, size-262144]
    #[arg(short = 's', long, value_name = "size-N")]
    pub chunker: Option<String>,
    /// Use the trickle DAG layout instead of balanced.
    #[arg(short = 't', long)]
    pub trickle: bool,
    /// Hash function; only sha2-256 is supported.
    #[arg(long, value_name = "NAME")]
    pub hash: Option<String>,
    /// Pin what was added (recursively) so `repo gc` keeps it.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
    pub pin: bool,
}

#[derive(Debug, Subcommand)]
pub enum BlockCmd {
    /// Write a block's raw bytes to stdout.
    Get { cid: String },
    /// Print a block's CID and size.
    Stat { cid: String },
    /// Store stdin (or FILE) as a block and print its CID.
    Put {
        /// Read the block from this file instead of stdin.
        file: Option<PathBuf>,
        /// Codec of the block: raw or dag-pb [default: raw]
        #[arg(long, default_value = "raw")]
        cid_codec: String,
        /// Pin the block directly.
        #[arg(long)]
        pin: bool,
    },
    /// Remove blocks from the repo (pinned ones are refused).
    Rm {
        #[arg(required = true)]
        cids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PinCmd {
    /// Pin a DAG (recursively, unless --recursive=false).
    Add {
        #[arg(required = true)]
        cids: Vec<String>,
        /// Pin the whole DAG below the CID.
        #[arg(short, long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
        recursive: bool,
    },
    /// Remove pins.
    Rm {
        #[arg(required = true)]
        cids: Vec<String>,
    },
    /// List pins.
    Ls {
        /// Print only the CIDs.
        #[arg(short, long)]
        quiet: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RepoCmd {
    /// Delete every block no pin needs, and free its disk space.
    Gc {
        /// Print only the number of blocks removed.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Re-hash every block and report corrupt ones.
    Verify {
        /// Also delete the corrupt blocks found (they can be fetched again).
        #[arg(long)]
        repair: bool,
    },
    /// Print the repo's size, block count, path and free disk space.
    Stat {
        /// Print sizes in bytes only.
        #[arg(long)]
        raw: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DagCmd {
    /// Write a DAG as a CARv1 archive to stdout.
    Export {
        cid: String,
        /// Write to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Store the blocks of CAR archives and pin their roots.
    Import {
        #[arg(required = true, value_name = "FILE.car")]
        files: Vec<PathBuf>,
        /// Pin the roots named in the CAR headers.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
        pin_roots: bool,
    },
}
