//! WANDA's `session_metadata.json`, rebuilt from the session store.
//!
//! WANDA's Python app rewrites this file after every image, so it is shared: wanda-ipfs owns the
//! `ipfs` object's `enabled`/`cluster` and, in each `images[]` entry, the keys listed in
//! [`OWNED_IMAGE_KEYS`]; every other key, ours or unknown, is kept as found. The merge is a pure
//! function; the write is atomic (temp file, fsync, rename, fsync of the folder) and re-merges if
//! the file changed while we wrote, so WANDA's keys are never lost to a race we can see.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::{ImageRecord, SessionRecord};

/// The file WANDA keeps in each session folder.
pub const METADATA_FILE: &str = "session_metadata.json";
/// Our temp file beside it (WANDA ignores dot files).
const TMP_FILE: &str = ".session_metadata.json.wanda-ipfs.tmp";
/// Re-merges when the file changes under us, at most this many times per write.
const MAX_ATTEMPTS: usize = 5;
/// A metadata file larger than this is not parsed (a session of 3 hours at 2 stills/s is
/// ~22k images, ~5 MiB of JSON).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Keys of an `images[]` entry that wanda-ipfs writes (and removes when it has no value).
pub const OWNED_IMAGE_KEYS: [&str; 9] = [
    "number",
    "cid",
    "pinned",
    "state",
    "replicas",
    "local",
    "size",
    "captured_at",
    "error",
];

/// Why the metadata file could not be rebuilt. Nothing was written when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a JSON object ({detail}); left as it is, the next change retries")]
    Unparsable { path: PathBuf, detail: String },
    #[error("{path} keeps changing while we write it; the next change retries")]
    Busy { path: PathBuf },
}

/// What the `ipfs` object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpfsInfo {
    pub enabled: bool,
    /// The cluster's REST API URL, when one is configured.
    pub cluster: Option<String>,
    /// With whole-session pins: the session directory's CID (`ipfs.cid`) and whether the
    /// cluster holds enough replicas of it (`ipfs.pinned`).
    pub directory: Option<(String, bool)>,
}

/// `existing` (the file's object, if any) with our keys set from `session`, `ipfs` and
/// `images`. Entries of `images[]` are matched by `number`; images WANDA has not listed are
/// appended in number order.
pub fn merge_metadata(
    existing: Option<Map<String, Value>>,
    session: &SessionRecord,
    ipfs: &IpfsInfo,
    images: &[ImageRecord],
) -> Map<String, Value> {
    let mut doc = existing.unwrap_or_default();
    doc.entry("name").or_insert_with(|| json!(session.name));
    doc.entry("created")
        .or_insert_with(|| json!(session.created));
    let ipfs_obj = doc.entry("ipfs").or_insert_with(|| json!({}));
    if !ipfs_obj.is_object() {
        *ipfs_obj = json!({});
    }
    if let Some(o) = ipfs_obj.as_object_mut() {
        o.insert("enabled".into(), json!(ipfs.enabled));
        o.insert("cluster".into(), json!(ipfs.cluster));
        match &ipfs.directory {
            Some((cid, pinned)) => {
                o.insert("cid".into(), json!(cid));
                o.insert("pinned".into(), json!(pinned));
            }
            None => {
                o.remove("cid");
                o.remove("pinned");
            }
        }
    }

    let list = doc.entry("images").or_insert_with(|| json!([]));
    if !list.is_array() {
        // Not a list WANDA could be using as the seed's `images`: ours replaces it.
        *list = json!([]);
    }
    let entries = list.as_array_mut().expect("made an array above");
    let mut by_number: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(n) = e.get("number").and_then(Value::as_u64) {
            by_number.entry(n).or_insert(i);
        }
    }
    let mut appended = Vec::new();
    for img in images {
        let fields = image_fields(img);
        match by_number.get(&u64::from(img.number)) {
            Some(&i) => {
                if let Some(o) = entries[i].as_object_mut() {
                    for k in OWNED_IMAGE_KEYS {
                        match fields.get(k) {
                            Some(v) => o.insert(k.into(), v.clone()),
                            None => o.remove(k),
                        };
                    }
                }
            }
            None => appended.push((img.number, Value::Object(fields))),
        }
    }
    appended.sort_by_key(|(n, _)| *n);
    entries.extend(appended.into_iter().map(|(_, v)| v));
    doc
}

