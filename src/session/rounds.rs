//! Whole-session pins (`[pipeline] pin_policy = "session"`, the seed's option B): once a session
//! is complete, the cluster pins one UnixFS directory of its stills instead of each still.
//!
//! Each attempt is a *round*: the directory of every still the session has at that moment, and
//! the stills it brings to `pinned` (those not pinned by an earlier round). A still that arrives
//! after a round was made starts another round once the session is idle again; its directory
//! holds all the stills (the freed ones by CID and size only) and replaces the earlier pin.
//! As with single images, each change is one transaction over the round and its stills.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::store::{Ctx, IMAGES, TO_FREE};
use super::{Error, ImageRecord, ImageState, SessionStore};

/// Session name -> its latest [`SessionPin`] as JSON.
pub(super) const SESSION_PINS: TableDefinition<&str, &[u8]> = TableDefinition::new("session_pins");

/// Where a round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoundState {
    /// The directory is built and pinned here; the cluster has not been asked yet.
    Queued,
    /// The cluster accepted the pin; waiting for enough peers.
    Pinning,
    /// At least `replication_min` peers hold the directory.
    Pinned,
    /// The cluster refused it (see `error`); the stills stay local.
    Failed,
}

/// One round of a session's directory pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPin {
    /// The directory's root CID.
    pub cid: String,
    /// The directory's own blocks (its root, and a HAMT's shards), pinned directly on this node
    /// until the round is confirmed or replaced.
    pub blocks: Vec<String>,
    /// The stills this round brings to `pinned`.
    pub images: Vec<u32>,
    pub state: RoundState,
    pub replicas: u32,
    /// Unix second the round entered its state.
    pub since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The earlier round's directory, unpinned from the cluster once this one is confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

impl SessionPin {
    /// Queued or pinning: the cluster has still to confirm it.
    pub fn in_flight(&self) -> bool {
        matches!(self.state, RoundState::Queued | RoundState::Pinning)
    }
}

impl SessionStore {
    /// The session's latest round.
    pub fn session_pin(&self, session: &str) -> Result<Option<SessionPin>, Error> {
        let rtx = self.begin_read()?;
        let err = Ctx::new("read session pin", self.path());
        let t = rtx.open_table(SESSION_PINS).map_err(|e| err.wrap(e))?;
        let v = t.get(session).map_err(|e| err.wrap(e))?;
        v.map(|v| self.decode(format!("directory pin of {session:?}"), v.value()))
            .transpose()
    }

