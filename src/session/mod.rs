//! Capture sessions and what became of each image: the pipeline's durable truth.
//!
//! A session is a free-text name and a folder of `image_NNNN.jpg` stills. Each image, once
//! imported, has a CID and moves through [`ImageState`]s as the cluster pins it; the record of
//! every step lives in the repo ([`SessionStore`], one redb file), and WANDA's
//! `session_metadata.json` is rebuilt from it ([`metadata`]), never the other way round.

mod metadata;
mod rounds;
mod store;

use serde::{Deserialize, Serialize};

pub use metadata::{
    merge_metadata, write_metadata, IpfsInfo, MetadataError, METADATA_FILE, OWNED_IMAGE_KEYS,
};
pub use rounds::{RoundState, SessionPin};
pub use store::{Error, OutboxEntry, SessionStore, SESSIONS_DB};

/// A session as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Free text, as the user typed it (spaces and any Unicode allowed); also the folder name.
    pub name: String,
    /// RFC 3339, UTC: when wanda-ipfs first saw the session.
    pub created: String,
    /// The folder holding the session's images and its `session_metadata.json`.
    pub dir: std::path::PathBuf,
}

/// Where an image stands. Moves only forward: imported -> pinning -> pinned, or to failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    /// In the local blockstore and pinned there; not (yet) handed to a cluster.
    Imported,
    /// The cluster accepted the pin; waiting for enough peers to report `pinned`.
    Pinning,
    /// At least `replication_min` cluster peers hold it.
    Pinned,
    /// The cluster refused the pin for a reason retrying will not fix (see `error`); the image
    /// stays local.
    Failed,
}

/// One image of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// From the file name, `image_0007.jpg` -> 7.
    pub number: u32,
    /// The file name inside the session folder.
    pub file: String,
    /// The root CID of the imported file, as `ipfs add` with the configured options gives it.
    pub cid: String,
    /// Bytes of the file.
    pub size: u64,
    /// Cumulative size of the file's DAG (a directory link's Tsize). Absent in records written
    /// before whole-session pins existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dag_size: Option<u64>,
    /// RFC 3339, UTC: the file's modification time when it was imported.
    pub captured_at: String,
    pub state: ImageState,
    /// Cluster peers that reported `pinned` at the last check.
    pub replicas: u32,
    /// Whether the file and its blocks are still on this node.
    pub local: bool,
    /// Why the image failed, or the last transient error while it is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ImageRecord {
    /// The seed format's `pinned`: the cluster holds enough replicas.
    pub fn pinned(&self) -> bool {
        self.state == ImageState::Pinned
    }
}

/// The number in a WANDA still's file name: `image_0001.jpg` -> 1. Other files are not stills.
pub fn image_number(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix("image_")?;
    let digits = rest
        .strip_suffix(".jpg")
        .or_else(|| rest.strip_suffix(".jpeg"))?;
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file name WANDA gives still `number`.
pub fn image_file_name(number: u32) -> String {
    format!("image_{number:04}.jpg")
}

/// Checks a session name before it becomes a folder name: free text, but one path component.
pub fn check_session_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("a session name cannot be empty".into());
    }
    if name.len() > 200 {
        return Err(format!("session name is {} bytes; at most 200", name.len()));
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(format!(
            "session name {name:?} cannot contain '/' or NUL, nor be '.' or '..'"
        ));
    }
    Ok(())
}

/// Now, as RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// Seconds since the Unix epoch (0 on a clock before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `t` as RFC 3339 UTC, to the second.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::from(t));
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_numbers_come_from_wanda_names_only() {
        assert_eq!(image_number("image_0001.jpg"), Some(1));
        assert_eq!(image_number("image_12345.jpg"), Some(12345));
        assert_eq!(image_number("image_0002.jpeg"), Some(2));
        for bad in [
            "image_.jpg",
            "image_12a.jpg",
            "image_0001.jpg.tmp",
            ".image_0001.jpg",
            "session_metadata.json",
            "image_-1.jpg",
            "image_9999999999.jpg",
        ] {
            assert_eq!(image_number(bad), None, "{bad}");
        }
        assert_eq!(image_file_name(7), "image_0007.jpg");
        assert_eq!(image_number(&image_file_name(123_456)), Some(123_456));
    }

    #[test]
    fn session_names_are_free_text_but_one_component() {
        check_session_name("Eclipse 2026 — Córdoba, night 2").unwrap();
        for bad in ["", "  ", ".", "..", "a/b", "a\0b"] {
            assert!(check_session_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_500);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
