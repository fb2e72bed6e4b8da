//! Directories assembled from entries that arrive one by one, by path: how the RPC's `add` builds
//! the tree a client streams to it (Kubo's multipart upload names each part `dir/sub/file`).
//!
//! Files and symlinks are imported as they arrive (by the caller) and recorded here with their
//! CID; directories are written at [`TreeBuilder::finish`], deepest first, with the same
//! `build_directory` (basic or HAMT) as `add -r`, so the CIDs are the ones a local add gives.

use std::collections::BTreeMap;

use cid::Cid;

use super::dir::{build_directory, AddedEntry, DirEntry};
use super::export::safe_name;
use super::hamt;
use super::options::ImportOptions;
use crate::blockstore::BlockSink;

/// Why an entry or the tree was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("'{0}' is not a safe relative path (empty, '.', '..' or NUL in a component)")]
    BadPath(String),
    #[error("'{0}' was added twice")]
    Duplicate(String),
    #[error("'{0}' is inside '{1}', which is a file, not a directory")]
    ParentNotADirectory(String, String),
    #[error("nothing was added")]
    Empty,
    #[error("directory '{path}': {source}")]
    Dir {
        path: String,
        #[source]
        source: Box<hamt::Error>,
    },
}

/// The tree so far. Paths are `/`-separated and relative; the first component is a top-level
/// entry (what `add` prints without a slash).
#[derive(Debug, Default)]
pub struct TreeBuilder {
    /// Directory path -> its entries so far.
    dirs: BTreeMap<String, Vec<DirEntry>>,
    /// Every path seen, files and directories, to refuse duplicates and files used as parents.
    files: BTreeMap<String, ()>,
    /// Top-level entries that are files or symlinks, in arrival order.
    top_files: Vec<DirEntry>,
    /// Top-level directories already written.
    top_dirs: Vec<DirEntry>,
    /// With `-w`, Kubo reports directories only once the wrapper is written: held here till then.
    deferred: Vec<(String, DirEntry)>,
}

fn check(path: &str) -> Result<Vec<&str>, Error> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().all(|p| safe_name(p)) {
        Ok(parts)
    } else {
        Err(Error::BadPath(path.to_string()))
    }
}

impl TreeBuilder {
    pub fn new() -> TreeBuilder {
        TreeBuilder::default()
    }

    /// Declares a directory (and any missing parents).
    pub fn add_dir(&mut self, path: &str) -> Result<(), Error> {
        let parts = check(path)?;
        if self.files.contains_key(path) {
            return Err(Error::Duplicate(path.to_string()));
        }
        self.ensure_dirs(&parts, path)
    }

    /// Makes every prefix of `parts` a directory, refusing one that is a file.
    fn ensure_dirs(&mut self, parts: &[&str], path: &str) -> Result<(), Error> {
        for i in 1..=parts.len() {
            let p = parts[..i].join("/");
            if self.files.contains_key(&p) {
                return Err(Error::ParentNotADirectory(path.to_string(), p));
            }
            self.dirs.entry(p).or_default();
        }
        Ok(())
    }

    /// Records an imported file or symlink at `path`; its parents become directories.
    pub fn add_node(&mut self, path: &str, cid: Cid, tsize: u64) -> Result<(), Error> {
        let parts = check(path)?;
        if self.files.contains_key(path) || self.dirs.contains_key(path) {
            return Err(Error::Duplicate(path.to_string()));
        }
        let (name, parents) = parts.split_last().ok_or(Error::Empty)?;
        let entry = DirEntry {
            name: name.to_string(),
            cid,
            tsize,
        };
        if parents.is_empty() {
            self.top_files.push(entry);
        } else {
            self.ensure_dirs(parents, path)?;
            if let Some(v) = self.dirs.get_mut(&parents.join("/")) {
                v.push(entry);
            }
        }
        self.files.insert(path.to_string(), ());
        Ok(())
    }

    /// The top-level entry `path` belongs to.
    pub fn top_of(path: &str) -> &str {
        path.split('/').next().unwrap_or(path)
    }

    /// Writes the directories under the top-level directory `top` (and `top` itself), deepest
    /// first, reporting each as `add` prints them: after everything below it, siblings by name.
    /// Kubo finishes each argument before the next, so callers close a top-level entry as soon
    /// as the parts move on to the next one.
    pub fn close_top<S: BlockSink + ?Sized>(
        &mut self,
        top: &str,
        opts: &ImportOptions,
        sink: &mut S,
        on_entry: &mut dyn FnMut(&AddedEntry),
    ) -> Result<(), Error> {
        let prefix = format!("{top}/");
        // Reverse order puts "a/b" before "a": children are built before their parents.
        let paths: Vec<String> = self
            .dirs
            .keys()
            .rev()
            .filter(|p| *p == top || p.starts_with(&prefix))
            .cloned()
            .collect();
        let mut built: Vec<(String, DirEntry)> = Vec::new();
        for path in paths {
            let entries = self.dirs.remove(&path).unwrap_or_default();
            let d = build_directory(opts, entries, sink).map_err(|e| Error::Dir {
                path: path.clone(),
                source: Box::new(e),
            })?;
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (Some(p.to_string()), n.to_string()),
                None => (None, path.clone()),
            };
            let entry = DirEntry {
                name,
                cid: d.cid,
                tsize: d.tsize,
            };
            match parent {
                Some(p) => {
                    if let Some(v) = self.dirs.get_mut(&p) {
                        v.push(entry.clone());
                    }
                }
                None => self.top_dirs.push(entry.clone()),
            }
            self.files.insert(path.clone(), ());
            built.push((path, entry));
        }
        if opts.wrap {
            self.deferred.extend(built);
        } else {
            report(built, on_entry);
        }
        Ok(())
    }

    /// Closes what is still open and returns the top-level entries in name order, and the
    /// wrapper directory when `opts.wrap` (reported last, with an empty path).
    pub fn finish<S: BlockSink + ?Sized>(
        mut self,
        opts: &ImportOptions,
        sink: &mut S,
        on_entry: &mut dyn FnMut(&AddedEntry),
    ) -> Result<(Vec<DirEntry>, Option<DirEntry>), Error> {
        let open: Vec<String> = self
            .dirs
            .keys()
            .filter(|p| !p.contains('/'))
            .cloned()
            .collect();
        for top in open {
            self.close_top(&top, opts, sink, on_entry)?;
        }
        let mut top = std::mem::take(&mut self.top_files);
        top.append(&mut self.top_dirs);
        if top.is_empty() {
            return Err(Error::Empty);
        }
        top.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        if !opts.wrap {
            return Ok((top, None));
        }
        let w = build_directory(opts, top.clone(), sink).map_err(|e| Error::Dir {
            path: String::new(),
            source: Box::new(e),
        })?;
        report(std::mem::take(&mut self.deferred), on_entry);
        on_entry(&AddedEntry {
            path: String::new(),
            cid: w.cid,
            size: w.tsize,
        });
        let wrapper = DirEntry {
            name: String::new(),
            cid: w.cid,
            tsize: w.tsize,
        };
        Ok((top, Some(wrapper)))
    }
}

