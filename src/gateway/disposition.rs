//! `Content-Disposition` (path gateway spec): `inline` by default, so a browser shows a still;
//! `attachment` for `download=true` and for raw blocks and CARs, which are not for showing.

use super::request::percent_encode;

/// `inline`/`attachment` with an optional file name, both as ASCII (non-ASCII, quotes and
/// controls replaced by `_`) and as RFC 8187 UTF-8 when the name is not plain ASCII.
pub(crate) fn value(attachment: bool, filename: Option<&str>) -> String {
    let kind = if attachment { "attachment" } else { "inline" };
    let Some(name) = filename else {
        return kind.to_string();
    };
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if ascii == name {
        format!("{kind}; filename=\"{ascii}\"")
    } else {
        format!(
            "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{}",
            percent_encode(name)
        )
    }
}

/// What the `filename` and `download` query parameters ask for a file, if anything.
pub(crate) fn for_file(filename: Option<&str>, download: Option<&str>) -> Option<String> {
    let attachment = download == Some("true");
    if filename.is_none() && !attachment {
        return None;
    }
    Some(value(attachment, filename))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_in_both_forms() {
        assert_eq!(value(false, None), "inline");
        assert_eq!(value(true, Some("a.car")), "attachment; filename=\"a.car\"");
        assert_eq!(
            value(false, Some("testтест.pdf")),
            "inline; filename=\"test____.pdf\"; filename*=UTF-8''test%D1%82%D0%B5%D1%81%D1%82.pdf"
        );
        assert_eq!(
            value(true, Some("a\"b\r\n.txt")),
            "attachment; filename=\"a_b__.txt\"; filename*=UTF-8''a%22b%0D%0A.txt"
        );
    }

    #[test]
    fn query_parameters() {
        assert_eq!(for_file(None, None), None);
        assert_eq!(for_file(None, Some("false")), None);
        assert_eq!(for_file(None, Some("true")).as_deref(), Some("attachment"));
        assert_eq!(
            for_file(Some("x.jpg"), None).as_deref(),
            Some("inline; filename=\"x.jpg\"")
        );
    }
}
