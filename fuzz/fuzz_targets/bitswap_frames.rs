//! Arbitrary bytes as a bitswap stream, fed to `FrameDecoder` in pieces whose
//! sizes come from the input itself: no panic, no frame over the limit, and
//! never more buffered than one frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wanda_ipfs::bitswap::{FrameDecoder, Message};

/// Small, so the fuzzer reaches the limit checks with short inputs.
const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut dec = FrameDecoder::with_max(MAX);
    for piece in rest.chunks(step) {
        match dec.push(piece) {
            Ok(frames) => {
                for f in frames {
                    assert!(f.len() <= MAX);
                    let _ = Message::decode(f);
                }
            }
            Err(_) => return,
        }
        assert!(dec.capacity() <= MAX);
    }
    let _ = dec.finish();
});
