//! The validator's key file: the channel public keys it trusts (ride-code-v1.md, "Key file").
//!
//! ```json
//! {"version": 1, "channels": [
//!   {"channel_id": 2, "name": "云闪付APP", "key_id": 1, "alg": "p256",
//!    "public_key": "<66 hex digits, SEC1 compressed>", "not_before": 1732752000,
//!    "not_after": 1795824000, "revoked": false}
//! ]}
//! ```
//!
//! Loading checks the whole file and decodes every public key into a ready-to-verify key, so
//! a bad file is refused at start-up with a typed error and the scan path never parses a key.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::crypto::VerifyKey;
use super::format::PUBLIC_KEY_BYTES;
use super::Alg;

/// The only key file version this module reads.
pub const KEY_FILE_VERSION: u32 = 1;
/// Most entries a key file may hold: 8 channels with a handful of key generations each fit
/// many times over, and the scan path's linear lookup stays a few hundred nanoseconds.
pub const KEY_FILE_ENTRIES_MAX: usize = 256;
/// Largest key file read from disk.
pub const KEY_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// The key file as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub channels: Vec<KeyFileEntry>,
}

/// One channel key as written in the key file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFileEntry {
    pub channel_id: u16,
    pub name: String,
    pub key_id: u8,
    pub alg: Alg,
    /// SEC1 compressed point, 66 hex digits.
    pub public_key: String,
    /// Unix seconds, inclusive.
    pub not_before: i64,
    /// Unix seconds, inclusive.
    pub not_after: i64,
    pub revoked: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key file is larger than {KEY_FILE_BYTES_MAX} bytes")]
    TooLarge,
    #[error("key file is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("key file version {0} is not {KEY_FILE_VERSION}")]
    Version(u32),
    #[error("key file has {0} entries, more than {KEY_FILE_ENTRIES_MAX}")]
    TooManyEntries(usize),
    #[error("channel {channel_id} key {key_id}: public_key must be 66 hex digits")]
    PublicKeyHex { channel_id: u16, key_id: u8 },
    #[error("channel {channel_id} key {key_id}: public_key is not a point on the {alg:?} curve")]
    PublicKeyPoint {
        channel_id: u16,
        key_id: u8,
        alg: Alg,
    },
    #[error("channel {channel_id} key {key_id} ({alg:?}) is listed twice")]
    Duplicate {
        channel_id: u16,
        key_id: u8,
        alg: Alg,
    },
    #[error("channel {channel_id} key {key_id}: not_before is after not_after")]
    Window { channel_id: u16, key_id: u8 },
}

/// A channel key ready for the scan path.
#[derive(Clone, Debug)]
pub struct ChannelKey {
    pub channel_id: u16,
    pub key_id: u8,
    pub alg: Alg,
    pub not_before: i64,
    pub not_after: i64,
    pub revoked: bool,
    /// SEC1 compressed, as the key file gives it.
    pub public_key: [u8; PUBLIC_KEY_BYTES],
    pub(crate) key: VerifyKey,
}

impl ChannelKey {
    /// Check 5: not revoked and not_before ≤ now ≤ not_after.
    pub fn is_valid_at(&self, now_unix_s: i64) -> bool {
        !self.revoked && self.not_before <= now_unix_s && now_unix_s <= self.not_after
    }
}

/// All trusted channel keys, checked and decoded.
#[derive(Clone, Debug, Default)]
pub struct ChannelKeys {
    keys: Vec<ChannelKey>,
}

impl ChannelKeys {
    /// No keys at all: every well-formed code is then `unsupported_channel`.
    pub fn empty() -> Self {
        ChannelKeys { keys: Vec::new() }
    }

    /// Reads and checks a key file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        use std::io::Read as _;
        let path = path.as_ref();
        let io = |source| KeyFileError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        file.take(KEY_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > KEY_FILE_BYTES_MAX {
            return Err(KeyFileError::TooLarge);
        }
        Self::from_json(&text)
    }

    pub fn from_json(text: &str) -> Result<Self, KeyFileError> {
        Self::from_file(&serde_json::from_str(text)?)
    }

    /// Checks every entry and decodes its public key.
    pub fn from_file(file: &KeyFile) -> Result<Self, KeyFileError> {
        if file.version != KEY_FILE_VERSION {
            return Err(KeyFileError::Version(file.version));
        }
        if file.channels.len() > KEY_FILE_ENTRIES_MAX {
            return Err(KeyFileError::TooManyEntries(file.channels.len()));
        }
        let mut keys: Vec<ChannelKey> = Vec::with_capacity(file.channels.len());
        for entry in &file.channels {
            let key = decode_entry(entry)?;
            if keys
                .iter()
                .any(|k| (k.channel_id, k.key_id, k.alg) == (key.channel_id, key.key_id, key.alg))
            {
                return Err(KeyFileError::Duplicate {
                    channel_id: key.channel_id,
                    key_id: key.key_id,
                    alg: key.alg,
                });
            }
            keys.push(key);
        }
        Ok(ChannelKeys { keys })
    }

