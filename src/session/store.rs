//! [`SessionStore`]: sessions, images and the pipeline's queues in one redb file
//! (`<repo>/sessions.redb`).
//!
//! Every state change is one redb transaction that moves an image between queues and rewrites
//! its record together, so a kill -9 at any point leaves each image in exactly one stage:
//! - `outbox` (FIFO by sequence number): imported, to be handed to the cluster;
//! - `pinning`: the cluster took the pin; poll it until enough peers hold the data;
//! - `to_free`: confirmed; the local file and blocks are to be removed;
//! - none: done (pinned and freed, failed, or local only when no cluster is configured).
//!
//! A step whose effect is outside this file (a cluster POST, a file deletion) is done before
//! the transaction that records it; if the process dies in between, the step is done again on
//! restart, so each step must be idempotent (cluster pins are; deleting a missing file is).

use std::path::{Path, PathBuf};

use redb::{
    Database, MultimapTableDefinition, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use super::{ImageRecord, ImageState, SessionRecord};

/// Session name -> [`SessionRecord`] as JSON.
pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (session, number) -> [`ImageRecord`] as JSON.
pub(super) const IMAGES: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("images");
/// Sequence -> (session, number): imported images waiting for the cluster, oldest first.
pub(super) const OUTBOX: TableDefinition<u64, (&str, u32)> = TableDefinition::new("outbox");
/// (session, number) -> unix seconds the pin was accepted.
pub(super) const PINNING: TableDefinition<(&str, u32), u64> = TableDefinition::new("pinning");
/// (session, number) -> (): confirmed, local copy not yet removed.
pub(super) const TO_FREE: TableDefinition<(&str, u32), ()> = TableDefinition::new("to_free");
/// CID -> (session, number) of every image with that root: the same still captured twice is
/// one CID, and its local pin must outlive both images' confirmations.
pub(super) const CIDS: MultimapTableDefinition<&str, (&str, u32)> =
    MultimapTableDefinition::new("cids");
/// Counters: `"next_seq"`, `"version"`.
pub(super) const INFO: TableDefinition<&str, u64> = TableDefinition::new("info");

const SCHEMA_VERSION: u64 = 1;
/// redb's page cache, small for the reasons the blockstore's is (`blockstore::meta::CACHE_BYTES`):
/// below 512 KiB of reads, the half-MiB allocator-state pages redb reads at open and at the
/// first commit are not kept; session records are read a few at a time.
const CACHE_BYTES: usize = 512 << 10;

/// File name of the store inside the repo.
pub const SESSIONS_DB: &str = "sessions.redb";

/// Errors of the session store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("session store {path}: {op}: {source}")]
    Db {
        op: &'static str,
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error(
        "session store {path}: record of {what} is unreadable ({detail}); the file is damaged"
    )]
    Corrupt {
        path: PathBuf,
        what: String,
        detail: String,
    },
    #[error("session store {path}: schema version {found} is newer than this build's ({SCHEMA_VERSION}); use a newer wanda-ipfs")]
    Version { path: PathBuf, found: u64 },
    #[error("no image {number} in session {session:?}")]
    NoImage { session: String, number: u32 },
    #[error("session {0:?} has no directory pin")]
    NoRound(String),
}

/// An imported image waiting for the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub seq: u64,
    pub session: String,
    pub number: u32,
}

