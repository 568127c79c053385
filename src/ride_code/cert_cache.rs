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
pub const CERT_CACHE_WAYS: usize = 8;
/// Number of sets (a power of two).
pub const CERT_CACHE_SETS: usize = 256;
/// Holders remembered: a day's distinct ride-code riders on one bus fit (a busy Dezhou route
/// carries well under 1000 ride-code boardings a day per vehicle), with room enough that a
/// full set seldom evicts a regular: a regular evicted costs a first-seen check again at its
/// next scan. With 4 ways (1,024 entries) the 690 holders of `bench --only-qr-fleet` lost 70
/// regulars' certificates to full sets; with 8, none. About 500 KiB.
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

    /// The holder key of this exact certificate: the one kept if it verified before, or else
    /// the one `check` gives, kept (evicting the set's least recently used entry when the
    /// set is full), or `check`'s error, nothing kept. The certificate is hashed and its set
    /// searched once either way.
    pub(crate) fn get_or_check<E>(
        &mut self,
        cert: &[u8; CERT_BYTES],
        check: impl FnOnce() -> Result<VerifyKey, E>,
    ) -> Result<&VerifyKey, E> {
        self.tick += 1;
        let tick = self.tick;
        let set = set_of(cert);
        let ways = &mut self.slots[set..set + CERT_CACHE_WAYS];
        let found = ways
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.cert == *cert));
        let way = match found {
            Some(way) => way,
            None => {
                let key = check()?;
                let victim = ways
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.as_ref().map_or(0, |s| s.last_used))
                    .map_or(0, |(i, _)| i);
                ways[victim] = Some(Slot {
                    cert: *cert,
                    key,
                    last_used: tick,
                });
                victim
            }
        };
        let slot = ways[way].as_mut().expect("a slot found or just filled");
        slot.last_used = tick;
        Ok(&slot.key)
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

    /// Whether the cache holds `cert` (a lookup that keeps nothing).
    fn holds(cache: &mut CertCache, cert: &[u8; CERT_BYTES]) -> bool {
        cache.get_or_check(cert, || Err(())).is_ok()
    }

    fn remember(cache: &mut CertCache, cert: &[u8; CERT_BYTES]) {
        assert!(cache.get_or_check(cert, || Ok::<_, ()>(key())).is_ok());
    }

    #[test]
    fn hit_needs_identical_bytes() {
        let mut cache = CertCache::new();
        remember(&mut cache, &cert(1));
        assert!(holds(&mut cache, &cert(1)));
        let mut other = cert(1);
        other[CERT_BYTES - 1] ^= 1;
        assert!(!holds(&mut cache, &other));
        assert_eq!(cache.len(), 1, "a failed check keeps nothing");
    }

    #[test]
    fn a_hit_does_not_check_again() {
        let mut cache = CertCache::new();
        remember(&mut cache, &cert(1));
        let mut checked = false;
        let got = cache.get_or_check(&cert(1), || {
            checked = true;
            Err(())
        });
        assert!(got.is_ok() && !checked);
    }

    /// Seven hundred distinct holders (a day's on a busy bus), their certificates random: at
    /// most one in a hundred is evicted by a full set.
    #[test]
    fn a_day_of_holders_stays() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20);
        let certs: Vec<[u8; CERT_BYTES]> = (0..700)
            .map(|_| {
                let mut c = [0u8; CERT_BYTES];
                rng.fill(&mut c[..]);
                c
            })
            .collect();
        let mut cache = CertCache::new();
        for c in &certs {
            remember(&mut cache, c);
        }
        let kept = certs.iter().filter(|c| holds(&mut cache, c)).count();
        assert!(kept >= 693, "{kept} of 700 kept");
    }

    #[test]
    fn stays_bounded_and_keeps_recently_used() {
        let mut cache = CertCache::new();
        let first = cert(0);
        remember(&mut cache, &first);
        for n in 1..(3 * CERT_CACHE_ENTRIES_MAX as u32) {
            remember(&mut cache, &cert(n));
            // Touch the first certificate now and then, as a regular rider would.
            if n % 2 == 0 {
                assert!(holds(&mut cache, &first), "evicted at {n}");
            }
        }
        assert!(cache.len() <= CERT_CACHE_ENTRIES_MAX);
        assert!(holds(&mut cache, &first));
    }
}
