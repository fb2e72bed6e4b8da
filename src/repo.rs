//! The repo directory: where it is, what is in it, and who may use it.
//!
//! Layout: `config.toml` (written by `init` from the embedded default),
//! `repo.lock` (held by the one process using the repo; it records its pid),
//! `identity.key` (the node's libp2p keypair, see [`crate::node::identity`]),
//! `api` (the running daemon's RPC address, see [`crate::node::rpc`]),
//! and the blockstore's own files under `blocks/`. The lock is an advisory
//! `flock`, so it disappears with the process after a kill -9 and never needs
//! manual cleanup.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::config::Config;

/// Environment variable naming the repo, as IPFS_PATH does for Kubo.
pub const REPO_ENV: &str = "WANDA_IPFS_PATH";
/// Default repo directory name under $HOME.
pub const DEFAULT_DIR: &str = ".wanda-ipfs";
/// The config file inside a repo.
pub const CONFIG_FILE: &str = "config.toml";
const LOCK_FILE: &str = "repo.lock";
const BLOCKS_DIR: &str = "blocks";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no repo at {0}: run `wanda-ipfs init` or set WANDA_IPFS_PATH / --repo")]
    NotFound(PathBuf),
    #[error("a repo already exists at {0}: refusing to overwrite it (use another --repo)")]
    Exists(PathBuf),
    #[error("repo {path} is in use by another wanda-ipfs process{pid}: wait for it, or stop it")]
    Locked { path: PathBuf, pid: String },
    #[error("cannot find a home directory for the default repo: set WANDA_IPFS_PATH or --repo")]
    NoHome,
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Store(#[from] crate::blockstore::Error),
    #[error(transparent)]
    Identity(#[from] crate::node::identity::Error),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where the repo is: `--repo`, else `$WANDA_IPFS_PATH`, else `~/.wanda-ipfs`.
pub fn locate(flag: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<PathBuf, Error> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = env(REPO_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = env("HOME").filter(|h| !h.is_empty()).ok_or(Error::NoHome)?;
    Ok(Path::new(&home).join(DEFAULT_DIR))
}

/// An open repo, locked for this process.
pub struct Repo {
    path: PathBuf,
    pub config: Config,
    pub store: crate::blockstore::FsBlockstore,
    _lock: File,
}

impl Repo {
    /// Creates a repo at `path` with the default config and an empty store.
    pub fn init(path: &Path) -> Result<(), Error> {
        if path.join(CONFIG_FILE).exists() || path.join(BLOCKS_DIR).exists() {
            return Err(Error::Exists(path.to_path_buf()));
        }
        std::fs::create_dir_all(path).map_err(io("creating", path))?;
        let _lock = lock(path)?;
        crate::blockstore::FsBlockstore::open(path)?;
        // An unfinished earlier init may have left a key: keep it rather than change identity.
        crate::node::identity::load_or_create(path)?;
        // Config last: its presence marks a finished init.
        let cfg = path.join(CONFIG_FILE);
        let tmp = path.join(".config.toml.tmp");
        let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(crate::config::DEFAULT_TOML.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &cfg).map_err(io("renaming", &tmp))?;
        File::open(path)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", path))?;
        Ok(())
    }

    /// Opens and locks the repo at `path`.
    pub fn open(
        path: &Path,
        config_path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Repo, Error> {
        if !path.join(CONFIG_FILE).exists() {
            return Err(Error::NotFound(path.to_path_buf()));
        }
        let lock = lock(path)?;
        let cfg_path = config_path.map_or_else(|| path.join(CONFIG_FILE), Path::to_path_buf);
        let config = Config::load(&cfg_path, env)?;
        let store = crate::blockstore::FsBlockstore::open(path)?;
        Ok(Repo {
            path: path.to_path_buf(),
            config,
            store,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node's keypair; repos made before identities existed get one now (we hold the lock).
    pub fn identity(&self) -> Result<libp2p::identity::Keypair, Error> {
        let existed = crate::node::identity::path(&self.path).exists();
        let key = crate::node::identity::load_or_create(&self.path)?;
        if !existed {
            tracing::info!(peer = %key.public().to_peer_id(), "created an identity for this older repo");
        }
        Ok(key)
    }
}

/// Takes the repo's exclusive lock and records our pid in it.
fn lock(path: &Path) -> Result<File, Error> {
    let p = path.join(LOCK_FILE);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(io("opening", &p))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(Error::Locked {
                path: path.to_path_buf(),
                pid: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", &p)(e)),
    }
    f.set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| write!(f, "{}", std::process::id()))
        .map_err(io("writing", &p))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_precedence() {
        let env = |k: &str| match k {
            "WANDA_IPFS_PATH" => Some("/from/env".to_string()),
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        assert_eq!(
            locate(Some(Path::new("/flag")), env).unwrap(),
            Path::new("/flag")
        );
        assert_eq!(locate(None, env).unwrap(), Path::new("/from/env"));
        let home_only = |k: &str| (k == "HOME").then(|| "/home/u".to_string());
        assert_eq!(
            locate(None, home_only).unwrap(),
            Path::new("/home/u/.wanda-ipfs")
        );
        assert!(matches!(locate(None, |_| None), Err(Error::NoHome)));
    }

    #[test]
    fn init_open_lock() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("repo");
        assert!(matches!(
            Repo::open(&p, None, |_| None),
            Err(Error::NotFound(_))
        ));
        Repo::init(&p).unwrap();
        let key = crate::node::identity::load(&p).unwrap();
        assert!(matches!(Repo::init(&p), Err(Error::Exists(_))));
        assert_eq!(
            crate::node::identity::load(&p).unwrap().public(),
            key.public()
        );
        let r = Repo::open(&p, None, |_| None).unwrap();
        let e = Repo::open(&p, None, |_| None).err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(r);
        Repo::open(&p, None, |_| None).unwrap();
    }
}
