//! `Range: bytes=...` for files (RFC 9110 section 14): one range is served as 206, a range
//! wholly past the end as 416; several ranges, other units or bad syntax are ignored (the whole
//! file, 200), as the RFC allows.

/// What to send for a `Range` header, given the file's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ranged {
    /// No usable range: the whole file, 200.
    Whole,
    /// Bytes `[start, start + len)`, 206; `len` is at least 1.
    Part { start: u64, len: u64 },
    /// 416, with `Content-Range: bytes */size`.
    Unsatisfiable,
}

pub(crate) fn parse_range(header: Option<&str>, size: u64) -> Ranged {
    let Some(h) = header else {
        return Ranged::Whole;
    };
    let Some((unit, spec)) = h.trim().split_once('=') else {
        return Ranged::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        // u64::from_str takes a leading '+', which the grammar does not.
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match num(b) {
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if size == 0 => Ranged::Unsatisfiable,
            Some(n) => {
                let len = n.min(size);
                Ranged::Part {
                    start: size - len,
                    len,
                }
            }
            None => Ranged::Whole,
        },
        // `a-`: from a to the end.
        (false, true) => match num(a) {
            Some(start) if start >= size => Ranged::Unsatisfiable,
            Some(start) => Ranged::Part {
                start,
                len: size - start,
            },
            None => Ranged::Whole,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= size {
                    Ranged::Unsatisfiable
                } else {
                    Ranged::Part {
                        start,
                        len: end.min(size - 1) - start + 1,
                    }
                }
            }
            _ => Ranged::Whole,
        },
        (true, true) => Ranged::Whole,
    }
}

/// `Content-Range` of a part.
pub(crate) fn content_range(start: u64, len: u64, size: u64) -> String {
    format!("bytes {start}-{}/{size}", start + len - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ranged::*;

    fn part(start: u64, len: u64) -> Ranged {
        Part { start, len }
    }

    #[test]
    fn single_ranges() {
        let r = |h: &str, size| parse_range(Some(h), size);
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(r("bytes=0-0", 10), part(0, 1));
        assert_eq!(r("bytes=2-5", 10), part(2, 4));
        assert_eq!(r("bytes=2-", 10), part(2, 8));
        assert_eq!(r("bytes=9-", 10), part(9, 1));
        assert_eq!(r("bytes=5-100", 10), part(5, 5));
        assert_eq!(r("bytes=-3", 10), part(7, 3));
        assert_eq!(r("bytes=-30", 10), part(0, 10));
        assert_eq!(r("Bytes = 1-2", 10), part(1, 2));
        assert_eq!(r("bytes=262143-262144", 1 << 20), part(262_143, 2));
    }

    #[test]
    fn unsatisfiable_ranges() {
        let r = |h: &str, size| parse_range(Some(h), size);
        assert_eq!(r("bytes=10-", 10), Unsatisfiable);
        assert_eq!(r("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Unsatisfiable);
        assert_eq!(r("bytes=-5", 0), Unsatisfiable);
    }

    #[test]
    fn ignored_ranges() {
        let r = |h: &str| parse_range(Some(h), 10);
        for h in [
            "bytes=5-2",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes",
            "bytes=1",
            "bytes=18446744073709551616-",
        ] {
            assert_eq!(r(h), Whole, "{h}");
        }
    }

    #[test]
    fn content_range_is_inclusive() {
        assert_eq!(content_range(0, 1, 10), "bytes 0-0/10");
        assert_eq!(content_range(7, 3, 10), "bytes 7-9/10");
    }
}
