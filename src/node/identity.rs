//! The node's persistent identity: an Ed25519 keypair in `<repo>/identity.key`.
//!
//! The file holds libp2p's protobuf keypair encoding (the bytes Kubo keeps base64'd in
//! `Identity.PrivKey`), mode 0600, written to a temp file, fsync'd, renamed into place and the
//! directory fsync'd, so a crash leaves either no key or a whole one. New keys are Ed25519 like
//! `ipfs init` since Kubo 0.13; any key type libp2p can decode is accepted on load.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// The key file inside a repo.
pub const IDENTITY_FILE: &str = "identity.key";
const TMP_FILE: &str = ".identity.key.tmp";
/// Owner read/write only: the key is the node's identity.
const KEY_MODE: u32 = 0o600;
/// A protobuf keypair is at most a few KiB (RSA-4096 is about 2.4 KiB); refuse anything bigger.
const MAX_KEY_BYTES: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no identity at {0}: this repo predates identities; run `wanda-ipfs daemon` once to create one")]
    Missing(PathBuf),
    #[error(
        "identity {path} is not a libp2p protobuf keypair ({reason}): restore it from a backup"
    )]
    Invalid { path: PathBuf, reason: String },
    #[error("identity {0} already exists: refusing to replace the node's identity")]
    Exists(PathBuf),
    #[error("identity {path} is readable by others (mode {mode:o}): run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The key file of the repo at `repo`.
pub fn path(repo: &Path) -> PathBuf {
    repo.join(IDENTITY_FILE)
}

/// Reads the repo's keypair.
pub fn load(repo: &Path) -> Result<Keypair, Error> {
    let p = path(repo);
    let f = match File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::Missing(p)),
        Err(e) => return Err(io("opening", &p)(e)),
    };
    let mode = f
        .metadata()
        .map_err(io("reading", &p))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Permissions { path: p, mode });
    }
    let mut bytes = Vec::new();
    f.take(MAX_KEY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io("reading", &p))?;
    if bytes.len() as u64 > MAX_KEY_BYTES {
        return Err(Error::Invalid {
            path: p,
            reason: format!("larger than {MAX_KEY_BYTES} bytes"),
        });
    }
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| Error::Invalid {
        path: p,
        reason: e.to_string(),
    })
}

/// Generates an Ed25519 keypair and writes it durably; an existing key file is an error.
pub fn create(repo: &Path) -> Result<Keypair, Error> {
    let key = Keypair::generate_ed25519();
    write(repo, &key)?;
    Ok(key)
}

/// Loads the repo's key, creating one first if the repo has none (repos made before identities).
pub fn load_or_create(repo: &Path) -> Result<Keypair, Error> {
    match load(repo) {
        Err(Error::Missing(_)) => create(repo),
        other => other,
    }
}

/// Writes `key` to the repo atomically; refuses to replace an existing key.
pub fn write(repo: &Path, key: &Keypair) -> Result<(), Error> {
    let dest = path(repo);
    let tmp = repo.join(TMP_FILE);
    let bytes = key.to_protobuf_encoding().map_err(|e| Error::Invalid {
        path: dest.clone(),
        reason: e.to_string(),
    })?;
    // A temp file from a crashed earlier attempt holds no key anyone uses.
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_MODE)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(io("writing", &tmp))?;
    drop(f);
    // hard_link fails if the destination exists, so a concurrent or earlier key is never replaced.
    if let Err(e) = std::fs::hard_link(&tmp, &dest) {
        let _ = std::fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return Err(Error::Exists(dest));
        }
        return Err(io("installing", &dest)(e));
    }
    std::fs::remove_file(&tmp).map_err(io("removing", &tmp))?;
    File::open(repo)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", repo))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_roundtrip_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(dir.path()), Err(Error::Missing(_))));
        let k = create(dir.path()).unwrap();
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, KEY_MODE);
        let again = load(dir.path()).unwrap();
        assert_eq!(k.public(), again.public());
        assert!(k.public().to_peer_id().to_base58().starts_with("12D3KooW"));
        assert!(
            matches!(create(dir.path()), Err(Error::Exists(_))),
            "an existing key is never replaced"
        );
        assert_eq!(load(dir.path()).unwrap().public(), k.public());
        assert!(!dir.path().join(TMP_FILE).exists());
    }

    #[test]
    fn rejects_garbage_and_loose_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        std::fs::write(&p, b"not a key").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load(dir.path()), Err(Error::Invalid { .. })));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(dir.path()), Err(Error::Permissions { .. })));
    }

    #[test]
    fn load_or_create_keeps_an_existing_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public(), b.public());
    }
}
