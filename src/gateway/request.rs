//! Reading a gateway request: the content path, and which response format the client wants.
//!
//! Pure functions of the request's parts, so every rule is unit-tested without a server.

use cid::Cid;

/// `/ipfs/<cid>[/<path>]`, segments percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContentPath {
    pub(crate) root: Cid,
    /// Decoded names below the root, each one safe link name.
    pub(crate) segments: Vec<String>,
    /// The URL path ended in `/` (directories are served only then).
    pub(crate) trailing_slash: bool,
}

/// Parses the URL path (still percent-encoded, as on the request line).
pub(crate) fn parse_path(raw: &str) -> Result<ContentPath, String> {
    let rest = raw
        .strip_prefix("/ipfs/")
        .ok_or_else(|| format!("'{raw}' is not a content path: use /ipfs/<cid>[/<path>]"))?;
    let mut parts = rest.split('/');
    let first = parts.next().unwrap_or_default();
    if first.is_empty() {
        return Err("no CID after /ipfs/: use /ipfs/<cid>[/<path>]".into());
    }
    let cid_text = percent_decode(first)?;
    let root = Cid::try_from(cid_text.as_str()).map_err(|e| {
        format!("'{cid_text}' is not a valid CID ({e}): expected e.g. Qm... or bafy...")
    })?;
    let parts: Vec<&str> = parts.collect();
    let mut segments = Vec::with_capacity(parts.len());
    let mut trailing_slash = false;
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() {
            if i + 1 == parts.len() {
                trailing_slash = true;
                continue;
            }
            return Err(format!(
                "'{raw}' has an empty path segment ('//'): remove it"
            ));
        }
        let seg = percent_decode(p)?;
        if seg == "." || seg == ".." {
            return Err(format!(
                "path segment '{seg}' is not allowed: a content path cannot step out of \
                 /ipfs/<cid>, name the entry instead"
            ));
        }
        if seg.contains(['/', '\0']) {
            return Err(format!(
                "path segment '{}' decodes to a '/' or NUL, which no UnixFS name holds",
                p
            ));
        }
        segments.push(seg);
    }
    Ok(ContentPath {
        root,
        segments,
        trailing_slash,
    })
}

/// Decodes `%XX` escapes; the result must be UTF-8.
pub(crate) fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("'{s}' has a bad percent escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' does not decode to UTF-8"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters: one path segment, or a
/// `filename*` value.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// How much of the DAG a CAR carries below the path's end (trustless gateway `dag-scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DagScope {
    /// Everything reachable.
    All,
    /// A whole file, or a directory's own blocks (a HAMT's shards), not its children.
    Entity,
    /// The end block alone.
    Block,
}

impl DagScope {
    pub(crate) fn name(self) -> &'static str {
        match self {
            DagScope::All => "all",
            DagScope::Entity => "entity",
            DagScope::Block => "block",
        }
    }
}

/// A CAR response's shape. Order is always depth-first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CarParams {
    pub(crate) scope: DagScope,
    /// `dups=y`: a block is sent again each time the walk meets it.
    pub(crate) dups: bool,
}

impl CarParams {
    pub(crate) fn content_type(&self) -> String {
        let dups = if self.dups { "y" } else { "n" };
        format!("application/vnd.ipld.car; version=1; order=dfs; dups={dups}")
    }
}

/// The response format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// UnixFS files and directories as themselves.
    Deserialized,
    /// One block's bytes, `application/vnd.ipld.raw`.
    Raw,
    Car(CarParams),
}

/// What the client asked for, and whether `Accept` alone said so (then the response names the
/// `?format=` URL in `Content-Location`, so caches keep the formats apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub(crate) format: Format,
    pub(crate) from_accept: bool,
}

/// A refused format request: 400 for nonsense, 501 for formats that exist but are not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FormatError {
    pub(crate) not_implemented: bool,
    pub(crate) message: String,
}

fn bad(message: impl Into<String>) -> FormatError {
    FormatError {
        not_implemented: false,
        message: message.into(),
    }
}

fn unimplemented(what: &str) -> FormatError {
    FormatError {
        not_implemented: true,
        message: format!(
            "{what} is not served by this gateway: it serves UnixFS, raw blocks \
             (?format=raw) and CARs (?format=car)"
        ),
    }
}