/// The pipeline's durable state. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct SessionStore {
    db: std::sync::Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SessionStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<SessionStore, Error> {
        let err = Ctx::new("open", path);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| err.wrap(e))?;
        let store = SessionStore {
            db: std::sync::Arc::new(db),
            path: path.to_path_buf(),
        };
        store.init()?;
        Ok(store)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init(&self) -> Result<(), Error> {
        let wtx = self.begin_write()?;
        {
            let err = Ctx::new("create tables", &self.path);
            wtx.open_table(SESSIONS).map_err(|e| err.wrap(e))?;
            wtx.open_table(IMAGES).map_err(|e| err.wrap(e))?;
            wtx.open_table(OUTBOX).map_err(|e| err.wrap(e))?;
            wtx.open_table(PINNING).map_err(|e| err.wrap(e))?;
            wtx.open_table(TO_FREE).map_err(|e| err.wrap(e))?;
            wtx.open_multimap_table(CIDS).map_err(|e| err.wrap(e))?;
            wtx.open_table(super::rounds::SESSION_PINS)
                .map_err(|e| err.wrap(e))?;
            let mut info = wtx.open_table(INFO).map_err(|e| err.wrap(e))?;
            let found = info
                .get("version")
                .map_err(|e| err.wrap(e))?
                .map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(Error::Version {
                        path: self.path.clone(),
                        found: v,
                    })
                }
                Some(_) => {}
                None => {
                    info.insert("version", SCHEMA_VERSION)
                        .map_err(|e| err.wrap(e))?;
                }
            }
        }
        self.commit(wtx)
    }

    pub(super) fn begin_write(&self) -> Result<redb::WriteTransaction, Error> {
        self.db
            .begin_write()
            .map_err(db_err("begin write", &self.path))
    }

    pub(super) fn begin_read(&self) -> Result<redb::ReadTransaction, Error> {
        self.db
            .begin_read()
            .map_err(db_err("begin read", &self.path))
    }

    pub(super) fn commit(&self, wtx: redb::WriteTransaction) -> Result<(), Error> {
        wtx.commit().map_err(db_err("commit", &self.path))
    }

    pub(super) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: String,
        bytes: &[u8],
    ) -> Result<T, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            path: self.path.clone(),
            what,
            detail: e.to_string(),
        })
    }

    /// Records a new session, or returns the one already recorded under that name.
    pub fn add_session(&self, rec: SessionRecord) -> Result<SessionRecord, Error> {
        if let Some(existing) = self.session(&rec.name)? {
            return Ok(existing);
        }
        let wtx = self.begin_write()?;
        let err = Ctx::new("add session", &self.path);
        let stored = {
            let mut t = wtx.open_table(SESSIONS).map_err(|e| err.wrap(e))?;
            // Checked again inside the write: another thread may have added it meanwhile.
            let existing = t
                .get(rec.name.as_str())
                .map_err(|e| err.wrap(e))?
                .map(|v| v.value().to_vec());
            match existing {
                Some(bytes) => self.decode(format!("session {:?}", rec.name), &bytes)?,
                None => {
                    let json = serde_json::to_vec(&rec).expect("records serialize");
                    t.insert(rec.name.as_str(), json.as_slice())
                        .map_err(|e| err.wrap(e))?;
                    rec
                }
            }
        };
        self.commit(wtx)?;
        Ok(stored)
    }

    /// The session named `name`.
    pub fn session(&self, name: &str) -> Result<Option<SessionRecord>, Error> {
        let rtx = self.begin_read()?;
        let err = Ctx::new("read session", &self.path);
        let t = rtx.open_table(SESSIONS).map_err(|e| err.wrap(e))?;
        let v = t.get(name).map_err(|e| err.wrap(e))?;
        v.map(|v| self.decode(format!("session {name:?}"), v.value()))
            .transpose()
    }

    /// Every session, by name.
    pub fn sessions(&self) -> Result<Vec<SessionRecord>, Error> {
        let rtx = self.begin_read()?;
        let err = Ctx::new("list sessions", &self.path);
        let t = rtx.open_table(SESSIONS).map_err(|e| err.wrap(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err.wrap(e))? {
            let (k, v) = row.map_err(|e| err.wrap(e))?;
            out.push(self.decode(format!("session {:?}", k.value()), v.value())?);
        }
        Ok(out)
    }

    /// One image.
    pub fn image(&self, session: &str, number: u32) -> Result<Option<ImageRecord>, Error> {
        let rtx = self.begin_read()?;
        let err = Ctx::new("read image", &self.path);
        let t = rtx.open_table(IMAGES).map_err(|e| err.wrap(e))?;
        let v = t.get((session, number)).map_err(|e| err.wrap(e))?;
        v.map(|v| self.decode(format!("image {number} of {session:?}"), v.value()))
            .transpose()
    }

    /// A session's images, by number.
    pub fn images(&self, session: &str) -> Result<Vec<ImageRecord>, Error> {
        let rtx = self.begin_read()?;
        let err = Ctx::new("list images", &self.path);
        let t = rtx.open_table(IMAGES).map_err(|e| err.wrap(e))?;
        let mut out = Vec::new();
        for row in t
            .range((session, 0)..=(session, u32::MAX))
            .map_err(|e| err.wrap(e))?
        {
            let (k, v) = row.map_err(|e| err.wrap(e))?;
            let (_, n) = k.value();
            out.push(self.decode(format!("image {n} of {session:?}"), v.value())?);
        }
        Ok(out)
    }

    /// Records an imported image, and with `enqueue` puts it in the outbox, in one
    /// transaction. Returns false, changing nothing, when the image was recorded before (an
    /// ingest that restarted after the import but before noticing it was recorded).
    pub fn record_import(
        &self,
        session: &str,
        rec: &ImageRecord,
        enqueue: bool,
    ) -> Result<bool, Error> {
        let wtx = self.begin_write()?;
        let err = Ctx::new("record import", &self.path);
        {
            let mut images = wtx.open_table(IMAGES).map_err(|e| err.wrap(e))?;
            if images
                .get((session, rec.number))
                .map_err(|e| err.wrap(e))?
                .is_some()
            {
                return Ok(false);
            }
            let json = serde_json::to_vec(rec).expect("records serialize");
            images
                .insert((session, rec.number), json.as_slice())
                .map_err(|e| err.wrap(e))?;
            wtx.open_multimap_table(CIDS)
                .map_err(|e| err.wrap(e))?
                .insert(rec.cid.as_str(), (session, rec.number))
                .map_err(|e| err.wrap(e))?;
            if enqueue {
                let mut info = wtx.open_table(INFO).map_err(|e| err.wrap(e))?;
                let seq = info
                    .get("next_seq")
                    .map_err(|e| err.wrap(e))?
                    .map_or(0, |v| v.value());
                info.insert("next_seq", seq + 1).map_err(|e| err.wrap(e))?;
                let mut outbox = wtx.open_table(OUTBOX).map_err(|e| err.wrap(e))?;
                outbox
                    .insert(seq, (session, rec.number))
                    .map_err(|e| err.wrap(e))?;
            }
        }
        self.commit(wtx)?;
        Ok(true)
    }

    /// Every image whose root is `cid`, as (session, record).
    pub fn images_with_cid(&self, cid: &str) -> Result<Vec<(String, ImageRecord)>, Error> {
        let keys: Vec<(String, u32)> = {
            let rtx = self.begin_read()?;
            let err = Ctx::new("look up CID", &self.path);
            let t = rtx.open_multimap_table(CIDS).map_err(|e| err.wrap(e))?;
            let mut keys = Vec::new();
            for v in t.get(cid).map_err(|e| err.wrap(e))? {
                let v = v.map_err(|e| err.wrap(e))?;
                let (s, n) = v.value();
                keys.push((s.to_string(), n));
            }
            keys
        };
        let mut out = Vec::new();
        for (s, n) in keys {
            if let Some(rec) = self.image(&s, n)? {
                out.push((s, rec));
            }
        }
        Ok(out)
    }

    /// Up to `limit` outbox entries, oldest first.
    pub fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, Error> {
        let rtx = self.begin_read()?;
        let err = Ctx::new("read outbox", &self.path);
        let t = rtx.open_table(OUTBOX).map_err(|e| err.wrap(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err.wrap(e))?.take(limit) {
            let (k, v) = row.map_err(|e| err.wrap(e))?;
            let (session, number) = v.value();
            out.push(OutboxEntry {
                seq: k.value(),
                session: session.to_string(),
                number,
            });
        }
        Ok(out)
    }

    /// How many images wait in each queue: (outbox, pinning, to free).
    pub fn backlog(&self) -> Result<(u64, u64, u64), Error> {
        let rtx = self.begin_read()?;
        let err = Ctx::new("count queues", &self.path);
        let o = rtx
            .open_table(OUTBOX)
            .map_err(|e| err.wrap(e))?
            .len()
            .map_err(|e| err.wrap(e))?;
        let p = rtx
            .open_table(PINNING)
            .map_err(|e| err.wrap(e))?
            .len()
            .map_err(|e| err.wrap(e))?;
        let f = rtx
            .open_table(TO_FREE)
            .map_err(|e| err.wrap(e))?
            .len()
            .map_err(|e| err.wrap(e))?;
        Ok((o, p, f))
    }

    /// Rewrites one image's record with `change`, and moves it between queues as `moves` says,
    /// in one transaction.
    fn update(
        &self,
        session: &str,
        number: u32,
        moves: Moves,
        change: impl FnOnce(&mut ImageRecord),
    ) -> Result<ImageRecord, Error> {
        let wtx = self.begin_write()?;
        let err = Ctx::new("update image", &self.path);
        let rec = {
            let mut images = wtx.open_table(IMAGES).map_err(|e| err.wrap(e))?;
            let bytes = images
                .get((session, number))
                .map_err(|e| err.wrap(e))?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| Error::NoImage {
                    session: session.to_string(),
                    number,
                })?;
            let mut rec: ImageRecord =
                self.decode(format!("image {number} of {session:?}"), &bytes)?;
            change(&mut rec);
            let json = serde_json::to_vec(&rec).expect("records serialize");
            images
                .insert((session, number), json.as_slice())
                .map_err(|e| err.wrap(e))?;
            if let Some(seq) = moves.from_outbox {
                wtx.open_table(OUTBOX)
                    .map_err(|e| err.wrap(e))?
                    .remove(seq)
                    .map_err(|e| err.wrap(e))?;
            }
            let mut pinning = wtx.open_table(PINNING).map_err(|e| err.wrap(e))?;
            match moves.pinning {
                Some(true) => {
                    pinning
                        .insert((session, number), super::unix_now())
                        .map_err(|e| err.wrap(e))?;
                }
                Some(false) => {
                    pinning.remove((session, number)).map_err(|e| err.wrap(e))?;
                }
                None => {}
            }
            let mut to_free = wtx.open_table(TO_FREE).map_err(|e| err.wrap(e))?;
            match moves.to_free {
                Some(true) => {
                    to_free
                        .insert((session, number), ())
                        .map_err(|e| err.wrap(e))?;
                }
                Some(false) => {
                    to_free.remove((session, number)).map_err(|e| err.wrap(e))?;
                }
                None => {}
            }
            rec
        };
        self.commit(wtx)?;
        Ok(rec)
    }

    /// The cluster accepted the pin of an outbox entry: out of the outbox, into `pinning`.
    pub fn set_pinning(&self, entry: &OutboxEntry) -> Result<ImageRecord, Error> {
        self.update(
            &entry.session,
            entry.number,
            Moves {
                from_outbox: Some(entry.seq),
                pinning: Some(true),
                to_free: None,
            },
            |r| {
                r.state = ImageState::Pinning;
                r.error = None;
            },
        )
    }

    /// A permanent failure: out of every queue, state `failed`, the image stays local.
    pub fn set_failed(
        &self,
        session: &str,
        number: u32,
        from_outbox: Option<u64>,
        error: &str,
    ) -> Result<ImageRecord, Error> {
        self.update(
            session,
            number,
            Moves {
                from_outbox,
                pinning: Some(false),
                to_free: None,
            },
            |r| {
                r.state = ImageState::Failed;
                r.error = Some(error.to_string());
            },
        )
    }

    /// Notes a transient error on an image that stays where it is (it is retried).
    pub fn note_error(
        &self,
        session: &str,
        number: u32,
        error: &str,
    ) -> Result<ImageRecord, Error> {
        self.update(session, number, Moves::default(), |r| {
            r.error = Some(error.to_string());
        })
    }

    /// Records the replica count seen while still pinning.
    pub fn set_replicas(
        &self,
        session: &str,
        number: u32,
        replicas: u32,
    ) -> Result<ImageRecord, Error> {
        self.update(session, number, Moves::default(), |r| r.replicas = replicas)
    }

    /// Restarts an image's wait in `pinning` from now (after a CAR upload).
    pub fn restart_pinning(&self, session: &str, number: u32) -> Result<(), Error> {
        let wtx = self.begin_write()?;
        {
            let err = Ctx::new("restart pinning", &self.path);
            let mut t = wtx.open_table(PINNING).map_err(|e| err.wrap(e))?;
            if t.get((session, number)).map_err(|e| err.wrap(e))?.is_some() {
                t.insert((session, number), super::unix_now())
                    .map_err(|e| err.wrap(e))?;
            }
        }
        self.commit(wtx)
    }

    /// Images the cluster accepted, with the unix second it did, oldest first.
    pub fn pinning(&self, limit: usize) -> Result<Vec<(String, u32, u64)>, Error> {
        let rtx = self.begin_read()?;
        let err = Ctx::new("read pinning", &self.path);
        let t = rtx.open_table(PINNING).map_err(|e| err.wrap(e))?;
        let mut out: Vec<(String, u32, u64)> = Vec::new();
        for row in t.iter().map_err(|e| err.wrap(e))? {
            let (k, v) = row.map_err(|e| err.wrap(e))?;
            let (s, n) = k.value();
            out.push((s.to_string(), n, v.value()));
        }
        out.sort_by_key(|(_, _, t)| *t);
        out.truncate(limit);
        Ok(out)
    }

    /// Enough replicas: out of `pinning`, state `pinned`, and queued for freeing when `free`.
    pub fn set_pinned(
        &self,
        session: &str,
        number: u32,
        replicas: u32,
        free: bool,
    ) -> Result<ImageRecord, Error> {
        self.update(
            session,
            number,
            Moves {
                from_outbox: None,
                pinning: Some(false),
                to_free: free.then_some(true),
            },
            |r| {
                r.state = ImageState::Pinned;
                r.replicas = replicas;
                r.error = None;
            },
        )
    }

    /// Confirmed images whose local copy is still to be removed.
    pub fn to_free(&self, limit: usize) -> Result<Vec<(String, u32)>, Error> {
        let rtx = self.begin_read()?;
        let err = Ctx::new("read to_free", &self.path);
        let t = rtx.open_table(TO_FREE).map_err(|e| err.wrap(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err.wrap(e))?.take(limit) {
            let (k, _) = row.map_err(|e| err.wrap(e))?;
            let (s, n) = k.value();
            out.push((s.to_string(), n));
        }
        Ok(out)
    }

    /// The local file and blocks are gone.
    pub fn set_freed(&self, session: &str, number: u32) -> Result<ImageRecord, Error> {
        self.update(
            session,
            number,
            Moves {
                from_outbox: None,
                pinning: None,
                to_free: Some(false),
            },
            |r| r.local = false,
        )
    }
}

/// Queue moves of one [`SessionStore::update`]: `Some(true)` adds, `Some(false)` removes.
#[derive(Default)]
struct Moves {
    from_outbox: Option<u64>,
    pinning: Option<bool>,
    to_free: Option<bool>,
}

/// The operation and file of a sequence of redb calls, to wrap their errors.
pub(super) struct Ctx<'a> {
    op: &'static str,
    path: &'a Path,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(op: &'static str, path: &'a Path) -> Self {
        Ctx { op, path }
    }

    pub(super) fn wrap(&self, e: impl Into<redb::Error>) -> Error {
        Error::Db {
            op: self.op,
            path: self.path.to_path_buf(),
            source: Box::new(e.into()),
        }
    }
}