/// Reports directories after everything below them, siblings by name.
fn report(mut built: Vec<(String, DirEntry)>, on_entry: &mut dyn FnMut(&AddedEntry)) {
    built.sort_by(|a, b| post_order(&a.0, &b.0));
    for (path, e) in built {
        on_entry(&AddedEntry {
            path,
            cid: e.cid,
            size: e.tsize,
        });
    }
}

/// Orders directory paths so that each comes after all paths below it, siblings by name.
fn post_order(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    for (x, y) in pa.iter().zip(&pb) {
        match x.as_bytes().cmp(y.as_bytes()) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    // One is a prefix of the other: the longer (deeper) first.
    pb.len().cmp(&pa.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockstore::MemBlockstore;
    use crate::unixfs::{dir, file};

    /// The same tree added from disk with `add -r` and through the builder gives the same CIDs
    /// and the same `added` lines.
    #[test]
    fn matches_a_local_recursive_add() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("night");
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("b/c/x.jpg"), vec![7u8; 300_000]).unwrap();
        std::fs::write(root.join("a/y.txt"), b"y").unwrap();
        std::fs::write(root.join("z.txt"), b"z").unwrap();
        let top = tmp.path().join("single.txt");
        std::fs::write(&top, b"alone").unwrap();
        for wrap in [false, true] {
            let opts = ImportOptions {
                wrap,
                ..ImportOptions::default()
            };
            let mut want = Vec::new();
            let mut store = MemBlockstore::new();
            let want_root = dir::add_paths(
                &opts,
                &[root.clone(), top.clone()],
                true,
                &mut store,
                &mut |e| want.push((e.path.clone(), e.cid)),
                &mut |_| {},
            )
            .unwrap();

            let mut got = Vec::new();
            let mut t = TreeBuilder::new();
            t.add_dir("night").unwrap();
            let mut current = "night".to_string();
            for (p, data) in [
                ("night/a/y.txt", &b"y"[..]),
                ("night/b/c/x.jpg", &[7u8; 300_000][..]),
                ("night/z.txt", &b"z"[..]),
                ("single.txt", &b"alone"[..]),
            ] {
                if TreeBuilder::top_of(p) != current {
                    t.close_top(&current, &opts, &mut store, &mut |e| {
                        got.push((e.path.clone(), e.cid))
                    })
                    .unwrap();
                    current = TreeBuilder::top_of(p).to_string();
                }
                let f = file::import_bytes(&opts, data, &mut store).unwrap();
                got.push((p.to_string(), f.cid));
                t.add_node(p, f.cid, f.tsize).unwrap();
            }
            let (top_entries, wrapper) = t
                .finish(&opts, &mut store, &mut |e| {
                    got.push((e.path.clone(), e.cid))
                })
                .unwrap();
            let got_root = wrapper.map_or(top_entries.last().unwrap().cid, |w| w.cid);
            assert_eq!(got_root, want_root, "wrap={wrap}");
            assert_eq!(got, want, "wrap={wrap}");
        }
    }

    #[test]
    fn refuses_hostile_and_conflicting_paths() {
        let mut t = TreeBuilder::new();
        let c = crate::block::Block::new(cid::Version::V1, crate::block::RAW, &b"x"[..]).cid;
        for bad in ["", "../x", "a/../b", "a//b", "/abs", "a/./b", "a\0b"] {
            assert!(
                matches!(t.add_node(bad, c, 1), Err(Error::BadPath(_))),
                "{bad:?}"
            );
        }
        t.add_node("f", c, 1).unwrap();
        assert!(matches!(t.add_node("f", c, 1), Err(Error::Duplicate(_))));
        assert!(matches!(
            t.add_node("f/g", c, 1),
            Err(Error::ParentNotADirectory(..))
        ));
        assert!(matches!(t.add_dir("f"), Err(Error::Duplicate(_))));
        assert!(matches!(
            TreeBuilder::new().finish(
                &ImportOptions::default(),
                &mut MemBlockstore::new(),
                &mut |_| {}
            ),
            Err(Error::Empty)
        ));
    }
}
