//! CARv1 archives (and reading CARv2's wrapped CARv1), as `ipfs dag
//! export/import` use them.
//!
//! The codec is pure: [`CarWriter`] writes to any `Write`, [`CarReader`] reads
//! from any `Read`, and every section's bytes are checked against its CID
//! before they are handed out. Limits keep a hostile file from making us
//! allocate more than one block's worth of memory.

use std::io::{Read, Write};

use bytes::Bytes;
use cid::Cid;

use crate::block::Block;
use crate::unixfs::pb::{put_varint, varint_len};

/// Writes the DAG under `root` as a CARv1, blocks in depth-first pre-order (each once), as
/// `ipfs dag export` orders them. Every block must be in `store`.
pub fn export_dag<W: Write>(
    store: &impl crate::blockstore::BlockSource,
    root: &Cid,
    out: W,
) -> anyhow::Result<W> {
    let mut car = CarWriter::new(out, &[*root])?;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![*root];
    while let Some(cid) = stack.pop() {
        if !seen.insert(cid) {
            continue;
        }
        let data = store.get(&cid)?;
        car.write(&cid, &data)?;
        let links = crate::unixfs::pb::links(&cid, &data)?;
        stack.extend(links.into_iter().rev());
    }
    Ok(car.finish()?)
}

/// Largest header we accept. Kubo's headers are a few dozen bytes.
pub const MAX_HEADER_LEN: u64 = 1024 * 1024;
/// Largest section (CID + block) we accept: bitswap's 2 MiB block limit
/// rounded up, so a CAR Kubo writes always fits.
pub const MAX_SECTION_LEN: u64 = 4 * 1024 * 1024;
/// At most this many roots in a header.
pub const MAX_ROOTS: usize = 1024;

/// CARv2's fixed pragma: a CARv1-shaped header saying `{version: 2}`.
const V2_PRAGMA: [u8; 11] = [
    0x0a, 0xa1, 0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x02,
];

/// Why a CAR could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CAR: reading failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("CAR: bad header: {0}")]
    Header(String),
    #[error("CAR: unsupported version {0} (only 1, and 2 wrapping 1)")]
    Version(u64),
    #[error("CAR: section {index} at byte {offset}: {reason}")]
    Section {
        index: u64,
        offset: u64,
        reason: String,
    },
    #[error("CAR: section {index}: {source}")]
    Corrupt {
        index: u64,
        // Boxed: a CID inline would make every Result of this module large.
        #[source]
        source: Box<crate::block::BlockError>,
    },
}

/// Writes a CARv1 with the given roots.
pub struct CarWriter<W: Write> {
    out: W,
}

impl<W: Write> CarWriter<W> {
    pub fn new(mut out: W, roots: &[Cid]) -> Result<Self, Error> {
        let header = encode_header(roots);
        let mut prefix = Vec::with_capacity(10);
        put_varint(&mut prefix, header.len() as u64);
        out.write_all(&prefix)?;
        out.write_all(&header)?;
        Ok(CarWriter { out })
    }

