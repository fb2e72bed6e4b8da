//! [`TestSource`]: deterministic JPEG-shaped stills, so tests and demos need no camera.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::Source;

/// Writes `size` bytes per still: a real JPEG that any viewer decodes (an 8x8 tile of one grey,
/// its shade set by the still), carrying pseudo-random bytes from (`seed`, still number) in
/// comment segments up to the size. The same seed and number give the same bytes, so a test
/// knows every CID in advance; different numbers give different stills, and browsers show them.
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
/// Before the scan: DQT (DC step 4, AC steps 1), SOF0 (8x8, one component), a DC Huffman table
/// whose one code ("0") means "8 magnitude bits follow", an AC table whose one code ("0") is
/// end-of-block, and SOS.
const IMAGE_HEAD: [u8; 126] = image_head();
const EOI: [u8; 2] = [0xFF, 0xD9];
/// Bytes of a comment segment's header (marker + length).
const COM_HEAD: usize = 4;
const COM_MAX: usize = 65533;

const fn image_head() -> [u8; 126] {
    let mut h = [0u8; 126];
    let mut i = 0;
    // DQT: marker, length 67, table 0 (8-bit), 64 steps.
    let dqt = [0xFF, 0xDB, 0x00, 0x43, 0x00];
    while i < 5 {
        h[i] = dqt[i];
        i += 1;
    }
    h[5] = 4;
    i = 6;
    while i < 69 {
        h[i] = 1;
        i += 1;
    }
    let rest: [u8; 57] = [
        // SOF0: length 11, 8 bits, 8 rows, 8 columns, 1 component (id 1, 1x1, table 0).
        0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00,
        // DHT DC 0: one code of length 1, symbol 8 (magnitude category 8).
        0xFF, 0xC4, 0x00, 0x14, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08,
        // DHT AC 0: one code of length 1, symbol 0 (end of block).
        0xFF, 0xC4, 0x00, 0x14, 0x10, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00,
    ];
    let mut j = 0;
    while j < 57 {
        h[69 + j] = rest[j];
        j += 1;
    }
    h
}

/// SOS: length 8, one component (id 1, tables 0/0), spectral 0..63, no approximation.
const SOS: [u8; 10] = [0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00];

/// The smallest still: headers, the image, no padding.
const MIN_SIZE: usize = HEADER.len() + IMAGE_HEAD.len() + SOS.len() + 2 + EOI.len();

/// The one 8x8 block's entropy-coded bits: DC code "0", 8 bits of the DC difference `v`
/// (128..=255 or -255..=-128, as T.81 F.1.2.1 writes negatives), AC code "0" (end of block),
/// padded with ones. Neither byte can be 0xFF, so no stuffing is needed.
fn scan(v: i16) -> [u8; 2] {
    let bits = if v >= 0 { v as u16 } else { (v - 1) as u16 } & 0xFF;
    let word: u16 = (bits << 7) | 0x3F;
    word.to_be_bytes()
}

/// splitmix64: fast, and any seed gives a full-period stream.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The DC difference a still's first random word picks: a dark or a light grey.
fn dc_of(word: u64) -> i16 {
    let magnitude = 128 + (word % 128) as i16;
    if word & (1 << 40) == 0 {
        magnitude
    } else {
        -magnitude
    }
}

impl TestSource {
    fn dc(&self, number: u32) -> i16 {
        dc_of(splitmix(&mut self.stream(number)))
    }

    /// The random stream's state for still `number`.
    fn stream(&self, number: u32) -> u64 {
        self.seed ^ (u64::from(number) << 32) ^ 0x9E37_79B9_7F4A_7C15
    }

    /// The grey level (0-255) a JPEG decoder gives every pixel of still `number`: DC
    /// coefficient `4 * dc`, which the inverse DCT scales by 1/8, plus the 128 level shift.
    pub fn grey(&self, number: u32) -> u8 {
        (128.0 + f64::from(self.dc(number)) / 2.0).clamp(0.0, 255.0) as u8
    }

