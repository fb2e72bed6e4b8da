//! Capturing stills into a session folder, as WANDA lays it out:
//! `<captures>/<session name>/image_NNNN.jpg`.
//!
//! A [`Source`] takes one still into a given path; [`run_session`] schedules stills (`rapid`:
//! one every N seconds; `timed`: N stills spread over H hours), names them as WANDA does,
//! and makes each appear atomically (written under a dot-name, then renamed), so the
//! pipeline's folder watcher never sees half a still. Sources: [`RpicamSource`] (Pi cameras
//! through `rpicam-still`), [`V4l2Source`] (USB webcams through the kernel's V4L2 API, MJPEG
//! frames kept as JPEG stills), [`TestSource`] (deterministic JPEG-shaped bytes, for tests and
//! demos, no hardware). [`CaptureConfig`] is `[capture]` in the config: which source, which
//! schedule, and the camera settings, for `wanda-ipfs capture` to start from.

mod config;
pub mod control;
mod rpicam;
mod test_source;
mod v4l2;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::session::{check_session_name, image_file_name, image_number};

pub use config::{
    check_count, check_gain, check_hours, check_interval_secs, check_pixels, check_timeout_secs,
    CaptureConfig, ModeKind, SourceKind, MAX_SECS,
};
pub use rpicam::{RpicamOptions, RpicamSource};
pub use test_source::TestSource;
pub use v4l2::{V4l2Options, V4l2Source};

/// Takes one still into `path` (which does not exist yet).
pub trait Source {
    fn capture(&mut self, number: u32, path: &Path) -> Result<()>;
    /// What to call it in logs.
    fn name(&self) -> &str;
}

/// When stills are taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// One still every `interval`, `count` times (WANDA's rapid mode: 0.5 s).
    Rapid { interval: Duration, count: u32 },
    /// `count` stills spread evenly over `over` (WANDA's timed mode).
    Timed { count: u32, over: Duration },
}

impl Mode {
    fn count(&self) -> u32 {
        match *self {
            Mode::Rapid { count, .. } | Mode::Timed { count, .. } => count,
        }
    }

    fn interval(&self) -> Duration {
        match *self {
            Mode::Rapid { interval, .. } => interval,
            Mode::Timed { count, over } => {
                if count <= 1 {
                    Duration::ZERO
                } else {
                    over / (count - 1)
                }
            }
        }
    }
}

/// What a finished session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    pub dir: PathBuf,
    pub first: u32,
    pub captured: u32,
    /// Stills whose schedule slot had passed by the time the previous one was done.
    pub late: u32,
}

/// Captures a session into `<captures>/<session>/`, numbering after any stills already
/// there (a session resumed after a restart goes on, it does not overwrite). Stops early when
/// `stop` returns true between stills.
pub fn run_session(
    source: &mut dyn Source,
    captures: &Path,
    session: &str,
    mode: Mode,
    stop: &dyn Fn() -> bool,
) -> Result<SessionReport> {
    check_session_name(session).map_err(anyhow::Error::msg)?;
    if mode.count() == 0 {
        bail!("a session needs at least one still");
    }
    let dir = captures.join(session);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let first = next_number(&dir)?;
    let interval = mode.interval();
    let start = Instant::now();
    let mut late = 0;
    let mut captured = 0;
    for i in 0..mode.count() {
        if stop() {
            break;
        }
        let due = start + interval * i;
        let now = Instant::now();
        if due > now {
            // Sleep in slices so `stop` is seen within a second even in timed mode.
            let mut left = due - now;
            while !left.is_zero() {
                let step = left.min(Duration::from_secs(1));
                std::thread::sleep(step);
                left -= step;
                if stop() {
                    return Ok(SessionReport {
                        dir,
                        first,
                        captured,
                        late,
                    });
                }
            }
        } else if i > 0 && now - due > interval / 2 {
            late += 1;
        }
        let number = first + i;
        let name = image_file_name(number);
        let tmp = dir.join(format!(".{name}.part"));
        let dst = dir.join(&name);
        let _ = std::fs::remove_file(&tmp);
        source
            .capture(number, &tmp)
            .with_context(|| format!("{} capturing still {number}", source.name()))?;
        std::fs::rename(&tmp, &dst)
            .with_context(|| format!("renaming {} into place", dst.display()))?;
        captured += 1;
        tracing::debug!(path = %dst.display(), "captured");
    }
    Ok(SessionReport {
        dir,
        first,
        captured,
        late,
    })
}