    /// Every session's latest round.
    pub fn session_pins(&self) -> Result<Vec<(String, SessionPin)>, Error> {
        let rtx = self.begin_read()?;
        let err = Ctx::new("list session pins", self.path());
        let t = rtx.open_table(SESSION_PINS).map_err(|e| err.wrap(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err.wrap(e))? {
            let (k, v) = row.map_err(|e| err.wrap(e))?;
            let name = k.value().to_string();
            let pin = self.decode(format!("directory pin of {name:?}"), v.value())?;
            out.push((name, pin));
        }
        Ok(out)
    }

    /// Records a new round (state `queued`), replacing the session's previous one.
    pub fn start_round(&self, session: &str, pin: &SessionPin) -> Result<(), Error> {
        self.change_round(session, Some(pin.clone()), |_| {}, |_| {}, false)
            .map(drop)
    }

    /// The cluster accepted the directory pin: the round's stills are `pinning`.
    pub fn round_pinning(&self, session: &str) -> Result<SessionPin, Error> {
        let now = super::unix_now();
        self.change_round(
            session,
            None,
            |p| {
                p.state = RoundState::Pinning;
                p.since = now;
                p.error = None;
            },
            |r| {
                r.state = ImageState::Pinning;
                r.error = None;
            },
            false,
        )
    }

    /// Enough replicas of the directory: its stills are `pinned` (and queued for freeing when
    /// `free`).
    pub fn round_pinned(
        &self,
        session: &str,
        replicas: u32,
        free: bool,
    ) -> Result<SessionPin, Error> {
        let now = super::unix_now();
        self.change_round(
            session,
            None,
            |p| {
                p.state = RoundState::Pinned;
                p.replicas = replicas;
                p.since = now;
                p.error = None;
                p.replaces = None;
            },
            |r| {
                r.state = ImageState::Pinned;
                r.replicas = replicas;
                r.error = None;
            },
            free,
        )
    }

    /// The cluster refused the directory: its stills are `failed` with `error`, and kept.
    pub fn round_failed(&self, session: &str, error: &str) -> Result<SessionPin, Error> {
        let now = super::unix_now();
        self.change_round(
            session,
            None,
            |p| {
                p.state = RoundState::Failed;
                p.since = now;
                p.error = Some(error.to_string());
            },
            |r| {
                r.state = ImageState::Failed;
                r.error = Some(error.to_string());
            },
            false,
        )
    }

    /// Notes a transient error, or the replicas seen so far, on the round and its stills.
    pub fn round_progress(
        &self,
        session: &str,
        error: Option<&str>,
        replicas: Option<u32>,
    ) -> Result<SessionPin, Error> {
        self.change_round(
            session,
            None,
            |p| {
                if let Some(e) = error {
                    p.error = Some(e.to_string());
                }
                if let Some(n) = replicas {
                    p.replicas = n;
                }
            },
            |r| {
                if let Some(e) = error {
                    r.error = Some(e.to_string());
                }
                if let Some(n) = replicas {
                    r.replicas = n;
                }
            },
            false,
        )
    }

    /// One transaction: the round (`new`, or the stored one changed by `round`), each of its
    /// stills changed by `image`, and with `free` each still queued for freeing.
    fn change_round(
        &self,
        session: &str,
        new: Option<SessionPin>,
        round: impl FnOnce(&mut SessionPin),
        image: impl Fn(&mut ImageRecord),
        free: bool,
    ) -> Result<SessionPin, Error> {
        let wtx = self.begin_write()?;
        let err = Ctx::new("update session pin", self.path());
        let pin = {
            let mut pins = wtx.open_table(SESSION_PINS).map_err(|e| err.wrap(e))?;
            let mut pin = match new {
                Some(p) => p,
                None => {
                    let bytes = pins
                        .get(session)
                        .map_err(|e| err.wrap(e))?
                        .map(|v| v.value().to_vec())
                        .ok_or_else(|| Error::NoRound(session.to_string()))?;
                    self.decode(format!("directory pin of {session:?}"), &bytes)?
                }
            };
            round(&mut pin);
            let json = serde_json::to_vec(&pin).expect("records serialize");
            pins.insert(session, json.as_slice())
                .map_err(|e| err.wrap(e))?;
            let mut images = wtx.open_table(IMAGES).map_err(|e| err.wrap(e))?;
            let mut to_free = wtx.open_table(TO_FREE).map_err(|e| err.wrap(e))?;
            for &n in &pin.images {
                let Some(bytes) = images
                    .get((session, n))
                    .map_err(|e| err.wrap(e))?
                    .map(|v| v.value().to_vec())
                else {
                    continue;
                };
                let mut rec: ImageRecord =
                    self.decode(format!("image {n} of {session:?}"), &bytes)?;
                image(&mut rec);
                let json = serde_json::to_vec(&rec).expect("records serialize");
                images
                    .insert((session, n), json.as_slice())
                    .map_err(|e| err.wrap(e))?;
                if free && rec.local {
                    to_free.insert((session, n), ()).map_err(|e| err.wrap(e))?;
                }
            }
            pin
        };
        self.commit(wtx)?;
        Ok(pin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{image_file_name, SessionRecord, SESSIONS_DB};

    fn image(number: u32) -> ImageRecord {
        ImageRecord {
            number,
            file: image_file_name(number),
            cid: format!("Qm{number}"),
            size: 10,
            dag_size: Some(20),
            captured_at: "2026-11-25T00:00:00Z".into(),
            state: ImageState::Imported,
            replicas: 0,
            local: true,
            error: None,
        }
    }

    fn round(images: Vec<u32>) -> SessionPin {
        SessionPin {
            cid: "QmDir".into(),
            blocks: vec!["QmDir".into()],
            images,
            state: RoundState::Queued,
            replicas: 0,
            since: 0,
            error: None,
            replaces: None,
        }
    }

    #[test]
    fn a_round_moves_its_stills_together_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SESSIONS_DB);
        let s = SessionStore::open(&path).unwrap();
        s.add_session(SessionRecord {
            name: "M42".into(),
            created: "2026-11-25T00:00:00Z".into(),
            dir: dir.path().join("M42"),
        })
        .unwrap();
        for n in 1..=3 {
            assert!(s.record_import("M42", &image(n), false).unwrap());
        }
        assert!(matches!(s.round_pinning("M42"), Err(Error::NoRound(_))));
        s.start_round("M42", &round(vec![1, 2])).unwrap();
        assert!(s.session_pin("M42").unwrap().unwrap().in_flight());
        s.round_pinning("M42").unwrap();
        let p = s
            .round_progress("M42", Some("cluster down"), Some(1))
            .unwrap();
        assert_eq!((p.replicas, p.error.as_deref()), (1, Some("cluster down")));
        assert_eq!(
            s.image("M42", 1).unwrap().unwrap().state,
            ImageState::Pinning
        );
        assert_eq!(
            s.image("M42", 3).unwrap().unwrap().state,
            ImageState::Imported
        );
        drop(s);

        let s = SessionStore::open(&path).unwrap();
        let p = s.round_pinned("M42", 2, true).unwrap();
        assert_eq!((p.state, p.error), (RoundState::Pinned, None));
        for n in [1, 2] {
            let r = s.image("M42", n).unwrap().unwrap();
            assert_eq!(
                (r.state, r.replicas, r.error),
                (ImageState::Pinned, 2, None)
            );
        }
        assert_eq!(
            s.to_free(10).unwrap(),
            [("M42".to_string(), 1), ("M42".to_string(), 2)]
        );
        assert_eq!(
            s.image("M42", 3).unwrap().unwrap().state,
            ImageState::Imported
        );
        assert_eq!(s.session_pins().unwrap().len(), 1);

        s.start_round("M42", &round(vec![3])).unwrap();
        let p = s.round_failed("M42", "not enough peers").unwrap();
        assert!(!p.in_flight());
        let r = s.image("M42", 3).unwrap().unwrap();
        assert_eq!(r.state, ImageState::Failed);
        assert!(r.local, "a failed still is kept");
    }
}
