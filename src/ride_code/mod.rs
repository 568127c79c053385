//! Electronic social security card ride codes (电子社保卡乘车码): ride-code-v1.
//!
//! A passenger's phone shows a QR code; the scanner hands us its text, and [`Verifier::verify`]
//! runs checks 1–10 of `docs/ride-codes.md` in order, offline. Checks 11–13
//! (blacklist, replay, anti-passback) belong to the engine, which uses [`ReplayCache`] and the
//! fields of [`VerifiedCode`].
//!
//! ```text
//! channel key (key file)  ──signs──▶  holder certificate, bytes [0, 65)
//! holder key (in the cert) ──signs──▶  whole code, bytes [0, 137)
//! ```
//!
//! # Text form
//!
//! `ESSC1.` followed by the 201 bytes below in base64url (RFC 4648 §5) without padding:
//! 268 characters, 274 in all. Anything else is `malformed`.
//!
//! # Bytes (integers big-endian)
//!
//! | offset | size | field | note |
//! | --- | --- | --- | --- |
//! | 0 | 1 | version | 1 |
//! | 1 | 1 | alg | 1 ECDSA P-256/SHA-256, 2 SM2/SM3 (signer ID `1234567812345678`) |
//! | 2 | 2 | channel_id | |
//! | 4 | 1 | channel_key_id | which of the channel's keys signed the certificate |
//! | 5 | 8 | account_id | the holder's account at that channel |
//! | 13 | 10 | card_no | 20 BCD digits, as on the card blacklist |
//! | 23 | 1 | rider_category | 0 adult, 1 student, 2 senior, 3 disabled, 4 veteran |
//! | 24 | 4 | cert_not_before | unix seconds, UTC |
//! | 28 | 4 | cert_not_after | unix seconds, UTC, inclusive |
//! | 32 | 33 | holder_public_key | SEC1 compressed |
//! | 65 | 64 | cert_signature | channel key over bytes [0, 65), r ‖ s |
//! | 129 | 4 | generated_at | unix seconds, UTC |
//! | 133 | 4 | counter | increases with each code an installation makes |
//! | 137 | 64 | code_signature | holder key over bytes [0, 137), r ‖ s |
//!
//! # Files
//!
//! - [`format`]: text → fixed 201-byte layout (check 1), no allocation;
//! - [`keys`]: the key file (trust anchor), keys decoded once at load;
//! - [`verify`]: checks 1–10 and the cache of already-verified holder certificates;
//! - [`cert_set`]: the fleet's verified-certificate set (signed snapshot and deltas from the
//!   depot): certificates whose channel signature need not be checked again;
//! - [`replay_cache`]: bounded memory of accepted codes for check 12;
//! - [`issuer`]: the phone's side (keygen, certificates, codes, QR) for tests, demo, benches.
//!
//! # How the engine uses it
//!
//! ```text
//! let code = verifier.verify(text, now)?;          // checks 1–10, Err(Reason)
//! blacklist: code.card_no, code.account            // check 11 → blacklisted
//! if replay.is_replay(&code, now) → replayed       // check 12
//! anti-passback on code.account                    // check 13 → repeat_tap
//! fare from code.rider_category; journal record made durable; then
//! replay.remember_code(&code, now)
//! ```
//!
//! # Cost of a scan
//!
//! At most two signature checks (certificate, code). A holder whose certificate verified
//! before costs one: the verifier keeps a bounded cache of verified certificates (keyed by the
//! full 129 certificate bytes), and still runs checks 4, 5 and 7 on every scan. A verifier made
//! with [`Verifier::with_cert_worker`] (the engine's) checks a first-seen holder's certificate
//! on a second core while the scanning thread checks the code. A first-seen certificate that
//! the fleet's verified-certificate set lists ([`Verifier::set_cert_set`]) costs one as well:
//! only its channel signature is spared, checks 4, 5 and 7 run as ever. P-256 verifies through `ring`,
//! SM2 through `efficient-sm2` (keys and signatures decoded by RustCrypto `sm2`); nothing on
//! the scan path allocates.
//!
//! ```no_run
//! use fare_validator::ride_code::{ChannelKeys, RideCodeConfig, Verifier};
//! let keys = ChannelKeys::load("fixtures/ride-code-keys.json").expect("key file");
//! let mut verifier = Verifier::new(keys, RideCodeConfig::default());
//! match verifier.verify("ESSC1....", 1_795_824_000) {
//!     Ok(code) => println!("account {}", code.account),
//!     Err(reason) => println!("refused: {reason}"),
//! }
//! ```

pub mod cert_set;
pub mod format;
pub mod issuer;
pub mod keys;
pub mod replay_cache;
pub mod verify;

mod cert_cache;
mod cert_worker;
mod crypto;

pub use cert_set::{CertSet, CertSetDelta, CertSetError};
pub use format::{cert_digest, CertDigest, FormatError, RideCode, CERT_DIGEST_BYTES};
pub use keys::{ChannelKey, ChannelKeys, KeyFile, KeyFileEntry, KeyFileError};
pub use replay_cache::{Remembered, ReplayCache, ReplayKey};
pub use verify::{RideCodeConfig, VerifiedCode, Verifier};

use serde::{Deserialize, Serialize};

/// Signature algorithm of a code: the `alg` byte, and `alg` in the key file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Alg {
    /// ECDSA over NIST P-256 with SHA-256.
    P256 = 1,
    /// SM2 (GB/T 32918.2) with SM3, signer ID [`SM2_SIGNER_ID`].
    Sm2 = 2,
}

impl Alg {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Alg::P256),
            2 => Some(Alg::Sm2),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::P256 => "p256",
            Alg::Sm2 => "sm2",
        }
    }
}

impl std::str::FromStr for Alg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "p256" => Ok(Alg::P256),
            "sm2" => Ok(Alg::Sm2),
            _ => Err(format!("alg must be p256 or sm2, not {s:?}")),
        }
    }
}

/// The SM2 distinguishing identifier (GB/T 35276 default) for both signatures of a code.
pub const SM2_SIGNER_ID: &str = "1234567812345678";
