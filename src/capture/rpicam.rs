//! [`RpicamSource`]: Pi cameras (the HQ camera on a Pi 5) through `rpicam-still`, the libcamera
//! still tool of Raspberry Pi OS (Bookworm), or `libcamera-still`, its name before.
//!
//! One process per still, as WANDA's scripts use it: `-o FILE --immediate --nopreview -t 1` plus
//! the configured options. The process is bounded by a timeout (a camera that hangs must not
//! hang the session) and its output is checked to be a JPEG before the still counts.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::Source;

/// Programs tried, in order.
pub(super) const PROGRAMS: [&str; 2] = ["rpicam-still", "libcamera-still"];
/// Longest a still may take: a long exposure (the HQ camera goes to 670 s) plus a margin is set
/// by `shutter`; without one, this.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// stderr kept for an error message.
const STDERR_TAIL: usize = 2048;

/// What to pass `rpicam-still`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RpicamOptions {
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Exposure in microseconds (`--shutter`).
    pub shutter_us: Option<u64>,
    /// Analogue gain (`--gain`).
    pub gain: Option<f64>,
    /// Anything else, passed as given (e.g. `--awb`, `daylight`, `--denoise`, `off`).
    pub extra: Vec<String>,
    /// Longest one still may take. Default: 30 s plus twice the exposure.
    pub timeout: Option<Duration>,
}

/// A Pi camera through `rpicam-still` / `libcamera-still`.
#[derive(Debug, Clone)]
pub struct RpicamSource {
    program: PathBuf,
    args: Vec<OsString>,
    timeout: Duration,
}