const RAW_TYPE: &str = "application/vnd.ipld.raw";
const CAR_TYPE: &str = "application/vnd.ipld.car";
/// Formats of the path gateway spec this gateway does not produce.
const UNSERVED_TYPES: [(&str, &str); 6] = [
    ("application/x-tar", "tar"),
    ("application/vnd.ipld.dag-json", "dag-json"),
    ("application/vnd.ipld.dag-cbor", "dag-cbor"),
    ("application/json", "json"),
    ("application/cbor", "cbor"),
    ("application/vnd.ipfs.ipns-record", "ipns-record"),
];

/// CAR content-type parameters, from `Accept` or the `car-*` query parameters.
#[derive(Debug, Default, Clone)]
struct CarAsk {
    version: Option<String>,
    order: Option<String>,
    dups: Option<String>,
}

/// One `Accept` media range.
struct MediaRange {
    /// `type/subtype`, lower case.
    ty: String,
    /// Parameters other than `q`, names lower case.
    params: Vec<(String, String)>,
    q: f32,
}

/// `Accept`'s media ranges, most wanted first (ranges with q=0 left out).
fn media_ranges(accept: &str) -> Vec<MediaRange> {
    let mut out: Vec<MediaRange> = Vec::new();
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let ty = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if ty.is_empty() {
            continue;
        }
        let mut q = 1.0;
        let mut params = Vec::new();
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().trim_matches('"').to_string();
            if k == "q" {
                q = v.parse().unwrap_or(0.0);
            } else {
                params.push((k, v));
            }
        }
        if q > 0.0 {
            out.push(MediaRange { ty, params, q });
        }
    }
    // Stable: equal qualities keep the client's order.
    out.sort_by(|a, b| b.q.total_cmp(&a.q));
    out
}

/// Decides the format from the query (`format`, `dag-scope`, `car-*`), which wins, and
/// `Accept`.
pub(crate) fn negotiate(
    query: &[(String, String)],
    accept: Option<&str>,
) -> Result<Negotiated, FormatError> {
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut ask = CarAsk::default();
    let mut from_accept = false;
    let mut kind = match q("format") {
        Some("raw") => Some(RAW_TYPE),
        Some("car") => Some(CAR_TYPE),
        Some(f) => {
            return Err(if UNSERVED_TYPES.iter().any(|(_, n)| *n == f) {
                unimplemented(&format!("format={f}"))
            } else {
                bad(format!(
                    "format '{f}' is unknown: use format=raw or format=car, or none for files \
                     and directories"
                ))
            })
        }
        None => None,
    };
    if let Some(accept) = accept {
        for MediaRange { ty, params, .. } in media_ranges(accept) {
            let wanted = match ty.as_str() {
                RAW_TYPE => RAW_TYPE,
                CAR_TYPE => CAR_TYPE,
                t => {
                    if kind.is_none() {
                        if let Some((_, name)) = UNSERVED_TYPES.iter().find(|(m, _)| *m == t) {
                            return Err(unimplemented(&format!("Accept: {t} ({name})")));
                        }
                    }
                    if kind.is_none() {
                        // text/html, */*, image/*...: the content itself.
                        break;
                    }
                    continue;
                }
            };
            match kind {
                None => {
                    kind = Some(wanted);
                    from_accept = true;
                }
                // `format` decided; only a matching range's parameters still count.
                Some(k) if k != wanted => continue,
                Some(_) => {}
            }
            if wanted == CAR_TYPE {
                for (k, v) in params {
                    match k.as_str() {
                        "version" => ask.version = Some(v),
                        "order" => ask.order = Some(v),
                        "dups" => ask.dups = Some(v),
                        _ => {}
                    }
                }
            }
            break;
        }
    }
    for (name, slot) in [
        ("car-version", &mut ask.version),
        ("car-order", &mut ask.order),
        ("car-dups", &mut ask.dups),
    ] {
        if let Some(v) = q(name) {
            *slot = Some(v.to_string());
        }
    }
    let scope = q("dag-scope");
    let format = match kind {
        Some(RAW_TYPE) => Format::Raw,
        Some(_) => Format::Car(car_params(&ask, scope)?),
        None => Format::Deserialized,
    };
    if !matches!(format, Format::Car(_)) && (scope.is_some() || q("entity-bytes").is_some()) {
        return Err(bad(
            "dag-scope and entity-bytes apply to CAR responses only (format=car)",
        ));
    }
    if q("entity-bytes").is_some() {
        return Err(unimplemented("entity-bytes"));
    }
    Ok(Negotiated {
        format,
        from_accept,
    })
}

