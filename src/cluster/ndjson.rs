//! Newline-delimited JSON, as the cluster streams `/peers`, `/pins`, `/allocations` and `/add`:
//! one value per line, read as the bytes arrive, within limits on the line, the item count and the
//! total, so that a broken or hostile server cannot make us buffer without end. Pure: chunks in,
//! values out.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use super::types::snippet;

/// Bounds on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// One value's line, newline excluded.
    pub(crate) max_line: usize,
    pub(crate) max_items: usize,
    /// All bytes of the stream.
    pub(crate) max_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NdjsonError {
    #[error("a line is longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("more than {limit} values")]
    TooManyItems { limit: usize },
    #[error("more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error(
        "line {line} is a JSON array, as clusters before v1.0 answered; \
         wanda-ipfs needs ipfs-cluster >= 1.0"
    )]
    Array { line: usize },
    #[error("line {line} is not the expected JSON ({reason}); it starts with {snippet}")]
    Json {
        line: usize,
        reason: String,
        snippet: String,
    },
}

/// Accumulates chunks, decodes each complete line as a `T`.
#[derive(Debug)]
pub(crate) struct Decoder<T> {
    limits: Limits,
    partial: Vec<u8>,
    items: Vec<T>,
    lines: usize,
    total: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Decoder<T> {
    pub(crate) fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            partial: Vec::new(),
            items: Vec::new(),
            lines: 0,
            total: 0,
            _t: PhantomData,
        }
    }

    /// Takes the next chunk of the stream.
    pub(crate) fn push(&mut self, mut chunk: &[u8]) -> Result<(), NdjsonError> {
        self.total = self.total.saturating_add(chunk.len());
        if self.total > self.limits.max_bytes {
            return Err(NdjsonError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            let (head, rest) = chunk.split_at(nl);
            self.extend_partial(head)?;
            let line = std::mem::take(&mut self.partial);
            self.line(&line)?;
            chunk = &rest[1..];
        }
        self.extend_partial(chunk)
    }

    /// The end of the stream: a last line without a newline still counts.
    pub(crate) fn finish(mut self) -> Result<Vec<T>, NdjsonError> {
        let line = std::mem::take(&mut self.partial);
        self.line(&line)?;
        Ok(self.items)
    }

    fn extend_partial(&mut self, bytes: &[u8]) -> Result<(), NdjsonError> {
        if self.partial.len() + bytes.len() > self.limits.max_line {
            return Err(NdjsonError::LineTooLong {
                limit: self.limits.max_line,
            });
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), NdjsonError> {
        self.lines += 1;
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            return Ok(());
        }
        if trimmed.first() == Some(&b'[') {
            return Err(NdjsonError::Array { line: self.lines });
        }
        if self.items.len() >= self.limits.max_items {
            return Err(NdjsonError::TooManyItems {
                limit: self.limits.max_items,
            });
        }
        let v = serde_json::from_slice(trimmed).map_err(|e| NdjsonError::Json {
            line: self.lines,
            reason: e.to_string(),
            snippet: snippet(trimmed),
        })?;
        self.items.push(v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::IdInfo;

    const LIMITS: Limits = Limits {
        max_line: 1024,
        max_items: 3,
        max_bytes: 4096,
    };

    fn all(chunks: &[&[u8]], limits: Limits) -> Result<Vec<serde_json::Value>, NdjsonError> {
        let mut d = Decoder::new(limits);
        for c in chunks {
            d.push(c)?;
        }
        d.finish()
    }

    #[test]
    fn lines_split_anywhere() {
        let text = b"{\"a\":1}\n\r\n{\"a\":2}\r\n  \n{\"a\":3}";
        for cut in 0..text.len() {
            let (x, y) = text.split_at(cut);
            let v = all(&[x, y], LIMITS).unwrap();
            assert_eq!(v.len(), 3, "cut at {cut}");
            assert_eq!(v[2]["a"], 3);
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(all(&bytes, LIMITS).unwrap().len(), 3);
        assert!(all(&[], LIMITS).unwrap().is_empty());
    }

    #[test]
    fn limits_hold() {
        let four = b"1\n2\n3\n4\n";
        assert_eq!(
            all(&[four], LIMITS),
            Err(NdjsonError::TooManyItems { limit: 3 })
        );
        let long = vec![b' '; 1025];
        assert_eq!(
            all(&[&long[..512], &long[512..]], LIMITS),
            Err(NdjsonError::LineTooLong { limit: 1024 })
        );
        let big = vec![b'\n'; 4097];
        assert_eq!(
            all(&[&big], LIMITS),
            Err(NdjsonError::TooLarge { limit: 4096 })
        );
    }

    #[test]
    fn bad_lines_and_old_arrays_are_errors() {
        let e = all(&[b"{\"a\":1}\n<html>\n"], LIMITS).unwrap_err();
        assert!(matches!(e, NdjsonError::Json { line: 2, .. }), "{e}");
        let e = all(&[b"[{\"id\":\"x\"}]"], LIMITS).unwrap_err();
        assert_eq!(e, NdjsonError::Array { line: 1 });
        assert!(e.to_string().contains(">= 1.0"));
        // Typed: an IdInfo stream.
        let mut d = Decoder::<IdInfo>::new(LIMITS);
        d.push(b"{\"id\":\"p1\",\"ipfs\":{\"id\":\"x\",\"addresses\":null,\"error\":\"\"}}\n")
            .unwrap();
        assert_eq!(d.finish().unwrap()[0].id, "p1");
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            cut in 0usize..2048,
        ) {
            let cut = cut.min(bytes.len());
            let mut d = Decoder::<IdInfo>::new(LIMITS);
            let r = d.push(&bytes[..cut]).and_then(|()| d.push(&bytes[cut..]));
            if r.is_ok() {
                let _ = d.finish();
            }
        }
    }
}
