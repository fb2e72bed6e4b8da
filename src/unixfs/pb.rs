//! dag-pb and UnixFS `Data` codecs. Pure: bytes in, values out.
//!
//! dag-pb is written by hand in the spec's canonical form (Links before Data,
//! every link with Hash, Name and Tsize, as boxo's go-codec-dagpb writes them)
//! because prost emits fields in field-number order, which would put Data
//! first and change every CID. It is read by a strict decoder that follows the
//! dag-pb spec's rules, so malformed blocks from peers are rejected with a
//! reason instead of being half-understood. UnixFS `Data` uses the
//! prost-generated type: its field order and proto2 encoding (unpacked
//! `blocksizes`) are what Go's gogo-protobuf writes.

use bytes::{Buf, Bytes};
use cid::Cid;
use prost::Message;

use crate::block::{DAG_PB, RAW};
pub use crate::pb::unixfs::data::DataType;
pub use crate::pb::unixfs::Data as UnixfsData;

/// Why a dag-pb or UnixFS message could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PbError {
    #[error("dag-pb: truncated message ({0})")]
    Truncated(&'static str),
    #[error("dag-pb: invalid varint")]
    Varint,
    #[error("dag-pb: unexpected field {field} with wire type {wire_type} in {message}")]
    UnexpectedField {
        message: &'static str,
        field: u64,
        wire_type: u64,
    },
    #[error("dag-pb: {0}")]
    Invalid(&'static str),
    #[error("dag-pb: link hash is not a CID: {0}")]
    BadLinkCid(String),
    #[error("dag-pb: link name is not UTF-8")]
    BadName,
    #[error("unixfs: {0}")]
    Unixfs(String),
    #[error("block {cid} has codec 0x{codec:x}; only dag-pb (0x70) and raw (0x55) are understood")]
    UnsupportedCodec { cid: Cid, codec: u64 },
}

/// One link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    pub cid: Cid,
    pub name: Option<String>,
    pub tsize: Option<u64>,
}

impl PbLink {
    /// A link as boxo writes it: name and size always present.
    pub fn new(cid: Cid, name: impl Into<String>, tsize: u64) -> Self {
        PbLink {
            cid,
            name: Some(name.into()),
            tsize: Some(tsize),
        }
    }

    pub fn name_str(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// A dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    pub links: Vec<PbLink>,
    pub data: Option<Bytes>,
}

impl PbNode {
    /// Orders links by name, bytewise and stable, as go-merkledag does before
    /// encoding a node it built (files' chunk links all have the name "" and
    /// so keep their order).
    pub fn sort_links(&mut self) {
        self.links
            .sort_by(|a, b| a.name_str().as_bytes().cmp(b.name_str().as_bytes()));
    }

    /// Canonical dag-pb bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        for l in &self.links {
            put_key(&mut out, 2, 2);
            put_varint(&mut out, link_len(l) as u64);
            put_link(&mut out, l);
        }
        if let Some(d) = &self.data {
            put_key(&mut out, 1, 2);
            put_varint(&mut out, d.len() as u64);
            out.extend_from_slice(d);
        }
        out
    }

    fn encoded_len(&self) -> usize {
        let links: usize = self
            .links
            .iter()
            .map(|l| {
                let n = link_len(l);
                1 + varint_len(n as u64) + n
            })
            .sum();
        let data = self
            .data
            .as_ref()
            .map_or(0, |d| 1 + varint_len(d.len() as u64) + d.len());
        links + data
    }

    /// Strict decoding per the dag-pb spec: only fields 1 (Data) and 2
    /// (Links), links before data, data at most once; in a link, Hash (required),
    /// Name, Tsize in that order and each at most once.
    pub fn decode(bytes: &Bytes) -> Result<PbNode, PbError> {
        let mut node = PbNode::default();
        scan_node(
            bytes.clone(),
            |d| node.data = Some(d),
            |l| node.links.push(l),
        )?;
        Ok(node)
    }
}

/// A buffer a node is decoded from: [`Bytes`] (fields shared, not copied)
/// or a plain slice (for [`links`], which keeps no field).
trait Split: Buf + AsRef<[u8]> + Sized {
    fn split(&mut self, n: usize) -> Self;
}

impl Split for Bytes {
    fn split(&mut self, n: usize) -> Self {
        self.split_to(n)
    }
}

impl Split for &[u8] {
    fn split(&mut self, n: usize) -> Self {
        let (head, tail) = self.split_at(n);
        *self = tail;
        head
    }
}