fn car_params(ask: &CarAsk, scope: Option<&str>) -> Result<CarParams, FormatError> {
    match ask.version.as_deref() {
        None | Some("1") => {}
        Some("2") => {
            return Err(bad(
                "CARv2 is not served: ask for application/vnd.ipld.car; version=1 \
                 (or car-version=1)",
            ))
        }
        Some(v) => return Err(bad(format!("CAR version '{v}' is unknown: use version=1"))),
    }
    match ask.order.as_deref() {
        None | Some("dfs") | Some("unk") | Some("") => {}
        Some(o) => {
            return Err(bad(format!(
                "CAR order '{o}' is not served: blocks come depth-first (order=dfs)"
            )))
        }
    }
    let dups = match ask.dups.as_deref() {
        None | Some("n") | Some("") => false,
        Some("y") => true,
        Some(d) => return Err(bad(format!("CAR dups '{d}' is unknown: use y or n"))),
    };
    let scope = match scope {
        None | Some("all") => DagScope::All,
        Some("entity") => DagScope::Entity,
        Some("block") => DagScope::Block,
        Some(s) => {
            return Err(bad(format!(
                "dag-scope '{s}' is unknown: use all, entity or block"
            )))
        }
    };
    Ok(CarParams { scope, dups })
}

/// Splits a raw query string into decoded pairs (`+` is a space, as forms send it).
pub(crate) fn parse_query(raw: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((
                percent_decode(&k.replace('+', " "))?,
                percent_decode(&v.replace('+', " "))?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn";

    fn path(p: &str) -> Result<ContentPath, String> {
        parse_path(p)
    }

    #[test]
    fn paths_decode_and_refuse_escapes() {
        let p = path(&format!("/ipfs/{CID}")).unwrap();
        assert_eq!(p.root.to_string(), CID);
        assert!(p.segments.is_empty() && !p.trailing_slash);
        let p = path(&format!("/ipfs/{CID}/")).unwrap();
        assert!(p.segments.is_empty() && p.trailing_slash);
        let p = path(&format!("/ipfs/{CID}/a%20b/%C3%A9t%C3%A9.jpg")).unwrap();
        assert_eq!(p.segments, ["a b", "été.jpg"]);
        assert!(!p.trailing_slash);
        let p = path(&format!("/ipfs/{CID}/sub/")).unwrap();
        assert_eq!(p.segments, ["sub"]);
        assert!(p.trailing_slash);
        // `+` is literal in a path.
        assert_eq!(path(&format!("/ipfs/{CID}/a+b")).unwrap().segments, ["a+b"]);

        for (bad, says) in [
            ("/ipfs/", "no CID"),
            ("/ipfs/notacid", "not a valid CID"),
            ("/ipns/example.org", "not a content path"),
            (&format!("/ipfs/{CID}/.."), "'..' is not allowed"),
            (&format!("/ipfs/{CID}/a/../b"), "'..' is not allowed"),
            (&format!("/ipfs/{CID}/%2e%2E"), "'..' is not allowed"),
            (&format!("/ipfs/{CID}/."), "'.' is not allowed"),
            (&format!("/ipfs/{CID}/a%2Fb"), "'/' or NUL"),
            (&format!("/ipfs/{CID}/a%00"), "'/' or NUL"),
            (&format!("/ipfs/{CID}//a"), "empty path segment"),
            (&format!("/ipfs/{CID}/a//"), "empty path segment"),
            (&format!("/ipfs/{CID}/%zz"), "bad percent escape"),
            (&format!("/ipfs/{CID}/%ff"), "UTF-8"),
        ] {
            let e = path(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn percent_encoding_round_trips() {
        for s in ["a b", "été", "100%", "x/y", "a?b#c", "日本.jpg"] {
            let e = percent_encode(s);
            assert!(e.bytes().all(|c| c.is_ascii_graphic() && c != b'/'), "{e}");
            assert_eq!(percent_decode(&e).unwrap(), s);
        }
        assert_eq!(percent_encode("a b.jpg"), "a%20b.jpg");
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn car(scope: DagScope, dups: bool) -> Format {
        Format::Car(CarParams { scope, dups })
    }

    #[test]
    fn format_from_query_and_accept() {
        let n = |query: &[(&str, &str)], accept: Option<&str>| negotiate(&q(query), accept);
        assert_eq!(n(&[], None).unwrap().format, Format::Deserialized);
        assert_eq!(
            n(&[], Some("text/html,application/xhtml+xml,*/*;q=0.8"))
                .unwrap()
                .format,
            Format::Deserialized
        );
        let r = n(&[("format", "raw")], None).unwrap();
        assert_eq!((r.format, r.from_accept), (Format::Raw, false));
        let r = n(&[], Some("application/vnd.ipld.raw")).unwrap();
        assert_eq!((r.format, r.from_accept), (Format::Raw, true));
        assert_eq!(
            n(&[("format", "car")], None).unwrap().format,
            car(DagScope::All, false)
        );
        let r = n(
            &[],
            Some("application/vnd.ipld.car; version=1; order=dfs; dups=y"),
        )
        .unwrap();
        assert_eq!((r.format, r.from_accept), (car(DagScope::All, true), true));
        // format wins over Accept.
        assert_eq!(
            n(&[("format", "raw")], Some("application/vnd.ipld.car"))
                .unwrap()
                .format,
            Format::Raw
        );
        // Quality decides between ranges.
        assert_eq!(
            n(
                &[],
                Some("application/vnd.ipld.car;q=0.5, application/vnd.ipld.raw")
            )
            .unwrap()
            .format,
            Format::Raw
        );
        // Query parameters override Accept's.
        assert_eq!(
            n(
                &[("car-dups", "n"), ("dag-scope", "entity")],
                Some("application/vnd.ipld.car; dups=y")
            )
            .unwrap()
            .format,
            car(DagScope::Entity, false)
        );
        assert_eq!(
            n(&[("format", "car"), ("dag-scope", "block")], None)
                .unwrap()
                .format,
            car(DagScope::Block, false)
        );
    }

    #[test]
    fn unsupported_formats_are_refused_plainly() {
        let n = |query: &[(&str, &str)], accept: Option<&str>| negotiate(&q(query), accept);
        let e = n(&[], Some("application/vnd.ipld.car; version=2")).unwrap_err();
        assert!(!e.not_implemented && e.message.contains("CARv2"), "{e:?}");
        let e = n(&[("format", "car"), ("car-version", "2")], None).unwrap_err();
        assert!(e.message.contains("CARv2"), "{e:?}");
        let e = n(&[("format", "car"), ("car-order", "weird")], None).unwrap_err();
        assert!(e.message.contains("order"), "{e:?}");
        let e = n(&[("format", "zip")], None).unwrap_err();
        assert!(!e.not_implemented && e.message.contains("unknown"), "{e:?}");
        let e = n(&[("format", "dag-json")], None).unwrap_err();
        assert!(e.not_implemented, "{e:?}");
        let e = n(&[], Some("application/vnd.ipld.dag-cbor")).unwrap_err();
        assert!(e.not_implemented, "{e:?}");
        let e = n(&[("dag-scope", "block")], None).unwrap_err();
        assert!(e.message.contains("CAR responses only"), "{e:?}");
        let e = n(&[("format", "car"), ("dag-scope", "most")], None).unwrap_err();
        assert!(e.message.contains("dag-scope"), "{e:?}");
        let e = n(&[("format", "car"), ("entity-bytes", "0:10")], None).unwrap_err();
        assert!(e.not_implemented, "{e:?}");
    }

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            parse_query(Some("format=car&filename=a%20b+c.jpg&download")).unwrap(),
            q(&[
                ("format", "car"),
                ("filename", "a b c.jpg"),
                ("download", "")
            ])
        );
        assert!(parse_query(None).unwrap().is_empty());
        assert!(parse_query(Some("a=%zz")).is_err());
    }
}
