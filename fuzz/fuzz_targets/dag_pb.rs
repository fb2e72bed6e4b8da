//! Arbitrary bytes as a dag-pb block: the strict decoder returns `Ok` or `Err`, never panics,
//! and a node it accepts re-encodes to bytes that decode to the same node and re-encode to the
//! same bytes (the encoder's output is a fixed point), so whatever we store keeps its CID.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wanda_ipfs::unixfs::pb::{decode_unixfs, PbNode};

fuzz_target!(|data: &[u8]| {
    if let Ok(node) = PbNode::decode(&Bytes::copy_from_slice(data)) {
        let enc = node.encode();
        let again = PbNode::decode(&Bytes::from(enc.clone())).expect("our own encoding decodes");
        assert_eq!(again, node);
        assert_eq!(again.encode(), enc);
        if let Some(d) = &node.data {
            let _ = decode_unixfs(d);
        }
    }
});
