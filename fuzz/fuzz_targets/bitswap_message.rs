//! Arbitrary bytes as one bitswap message body: `Message::decode` must return
//! `Ok` or `Err`, never panic, and whatever it accepts must re-encode to bytes
//! that decode to the same message.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wanda_ipfs::bitswap::{Message, MAX_MESSAGE_SIZE};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(Bytes::copy_from_slice(data)) {
        // 1.0.0 blocks re-encode with a prefix, so a frame at the limit
        // could grow past it.
        if m.encoded_len() > MAX_MESSAGE_SIZE {
            return;
        }
        let again = Message::decode(m.encode().into()).expect("our own encoding decodes");
        assert_eq!(again, m);
    }
});
