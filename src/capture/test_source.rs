//! [`TestSource`]: deterministic JPEG-shaped stills, so tests and demos need no camera.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::Source;

/// Writes `size` bytes per still: a JPEG start-of-image and JFIF header, pseudo-random bytes
/// from (`seed`, still number), and an end-of-image marker. The same seed and number give the
/// same bytes, so a test knows every CID in advance; different numbers give different stills.
#[derive(Debug, Clone)]
pub struct TestSource {
    size: usize,
    seed: u64,
}

/// SOI, then an APP0 "JFIF" segment (length 16, version 1.1, no density, no thumbnail).
const HEADER: [u8; 20] = [
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00,
];
const EOI: [u8; 2] = [0xFF, 0xD9];

impl TestSource {
    /// Stills of `size` bytes (at least the 22 of the markers).
    pub fn new(size: usize, seed: u64) -> TestSource {
        TestSource {
            size: size.max(HEADER.len() + EOI.len()),
            seed,
        }
    }

    /// The bytes of still `number`.
    pub fn still(&self, number: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size);
        out.extend_from_slice(&HEADER);
        // splitmix64: fast, and any seed gives a full-period stream.
        let mut x = self.seed ^ (u64::from(number) << 32) ^ 0x9E37_79B9_7F4A_7C15;
        while out.len() < self.size - EOI.len() {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let take = (self.size - EOI.len() - out.len()).min(8);
            out.extend_from_slice(&z.to_le_bytes()[..take]);
        }
        out.extend_from_slice(&EOI);
        out
    }
}

impl Source for TestSource {
    fn capture(&mut self, number: u32, path: &Path) -> Result<()> {
        let mut f = std::fs::File::create_new(path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(&self.still(number))
            .with_context(|| format!("writing {}", path.display()))?;
        // A still is reported captured only once it is on disk (the Pi may lose power).
        f.sync_all()
            .with_context(|| format!("syncing {}", path.display()))
    }

    fn name(&self) -> &str {
        "test source"
    }
}
