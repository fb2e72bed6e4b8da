//! Content types of files: from the name's extension ([`by_extension`]), else sniffed ([`sniff`]) from the first bytes (the
//! common signatures of WHATWG MIME Sniffing, and text versus binary), as the path gateway spec
//! suggests. A still from the camera comes out `image/jpeg` either way.

/// How many leading bytes [`sniff`] looks at (WHATWG's resource header).
pub(crate) const SNIFF_LEN: usize = 512;

/// The type for a file name's extension (case-insensitive), if it is a known one.
pub(crate) fn by_extension(name: &str) -> Option<&'static str> {
    let (_, ext) = name.rsplit_once('.')?;
    let t = match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "text" | "log" => "text/plain; charset=utf-8",
        "md" | "markdown" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "text/xml; charset=utf-8",
        "svg" => "image/svg+xml",
        "jpg" | "jpeg" | "jpe" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "heic" => "image/heic",
        "bmp" => "image/bmp",
        "ico" => "image/vnd.microsoft.icon",
        "tif" | "tiff" => "image/tiff",
        "dng" => "image/x-adobe-dng",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "h264" => "video/h264",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" | "oga" => "audio/ogg",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "car" => "application/vnd.ipld.car",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        _ => return None,
    };
    Some(t)
}

/// The type of content starting with `head` (at most [`SNIFF_LEN`] bytes are looked at).
pub(crate) fn sniff(head: &[u8]) -> &'static str {
    let head = &head[..head.len().min(SNIFF_LEN)];
    const SIGNATURES: [(&[u8], &str); 14] = [
        (b"\xFF\xD8\xFF", "image/jpeg"),
        (b"\x89PNG\r\n\x1A\n", "image/png"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"BM", "image/bmp"),
        (b"\x00\x00\x01\x00", "image/vnd.microsoft.icon"),
        (b"II*\x00", "image/tiff"),
        (b"MM\x00*", "image/tiff"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1F\x8B\x08", "application/gzip"),
        (b"\x1A\x45\xDF\xA3", "video/webm"),
        (b"OggS\x00", "application/ogg"),
        (b"ID3", "audio/mpeg"),
    ];
    for (sig, t) in SIGNATURES {
        if head.starts_with(sig) {
            return t;
        }
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" {
        match &head[8..12] {
            b"WEBP" => return "image/webp",
            b"WAVE" => return "audio/wav",
            b"AVI " => return "video/avi",
            _ => {}
        }
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return match &head[8..12] {
            b"avif" | b"avis" => "image/avif",
            b"heic" | b"heix" | b"mif1" => "image/heic",
            b"qt  " => "video/quicktime",
            _ => "video/mp4",
        };
    }
    if head.starts_with(b"\0asm") {
        return "application/wasm";
    }
    markup(head).unwrap_or_else(|| {
        if is_text(head) {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        }
    })
}

/// HTML, SVG or XML, told by the first tag after leading white space.
fn markup(head: &[u8]) -> Option<&'static str> {
    let start = head.iter().position(|c| !c.is_ascii_whitespace())?;
    let rest = head[start..]
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&head[start..]);
    let lower: Vec<u8> = rest.iter().take(64).map(u8::to_ascii_lowercase).collect();
    // WHATWG's HTML patterns, each ended by a space or '>'.
    for tag in [
        &b"<!doctype html"[..],
        b"<html",
        b"<head",
        b"<script",
        b"<iframe",
        b"<h1",
        b"<div",
        b"<font",
        b"<table",
        b"<a",
        b"<style",
        b"<title",
        b"<b",
        b"<body",
        b"<br",
        b"<p",
        b"<!--",
    ] {
        if lower.starts_with(tag)
            && lower
                .get(tag.len())
                .is_some_and(|c| *c == b' ' || *c == b'>' || tag == b"<!--")
        {
            return Some("text/html; charset=utf-8");
        }
    }
    if lower.starts_with(b"<svg") {
        return Some("image/svg+xml");
    }
    if lower.starts_with(b"<?xml") {
        // An SVG file usually opens with an XML declaration.
        let text = String::from_utf8_lossy(rest).to_ascii_lowercase();
        return Some(if text.contains("<svg") {
            "image/svg+xml"
        } else {
            "text/xml; charset=utf-8"
        });
    }
    None
}

