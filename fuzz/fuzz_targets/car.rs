//! Arbitrary bytes as a CAR file: the verifying reader returns blocks or an error, never panics,
//! and every block it hands out matches its CID.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wanda_ipfs::car::CarReader;

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = CarReader::new(data) else {
        return;
    };
    // Each section is at least a few bytes, so this bounds the loop by the input.
    for _ in 0..=data.len() {
        match r.next_block() {
            Ok(Some(b)) => assert!(wanda_ipfs::block::verify(&b.cid, &b.data).is_ok()),
            Ok(None) | Err(_) => return,
        }
    }
});
