//! Checks 1–10 of ride-code-v1.md, in order; the first that fails is the reason.
//!
//! | # | check | reason |
//! | --- | --- | --- |
//! | 1 | text form, 201 bytes, version 1, card_no decimal | `malformed` |
//! | 2 | alg is 1 or 2 | `unsupported_algorithm` |
//! | 3 | channel_id in the key file | `unsupported_channel` |
//! | 4 | entry with channel_id, channel_key_id, alg | `unknown_key` |
//! | 5 | key not revoked, not_before ≤ now ≤ not_after | `key_not_valid` |
//! | 6 | cert_signature verifies, holder key on the curve | `bad_certificate` |
//! | 7 | cert_not_before ≤ now ≤ cert_not_after | `certificate_not_valid` |
//! | 8 | code_signature verifies with the holder key | `bad_signature` |
//! | 9 | generated_at ≤ now + clock_skew_s | `code_not_yet_valid` |
//! | 10 | now ≤ generated_at + code_validity_s | `code_expired` |
//!
//! Checks 11 (blacklist), 12 (replay, see [`super::ReplayCache`]) and 13 (anti-passback) are
//! the engine's. A scan costs at most two signature checks; a holder whose certificate
//! verified before costs one (see `cert_cache`). With [`Verifier::with_cert_worker`] the two
//! checks of a first-seen holder run side by side on two cores (see `cert_worker`); the
//! reason reported is the same either way.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::cert_cache::CertCache;
use super::cert_set::CertSet;
use super::cert_worker::CertWorker;
use super::crypto::VerifyKey;
use super::format::{CertDigest, RideCode};
use super::keys::{ChannelKeys, KeyFileError};
use super::Alg;
use crate::types::{AccountId, CardNo, Reason, RiderCategory};

/// Freshness settings (the vectors' `config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RideCodeConfig {
    /// How long after generated_at a code is still accepted (check 10).
    pub code_validity_s: u32,
    /// How far ahead of the validator's clock a phone's clock may be (check 9).
    pub clock_skew_s: u32,
}

impl Default for RideCodeConfig {
    fn default() -> Self {
        RideCodeConfig {
            code_validity_s: 60,
            clock_skew_s: 30,
        }
    }
}

/// A code that passed checks 1–10: what the engine needs for checks 11–13, the fare and the
/// journal. Copy, no heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedCode {
    pub channel_id: u16,
    pub channel_key_id: u8,
    pub alg: Alg,
    /// (channel_id, account_id): the blacklist and anti-passback identity.
    pub account: AccountId,
    /// The linked physical card, checked against the card blacklist.
    pub card_no: CardNo,
    pub rider_category: RiderCategory,
    pub counter: u32,
    /// Unix seconds.
    pub generated_at: i64,
    /// Unix seconds, inclusive.
    pub cert_not_after: i64,
    /// SHA-256 of the holder certificate (bytes [0, 129)): carried into the journal record.
    pub cert_digest: CertDigest,
}

/// Verifies ride codes against one key file. Holds the certificate cache, hence `&mut self`.
pub struct Verifier {
    keys: ChannelKeys,
    config: RideCodeConfig,
    certs: CertCache,
    /// Checks first-seen certificates on a second core; `None`: on the scanning thread.
    worker: Option<CertWorker>,
    /// The fleet's verified certificates ([`super::cert_set`]): a listed certificate's
    /// channel signature is not checked again.
    cert_set: Arc<CertSet>,
    /// The key material digest of `keys`, computed once.
    keys_digest: [u8; 32],
    /// Whether `cert_set` was made with `keys`' material: if not, no entry is used.
    cert_set_usable: bool,
    /// First-seen certificates taken from the set (for tests and metrics).
    certs_from_set: u64,
}

impl Verifier {
    /// Allocates the certificate cache; nothing is allocated per scan after this. Every check
    /// runs on the calling thread.
    pub fn new(keys: ChannelKeys, config: RideCodeConfig) -> Self {
        Verifier {
            keys_digest: keys.material_digest(),
            keys,
            config,
            certs: CertCache::new(),
            worker: None,
            cert_set: Arc::new(CertSet::empty()),
            cert_set_usable: false,
            certs_from_set: 0,
        }
    }