/// WHATWG's binary data bytes: any of them makes the content binary.
fn is_text(head: &[u8]) -> bool {
    !head
        .iter()
        .any(|&c| matches!(c, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F))
}

/// Sniffed types by CID, at most [`TypeCache::CAP`] of them. A CID names immutable bytes, so an
/// entry never goes stale; when full, the cache starts over rather than tracking recency (a
/// sniff costs one block read).
#[derive(Default)]
pub(crate) struct TypeCache {
    map: std::sync::Mutex<std::collections::HashMap<cid::Cid, &'static str>>,
}

impl TypeCache {
    pub(crate) const CAP: usize = 4096;

    pub(crate) fn get(&self, cid: &cid::Cid) -> Option<&'static str> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cid)
            .copied()
    }

    pub(crate) fn insert(&self, cid: cid::Cid, t: &'static str) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= Self::CAP {
            m.clear();
        }
        m.insert(cid, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_win() {
        assert_eq!(by_extension("image_0001.jpg"), Some("image/jpeg"));
        assert_eq!(by_extension("IMG.JPEG"), Some("image/jpeg"));
        assert_eq!(by_extension("index.html"), Some("text/html; charset=utf-8"));
        assert_eq!(by_extension("a b.tar.gz"), Some("application/gzip"));
        assert_eq!(by_extension("noext"), None);
        assert_eq!(by_extension("a.unknownext"), None);
    }

    #[test]
    fn sniffing() {
        let jpeg = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01";
        assert_eq!(sniff(jpeg), "image/jpeg");
        assert_eq!(sniff(b"\x89PNG\r\n\x1A\n...."), "image/png");
        assert_eq!(sniff(b"GIF89a..."), "image/gif");
        assert_eq!(sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 "), "image/webp");
        assert_eq!(sniff(b"\x00\x00\x00\x18ftypmp42\x00\x00"), "video/mp4");
        assert_eq!(sniff(b"\x00\x00\x00\x18ftypavif\x00\x00"), "image/avif");
        assert_eq!(sniff(b"%PDF-1.7"), "application/pdf");
        assert_eq!(sniff(b"  <!DOCTYPE html><p>"), "text/html; charset=utf-8");
        assert_eq!(sniff(b"<HTML>"), "text/html; charset=utf-8");
        assert_eq!(sniff(b"<svg xmlns=\"...\">"), "image/svg+xml");
        assert_eq!(sniff(b"<?xml version=\"1.0\"?><svg>"), "image/svg+xml");
        assert_eq!(
            sniff(b"<?xml version=\"1.0\"?><a/>"),
            "text/xml; charset=utf-8"
        );
        assert_eq!(sniff(b"hello\nworld\t\r\n"), "text/plain; charset=utf-8");
        assert_eq!(sniff("été".as_bytes()), "text/plain; charset=utf-8");
        assert_eq!(sniff(b""), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"\x00\x01\x02binary"), "application/octet-stream");
        // `<a` must be a whole tag name, not the start of `<abc>`.
        assert_eq!(sniff(b"<abc>"), "text/plain; charset=utf-8");
    }

    #[test]
    fn type_cache_remembers_and_stays_bounded() {
        let c = TypeCache::default();
        let cid = |n: u64| {
            cid::Cid::new_v1(
                0x55,
                multihash::Multihash::wrap(0x00, &n.to_be_bytes()).unwrap(),
            )
        };
        assert_eq!(c.get(&cid(1)), None);
        c.insert(cid(1), "image/jpeg");
        assert_eq!(c.get(&cid(1)), Some("image/jpeg"));
        for n in 0..(TypeCache::CAP as u64 + 10) {
            c.insert(cid(n + 2), "text/plain");
        }
        assert!(c.map.lock().unwrap().len() <= TypeCache::CAP);
    }
}