    /// Check 3: whether any key of this channel is listed.
    pub fn has_channel(&self, channel_id: u16) -> bool {
        self.keys.iter().any(|k| k.channel_id == channel_id)
    }

    /// Check 4: the key with this channel, key id and algorithm.
    pub fn find(&self, channel_id: u16, key_id: u8, alg: Alg) -> Option<&ChannelKey> {
        self.keys
            .iter()
            .find(|k| k.channel_id == channel_id && k.key_id == key_id && k.alg == alg)
    }

    /// SHA-256 over the key material, whatever the order of the file and the keys' dates:
    /// for each key in (channel_id, key_id, alg) order, channel_id (2, big-endian), key_id
    /// (1), alg (1), public key (33). A verified-certificate set names the keys its
    /// certificates were checked with by this digest ([`super::cert_set`]).
    pub fn material_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut sorted: Vec<&ChannelKey> = self.keys.iter().collect();
        sorted.sort_by_key(|k| (k.channel_id, k.key_id, k.alg as u8));
        let mut h = Sha256::new();
        for k in sorted {
            h.update(k.channel_id.to_be_bytes());
            h.update([k.key_id, k.alg as u8]);
            h.update(k.public_key);
        }
        h.finalize().into()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ChannelKey> {
        self.keys.iter()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn decode_entry(entry: &KeyFileEntry) -> Result<ChannelKey, KeyFileError> {
    let (channel_id, key_id, alg) = (entry.channel_id, entry.key_id, entry.alg);
    let mut sec1 = [0u8; PUBLIC_KEY_BYTES];
    hex::decode_to_slice(&entry.public_key, &mut sec1)
        .map_err(|_| KeyFileError::PublicKeyHex { channel_id, key_id })?;
    let key = VerifyKey::from_compressed(alg, &sec1).ok_or(KeyFileError::PublicKeyPoint {
        channel_id,
        key_id,
        alg,
    })?;
    if entry.not_before > entry.not_after {
        return Err(KeyFileError::Window { channel_id, key_id });
    }
    Ok(ChannelKey {
        channel_id,
        key_id,
        alg,
        not_before: entry.not_before,
        not_after: entry.not_after,
        revoked: entry.revoked,
        public_key: sec1,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/ride-code-keys.json");
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn fixture_key_file_loads_every_entry() {
        let keys = ChannelKeys::from_json(&fixture()).unwrap();
        assert_eq!(keys.len(), 17);
        assert!(keys.has_channel(8));
        assert!(!keys.has_channel(9));
        let k = keys.find(2, 1, Alg::P256).unwrap();
        assert!(k.is_valid_at(1_795_824_000));
        assert!(keys.find(2, 1, Alg::Sm2).is_none());
        assert!(!keys
            .find(2, 2, Alg::P256)
            .unwrap()
            .is_valid_at(1_795_824_000));
    }

    type IsExpected = fn(&KeyFileError) -> bool;

    #[test]
    fn bad_key_files_are_typed_errors() {
        let good = fixture();
        let cases: [(String, IsExpected); 5] = [
            (good.replacen("\"version\": 1", "\"version\": 2", 1), |e| {
                matches!(e, KeyFileError::Version(2))
            }),
            (good.replacen("\"sm2\"", "\"rsa\"", 1), |e| {
                matches!(e, KeyFileError::Json(_))
            }),
            (good.replacen("020916d25a", "020916d25", 1), |e| {
                matches!(e, KeyFileError::PublicKeyHex { channel_id: 1, .. })
            }),
            // Prefix 0x05 is no SEC1 compressed point.
            (good.replacen("020916d25a", "050916d25a", 1), |e| {
                matches!(e, KeyFileError::PublicKeyPoint { channel_id: 1, .. })
            }),
            (good.replacen("\"key_id\": 2", "\"key_id\": 1", 1), |e| {
                matches!(
                    e,
                    KeyFileError::Duplicate {
                        channel_id: 1,
                        key_id: 1,
                        ..
                    }
                )
            }),
        ];
        for (text, is_expected) in cases {
            let err = ChannelKeys::from_json(&text).unwrap_err();
            assert!(is_expected(&err), "{err}");
        }
        let missing = ChannelKeys::load("/nonexistent/keys.json").unwrap_err();
        assert!(matches!(missing, KeyFileError::Io { .. }));
    }
}
