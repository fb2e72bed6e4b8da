//! The HTML index of a directory without `index.html`: names HTML-escaped, links
//! percent-encoded, so no entry name can inject markup or point outside the directory.

use crate::unixfs::export::{EntryKind, LsEntry};

use super::request::percent_encode;

/// Escapes the five characters that matter in HTML text and attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1.5 MiB`-style sizes.
pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The page for the directory `dir_cid`, titled with its decoded content path `shown`; links are
/// relative, so the page must be served at a URL ending in `/`; `has_parent` adds `..`.
pub(crate) fn render(dir_cid: &str, shown: &str, has_parent: bool, entries: &[LsEntry]) -> String {
    let mut rows = String::new();
    if has_parent {
        rows.push_str("<tr><td><a href=\"../\">..</a></td><td></td><td></td></tr>\n");
    }
    for e in entries {
        let dir = e.kind == EntryKind::Directory;
        let href = format!("{}{}", percent_encode(&e.name), if dir { "/" } else { "" });
        let size = match e.kind {
            EntryKind::File => human_size(e.size),
            EntryKind::Directory => "-".to_string(),
            _ => String::new(),
        };
        rows.push_str(&format!(
            "<tr><td><a href=\"{}\">{}{}</a></td><td title=\"{} bytes\">{}</td>\
             <td><a class=\"cid\" href=\"/ipfs/{}\">{}</a></td></tr>\n",
            html_escape(&href),
            html_escape(&e.name),
            if dir { "/" } else { "" },
            e.size,
            size,
            e.cid,
            e.cid,
        ));
    }
    let shown = html_escape(shown);
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>Index of {shown}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}td{{padding:.2em 1em .2em 0}}\
         .cid{{font-family:monospace;color:#666}}</style>\n</head>\n<body>\n\
         <h1>Index of {shown}</h1>\n<p>Directory <code>{dir_cid}</code>, {n} entries</p>\n\
         <table>\n<tr><th>Name</th><th>Size</th><th>CID</th></tr>\n{rows}</table>\n</body>\n</html>\n",
        n = entries.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cid::Cid;

    fn entry(name: &str, kind: EntryKind, size: u64) -> LsEntry {
        LsEntry {
            name: name.into(),
            cid: "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
                .parse::<Cid>()
                .unwrap(),
            tsize: size,
            kind,
            size,
        }
    }

    #[test]
    fn names_are_escaped_and_links_encoded() {
        let page = render(
            "QmDir",
            "/ipfs/QmDir/<b>sub</b>/",
            true,
            &[
                entry("a b.jpg", EntryKind::File, 3 << 20),
                entry("<script>alert(1)</script>", EntryKind::File, 1),
                entry("q\"uote'&.txt", EntryKind::File, 10),
                entry("été", EntryKind::Directory, 0),
            ],
        );
        assert!(page.contains("href=\"a%20b.jpg\">a b.jpg</a>"), "{page}");
        assert!(page.contains("3.0 MiB"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(page.contains("q&quot;uote&#39;&amp;.txt</a>"), "{page}");
        assert!(page.contains("href=\"%C3%A9t%C3%A9/\">été/</a>"), "{page}");
        assert!(
            page.contains("Index of /ipfs/QmDir/&lt;b&gt;sub&lt;/b&gt;/"),
            "{page}"
        );
        assert!(page.contains("href=\"../\""), "{page}");
        assert!(page.contains("href=\"/ipfs/QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn\""));
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 << 30), "5.0 GiB");
    }
}