    pub fn write(&mut self, cid: &Cid, data: &[u8]) -> Result<(), Error> {
        let c = cid.to_bytes();
        let mut prefix = Vec::with_capacity(10 + c.len());
        put_varint(&mut prefix, (c.len() + data.len()) as u64);
        prefix.extend_from_slice(&c);
        self.out.write_all(&prefix)?;
        self.out.write_all(data)?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<W, Error> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The dag-cbor header `{"roots": [..], "version": 1}` in canonical key order
/// (shorter keys first), CIDs as tag 42 byte strings with the 0x00 prefix.
pub fn encode_header(roots: &[Cid]) -> Vec<u8> {
    let mut h = Vec::with_capacity(16 + roots.len() * 40);
    h.push(0xa2);
    cbor_text(&mut h, "roots");
    cbor_head(&mut h, 4, roots.len() as u64);
    for r in roots {
        let b = r.to_bytes();
        h.extend_from_slice(&[0xd8, 0x2a]);
        cbor_head(&mut h, 2, b.len() as u64 + 1);
        h.push(0);
        h.extend_from_slice(&b);
    }
    cbor_text(&mut h, "version");
    h.push(0x01);
    h
}

fn cbor_head(out: &mut Vec<u8>, major: u8, v: u64) {
    let m = major << 5;
    match v {
        0..=23 => out.push(m | v as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, v as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn cbor_text(out: &mut Vec<u8>, s: &str) {
    cbor_head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads the sections of a CARv1 (or the CARv1 inside a CARv2).
pub struct CarReader<R: Read> {
    input: CountingReader<R>,
    roots: Vec<Cid>,
    index: u64,
    /// Bytes of CARv1 payload left to read, for CARv2 (whose data is followed
    /// by an index we must not parse as sections).
    remaining: Option<u64>,
}

impl<R: Read> CarReader<R> {
    pub fn new(input: R) -> Result<Self, Error> {
        let mut input = CountingReader {
            inner: input,
            pos: 0,
        };
        let (roots, remaining) = match read_header(&mut input)? {
            Header::V1(roots) => (roots, None),
            Header::V2 => {
                // CARv2: a 40-byte header follows; the CARv1 payload sits at
                // data_offset for data_size bytes, followed by an index we
                // must not read as sections.
                let mut v2 = [0u8; 40];
                input
                    .read_exact(&mut v2)
                    .map_err(|e| Error::Header(format!("truncated CARv2 header: {e}")))?;
                let offset = u64::from_le_bytes(v2[16..24].try_into().expect("8 bytes"));
                let size = u64::from_le_bytes(v2[24..32].try_into().expect("8 bytes"));
                if offset < input.pos {
                    return Err(Error::Header("CARv2 data offset inside its header".into()));
                }
                let skip = offset - input.pos;
                let copied = std::io::copy(&mut (&mut input).take(skip), &mut std::io::sink())?;
                if copied != skip {
                    return Err(Error::Header("CARv2 data offset past end of file".into()));
                }
                let start = input.pos;
                let Header::V1(roots) = read_header(&mut input)? else {
                    return Err(Error::Header("CARv2 inside CARv2".into()));
                };
                let used = input.pos - start;
                let remaining = size.checked_sub(used).ok_or_else(|| {
                    Error::Header("CARv2 data size smaller than its header".into())
                })?;
                (roots, Some(remaining))
            }
        };
        Ok(CarReader {
            input,
            roots,
            index: 0,
            remaining,
        })
    }

    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// The next block, verified against its CID; `None` at the end.
    pub fn next_block(&mut self) -> Result<Option<Block>, Error> {
        if self.remaining == Some(0) {
            return Ok(None);
        }
        let offset = self.input.pos;
        let index = self.index;
        let section = |reason: String| Error::Section {
            index,
            offset,
            reason,
        };
        let Some(len) = read_varint(&mut self.input)? else {
            return Ok(None);
        };
        if len == 0 || len > MAX_SECTION_LEN {
            return Err(section(format!("length {len} out of range")));
        }
        let mut buf = vec![0; len as usize];
        self.input
            .read_exact(&mut buf)
            .map_err(|_| section(format!("truncated: expected {len} bytes")))?;
        let mut cursor = std::io::Cursor::new(&buf[..]);
        let cid = Cid::read_bytes(&mut cursor).map_err(|e| section(format!("bad CID: {e}")))?;
        let at = cursor.position() as usize;
        let data = Bytes::from(buf).slice(at..);
        crate::block::verify(&cid, &data).map_err(|source| Error::Corrupt {
            index,
            source: Box::new(source),
        })?;
        if let Some(rem) = &mut self.remaining {
            let used = self.input.pos - offset;
            *rem = rem
                .checked_sub(used)
                .ok_or_else(|| section("runs past the CARv2 data size".into()))?;
        }
        self.index += 1;
        Ok(Some(Block { cid, data }))
    }
}

enum Header {
    V1(Vec<Cid>),
    V2,
}

fn read_header<R: Read>(input: &mut CountingReader<R>) -> Result<Header, Error> {
    let len = read_varint(input)?.ok_or_else(|| Error::Header("empty file: not a CAR".into()))?;
    if len == 0 || len > MAX_HEADER_LEN {
        return Err(Error::Header(format!("header length {len} out of range")));
    }
    let mut header = vec![0; len as usize];
    input
        .read_exact(&mut header)
        .map_err(|e| Error::Header(format!("truncated header: {e}")))?;
    if header[..] == V2_PRAGMA[1..] {
        Ok(Header::V2)
    } else {
        decode_header(&header).map(Header::V1)
    }
}

struct CountingReader<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A varint, or `None` at a clean end of input.
fn read_varint(r: &mut impl Read) -> Result<Option<u64>, Error> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let mut b = [0u8];
        if r.read(&mut b)? == 0 {
            if i == 0 {
                return Ok(None);
            }
            return Err(Error::Header("truncated varint".into()));
        }
        v |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] < 0x80 {
            return Ok(Some(v));
        }
    }
    Err(Error::Header("varint longer than 10 bytes".into()))
}

/// Decodes the CARv1 header: a dag-cbor map with `roots` and `version`.
fn decode_header(b: &[u8]) -> Result<Vec<Cid>, Error> {
    let mut c = Cbor { b, pos: 0 };
    let bad = |m: &str| Error::Header(m.to_string());
    let (major, n) = c.head()?;
    if major != 5 {
        return Err(bad("not a map"));
    }
    let mut roots = None;
    let mut version = None;
    for _ in 0..n.min(16) {
        let key = c.text()?;
        match key {
            "roots" => {
                let (major, count) = c.head()?;
                if major != 4 {
                    return Err(bad("roots is not a list"));
                }
                if count as usize > MAX_ROOTS {
                    return Err(bad("too many roots"));
                }
                let mut list = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let (major, tag) = c.head()?;
                    if major != 6 || tag != 42 {
                        return Err(bad("root is not a CID (tag 42)"));
                    }
                    let bytes = c.bytes()?;
                    match bytes.split_first() {
                        Some((0, cid)) => list.push(
                            Cid::try_from(cid)
                                .map_err(|e| Error::Header(format!("bad root CID: {e}")))?,
                        ),
                        _ => return Err(bad("root CID lacks the 0x00 multibase prefix")),
                    }
                }
                roots = Some(list);
            }
            "version" => {
                let (major, v) = c.head()?;
                if major != 0 {
                    return Err(bad("version is not an integer"));
                }
                version = Some(v);
            }
            _ => return Err(Error::Header(format!("unexpected key {key:?}"))),
        }
    }
    if c.pos != b.len() {
        return Err(bad("trailing bytes"));
    }
    match version {
        Some(1) => {}
        Some(v) => return Err(Error::Version(v)),
        None => return Err(bad("no version")),
    }
    roots.ok_or_else(|| bad("no roots"))
}

struct Cbor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cbor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| Error::Header("truncated CBOR".into()))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn head(&mut self) -> Result<(u8, u64), Error> {
        let first = self.take(1)?[0];
        let major = first >> 5;
        let info = first & 0x1f;
        let v = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.take(1)?[0]),
            25 => u64::from(u16::from_be_bytes(self.take(2)?.try_into().expect("2"))),
            26 => u64::from(u32::from_be_bytes(self.take(4)?.try_into().expect("4"))),
            27 => u64::from_be_bytes(self.take(8)?.try_into().expect("8")),
            _ => return Err(Error::Header("indefinite or reserved CBOR length".into())),
        };
        Ok((major, v))
    }

    fn text(&mut self) -> Result<&'a str, Error> {
        let (major, n) = self.head()?;
        if major != 3 {
            return Err(Error::Header("map key is not text".into()));
        }
        let s = self.take(usize::try_from(n).unwrap_or(usize::MAX))?;
        std::str::from_utf8(s).map_err(|_| Error::Header("key is not UTF-8".into()))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let (major, n) = self.head()?;
        if major != 2 {
            return Err(Error::Header("expected a byte string".into()));
        }
        self.take(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// Bytes a section of this block takes in a CAR.
pub fn section_len(cid: &Cid, data_len: usize) -> usize {
    let n = cid.encoded_len() + data_len;
    varint_len(n as u64) + n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{DAG_PB, RAW};
    use cid::Version;
    use proptest::prelude::*;

    fn car_of(blocks: &[Block], roots: &[Cid]) -> Vec<u8> {
        let mut w = CarWriter::new(Vec::new(), roots).unwrap();
        for b in blocks {
            w.write(&b.cid, &b.data).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn header_matches_go_car() {
        // go-car's header for one CIDv0 root: a2 65 roots 81 d8 2a 58 23 00 <34 bytes> 67 version 01
        let b = Block::new(
            Version::V0,
            DAG_PB,
            vec![0x0a, 0x04, 0x08, 0x02, 0x18, 0x00],
        );
        let h = encode_header(&[b.cid]);
        assert_eq!(
            &h[..9],
            &[0xa2, 0x65, b'r', b'o', b'o', b't', b's', 0x81, 0xd8]
        );
        assert_eq!(&h[9..12], &[0x2a, 0x58, 0x23]);
        assert_eq!(h.len(), 12 + 35 + 9);
        assert_eq!(decode_header(&h).unwrap(), vec![b.cid]);
    }

    #[test]
    fn round_trip_and_corruption() {
        let blocks: Vec<Block> = (0..5u8)
            .map(|i| Block::new(Version::V1, RAW, vec![i; 100 * i as usize]))
            .collect();
        let car = car_of(&blocks, &[blocks[0].cid]);
        let mut r = CarReader::new(&car[..]).unwrap();
        assert_eq!(r.roots(), &[blocks[0].cid]);
        let mut got = Vec::new();
        while let Some(b) = r.next_block().unwrap() {
            got.push(b);
        }
        assert_eq!(got, blocks);

        let mut bad = car.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut r = CarReader::new(&bad[..]).unwrap();
        let err = loop {
            match r.next_block() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("corruption not detected"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::Corrupt { index: 4, .. }), "{err}");

        let truncated = &car[..car.len() - 10];
        let mut r = CarReader::new(truncated).unwrap();
        let mut n = 0;
        let res = loop {
            match r.next_block() {
                Ok(Some(_)) => n += 1,
                other => break other,
            }
        };
        assert!(res.is_err() && n == 4);
    }

    #[test]
    fn carv2_wrapping_v1() {
        let blocks = [Block::new(Version::V1, RAW, b"hello".to_vec())];
        let v1 = car_of(&blocks, &[blocks[0].cid]);
        let mut v2 = V2_PRAGMA.to_vec();
        let mut hdr = [0u8; 40];
        let offset = (V2_PRAGMA.len() + 40 + 7) as u64; // 7 bytes of padding
        hdr[16..24].copy_from_slice(&offset.to_le_bytes());
        hdr[24..32].copy_from_slice(&(v1.len() as u64).to_le_bytes());
        v2.extend_from_slice(&hdr);
        v2.extend_from_slice(&[0; 7]);
        v2.extend_from_slice(&v1);
        v2.extend_from_slice(b"index bytes that are not sections");
        let mut r = CarReader::new(&v2[..]).unwrap();
        assert_eq!(r.roots(), &[blocks[0].cid]);
        assert_eq!(r.next_block().unwrap().unwrap(), blocks[0]);
        assert!(r.next_block().unwrap().is_none());
    }

    #[test]
    fn bad_headers() {
        for bad in [&b""[..], &[0x00], &[0x05, 0xa0], &[0x01, 0xa0], &[0xff; 12]] {
            assert!(CarReader::new(bad).is_err(), "{bad:?}");
        }
        // version 3
        let mut h = vec![0xa2];
        cbor_text(&mut h, "roots");
        h.push(0x80);
        cbor_text(&mut h, "version");
        h.push(0x03);
        assert!(matches!(decode_header(&h), Err(Error::Version(3))));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(mut r) = CarReader::new(&b[..]) {
                for _ in 0..64 {
                    match r.next_block() { Ok(Some(_)) => {}, _ => break }
                }
            }
        }
    }
}
