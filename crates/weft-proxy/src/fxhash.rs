//! A fast hasher for the request path's own maps (FxHash, the multiply-rotate hash rustc uses):
//! a few instructions per word where the standard library's SipHash costs a few hundred per key.
//! Not resistant to chosen collisions, so only for keys a peer does not choose: endpoint
//! addresses and identities from discovery, this proxy's own TLS configurations. Maps keyed by
//! what clients send (authorities, paths, client identities) keep SipHash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The multiplier of rustc's FxHash (a 64-bit odd constant with well-mixed bits).
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Clone, Copy, Default)]
pub struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
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

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A `HashMap` hashed with [`FxHasher`] (see the module's caveat on its keys).
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, BuildHasherDefault};
    use std::net::SocketAddr;

    fn hash<T: std::hash::Hash>(v: &T) -> u64 {
        BuildHasherDefault::<FxHasher>::default().hash_one(v)
    }

    #[test]
    fn equal_keys_hash_alike_and_near_keys_apart() {
        let a: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        assert_eq!(hash(&a), hash(&a.clone()));
        assert_ne!(hash(&a), hash(&b));
        // Strings: every byte counts, the tail of a partial word too.
        assert_ne!(hash(&"web.default.x"), hash(&"web.default.y"));
        assert_ne!(hash(&"abcdefgh1"), hash(&"abcdefgh2"));
        // The top bits (hashbrown's control bytes) vary across near keys.
        let tops: std::collections::HashSet<u64> = (0..64u16)
            .map(|p| hash(&SocketAddr::from(([10, 0, 0, 1], 8000 + p))) >> 57)
            .collect();
        assert!(tops.len() > 16, "{} distinct top-7-bit values", tops.len());
    }

    #[test]
    fn a_map_works_as_any_other() {
        let mut m = FxHashMap::default();
        for i in 0..1000u32 {
            m.insert(i, i * 2);
        }
        assert!((0..1000u32).all(|i| m.get(&i) == Some(&(i * 2))));
    }
}