fn db_err<E: Into<redb::Error>>(op: &'static str, path: &Path) -> impl Fn(E) -> Error {
    let path = path.to_path_buf();
    move |e| Error::Db {
        op,
        path: path.clone(),
        source: Box::new(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(number: u32) -> ImageRecord {
        ImageRecord {
            number,
            file: super::super::image_file_name(number),
            cid: format!("Qm{number}"),
            size: 10,
            dag_size: None,
            captured_at: "2026-11-25T00:00:00Z".into(),
            state: ImageState::Imported,
            replicas: 0,
            local: true,
            error: None,
        }
    }

    #[test]
    fn an_image_moves_through_the_queues_once_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SESSIONS_DB);
        let s = SessionStore::open(&path).unwrap();
        let rec = SessionRecord {
            name: "night one, Córdoba".into(),
            created: "2026-11-25T00:00:00Z".into(),
            dir: dir.path().join("night one, Córdoba"),
        };
        assert_eq!(s.add_session(rec.clone()).unwrap(), rec);
        let mut other = rec.clone();
        other.created = "later".into();
        assert_eq!(s.add_session(other).unwrap(), rec, "first record wins");

        assert!(s.record_import(&rec.name, &image(2), true).unwrap());
        assert!(s.record_import(&rec.name, &image(1), true).unwrap());
        assert!(
            !s.record_import(&rec.name, &image(1), true).unwrap(),
            "exactly once"
        );
        let out = s.outbox(10).unwrap();
        assert_eq!(
            out.iter().map(|e| e.number).collect::<Vec<_>>(),
            vec![2, 1],
            "FIFO"
        );
        assert_eq!(s.backlog().unwrap(), (2, 0, 0));

        s.set_pinning(&out[0]).unwrap();
        drop(s);
        let s = SessionStore::open(&path).unwrap();
        assert_eq!(s.backlog().unwrap(), (1, 1, 0));
        assert_eq!(
            s.image(&rec.name, 2).unwrap().unwrap().state,
            ImageState::Pinning
        );
        s.set_pinned(&rec.name, 2, 3, true).unwrap();
        assert_eq!(s.to_free(10).unwrap(), vec![(rec.name.clone(), 2)]);
        let freed = s.set_freed(&rec.name, 2).unwrap();
        assert!(freed.pinned() && !freed.local && freed.replicas == 3);
        s.set_failed(&rec.name, 1, Some(out[1].seq), "not enough peers")
            .unwrap();
        assert_eq!(s.backlog().unwrap(), (0, 0, 0));
        let imgs = s.images(&rec.name).unwrap();
        assert_eq!(
            imgs.iter().map(|i| i.number).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(imgs[0].state, ImageState::Failed);
        assert_eq!(imgs[0].error.as_deref(), Some("not enough peers"));
        assert!(s.images("another").unwrap().is_empty());
        let same = s.images_with_cid("Qm1").unwrap();
        assert_eq!(same.len(), 1);
        assert_eq!(same[0].1.number, 1);
        assert!(matches!(
            s.note_error("another", 1, "x"),
            Err(Error::NoImage { .. })
        ));
    }
}