    /// Stills of `size` bytes (at least [`MIN_SIZE`]; 1 to 3 bytes above it round up to 4,
    /// the smallest comment segment).
    pub fn new(size: usize, seed: u64) -> TestSource {
        let mut size = size.max(MIN_SIZE);
        if (1..COM_HEAD).contains(&(size - MIN_SIZE)) {
            size = MIN_SIZE + COM_HEAD;
        }
        TestSource { size, seed }
    }

    /// The bytes of still `number`.
    pub fn still(&self, number: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size);
        out.extend_from_slice(&HEADER);
        let mut x = self.stream(number);
        let mut next = || splitmix(&mut x);
        let shade = next();
        let mut pad = self.size - MIN_SIZE;
        while pad > 0 {
            let mut payload = (pad - COM_HEAD).min(COM_MAX);
            // Never leave 1-3 bytes, too few for another segment.
            if (1..COM_HEAD).contains(&(pad - COM_HEAD - payload)) {
                payload -= COM_HEAD;
            }
            out.extend_from_slice(&[0xFF, 0xFE]);
            out.extend_from_slice(&((payload + 2) as u16).to_be_bytes());
            let end = out.len() + payload;
            while out.len() < end {
                let take = (end - out.len()).min(8);
                out.extend_from_slice(&next().to_le_bytes()[..take]);
            }
            pad -= payload + COM_HEAD;
        }
        out.extend_from_slice(&IMAGE_HEAD);
        out.extend_from_slice(&SOS);
        out.extend_from_slice(&scan(dc_of(shade)));
        out.extend_from_slice(&EOI);
        debug_assert_eq!(out.len(), self.size);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the marker segments as a decoder does; returns the scan's bytes.
    fn segments(b: &[u8]) -> Vec<(u8, usize)> {
        assert_eq!(&b[..2], &[0xFF, 0xD8]);
        let mut i = 2;
        let mut out = Vec::new();
        loop {
            assert_eq!(b[i], 0xFF, "marker expected at {i}");
            let m = b[i + 1];
            let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
            out.push((m, len));
            i += 2 + len;
            if m == 0xDA {
                assert_eq!(&b[i + 2..], &EOI, "two scan bytes, then EOI");
                assert_ne!(b[i], 0xFF);
                assert_ne!(b[i + 1], 0xFF);
                return out;
            }
        }
    }

    #[test]
    fn stills_are_well_formed_jpegs_of_the_asked_size() {
        for size in [
            0,
            MIN_SIZE,
            MIN_SIZE + 4,
            MIN_SIZE + 5,
            1000,
            65537 + MIN_SIZE + 2,
            300_000,
            5_000_000,
        ] {
            let src = TestSource::new(size, 3);
            for n in [1, 2, 77] {
                let b = src.still(n);
                assert_eq!(b.len(), src.size);
                if size >= MIN_SIZE + COM_HEAD || size == MIN_SIZE {
                    assert_eq!(b.len(), size.max(MIN_SIZE));
                }
                let segs = segments(&b);
                let kinds: Vec<u8> = segs.iter().map(|s| s.0).filter(|m| *m != 0xFE).collect();
                assert_eq!(kinds, [0xE0, 0xDB, 0xC0, 0xC4, 0xC4, 0xDA]);
            }
            assert_ne!(src.still(1), src.still(2));
            let b = src.still(9);
            let scan_at = b.len() - 4;
            assert_eq!(b[scan_at..scan_at + 2], scan(src.dc(9)));
            assert_eq!(src.still(5), TestSource::new(size, 3).still(5));
        }
    }

    #[test]
    fn dc_bits_follow_t81() {
        assert_eq!(scan(255), [0x7F, 0xBF]);
        assert_eq!(scan(128), [0x40, 0x3F]);
        // -128: ones' complement 127 = 0b0111_1111.
        assert_eq!(scan(-128), [0x3F, 0xBF]);
        assert_eq!(scan(-255), [0x00, 0x3F]);
    }
}