fn image_fields(img: &ImageRecord) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("number".into(), json!(img.number));
    m.insert("cid".into(), json!(img.cid));
    m.insert("pinned".into(), json!(img.pinned()));
    m.insert("state".into(), json!(img.state));
    m.insert("replicas".into(), json!(img.replicas));
    m.insert("local".into(), json!(img.local));
    m.insert("size".into(), json!(img.size));
    m.insert("captured_at".into(), json!(img.captured_at));
    if let Some(e) = &img.error {
        m.insert("error".into(), json!(e));
    }
    m
}

/// Rebuilds `<session.dir>/session_metadata.json` from `images`, keeping every key we do not
/// own. Atomic; creates the folder if it is missing.
pub fn write_metadata(
    session: &SessionRecord,
    ipfs: &IpfsInfo,
    images: &[ImageRecord],
) -> Result<(), MetadataError> {
    let dir = &session.dir;
    let path = dir.join(METADATA_FILE);
    let tmp = dir.join(TMP_FILE);
    fs::create_dir_all(dir).map_err(io_err("create folder", dir))?;
    for _ in 0..MAX_ATTEMPTS {
        let (existing, seen) = read_object(&path)?;
        let doc = merge_metadata(existing, session, ipfs, images);
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(doc)).expect("JSON serializes");
        bytes.push(b'\n');
        {
            let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
            f.write_all(&bytes).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))?;
        }
        // WANDA may have rewritten the file since we read it: merge its version instead.
        if stamp(&path)? != seen {
            continue;
        }
        fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync folder", dir))?;
        return Ok(());
    }
    let _ = fs::remove_file(&tmp);
    Err(MetadataError::Busy { path })
}

/// What identifies one version of the file: length and modification time (None if absent).
type Stamp = Option<(u64, std::time::SystemTime)>;

fn stamp(path: &Path) -> Result<Stamp, MetadataError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some((m.len(), m.modified().map_err(io_err("stat", path))?))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}

