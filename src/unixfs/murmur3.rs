//! MurmurHash3 x64 128-bit, the hash HAMT-sharded UnixFS directories index
//! entry names by (multicodec `murmur3-x64-64`, 0x22).
//!
//! Pure and allocation-free. boxo takes `murmur3.New64()` (spaolacci/murmur3,
//! seed 0) whose `Sum` is the *first* 64-bit half (`h1`) of the 128-bit hash,
//! written big-endian; [`hamt_hash`] returns exactly those 8 bytes.

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

fn mix_k1(k1: u64) -> u64 {
    k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

fn mix_k2(k2: u64) -> u64 {
    k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

/// MurmurHash3_x64_128 of `data` with `seed`: `(h1, h2)`.
pub fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    let mut h1 = u64::from(seed);
    let mut h2 = u64::from(seed);
    let mut blocks = data.chunks_exact(16);
    for b in &mut blocks {
        // The reference reads blocks as little-endian words.
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        let k1 = u64::from_le_bytes(w);
        w.copy_from_slice(&b[8..]);
        let k2 = u64::from_le_bytes(w);

        h1 ^= mix_k1(k1);
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(k2);
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let mut k1 = 0u64;
    let mut k2 = 0u64;
    for (i, &b) in tail.iter().enumerate() {
        if i < 8 {
            k1 |= u64::from(b) << (8 * i);
        } else {
            k2 |= u64::from(b) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= mix_k2(k2);
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(k1);
    }

    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

/// The 8 hash bytes a HAMT consumes for `name`, most significant bit first.
pub fn hamt_hash(name: &[u8]) -> [u8; 8] {
    murmur3_x64_128(name, 0).0.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn matches_reference_vectors() {
        // Expected values from @multiformats/murmur3 2.2.8 `murmur3128`
        // (node; the JS importer's HAMT hash), which prints h1 then h2
        // big-endian. boxo and the JS importer both index by h1's bytes in
        // big-endian order (JS reverses them, then consumes from the end).
        let cases: &[(&str, u64, &str)] = &[
            ("", 0, "0000000000000000"),
            ("a", 0x8555_5565_f659_7889, "85555565f6597889"),
            ("hello", 0xcbd8_a7b3_41bd_9b02, "cbd8a7b341bd9b02"),
            (
                "The quick brown fox jumps over the lazy dog",
                0xe34b_bc7b_bc07_1b6c,
                "e34bbc7bbc071b6c",
            ),
            ("file-0001.txt", 0xc6b8_0999_e8fb_b598, "c6b80999e8fbb598"),
            ("é日本", 0xf820_ce21_274c_b667, "f820ce21274cb667"),
        ];
        for (s, h1, bytes) in cases {
            assert_eq!(murmur3_x64_128(s.as_bytes(), 0).0, *h1, "{s:?}");
            assert_eq!(hex(&hamt_hash(s.as_bytes())), *bytes, "{s:?}");
        }
        assert_eq!(
            murmur3_x64_128(b"hello", 0),
            (0xcbd8_a7b3_41bd_9b02, 0x5b1e_906a_48ae_1d19)
        );
        // Tails below, at and above one and two 16-byte blocks; bytes
        // i*7+1 (same source).
        let long: &[(usize, u64, u64)] = &[
            (15, 0x4c26_a398_0bb4_acb7, 0x8ac2_e76d_a123_71b5),
            (16, 0x52eb_3281_de4b_cda9, 0xa6a7_1737_e437_93e0),
            (17, 0x4017_ff9f_41bb_9db0, 0x682f_4c63_b560_3785),
            (31, 0x75e7_6d36_669e_9e8a, 0xaacc_394d_b707_ac94),
            (33, 0x9bf6_416d_fa41_b5ec, 0xe800_4174_03fb_6344),
        ];
        for &(n, h1, h2) in long {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + 1) as u8).collect();
            assert_eq!(murmur3_x64_128(&data, 0), (h1, h2), "len {n}");
        }
    }
}