/// Walks a PBNode's fields with [`PbNode::decode`]'s checks, handing over
/// the Data field and each decoded link.
fn scan_node<B: Split>(
    mut buf: B,
    mut on_data: impl FnMut(B),
    mut on_link: impl FnMut(PbLink),
) -> Result<(), PbError> {
    let mut seen_data = false;
    while buf.has_remaining() {
        let (field, wt) = get_key(&mut buf)?;
        match (field, wt) {
            (1, 2) => {
                if seen_data {
                    return Err(PbError::Invalid("duplicate Data field"));
                }
                seen_data = true;
                on_data(get_bytes(&mut buf)?);
            }
            (2, 2) => {
                if seen_data {
                    return Err(PbError::Invalid("Links after Data"));
                }
                let lb = get_bytes(&mut buf)?;
                on_link(decode_link(lb)?);
            }
            (field, wire_type) => {
                return Err(PbError::UnexpectedField {
                    message: "PBNode",
                    field,
                    wire_type,
                })
            }
        }
    }
    Ok(())
}

fn decode_link<B: Split>(mut buf: B) -> Result<PbLink, PbError> {
    let mut cid = None;
    let mut name = None;
    let mut tsize = None;
    let mut last = 0;
    while buf.has_remaining() {
        let (field, wt) = get_key(&mut buf)?;
        if field <= last {
            return Err(PbError::Invalid("PBLink fields out of order or repeated"));
        }
        last = field;
        match (field, wt) {
            (1, 2) => {
                let h = get_bytes(&mut buf)?;
                cid = Some(
                    Cid::try_from(h.as_ref()).map_err(|e| PbError::BadLinkCid(e.to_string()))?,
                );
            }
            (2, 2) => {
                let n = get_bytes(&mut buf)?;
                name = Some(String::from_utf8(n.as_ref().to_vec()).map_err(|_| PbError::BadName)?);
            }
            (3, 0) => tsize = Some(get_varint(&mut buf)?),
            (field, wire_type) => {
                return Err(PbError::UnexpectedField {
                    message: "PBLink",
                    field,
                    wire_type,
                })
            }
        }
    }
    let cid = cid.ok_or(PbError::Invalid("PBLink without Hash"))?;
    Ok(PbLink { cid, name, tsize })
}

/// The CIDs a block links to: none for raw blocks, the links of a dag-pb node.
pub fn links(cid: &Cid, data: &[u8]) -> Result<Vec<Cid>, PbError> {
    match cid.codec() {
        RAW => Ok(Vec::new()),
        DAG_PB => {
            // Read in place: a leaf's Data (a 256 KiB chunk) is skipped, not copied.
            let mut links = Vec::new();
            scan_node(data, |_| {}, |l| links.push(l.cid))?;
            Ok(links)
        }
        codec => Err(PbError::UnsupportedCodec { cid: *cid, codec }),
    }
}

/// Encodes UnixFS `Data`.
pub fn encode_unixfs(d: &UnixfsData) -> Vec<u8> {
    d.encode_to_vec()
}