fn read_object(path: &Path) -> Result<(Option<Map<String, Value>>, Stamp), MetadataError> {
    let seen = stamp(path)?;
    let Some((len, _)) = seen else {
        return Ok((None, None));
    };
    if len > MAX_FILE_BYTES {
        return Err(MetadataError::Unparsable {
            path: path.to_path_buf(),
            detail: format!("{len} bytes, over the {MAX_FILE_BYTES} we read"),
        });
    }
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, None)),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        // WANDA truncates before it writes: an empty file is a write in progress or a fresh
        // one; either way there is nothing of its to keep yet.
        return Ok((None, seen));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok((Some(m), seen)),
        Ok(other) => Err(MetadataError::Unparsable {
            path: path.to_path_buf(),
            detail: format!("top level is {}", kind(&other)),
        }),
        Err(e) => Err(MetadataError::Unparsable {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> MetadataError + 'a {
    move |source| MetadataError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::super::ImageState;
    use super::*;

    fn session(dir: &Path) -> SessionRecord {
        SessionRecord {
            name: "M42 ñ test".into(),
            created: "2026-11-25T01:02:03Z".into(),
            dir: dir.join("M42 ñ test"),
        }
    }

    fn img(number: u32, state: ImageState) -> ImageRecord {
        ImageRecord {
            number,
            file: super::super::image_file_name(number),
            cid: format!("Qm{number}"),
            size: 5_000_000,
            dag_size: None,
            captured_at: "2026-11-25T01:02:04Z".into(),
            state,
            replicas: if state == ImageState::Pinned { 2 } else { 0 },
            local: state != ImageState::Pinned,
            error: None,
        }
    }

    const IPFS: IpfsInfo = IpfsInfo {
        enabled: true,
        cluster: None,
        directory: None,
    };

    #[test]
    fn wandas_keys_survive_and_ours_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let s = session(dir.path());
        let theirs = json!({
            "name": "M42 ñ test",
            "created": "2026-11-25T01:00:00",
            "mode": "rapid",
            "camera": {"exposure_us": 20000},
            "ipfs": {"enabled": false, "note": "theirs"},
            "images": [
                {"number": 1, "filename": "image_0001.jpg", "gain": 4, "cid": "stale"},
                "a stray string WANDA wrote",
                {"number": 3, "filename": "image_0003.jpg"}
            ]
        });
        let mut failed = img(3, ImageState::Failed);
        failed.error = Some("not enough peers".into());
        let doc = merge_metadata(
            theirs.as_object().cloned(),
            &s,
            &IpfsInfo {
                directory: Some(("QmSessionDir".into(), false)),
                enabled: true,
                cluster: Some("http://127.0.0.1:9094".into()),
            },
            &[
                img(2, ImageState::Imported),
                img(1, ImageState::Pinned),
                failed,
            ],
        );
        let doc = Value::Object(doc);
        assert_eq!(
            doc["created"], "2026-11-25T01:00:00",
            "WANDA's created wins"
        );
        assert_eq!(doc["mode"], "rapid");
        assert_eq!(doc["camera"]["exposure_us"], 20000);
        assert_eq!(
            doc["ipfs"],
            json!({"enabled": true, "note": "theirs", "cluster": "http://127.0.0.1:9094",
                "cid": "QmSessionDir", "pinned": false})
        );
        let images = doc["images"].as_array().unwrap();
        assert_eq!(images.len(), 4);
        assert_eq!(images[0]["filename"], "image_0001.jpg");
        assert_eq!(images[0]["gain"], 4);
        assert_eq!(images[0]["cid"], "Qm1");
        assert_eq!(images[0]["pinned"], true);
        assert_eq!(images[0]["replicas"], 2);
        assert_eq!(images[1], "a stray string WANDA wrote");
        assert_eq!(images[2]["state"], "failed");
        assert_eq!(images[2]["error"], "not enough peers");
        assert_eq!(images[3]["number"], 2, "unlisted images are appended");
        assert_eq!(images[3]["pinned"], false);
        assert_eq!(images[3]["state"], "imported");
    }

    #[test]
    fn written_atomically_and_merged_again_on_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = session(dir.path());
        write_metadata(&s, &IPFS, &[img(1, ImageState::Imported)]).unwrap();
        let path = s.dir.join(METADATA_FILE);
        let first: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(first["name"], "M42 ñ test");
        assert_eq!(first["images"][0]["cid"], "Qm1");
        // WANDA rewrites the file with its own key and entry.
        let mut theirs = first.clone();
        theirs["wanda_version"] = json!("2.1");
        theirs["images"][0]["filename"] = json!("image_0001.jpg");
        fs::write(&path, serde_json::to_vec(&theirs).unwrap()).unwrap();
        write_metadata(
            &s,
            &IPFS,
            &[img(1, ImageState::Pinned), img(2, ImageState::Imported)],
        )
        .unwrap();
        let second: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(second["wanda_version"], "2.1");
        assert_eq!(second["images"][0]["filename"], "image_0001.jpg");
        assert_eq!(second["images"][0]["pinned"], true);
        assert_eq!(second["images"][1]["number"], 2);
        assert!(!s.dir.join(TMP_FILE).exists());
    }

    #[test]
    fn a_file_that_is_not_json_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = session(dir.path());
        fs::create_dir_all(&s.dir).unwrap();
        let path = s.dir.join(METADATA_FILE);
        for garbage in [&b"{\"name\": \"half writ"[..], b"[1,2]", b"\xff\xfe"] {
            fs::write(&path, garbage).unwrap();
            let e = write_metadata(&s, &IPFS, &[img(1, ImageState::Imported)]).unwrap_err();
            assert!(matches!(e, MetadataError::Unparsable { .. }), "{e}");
            assert_eq!(fs::read(&path).unwrap(), garbage, "untouched");
        }
        // An empty file (WANDA between truncate and write) is simply replaced.
        fs::write(&path, b"").unwrap();
        write_metadata(&s, &IPFS, &[img(1, ImageState::Imported)]).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn merging_any_json_object_keeps_every_key_we_do_not_own(
            keys in proptest::collection::vec("[a-z]{1,8}", 0..8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let s = session(dir.path());
            let mut theirs = Map::new();
            for (i, k) in keys.iter().enumerate() {
                theirs.insert(k.clone(), json!(i));
            }
            let doc = merge_metadata(Some(theirs.clone()), &s, &IPFS, &[img(1, ImageState::Imported)]);
            for (k, v) in &theirs {
                if k != "ipfs" && k != "images" {
                    proptest::prop_assert_eq!(doc.get(k), Some(v));
                }
            }
        }
    }
}
