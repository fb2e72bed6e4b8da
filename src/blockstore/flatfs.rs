//! The on-disk shape of block data: one file per block, named like Kubo's
//! flatfs (`next-to-last/2` sharding of the base32 multihash key), plus the
//! small file-system primitives that make a block durable before visible.
//!
//! Assumes a POSIX file system where `rename` within one file system is
//! atomic and `fsync` on a directory makes its entries durable (ext4, xfs,
//! btrfs, f2fs; also tmpfs, where nothing is durable anyway).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use multihash::Multihash;

use super::Error;

/// What flatfs writes into its `SHARDING` file; written identically so a
/// person reading the repo recognises the layout.
pub(crate) const SHARDING: &str = "/repo/flatfs/shard/v1/next-to-last/2\n";
/// Name of the sharding descriptor inside the blocks directory.
pub(crate) const SHARDING_FILE: &str = "SHARDING";
/// Temp files live in one directory (same file system as the shards, so the
/// rename is atomic) so open-time cleanup is one `read_dir`, not 1024.
pub(crate) const TMP_DIR: &str = ".tmp";
/// Extension of block files, as flatfs.
pub(crate) const DATA_EXT: &str = ".data";
/// Number of shard directories: two base32 characters.
pub(crate) const SHARDS: usize = 32 * 32;

const BASE32: &data_encoding::Encoding = &data_encoding::BASE32_NOPAD;
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The file-name key of a multihash: unpadded upper-case base32, as flatfs.
pub(crate) fn key_of(mh: &[u8]) -> String {
    BASE32.encode(mh)
}

/// The multihash a file-name key names, if it is one.
pub(crate) fn mh_of_key(key: &str) -> Option<Multihash<64>> {
    let bytes = BASE32.decode(key.as_bytes()).ok()?;
    let mh = Multihash::<64>::from_bytes(&bytes).ok()?;
    // Reject non-canonical spellings so one block never has two file names.
    (mh.to_bytes() == bytes).then_some(mh)
}

/// Index (0..SHARDS) of the shard holding `key`: its next-to-last two chars.
pub(crate) fn shard_of(key: &str) -> usize {
    let b = key.as_bytes();
    // Keys are multihashes of >= 2 bytes, so >= 4 base32 characters.
    debug_assert!(b.len() >= 3);
    let n = b.len();
    digit(b[n - 3]) * 32 + digit(b[n - 2])
}

fn digit(c: u8) -> usize {
    ALPHABET.iter().position(|&a| a == c).unwrap_or(0)
}

/// Name of shard directory `idx`.
pub(crate) fn shard_name(idx: usize) -> String {
    let s = [ALPHABET[idx / 32], ALPHABET[idx % 32]];
    String::from_utf8_lossy(&s).into_owned()
}

/// Index of a directory name if it is a shard name.
pub(crate) fn shard_index(name: &str) -> Option<usize> {
    let b = name.as_bytes();
    if b.len() != 2 {
        return None;
    }
    let d = |c: u8| ALPHABET.iter().position(|&a| a == c);
    Some(d(b[0])? * 32 + d(b[1])?)
}

/// Maps an I/O error to [`Error::DiskFull`] when the disk or quota is full.
pub(crate) fn io_err(op: &'static str, path: &Path, source: io::Error) -> Error {
    if is_disk_full(&source) {
        Error::DiskFull {
            path: path.to_path_buf(),
        }
    } else {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
}

/// Makes a directory's entries (creations, renames) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync directory", dir, e))
}

/// Creates `dir` if missing and makes its entry in the parent durable.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), Error> {
    if create_dir(dir)? {
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Creates `dir` if missing, without syncing its parent; returns whether it
/// was missing.
pub(crate) fn create_dir(dir: &Path) -> Result<bool, Error> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err("create directory", dir, e)),
    }
}

/// Writes `data` to a fresh file at `path` (which must not exist) without
/// syncing; on failure the partial file is removed.
pub(crate) fn write_new(path: &Path, data: &[u8]) -> Result<File, Error> {
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_err("create temp file", path, e))?;
    if let Err(e) = f.write_all(data) {
        drop(f);
        let _ = fs::remove_file(path);
        return Err(io_err("write temp file", path, e));
    }
    Ok(f)
}

/// Starts writing `file`'s data to disk without waiting, so that by the
/// batch's fsyncs the data (and on ext4 its block allocation) is already on
/// its way and the first fsync's journal commit covers the whole batch. A
/// hint only: durability still comes from the fsync.
pub(crate) fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    // SAFETY: a valid open descriptor; offset 0, length 0 = whole file.
    hint(file, |fd| unsafe {
        libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE)
    });
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Drops a synced file's pages from the page cache (a hint).
pub(crate) fn drop_cached(file: &File) {
    #[cfg(target_os = "linux")]
    // SAFETY: a valid open descriptor; offset 0, length 0 = whole file.
    hint(file, |fd| unsafe {
        libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED)
    });
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Runs a page-cache hint on `file`'s descriptor; its result is ignored,
/// as a hint's failure costs speed, never data.
#[cfg(target_os = "linux")]
fn hint(file: &File, f: impl FnOnce(libc::c_int) -> libc::c_int) {
    use std::os::unix::io::AsRawFd;
    let _ = f(file.as_raw_fd());
}