    /// As [`Verifier::new`], plus a worker thread that checks a first-seen holder's
    /// certificate while the scanning thread checks the code (when this machine has a second
    /// core and a thread can be started; otherwise as `new`).
    pub fn with_cert_worker(keys: ChannelKeys, config: RideCodeConfig) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Verifier {
            worker: if cores >= 2 {
                CertWorker::spawn()
            } else {
                None
            },
            ..Self::new(keys, config)
        }
    }

    /// Use the fleet's verified-certificate set from now on: a first-seen certificate whose
    /// digest it lists skips check 6's signature (every other check still runs). A set made
    /// with other channel key material than this verifier's is held but not used (logged).
    pub fn set_cert_set(&mut self, set: Arc<CertSet>) {
        self.cert_set_usable = *set.keys_digest() == self.keys_digest;
        if !self.cert_set_usable && !set.is_empty() {
            tracing::warn!(
                version = set.version(),
                "verified-certificate set made for other channel keys: not used"
            );
        }
        self.cert_set = set;
    }

    /// The verified-certificate set held (empty at version 0 when none was given).
    pub fn cert_set(&self) -> &Arc<CertSet> {
        &self.cert_set
    }

    /// First-seen certificates whose channel signature the set spared.
    pub fn certs_from_set(&self) -> u64 {
        self.certs_from_set
    }

    /// True when first-seen certificates are checked on a second core.
    pub fn has_cert_worker(&self) -> bool {
        self.worker.is_some()
    }

    pub fn from_key_file(
        path: impl AsRef<std::path::Path>,
        config: RideCodeConfig,
    ) -> Result<Self, KeyFileError> {
        Ok(Self::new(ChannelKeys::load(path)?, config))
    }

    pub fn config(&self) -> &RideCodeConfig {
        &self.config
    }

    pub fn keys(&self) -> &ChannelKeys {
        &self.keys
    }

    /// Checks 1–10 in order.
    pub fn verify(&mut self, text: &str, now_unix_s: i64) -> Result<VerifiedCode, Reason> {
        let code = RideCode::parse(text)?;
        self.verify_parsed(&code, now_unix_s)
    }

    /// Checks 2–10 of a code that passed check 1.
    pub fn verify_parsed(
        &mut self,
        code: &RideCode,
        now_unix_s: i64,
    ) -> Result<VerifiedCode, Reason> {
        let alg = Alg::from_u8(code.alg).ok_or(Reason::UnsupportedAlgorithm)?;
        if !self.keys.has_channel(code.channel_id) {
            return Err(Reason::UnsupportedChannel);
        }
        let channel_key = self
            .keys
            .find(code.channel_id, code.channel_key_id, alg)
            .ok_or(Reason::UnknownKey)?;
        if !channel_key.is_valid_at(now_unix_s) {
            return Err(Reason::KeyNotValid);
        }
        let cert_digest = code.cert_digest();
        // Checks 6 and 8 may run together (a first-seen holder with a worker); their results
        // are reported in the order of the checks all the same.
        // The set is searched only for a certificate the cache does not hold.
        let listed = Listed {
            set: self.cert_set_usable.then_some(&*self.cert_set),
            digest: &cert_digest,
        };
        let (holder_key, code_verified) = holder_key(
            &mut self.certs,
            self.worker.as_mut(),
            &channel_key.key,
            code,
            listed,
            &mut self.certs_from_set,
        )?;
        let (cert_not_before, cert_not_after) = (
            i64::from(code.cert_not_before),
            i64::from(code.cert_not_after),
        );
        if !(cert_not_before <= now_unix_s && now_unix_s <= cert_not_after) {
            return Err(Reason::CertificateNotValid);
        }
        let code_verified = code_verified
            .unwrap_or_else(|| holder_key.verifies(code.code_signed(), &code.code_signature));
        if !code_verified {
            return Err(Reason::BadSignature);
        }
        let generated_at = i64::from(code.generated_at);
        if generated_at > now_unix_s.saturating_add(i64::from(self.config.clock_skew_s)) {
            return Err(Reason::CodeNotYetValid);
        }
        if now_unix_s > generated_at + i64::from(self.config.code_validity_s) {
            return Err(Reason::CodeExpired);
        }
        Ok(VerifiedCode {
            channel_id: code.channel_id,
            channel_key_id: code.channel_key_id,
            alg,
            account: code.account(),
            card_no: code.card_no,
            rider_category: code.rider_category,
            counter: code.counter,
            generated_at,
            cert_not_after,
            cert_digest,
        })
    }

    /// Holder certificates currently cached (for tests and metrics).
    pub fn cached_certificates(&self) -> usize {
        self.certs.len()
    }
}

/// The fleet's set, when made with the verifier's key material, and the certificate's digest:
/// whether the set lists it (its channel signature was checked at the depot) is asked only on
/// a cache miss.
struct Listed<'a> {
    set: Option<&'a CertSet>,
    digest: &'a CertDigest,
}

impl Listed<'_> {
    fn holds(&self) -> bool {
        self.set.is_some_and(|set| set.contains(self.digest))
    }
}

/// Check 6, through the cache: the holder key of a certificate the channel key signed, and,
/// when a worker checked the certificate, the result of check 8 made meanwhile. A certificate
/// the set lists has only its holder key decoded (on the curve, or `bad_certificate` as
/// without the set).
///
/// The cache key is the whole certificate, which includes channel_id, key id and alg, so a hit
/// means this very certificate verified under this very channel key (a key file never has two
/// entries for one (channel, key id, alg); a new key file means a new `Verifier`).
fn holder_key<'c>(
    certs: &'c mut CertCache,
    worker: Option<&mut CertWorker>,
    channel_key: &VerifyKey,
    code: &RideCode,
    listed: Listed<'_>,
    certs_from_set: &mut u64,
) -> Result<(&'c VerifyKey, Option<bool>), Reason> {
    let mut code_verified = None;
    let key = certs.get_or_check(code.cert(), || {
        let alg = channel_key.alg();
        // The holder key, if it decodes and the channel signed its certificate.
        let holder = match worker {
            _ if listed.holds() => {
                *certs_from_set += 1;
                VerifyKey::from_compressed(alg, &code.holder_public_key)
            }
            Some(worker) => {
                // The worker starts on the certificate while this thread decodes the holder
                // key (a point decompression) and checks the code with it.
                let posted = worker.post(channel_key, code.cert_signed(), &code.cert_signature);
                let holder = VerifyKey::from_compressed(alg, &code.holder_public_key);
                code_verified = holder
                    .as_ref()
                    .map(|h| h.verifies(code.code_signed(), &code.code_signature));
                let cert_verified = worker.finish(posted);
                holder.filter(|_| cert_verified)
            }
            None => VerifyKey::from_compressed(alg, &code.holder_public_key)
                .filter(|_| channel_key.verifies(code.cert_signed(), &code.cert_signature)),
        };
        holder.ok_or(Reason::BadCertificate)
    })?;
    Ok((key, code_verified))
}
