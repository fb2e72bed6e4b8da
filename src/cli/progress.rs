//! The `add` progress bar: bytes imported out of the total, on stderr, only
//! when asked for or when stderr is a terminal.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) struct AddProgress {
    bar: Option<ProgressBar>,
}

impl AddProgress {
    pub(crate) fn new(show: bool, paths: &[PathBuf], recursive: bool) -> Self {
        if !show {
            return AddProgress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(
            Some(total_bytes(paths, recursive)),
            ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{bytes:>10} / {total_bytes:10} [{wide_bar}] {percent:>3}% {bytes_per_sec} {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        AddProgress { bar: Some(bar) }
    }

    pub(crate) fn set(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_position(bytes);
        }
    }

    /// Prints a line above the bar (or plainly without one).
    pub(crate) fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Bytes of regular files under `paths`, for the bar's total. Symlinks are not
/// followed; unreadable entries count 0 (the import itself reports them).
fn total_bytes(paths: &[PathBuf], recursive: bool) -> u64 {
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    // Bounded: a walk of more entries than this only makes the total low.
    let mut budget = 1_000_000u32;
    while let Some(p) = stack.pop() {
        budget = budget.saturating_sub(1);
        if budget == 0 {
            break;
        }
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_file() {
            total += md.len();
        } else if md.is_dir() && recursive {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}
