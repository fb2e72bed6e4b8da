//! Entity tags (path gateway spec, "Etag"): one per response kind, so caches never answer a CAR
//! request with a file or the other way round, and `If-None-Match` against them.

use cid::Cid;
use sha2::{Digest, Sha256};

use super::request::CarParams;

/// A file's bytes (also a range of them: the tag names the representation, RFC 9110 8.8.3, so
/// `If-None-Match` answers range requests as well).
pub(crate) fn file(cid: &Cid) -> String {
    format!("\"{cid}\"")
}

/// One block, `format=raw`.
pub(crate) fn raw(cid: &Cid) -> String {
    format!("\"{cid}.raw\"")
}

/// A CAR of `root` and `path`: the path and the CAR's shape go into the tag. Weak, as the spec
/// asks of generated CARs.
pub(crate) fn car(root: &Cid, path: &[String], params: &CarParams) -> String {
    let mut h = Sha256::new();
    for seg in path {
        h.update((seg.len() as u64).to_be_bytes());
        h.update(seg.as_bytes());
    }
    h.update(params.scope.name());
    h.update([u8::from(params.dups)]);
    let d = h.finalize();
    let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("W/\"{root}.car.{hex}\"")
}

/// A generated directory listing: tied to this version's HTML as well as the directory.
pub(crate) fn dir_index(cid: &Cid) -> String {
    format!("\"DirIndex-{}_CID-{cid}\"", env!("CARGO_PKG_VERSION"))
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, as RFC 9110 13.1.2 says).
pub(crate) fn none_match(if_none_match: &str, etag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let want = opaque(etag);
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || opaque(t) == want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::request::DagScope;

    const CID: &str = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn";

    #[test]
    fn tags_differ_by_kind() {
        let c: Cid = CID.parse().unwrap();
        assert_eq!(file(&c), format!("\"{CID}\""));
        assert_eq!(raw(&c), format!("\"{CID}.raw\""));
        let all = CarParams {
            scope: DagScope::All,
            dups: false,
        };
        let block = CarParams {
            scope: DagScope::Block,
            ..all
        };
        let t = car(&c, &[], &all);
        assert!(t.starts_with(&format!("W/\"{CID}.car.")), "{t}");
        assert_ne!(t, car(&c, &[], &block));
        assert_ne!(t, car(&c, &["a".into()], &all));
        assert_ne!(
            car(&c, &["ab".into()], &all),
            car(&c, &["a".into(), "b".into()], &all)
        );
        assert!(dir_index(&c).contains(CID));
        assert_ne!(dir_index(&c), file(&c));
    }

    #[test]
    fn if_none_match() {
        let t = format!("\"{CID}\"");
        assert!(none_match(&t, &t));
        assert!(none_match(&format!("\"x\", W/{t}"), &t));
        assert!(none_match("*", &t));
        assert!(!none_match("\"x\"", &t));
        assert!(!none_match(CID, &t), "unquoted is another tag");
        let w = format!("W/\"{CID}.car.00\"");
        assert!(none_match(&format!("\"{CID}.car.00\""), &w));
        assert!(!none_match(&t, &w));
    }
}
