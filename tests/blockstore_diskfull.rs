//! A full disk gives `Error::DiskFull` and leaves the store consistent.
//!
//! Runs on a small tmpfs mounted by the test (needs root, as tests and CI run
//! here); where mounting is not allowed the test says so and passes.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cid::Version;
use wanda_ipfs::block::{Block, RAW};
use wanda_ipfs::blockstore::{BlockSink, BlockSource, Error, FsBlockstore, PinMode};

/// Big enough for the metadata database and a few blocks, small enough to fill fast.
const TMPFS_BYTES: u64 = 6 << 20;
const BLOCK: usize = 256 << 10;
/// More than the tmpfs holds, so the loop must hit ENOSPC.
const MAX_BLOCKS: u64 = 2 * TMPFS_BYTES / BLOCK as u64;

struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let c = |s: &[u8]| CString::new(s).unwrap();
        let target = c(path.as_os_str().as_bytes());
        let opts = c(format!("size={bytes}").as_bytes());
        // SAFETY: all pointers are valid NUL-terminated strings for the call.
        let rc = unsafe {
            libc::mount(
                c(b"tmpfs").as_ptr(),
                target.as_ptr(),
                c(b"tmpfs").as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // CI runs as root: there a full-disk test that cannot run is a failure, never a skip.
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("cannot mount a tmpfs ({err}) under CI=true: the full-disk test must run");
            }
            eprintln!("SKIPPED: cannot mount a tmpfs ({err}); run as root to test a full disk");
            return None;
        }
        Some(Tmpfs { path, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.path.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path. MNT_DETACH so a failing test
        // still leaves no mount behind.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

fn block(i: u64) -> Block {
    let mut data = vec![0u8; BLOCK];
    for (j, b) in data.iter_mut().enumerate() {
        *b = (i as usize * 131 + j * 7) as u8 ^ (j >> 8) as u8;
    }
    data[..8].copy_from_slice(&i.to_le_bytes());
    Block::new(Version::V1, RAW, data)
}

fn tmp_files(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("blocks/.tmp")).unwrap().count()
}

#[test]
fn full_disk_is_reported_and_leaves_the_store_consistent() {
    let Some(fs) = Tmpfs::mount(TMPFS_BYTES) else {
        return;
    };
    let repo = fs.path.join("repo");
    let store = FsBlockstore::open(&repo).unwrap();

    let kept = block(0);
    let mut w = store.writer();
    w.put(&kept).unwrap();
    w.finish(&kept.cid, PinMode::Recursive).unwrap();

    let mut w = store.writer();
    let mut written = Vec::new();
    let err = (1..=MAX_BLOCKS)
        .find_map(|i| {
            let b = block(i);
            match w.put(&b) {
                Ok(()) => {
                    written.push(b);
                    None
                }
                Err(e) => Some(e),
            }
        })
        .expect("the tmpfs never filled up");
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("full") && msg.contains("wanda-ipfs repo gc"),
        "{msg}"
    );
    // Only whole, not-yet-visible temp files of this batch remain...
    assert_eq!(tmp_files(&repo), written.len());
    for b in &written {
        assert!(!store.has(&b.cid).unwrap());
    }
    // ...and an abandoned import removes them.
    drop(w);
    assert_eq!(tmp_files(&repo), 0);
    assert!(store.verify(false).unwrap().is_clean());
    assert_eq!(store.get(&kept.cid).unwrap(), kept.data);

    // Durable writes (put, then flush) that hit the full disk leave nothing either.
    let mut w = store.writer();
    let mut i = 1;
    let err = loop {
        if let Err(e) = w.put(&block(i)).and_then(|()| w.flush()) {
            break e;
        }
        i += 1;
        assert!(i <= MAX_BLOCKS, "the tmpfs never filled up");
    };
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    drop(w);
    assert_eq!(tmp_files(&repo), 0);

    // Pinning on a full disk either fits or says the disk is full.
    match store.pin(&block(1).cid, PinMode::Direct) {
        Ok(()) | Err(Error::DiskFull { .. }) => {}
        Err(e) => panic!("pin on a full disk: {e}"),
    }

    // Freeing space makes the store usable again.
    drop(store);
    let store = FsBlockstore::open(&repo).unwrap();
    assert!(store.verify(false).unwrap().is_clean());
    for (root, _) in store.pins().unwrap() {
        if root != kept.cid {
            store.unpin(&root).unwrap();
        }
    }
    store.gc().unwrap();
    let again = block(MAX_BLOCKS + 1);
    store.put_block(&again).unwrap();
    assert_eq!(store.get(&again.cid).unwrap(), again.data);
    assert_eq!(store.get(&kept.cid).unwrap(), kept.data);
}