impl RpicamSource {
    /// Finds the still program in `PATH`.
    pub fn new(opts: &RpicamOptions) -> Result<RpicamSource> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        RpicamSource::with_search_path(opts, &path)
    }

    /// Finds the still program in `search` (a `PATH`-style list).
    pub fn with_search_path(
        opts: &RpicamOptions,
        search: &std::ffi::OsStr,
    ) -> Result<RpicamSource> {
        let program = PROGRAMS
            .iter()
            .find_map(|p| {
                std::env::split_paths(search)
                    .map(|d| d.join(p))
                    .find(|c| is_executable(c))
            })
            .with_context(|| {
                format!(
                    "neither {} is installed (Raspberry Pi OS: apt install rpicam-apps)",
                    PROGRAMS.join(" nor ")
                )
            })?;
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |k: &str, v: String| {
            args.push(k.into());
            args.push(v.into());
        };
        if let Some(w) = opts.width {
            push("--width", w.to_string());
        }
        if let Some(h) = opts.height {
            push("--height", h.to_string());
        }
        if let Some(s) = opts.shutter_us {
            push("--shutter", s.to_string());
        }
        if let Some(g) = opts.gain {
            if !(g.is_finite() && g > 0.0) {
                bail!("gain must be a positive number, got {g}");
            }
            push("--gain", g.to_string());
        }
        args.extend(opts.extra.iter().map(OsString::from));
        let timeout = opts
            .timeout
            .unwrap_or(DEFAULT_TIMEOUT + Duration::from_micros(opts.shutter_us.unwrap_or(0)) * 2);
        Ok(RpicamSource {
            program,
            args,
            timeout,
        })
    }

    /// The program found.
    pub fn program(&self) -> &Path {
        &self.program
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl Source for RpicamSource {
    fn capture(&mut self, _number: u32, path: &Path) -> Result<()> {
        let mut child = Command::new(&self.program)
            .arg("-o")
            .arg(path)
            .args(["--immediate", "--nopreview", "-t", "1"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        let mut stderr = child.stderr.take();
        // Read stderr on a thread so a chatty camera cannot block on a full pipe.
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_end(&mut buf);
            }
            let cut = buf.len().saturating_sub(STDERR_TAIL);
            String::from_utf8_lossy(&buf[cut..]).into_owned()
        });
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if t0.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(path);
                bail!(
                    "{} took longer than {:?}; killed (is the camera connected?)",
                    self.program.display(),
                    self.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = reader.join().unwrap_or_default();
        if !status.success() {
            let _ = std::fs::remove_file(path);
            bail!(
                "{} failed ({status}): {}",
                self.program.display(),
                err.trim()
            );
        }
        let mut head = [0u8; 2];
        let ok = std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && head == [0xFF, 0xD8];
        if !ok {
            let _ = std::fs::remove_file(path);
            bail!(
                "{} wrote no JPEG to {}",
                self.program.display(),
                path.display()
            );
        }
        // The camera tool does not fsync; a still counts only once it is on disk.
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", path.display()))
    }

    fn name(&self) -> &str {
        "rpicam-still"
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A stand-in for `rpicam-still` (the camera hardware is not here): a script with its
    /// command-line shape that records its arguments and writes a JPEG to `-o`, or fails, or
    /// hangs, as `behaviour` says.
    fn fake(dir: &Path, name: &str, behaviour: &str) {
        let script = format!(
            "#!/bin/sh\necho \"$@\" >> {dir}/args.log\nout=\"\"\nwhile [ $# -gt 0 ]; do [ \"$1\" = -o ] && out=\"$2\"; shift; done\n{behaviour}\n",
            dir = dir.display()
        );
        let p = dir.join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn runs_the_still_program_with_the_options_and_checks_its_jpeg() {
        let bin = tempfile::tempdir().unwrap();
        fake(
            bin.path(),
            "libcamera-still",
            r#"printf '\377\330jpegbytes\377\331' > "$out""#,
        );
        let opts = RpicamOptions {
            width: Some(4056),
            height: Some(3040),
            shutter_us: Some(20_000),
            gain: Some(8.0),
            extra: vec!["--awb".into(), "daylight".into()],
            timeout: None,
        };
        let mut src = RpicamSource::with_search_path(&opts, bin.path().as_os_str()).unwrap();
        assert!(
            src.program().ends_with("libcamera-still"),
            "falls back to the old name"
        );
        let out = bin.path().join("still.jpg");
        src.capture(1, &out).unwrap();
        assert_eq!(&std::fs::read(&out).unwrap()[..2], &[0xFF, 0xD8]);
        let args = std::fs::read_to_string(bin.path().join("args.log")).unwrap();
        assert_eq!(
            args.trim(),
            format!(
                "-o {} --immediate --nopreview -t 1 --width 4056 --height 3040 --shutter 20000 --gain 8 --awb daylight",
                out.display()
            )
        );
        // rpicam-still, when present, wins.
        fake(bin.path(), "rpicam-still", "exit 0");
        let src = RpicamSource::with_search_path(&opts, bin.path().as_os_str()).unwrap();
        assert!(src.program().ends_with("rpicam-still"));
    }

    #[test]
    fn failures_are_clear_and_leave_no_file() {
        let bin = tempfile::tempdir().unwrap();
        let none =
            RpicamSource::with_search_path(&RpicamOptions::default(), bin.path().as_os_str())
                .unwrap_err();
        assert!(none.to_string().contains("rpicam-apps"), "{none}");

        fake(
            bin.path(),
            "rpicam-still",
            "echo 'ERROR: *** no cameras available ***' >&2; exit 255",
        );
        let mut src =
            RpicamSource::with_search_path(&RpicamOptions::default(), bin.path().as_os_str())
                .unwrap();
        let out = bin.path().join("a.jpg");
        let e = src.capture(1, &out).unwrap_err();
        assert!(e.to_string().contains("no cameras available"), "{e}");
        assert!(!out.exists());

        fake(bin.path(), "rpicam-still", r#"echo notajpeg > "$out""#);
        let mut src =
            RpicamSource::with_search_path(&RpicamOptions::default(), bin.path().as_os_str())
                .unwrap();
        let e = src.capture(1, &out).unwrap_err();
        assert!(e.to_string().contains("no JPEG"), "{e}");
        assert!(!out.exists());

        fake(bin.path(), "rpicam-still", "sleep 5");
        let mut src =
            RpicamSource::with_search_path(&RpicamOptions::default(), bin.path().as_os_str())
                .unwrap();
        src.timeout = Duration::from_millis(200);
        let t0 = Instant::now();
        let e = src.capture(1, &out).unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(4));
    }
}
