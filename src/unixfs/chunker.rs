//! Fixed-size chunking of a byte stream, as boxo's `chunk.NewSizeSplitter`.
//!
//! Owns only the splitting rule; it assumes nothing about what the chunks
//! become. The rule is Go's `io.ReadFull`: every chunk is filled completely
//! however short the reader's individual reads are, only the last chunk may
//! be short, an input that ends exactly on a chunk boundary yields no empty
//! trailing chunk, and an empty input yields no chunk at all (the importer
//! decides what an empty file is). After a short chunk the reader is not asked
//! again, as boxo remembers `io.EOF`, so terminals and pipes are read no
//! further than needed.

use std::io::{self, Read};

/// Splits a reader into chunks of a fixed size.
#[derive(Debug)]
pub struct FixedSizeChunker<R> {
    reader: R,
    size: usize,
    /// The reader reported its end; nothing more will be read from it.
    finished: bool,
    consumed: u64,
}

impl<R: Read> FixedSizeChunker<R> {
    /// A chunker of `size`-byte chunks. A `size` of 0 yields no chunks: the
    /// caller validates sizes (boxo would loop forever on empty chunks).
    pub fn new(reader: R, size: usize) -> Self {
        FixedSizeChunker {
            reader,
            size,
            finished: size == 0,
            consumed: 0,
        }
    }

    pub fn chunk_size(&self) -> usize {
        self.size
    }

    /// Bytes read from the reader so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Whether the reader's end has been seen: the next call returns 0.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Reads the next chunk into `buf[..chunk_size]` and returns its length:
    /// `chunk_size` except for the last chunk, 0 when there is nothing left.
    ///
    /// `buf` must hold at least `chunk_size` bytes; only its first
    /// `chunk_size` are written. `Interrupted` reads are retried, as
    /// `Read::read_exact` does; any other error is returned and the bytes of
    /// the partial chunk are lost (the import fails anyway).
    pub fn read_chunk(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.finished {
            return Ok(0);
        }
        let Some(buf) = buf.get_mut(..self.size) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "chunk buffer smaller than the chunk size",
            ));
        };
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => {
                    self.finished = true;
                    break;
                }
                Ok(n) => {
                    filled += n;
                    self.consumed += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }

    /// Appends the next chunk to `buf` and returns its length, as
    /// [`Self::read_chunk`] but without zeroing `buf`'s spare capacity first:
    /// readers that fill uninitialised memory (files, slices, stdin) write
    /// straight into it. Reserve the chunk size beforehand to keep `buf` from
    /// growing.
    pub fn read_chunk_append(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if self.finished {
            return Ok(0);
        }
        // `read_to_end` over `take` is `io.ReadFull`: it reads until the
        // chunk is full or the reader ends, retrying `Interrupted`.
        let n = (&mut self.reader).take(self.size as u64).read_to_end(buf)?;
        self.consumed += n as u64;
        if n < self.size {
            self.finished = true;
        }
        Ok(n)
    }

    /// The next chunk as its own vector, `None` at the end.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = Vec::with_capacity(self.size);
        let n = self.read_chunk_append(&mut buf)?;
        Ok((n > 0).then_some(buf))
    }
}

impl<R: Read> Iterator for FixedSizeChunker<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reader that hands out at most `step` bytes per call and interrupts
    /// every other call, to prove chunks do not depend on read sizes.
    struct Trickly<'a> {
        data: &'a [u8],
        step: usize,
        calls: usize,
        reads_after_end: usize,
    }

    impl Read for Trickly<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            // Every other call is interrupted.
            if self.calls & 1 == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.data.is_empty() {
                self.reads_after_end += 1;
            }
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn chunks(data: &[u8], size: usize, step: usize) -> (Vec<Vec<u8>>, usize) {
        let mut r = Trickly {
            data,
            step,
            calls: 0,
            reads_after_end: 0,
        };
        let c = FixedSizeChunker::new(&mut r, size);
        let out = c.collect::<io::Result<Vec<_>>>().unwrap();
        let reads_after_end = r.reads_after_end;
        // The slice path cuts the same chunks.
        let mut r = Trickly {
            data,
            step,
            calls: 0,
            reads_after_end: 0,
        };
        let mut c = FixedSizeChunker::new(&mut r, size);
        let mut buf = vec![0; size];
        let mut again = Vec::new();
        loop {
            let n = c.read_chunk(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            again.push(buf[..n].to_vec());
        }
        assert_eq!(again, out);
        assert_eq!(r.reads_after_end, reads_after_end);
        (out, reads_after_end)
    }

    #[test]
    fn boundaries() {
        assert_eq!(chunks(b"", 4, 3).0, Vec::<Vec<u8>>::new());
        assert_eq!(chunks(b"abcd", 4, 3).0, vec![b"abcd".to_vec()]);
        assert_eq!(
            chunks(b"abcde", 4, 1).0,
            vec![b"abcd".to_vec(), b"e".to_vec()]
        );
        assert_eq!(
            chunks(b"abcdefgh", 4, 3).0,
            vec![b"abcd".to_vec(), b"efgh".to_vec()]
        );
    }

    #[test]
    fn end_is_read_once() {
        // A short chunk means the end was seen: the reader is not asked again.
        assert_eq!(chunks(b"abcde", 4, 2).1, 1);
        // On a boundary one more read is needed to learn of the end.
        assert_eq!(chunks(b"abcd", 4, 4).1, 1);
    }

    #[test]
    fn read_errors_surface() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
        }
        let mut c = FixedSizeChunker::new(Broken, 8);
        assert_eq!(
            c.next_chunk().unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    proptest! {
        #[test]
        fn chunks_are_full_and_concatenate(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            size in 1usize..40,
            step in 1usize..50,
        ) {
            let (out, _) = chunks(&data, size, step);
            prop_assert_eq!(out.concat(), data.clone());
            prop_assert_eq!(out.len(), data.len().div_ceil(size));
            for (i, c) in out.iter().enumerate() {
                prop_assert!(!c.is_empty());
                if i + 1 < out.len() {
                    prop_assert_eq!(c.len(), size);
                }
            }
        }
    }
}
