//! A fast non-cryptographic hasher (rustc-hash 2's variant of the Fx hash) for the index's internal maps.
//!
//! Their keys come from manifests, never from the network, so SipHash's resistance to chosen-key collisions buys
//! nothing there, while hashing `namespace/name` keys is a measurable share of indexing 100,000 pods. Maps that
//! are looked up with request data (a route table's Host index) keep the standard hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

/// rustc-hash 2's multiplier and round: add the word, multiply.
const K: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = self.hash.wrapping_add(word).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // At most 7 bytes: the top byte holds the length, so "a" and "a\0" differ.
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            word[7] = rest.len() as u8;
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    /// The multiply leaves the entropy in the high bits, but hashbrown picks buckets by the low bits: keys whose
    /// varying bytes are all high (IPv4 addresses in one /16, say) would share buckets. Rotate them down, as
    /// rustc-hash 2 does.
    #[inline]
    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keys_hash_apart_and_maps_work() {
        let mut m: FxMap<String, usize> = FxMap::default();
        for i in 0..10_000 {
            m.insert(format!("shop/web-{i}"), i);
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.get("shop/web-4242"), Some(&4242));
        // As the maps hash their keys: through `Hash`, which ends a str with a 0xff byte.
        let h = |s: &str| {
            let mut x = FxHasher::default();
            std::hash::Hash::hash(s, &mut x);
            x.finish()
        };
        assert_ne!(h("ab"), h("ba"));
        // Addresses of one /16 spread over the low bits that pick buckets.
        let low_bits: std::collections::HashSet<u64> = (0..4096u32)
            .map(|i| {
                let ip = std::net::IpAddr::from([10, 128, (i >> 8) as u8, i as u8]);
                let mut x = FxHasher::default();
                std::hash::Hash::hash(&ip, &mut x);
                x.finish() & 0xfff
            })
            .collect();
        assert!(low_bits.len() > 2400, "only {} distinct bucket indexes for 4096 addresses", low_bits.len());
        assert_ne!(h("a"), h("a\0"));
    }
}