/// Decodes UnixFS `Data`, rejecting unknown types.
pub fn decode_unixfs(b: &[u8]) -> Result<UnixfsData, PbError> {
    let d = UnixfsData::decode(b).map_err(|e| PbError::Unixfs(e.to_string()))?;
    DataType::try_from(d.r#type)
        .map_err(|_| PbError::Unixfs(format!("unknown data type {}", d.r#type)))?;
    Ok(d)
}

/// The dag-pb bytes of a UnixFS leaf holding `chunk` (`File` leaves in
/// balanced DAGs, `Raw` leaves in trickle DAGs), with a single copy of the chunk.
pub fn encode_unixfs_leaf(ty: DataType, chunk: &[u8]) -> Vec<u8> {
    // UnixFS Data: Type, Data (only when non-empty, as Go leaves a nil slice
    // out), filesize.
    let mut inner_hdr = Vec::with_capacity(24);
    put_key(&mut inner_hdr, 1, 0);
    put_varint(&mut inner_hdr, ty as u64);
    if !chunk.is_empty() {
        put_key(&mut inner_hdr, 2, 2);
        put_varint(&mut inner_hdr, chunk.len() as u64);
    }
    let mut tail = Vec::with_capacity(11);
    put_key(&mut tail, 3, 0);
    put_varint(&mut tail, chunk.len() as u64);
    let inner_len = inner_hdr.len() + chunk.len() + tail.len();
    let mut out = Vec::with_capacity(inner_len + 12);
    put_key(&mut out, 1, 2);
    put_varint(&mut out, inner_len as u64);
    out.extend_from_slice(&inner_hdr);
    out.extend_from_slice(chunk);
    out.extend_from_slice(&tail);
    out
}

fn link_len(l: &PbLink) -> usize {
    let h = l.cid.encoded_len();
    let mut n = 1 + varint_len(h as u64) + h;
    if let Some(name) = &l.name {
        n += 1 + varint_len(name.len() as u64) + name.len();
    }
    if let Some(t) = l.tsize {
        n += 1 + varint_len(t);
    }
    n
}

fn put_link(out: &mut Vec<u8>, l: &PbLink) {
    let h = l.cid.to_bytes();
    put_key(out, 1, 2);
    put_varint(out, h.len() as u64);
    out.extend_from_slice(&h);
    if let Some(name) = &l.name {
        put_key(out, 2, 2);
        put_varint(out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
    }
    if let Some(t) = l.tsize {
        put_key(out, 3, 0);
        put_varint(out, t);
    }
}

fn put_key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
    put_varint(out, (field << 3) | wire_type);
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes `v` takes as a varint.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads an unsigned LEB128 varint, rejecting overlong (>10 byte) encodings.
pub fn get_varint(buf: &mut impl Buf) -> Result<u64, PbError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        if !buf.has_remaining() {
            return Err(PbError::Truncated("varint"));
        }
        let b = buf.get_u8();
        if i == 9 && b > 1 {
            return Err(PbError::Varint);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(PbError::Varint)
}

fn get_key(buf: &mut impl Buf) -> Result<(u64, u64), PbError> {
    let k = get_varint(buf)?;
    Ok((k >> 3, k & 7))
}

fn get_bytes<B: Split>(buf: &mut B) -> Result<B, PbError> {
    let n = get_varint(buf)?;
    if n > buf.remaining() as u64 {
        return Err(PbError::Truncated("length-delimited field"));
    }
    Ok(buf.split(n as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::cid_of;
    use cid::Version;
    use proptest::prelude::*;

    #[test]
    fn empty_file_leaf_matches_kubo() {
        let b = encode_unixfs_leaf(DataType::File, b"");
        assert_eq!(b, [0x0a, 0x04, 0x08, 0x02, 0x18, 0x00]);
        let via_prost = PbNode {
            links: vec![],
            data: Some(
                encode_unixfs(&UnixfsData {
                    r#type: DataType::File as i32,
                    filesize: Some(0),
                    ..Default::default()
                })
                .into(),
            ),
        }
        .encode();
        assert_eq!(b, via_prost);
    }

    #[test]
    fn hello_world_leaf_matches_kubo() {
        // `echo "hello world" | ipfs add` gives this well-known CID.
        let b = encode_unixfs_leaf(DataType::File, b"hello world\n");
        assert_eq!(
            cid_of(Version::V0, DAG_PB, &b).to_string(),
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
        );
    }

    #[test]
    fn empty_directory_matches_kubo() {
        let d = encode_unixfs(&UnixfsData {
            r#type: DataType::Directory as i32,
            ..Default::default()
        });
        let b = PbNode {
            links: vec![],
            data: Some(d.into()),
        }
        .encode();
        assert_eq!(
            cid_of(Version::V0, DAG_PB, &b).to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
    }

    #[test]
    fn rejects_malformed() {
        let bad: &[&[u8]] = &[
            &[0x0a],                   // Data with no length
            &[0x0a, 0x05, 0x00],       // Data longer than the message
            &[0x0a, 0x00, 0x12, 0x00], // Links after Data
            &[0x12, 0x00],             // link without Hash
            &[0x18, 0x01],             // unknown field 3
            &[0xff; 11],               // overlong varint
        ];
        for b in bad {
            assert!(PbNode::decode(&Bytes::copy_from_slice(b)).is_err(), "{b:?}");
        }
    }

    fn any_cid() -> impl Strategy<Value = Cid> {
        (any::<[u8; 8]>(), any::<bool>()).prop_map(|(seed, v0)| {
            if v0 {
                cid_of(Version::V0, DAG_PB, &seed)
            } else {
                cid_of(Version::V1, RAW, &seed)
            }
        })
    }

    proptest! {
        #[test]
        fn round_trip(
            links in proptest::collection::vec(
                (any_cid(), proptest::option::of("[a-zé ]{0,12}"), proptest::option::of(any::<u64>())),
                0..8),
            data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        ) {
            let node = PbNode {
                links: links.into_iter().map(|(cid, name, tsize)| PbLink { cid, name, tsize }).collect(),
                data: data.map(Bytes::from),
            };
            let enc = node.encode();
            prop_assert_eq!(enc.len(), node.encoded_len());
            let pb = cid_of(Version::V1, DAG_PB, &enc);
            let want: Vec<Cid> = node.links.iter().map(|l| l.cid).collect();
            prop_assert_eq!(super::links(&pb, &enc).unwrap(), want);
            prop_assert_eq!(PbNode::decode(&Bytes::from(enc)).unwrap(), node);
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let decoded = PbNode::decode(&Bytes::from(b.clone()));
            // `links` reads in place but accepts and refuses exactly what `decode` does.
            let pb = cid_of(Version::V1, DAG_PB, &b);
            prop_assert_eq!(
                links(&pb, &b).ok(),
                decoded.ok().map(|n| n.links.into_iter().map(|l| l.cid).collect::<Vec<_>>())
            );
            let _ = decode_unixfs(&b);
        }

        #[test]
        fn varint_round_trip(v in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            prop_assert_eq!(get_varint(&mut &out[..]).unwrap(), v);
        }
    }
}
