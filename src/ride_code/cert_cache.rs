//! A bounded cache of holder certificates whose channel signature already verified, so that a
//! returning holder costs one signature check (the code's) instead of two.
//!
//! - Key: the full certificate bytes [0, 129), compared byte for byte. A different certificate
//!   can never hit, whatever the hash does; the hash only picks the set.
//! - Value: the decoded, ready-to-verify holder key.
//! - Shape: [`CERT_CACHE_SETS`] sets of [`CERT_CACHE_WAYS`] slots, allocated once; eviction
//!   is least-recently-used within the set.
//! - Only check 6 is skipped on a hit: the caller still runs checks 4 and 5 (the channel key
//!   exists, is not revoked and is in its window) before looking here, and check 7 (the
//!   certificate's own dates) after, since all of them depend on `now` or on the key file.
//!   Failed certificates are never stored.

use super::crypto::VerifyKey;
use super::format::CERT_BYTES;

/// Slots per set.
pub const CERT_CACHE_WAYS: usize = 4;
/// Number of sets (a power of two).
pub const CERT_CACHE_SETS: usize = 256;
/// Holders remembered: a day's distinct ride-code riders on one bus fit (a busy Dezhou route
/// carries well under 1000 ride-code boardings a day per vehicle). About 250 KiB.
pub const CERT_CACHE_ENTRIES_MAX: usize = CERT_CACHE_WAYS * CERT_CACHE_SETS;

const _: () = assert!(CERT_CACHE_SETS.is_power_of_two());

#[derive(Clone)]
struct Slot {
    cert: [u8; CERT_BYTES],
    key: VerifyKey,
    last_used: u64,
}

pub(crate) struct CertCache {
    slots: Box<[Option<Slot>]>,
    /// Logical clock for LRU; u64 never wraps in practice.
    tick: u64,
}

impl CertCache {
    pub(crate) fn new() -> Self {
        CertCache {
            slots: vec![None; CERT_CACHE_ENTRIES_MAX].into_boxed_slice(),
            tick: 0,
        }
    }

    /// The holder key of this exact certificate, if it verified before.
    pub(crate) fn get(&mut self, cert: &[u8; CERT_BYTES]) -> Option<&VerifyKey> {
        self.tick += 1;
        let tick = self.tick;
        let set = set_of(cert);
        let slot = self.slots[set..set + CERT_CACHE_WAYS]
            .iter_mut()
            .flatten()
            .find(|s| s.cert == *cert)?;
        slot.last_used = tick;
        Some(&slot.key)
    }

    /// Remembers a certificate whose signature verified, evicting the set's least recently
    /// used entry when the set is full.
    pub(crate) fn insert(&mut self, cert: &[u8; CERT_BYTES], key: VerifyKey) {
        self.tick += 1;
        let set = set_of(cert);
        let ways = &mut self.slots[set..set + CERT_CACHE_WAYS];
        let victim = ways
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.as_ref().map_or(0, |s| s.last_used))
            .map_or(0, |(i, _)| i);
        ways[victim] = Some(Slot {
            cert: *cert,
            key,
            last_used: self.tick,
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

/// Index of the first slot of the certificate's set: FNV-1a over all 129 bytes.
fn set_of(cert: &[u8; CERT_BYTES]) -> usize {
    let hash = cert.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // Truncation is the point: the low bits pick the set.
    (hash as usize & (CERT_CACHE_SETS - 1)) * CERT_CACHE_WAYS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ride_code::issuer::KeyPair;
    use crate::ride_code::Alg;

    fn key() -> VerifyKey {
        let pk = KeyPair::from_seed(Alg::P256, 1).public_key();
        VerifyKey::from_compressed(Alg::P256, &pk).unwrap()
    }

    fn cert(n: u32) -> [u8; CERT_BYTES] {
        let mut c = [0u8; CERT_BYTES];
        c[..4].copy_from_slice(&n.to_be_bytes());
        c
    }

    #[test]
    fn hit_needs_identical_bytes() {
        let mut cache = CertCache::new();
        cache.insert(&cert(1), key());
        assert!(cache.get(&cert(1)).is_some());
        let mut other = cert(1);
        other[CERT_BYTES - 1] ^= 1;
        assert!(cache.get(&other).is_none());
    }

    #[test]
    fn stays_bounded_and_keeps_recently_used() {
        let mut cache = CertCache::new();
        let first = cert(0);
        cache.insert(&first, key());
        for n in 1..(3 * CERT_CACHE_ENTRIES_MAX as u32) {
            cache.insert(&cert(n), key());
            // Touch the first certificate now and then, as a regular rider would.
            if n % 2 == 0 {
                assert!(cache.get(&first).is_some(), "evicted at {n}");
            }
        }
        assert!(cache.len() <= CERT_CACHE_ENTRIES_MAX);
        assert!(cache.get(&first).is_some());
    }
}