/// One past the highest still number in `dir` or among the stills wanda-ipfs recorded in its
/// `session_metadata.json` (1 in an empty one): stills freed after pinning are gone from the
/// folder but not from the session.
fn next_number(dir: &Path) -> Result<u32> {
    let mut max = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e?;
        if let Some(n) = e.file_name().to_str().and_then(image_number) {
            max = max.max(n);
        }
    }
    if let Ok(bytes) = std::fs::read(dir.join(crate::session::METADATA_FILE)) {
        let doc: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not JSON: cannot tell which still numbers the session used",
                dir.join(crate::session::METADATA_FILE).display()
            )
        })?;
        // Only stills wanda-ipfs imported (they have a CID): WANDA may list stills of its own.
        let listed = doc["images"].as_array().into_iter().flatten();
        for n in listed
            .filter(|i| i["cid"].is_string())
            .filter_map(|i| i["number"].as_u64())
        {
            max = max.max(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }
    max.checked_add(1)
        .context("still numbers are exhausted in this session")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_numbers_after_existing_stills_and_writes_whole_files() {
        let root = tempfile::tempdir().unwrap();
        let mut src = TestSource::new(2048, 7);
        let r = run_session(
            &mut src,
            root.path(),
            "Júpiter y lunas",
            Mode::Rapid {
                interval: Duration::from_millis(10),
                count: 3,
            },
            &|| false,
        )
        .unwrap();
        assert_eq!((r.first, r.captured), (1, 3));
        let r = run_session(
            &mut src,
            root.path(),
            "Júpiter y lunas",
            Mode::Timed {
                count: 2,
                over: Duration::from_millis(20),
            },
            &|| false,
        )
        .unwrap();
        assert_eq!((r.first, r.captured), (4, 2));
        let mut names: Vec<String> = std::fs::read_dir(&r.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "image_0001.jpg",
                "image_0002.jpg",
                "image_0003.jpg",
                "image_0004.jpg",
                "image_0005.jpg"
            ]
        );
        let a = std::fs::read(r.dir.join("image_0001.jpg")).unwrap();
        assert_eq!(a.len(), 2048);
        assert_eq!(&a[..2], &[0xFF, 0xD8]);
        assert_eq!(&a[a.len() - 2..], &[0xFF, 0xD9]);
        assert_ne!(a, std::fs::read(r.dir.join("image_0002.jpg")).unwrap());
    }

    #[test]
    fn numbering_goes_on_after_stills_freed_from_the_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("s");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(crate::session::METADATA_FILE),
            r#"{"images": [{"number": 9}, {"number": 7, "cid": "Qm7", "local": false}, "junk"]}"#,
        )
        .unwrap();
        std::fs::write(dir.join("image_0003.jpg"), b"x").unwrap();
        assert_eq!(next_number(&dir).unwrap(), 8);
        std::fs::write(dir.join(crate::session::METADATA_FILE), b"not json").unwrap();
        let e = next_number(&dir).unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
    }

    #[test]
    fn stop_ends_a_session_between_stills_and_bad_names_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let mut src = TestSource::new(100, 1);
        let calls = std::cell::Cell::new(0);
        let r = run_session(
            &mut src,
            root.path(),
            "s",
            Mode::Rapid {
                interval: Duration::from_millis(1),
                count: 100,
            },
            &|| {
                calls.set(calls.get() + 1);
                calls.get() > 3
            },
        )
        .unwrap();
        assert!(r.captured < 100);
        let e = run_session(
            &mut src,
            root.path(),
            "../x",
            Mode::Rapid {
                interval: Duration::ZERO,
                count: 1,
            },
            &|| false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot contain"), "{e}");
    }
}