/// Writes a small file atomically and durably: temp, fsync, rename, fsync dir.
pub(crate) fn write_file_durable(path: &Path, data: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp-write");
    let _ = fs::remove_file(&tmp);
    let f = write_new(&tmp, data)?;
    let synced = f.sync_all().map_err(|e| io_err("fsync", &tmp, e));
    drop(f);
    if let Err(e) =
        synced.and_then(|()| fs::rename(&tmp, path).map_err(|e| io_err("rename", path, e)))
    {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Removes every file in the temp directory; returns how many were removed.
pub(crate) fn clean_tmp(tmp: &Path) -> Result<usize, Error> {
    let mut n = 0;
    let rd = fs::read_dir(tmp).map_err(|e| io_err("list", tmp, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| io_err("list", tmp, e))?;
        let p = entry.path();
        match fs::remove_file(&p) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove stale temp file", &p, e)),
        }
    }
    Ok(n)
}

/// Paths of the block store's data directory.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) blocks: PathBuf,
    pub(crate) tmp: PathBuf,
}

impl Layout {
    pub(crate) fn new(blocks: PathBuf) -> Self {
        let tmp = blocks.join(TMP_DIR);
        Layout { blocks, tmp }
    }

    pub(crate) fn shard_dir(&self, idx: usize) -> PathBuf {
        self.blocks.join(shard_name(idx))
    }

    /// (shard index, final path) of the block with multihash bytes `mh`.
    pub(crate) fn block_path(&self, mh: &[u8]) -> (usize, PathBuf) {
        let key = key_of(mh);
        let idx = shard_of(&key);
        let mut p = self.shard_dir(idx);
        p.push(format!("{key}{DATA_EXT}"));
        (idx, p)
    }

    /// Calls `f(multihash, path)` for every block file, shard by shard.
    /// Files that are not block files are skipped with a warning.
    pub(crate) fn for_each_block(
        &self,
        mut f: impl FnMut(Multihash<64>, PathBuf) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for dir in self.shard_dirs()? {
            for item in ShardFiles::open(&dir)? {
                let (mh, path) = item?;
                f(mh, path)?;
            }
        }
        Ok(())
    }

    /// Existing shard directories, sorted.
    pub(crate) fn shard_dirs(&self) -> Result<Vec<PathBuf>, Error> {
        let rd = fs::read_dir(&self.blocks).map_err(|e| io_err("list", &self.blocks, e))?;
        let mut dirs = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| io_err("list", &self.blocks, e))?;
            let name = entry.file_name();
            if name.to_str().and_then(shard_index).is_some() {
                dirs.push(entry.path());
            }
        }
        dirs.sort();
        Ok(dirs)
    }
}

/// The block files of one shard directory.
pub(crate) struct ShardFiles {
    dir: PathBuf,
    rd: fs::ReadDir,
}

impl ShardFiles {
    pub(crate) fn open(dir: &Path) -> Result<Self, Error> {
        let rd = fs::read_dir(dir).map_err(|e| io_err("list", dir, e))?;
        Ok(ShardFiles {
            dir: dir.to_path_buf(),
            rd,
        })
    }
}

impl Iterator for ShardFiles {
    type Item = Result<(Multihash<64>, PathBuf), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let entry = match self.rd.next()? {
                Ok(e) => e,
                Err(e) => return Some(Err(io_err("list", &self.dir, e))),
            };
            let name = entry.file_name();
            let parsed = name
                .to_str()
                .and_then(|n| n.strip_suffix(DATA_EXT))
                .and_then(mh_of_key);
            match parsed {
                Some(mh) => return Some(Ok((mh, entry.path()))),
                None => tracing::warn!(path = %entry.path().display(), "not a block file; ignored"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kubo_key_and_shard() {
        // Kubo's sha2-256 keys all start "CIQ" (0x12 0x20 in base32) and sit
        // in the directory named by their next-to-last two characters.
        let cid: cid::Cid = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
            .parse()
            .unwrap();
        let key = key_of(&cid.hash().to_bytes());
        assert!(key.starts_with("CIQ"), "{key}");
        assert_eq!(key.len(), 55);
        assert_eq!(shard_name(shard_of(&key)), key[52..54]);
    }

    proptest! {
        #[test]
        fn key_roundtrip(digest in proptest::collection::vec(any::<u8>(), 32)) {
            let mh = Multihash::<64>::wrap(0x12, &digest).unwrap();
            let key = key_of(&mh.to_bytes());
            prop_assert_eq!(mh_of_key(&key), Some(mh));
            let idx = shard_of(&key);
            prop_assert!(idx < SHARDS);
            prop_assert_eq!(shard_index(&shard_name(idx)), Some(idx));
            prop_assert_eq!(&shard_name(idx), &key[key.len() - 3..key.len() - 1]);
        }

        #[test]
        fn junk_names_are_not_keys(s in "[A-Z2-7a-z=.]{0,60}") {
            if let Some(mh) = mh_of_key(&s) {
                prop_assert_eq!(key_of(&mh.to_bytes()), s);
            }
        }
    }
}
