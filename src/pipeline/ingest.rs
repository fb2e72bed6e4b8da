//! Finds stills that are ready to import in a captures folder laid out as WANDA writes it:
//! `<root>/<session name>/image_NNNN.jpg`.
//!
//! A file is ready once its size and modification time have not changed for the settle time
//! and its modification time is at least that old: WANDA (and `rpicam-still`) write a still
//! in one go, so a file that stopped growing for a second is finished. Within a session files
//! are taken in number order, and a file that is not ready holds back the ones after it, so
//! images are imported in capture order.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::session::{check_session_name, image_number};

/// A still ready to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub session: String,
    pub dir: PathBuf,
    pub number: u32,
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
}

/// Remembers what it saw between scans. `done` holds images already imported (or found
/// recorded), so each is looked up in the session store once per process.
#[derive(Debug)]
pub struct Scanner {
    root: PathBuf,
    settle: Duration,
    /// Last (size, mtime) of a file and since when it has been so.
    seen: HashMap<PathBuf, (u64, SystemTime, Instant)>,
    done: HashSet<(String, u32)>,
    /// Names already reported as unusable, so the log says it once.
    warned: HashSet<PathBuf>,
}

/// Most stills one scan returns: the caller imports them, then scans again.
const MAX_READY_PER_SCAN: usize = 64;

impl Scanner {
    pub fn new(root: PathBuf, settle: Duration) -> Scanner {
        Scanner {
            root,
            settle,
            seen: HashMap::new(),
            done: HashSet::new(),
            warned: HashSet::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Marks an image as imported (or known), so scans skip it.
    pub fn mark_done(&mut self, session: &str, number: u32) {
        self.done.insert((session.to_string(), number));
    }

    /// Stills ready now, sessions in name order, each session's in number order. `recorded`
    /// says whether the store already has an image (checked once per image).
    pub fn scan(
        &mut self,
        now: Instant,
        mut recorded: impl FnMut(&str, u32) -> bool,
    ) -> std::io::Result<Vec<Ready>> {
        let mut sessions: Vec<(String, PathBuf)> = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            // The folder may appear later (WANDA creates it on its first session).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            if !e.file_type()?.is_dir() {
                continue;
            }
            let path = e.path();
            match e.file_name().into_string() {
                Ok(name) if check_session_name(&name).is_ok() && !name.starts_with('.') => {
                    sessions.push((name, path))
                }
                _ => {
                    if self.warned.insert(path.clone()) {
                        tracing::warn!(path = %path.display(), "skipping a folder whose name is not a usable session name (not UTF-8?)");
                    }
                }
            }
        }
        sessions.sort();
        let mut ready = Vec::new();
        let mut present = HashSet::new();
        for (session, dir) in sessions {
            let mut files: Vec<(u32, PathBuf)> = Vec::new();
            for e in std::fs::read_dir(&dir)? {
                let e = e?;
                let Some(n) = e.file_name().to_str().and_then(image_number) else {
                    continue;
                };
                if self.done.contains(&(session.clone(), n)) {
                    continue;
                }
                files.push((n, e.path()));
            }
            files.sort();
            for (n, path) in files {
                if recorded(&session, n) {
                    self.mark_done(&session, n);
                    continue;
                }
                present.insert(path.clone());
                // Not followed: a link in the captures folder must not publish a file from elsewhere.
                let meta = match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_file() => m,
                    Ok(_) => {
                        if self.warned.insert(path.clone()) {
                            tracing::warn!(path = %path.display(), "not a regular file (a link?); skipped");
                        }
                        continue;
                    }
                    // Removed between the listing and now.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) => return Err(e),
                };
                let size = meta.len();
                let modified = meta.modified()?;
                let stable_since = match self.seen.get(&path) {
                    Some(&(s, m, since)) if s == size && m == modified => since,
                    _ => {
                        self.seen.insert(path.clone(), (size, modified, now));
                        now
                    }
                };
                let old_enough = SystemTime::now()
                    .duration_since(modified)
                    .is_ok_and(|age| age >= self.settle);
                if !old_enough && now.duration_since(stable_since) < self.settle {
                    break; // in order: later stills wait for this one
                }
                ready.push(Ready {
                    session: session.clone(),
                    dir: dir.clone(),
                    number: n,
                    path,
                    size,
                    modified,
                });
                if ready.len() >= MAX_READY_PER_SCAN {
                    return Ok(ready);
                }
            }
        }
        self.seen.retain(|p, _| present.contains(p));
        Ok(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch_old(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(old).unwrap();
    }

    #[test]
    fn settled_stills_come_in_order_once_and_a_growing_one_holds_back_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let s = root.path().join("Luna llena 2026");
        std::fs::create_dir(&s).unwrap();
        touch_old(&s.join("image_0002.jpg"), b"two");
        touch_old(&s.join("image_0001.jpg"), b"one");
        std::fs::write(s.join("image_0003.jpg"), b"thr").unwrap(); // just written
        touch_old(&s.join("image_0004.jpg"), b"four");
        std::fs::write(s.join("session_metadata.json"), b"{}").unwrap();
        std::fs::write(s.join(".image_0005.jpg.tmp"), b"x").unwrap();
        std::fs::write(root.path().join("stray.jpg"), b"x").unwrap();

        let mut sc = Scanner::new(root.path().to_path_buf(), Duration::from_secs(2));
        let t0 = Instant::now();
        let got = sc.scan(t0, |_, _| false).unwrap();
        assert_eq!(got.iter().map(|r| r.number).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(got[0].session, "Luna llena 2026");
        assert_eq!(got[0].size, 3);
        for r in &got {
            sc.mark_done(&r.session, r.number);
        }
        // Image 3 keeps changing: it and 4 wait.
        std::fs::write(s.join("image_0003.jpg"), b"three").unwrap();
        let got = sc.scan(t0 + Duration::from_secs(1), |_, _| false).unwrap();
        assert!(got.is_empty(), "{got:?}");
        // Unchanged for the settle time: 3 then 4.
        let got = sc.scan(t0 + Duration::from_secs(5), |_, _| false).unwrap();
        assert_eq!(got.iter().map(|r| r.number).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(got[0].size, 5);
    }

    #[test]
    fn recorded_stills_are_skipped_and_asked_about_once() {
        let root = tempfile::tempdir().unwrap();
        let s = root.path().join("s");
        std::fs::create_dir(&s).unwrap();
        touch_old(&s.join("image_0001.jpg"), b"one");
        touch_old(&s.join("image_0002.jpg"), b"two");
        let mut sc = Scanner::new(root.path().to_path_buf(), Duration::from_millis(10));
        let mut asked = 0;
        let got = sc
            .scan(Instant::now(), |_, n| {
                asked += 1;
                n == 1
            })
            .unwrap();
        assert_eq!(got.iter().map(|r| r.number).collect::<Vec<_>>(), vec![2]);
        sc.scan(Instant::now(), |_, n| {
            asked += 1;
            n == 1
        })
        .unwrap();
        assert_eq!(
            asked, 3,
            "image 1 is asked once, image 2 until it is marked done"
        );
    }

    #[test]
    fn a_missing_root_is_empty_not_an_error() {
        let mut sc = Scanner::new(PathBuf::from("/nonexistent/wanda/captures"), Duration::ZERO);
        assert!(sc.scan(Instant::now(), |_, _| false).unwrap().is_empty());
    }
}
