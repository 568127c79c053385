//! The phone's side of a ride code, for tests, the demo and benchmarks: key pairs for either
//! algorithm, holder certificates signed by a channel key, codes signed by the holder key, the
//! `ESSC1.` text, and the QR image a scanner would read.
//!
//! Signing is deterministic (RFC 6979 style nonces in both crates), and key generation takes a
//! seed, so every test and demo run is repeatable.

use p256::ecdsa::signature::Signer as _;
use rand::{CryptoRng, RngCore, SeedableRng};

use super::format::{
    self, CERT_BYTES, CERT_SIGNED_BYTES, CODE_BYTES, CODE_SIGNED_BYTES, CODE_VERSION,
    PUBLIC_KEY_BYTES, SIGNATURE_BYTES,
};
use super::keys::{KeyFile, KeyFileEntry, KEY_FILE_VERSION};
use super::{Alg, SM2_SIGNER_ID};
use crate::types::CardNo;

/// Secret scalar size for both curves.
pub const SECRET_KEY_BYTES: usize = 32;
/// Draws of 32 random bytes before giving up on finding a scalar in [1, n): each draw fails
/// with probability below 2^-32, so this bound is never reached by a working RNG.
const KEYGEN_DRAWS_MAX: usize = 16;

/// QR error correction level: M (15 %) keeps a 274-character code at version 12 (65×65
/// modules), easy for a validator's scanner at arm's length on a phone screen.
pub const QR_EC_LEVEL: qrcode::EcLevel = qrcode::EcLevel::M;
/// Pixels per QR module in the rendered PNG.
pub const QR_MODULE_PX: u32 = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IssueError {
    #[error("secret key is not a valid scalar for {0:?}")]
    SecretKey(Alg),
    #[error("random generator gave no valid scalar")]
    Rng,
    #[error("QR encoding failed: {0}")]
    Qr(String),
}

/// A channel or holder key pair.
#[derive(Clone)]
pub enum KeyPair {
    P256(p256::ecdsa::SigningKey),
    Sm2(sm2::dsa::SigningKey),
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyPair({:?}, {})",
            self.alg(),
            hex::encode(self.public_key())
        )
    }
}

impl KeyPair {
    /// From a 32-byte big-endian secret scalar.
    pub fn from_secret_bytes(
        alg: Alg,
        secret: &[u8; SECRET_KEY_BYTES],
    ) -> Result<Self, IssueError> {
        let bad = IssueError::SecretKey(alg);
        Ok(match alg {
            Alg::P256 => {
                KeyPair::P256(p256::ecdsa::SigningKey::from_slice(secret).map_err(|_| bad)?)
            }
            Alg::Sm2 => KeyPair::Sm2(
                sm2::dsa::SigningKey::from_slice(SM2_SIGNER_ID, secret).map_err(|_| bad)?,
            ),
        })
    }

    pub fn generate<R: RngCore + CryptoRng>(alg: Alg, rng: &mut R) -> Result<Self, IssueError> {
        for _ in 0..KEYGEN_DRAWS_MAX {
            let mut secret = [0u8; SECRET_KEY_BYTES];
            rng.fill_bytes(&mut secret);
            if let Ok(pair) = Self::from_secret_bytes(alg, &secret) {
                return Ok(pair);
            }
        }
        Err(IssueError::Rng)
    }

    /// Deterministic key pair: ChaCha20 seeded with `seed`.
    pub fn from_seed(alg: Alg, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        // ChaCha20 does not produce 16 invalid scalars in a row.
        Self::generate(alg, &mut rng).expect("ChaCha20 yields a valid scalar")
    }

    pub fn alg(&self) -> Alg {
        match self {
            KeyPair::P256(_) => Alg::P256,
            KeyPair::Sm2(_) => Alg::Sm2,
        }
    }

    pub fn secret_bytes(&self) -> [u8; SECRET_KEY_BYTES] {
        let mut out = [0u8; SECRET_KEY_BYTES];
        match self {
            KeyPair::P256(k) => out.copy_from_slice(&k.to_bytes()),
            KeyPair::Sm2(k) => out.copy_from_slice(&k.to_bytes()),
        }
        out
    }

    /// SEC1 compressed public key, as the key file and certificates carry it.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_BYTES] {
        let point = match self {
            KeyPair::P256(k) => k.verifying_key().to_encoded_point(true),
            KeyPair::Sm2(k) => {
                let p: sm2::PublicKey = k.verifying_key().into();
                let enc = sm2::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&p, true);
                // Same bytes layout; copy through a slice to share the code below.
                let mut out = [0u8; PUBLIC_KEY_BYTES];
                out.copy_from_slice(enc.as_bytes());
                return out;
            }
        };
        let mut out = [0u8; PUBLIC_KEY_BYTES];
        out.copy_from_slice(point.as_bytes());
        out
    }

    /// r ‖ s over `message` (SHA-256 or SM3 with Z_A inside).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_BYTES] {
        let mut out = [0u8; SIGNATURE_BYTES];
        match self {
            KeyPair::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                out.copy_from_slice(&sig.to_bytes());
            }
            KeyPair::Sm2(k) => {
                let sig: sm2::dsa::Signature = sm2::dsa::signature::Signer::sign(k, message);
                out.copy_from_slice(&sig.to_bytes());
            }
        }
        out
    }
}

/// The fields of a holder certificate. `rider_category` is the raw byte so that tests can
/// write out-of-range values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertFields {
    pub alg: Alg,
    pub channel_id: u16,
    pub channel_key_id: u8,
    pub account_id: u64,
    pub card_no: CardNo,
    pub rider_category: u8,
    pub cert_not_before: u32,
    pub cert_not_after: u32,
    pub holder_public_key: [u8; PUBLIC_KEY_BYTES],
}

/// A holder certificate, bytes [0, 129), signed by `channel`.
pub fn certificate(fields: &CertFields, channel: &KeyPair) -> [u8; CERT_BYTES] {
    let mut cert = [0u8; CERT_BYTES];
    cert[0] = CODE_VERSION;
    cert[1] = fields.alg as u8;
    cert[2..4].copy_from_slice(&fields.channel_id.to_be_bytes());
    cert[4] = fields.channel_key_id;
    cert[5..13].copy_from_slice(&fields.account_id.to_be_bytes());
    cert[13..23].copy_from_slice(&fields.card_no.0);
    cert[23] = fields.rider_category;
    cert[24..28].copy_from_slice(&fields.cert_not_before.to_be_bytes());
    cert[28..32].copy_from_slice(&fields.cert_not_after.to_be_bytes());
    cert[32..65].copy_from_slice(&fields.holder_public_key);
    let signature = channel.sign(&cert[..CERT_SIGNED_BYTES]);
    cert[CERT_SIGNED_BYTES..].copy_from_slice(&signature);
    cert
}

/// A code: certificate, generated_at, counter, signed by the holder key.
pub fn code(
    cert: &[u8; CERT_BYTES],
    generated_at: u32,
    counter: u32,
    holder: &KeyPair,
) -> [u8; CODE_BYTES] {
    let mut bytes = [0u8; CODE_BYTES];
    bytes[..CERT_BYTES].copy_from_slice(cert);
    bytes[129..133].copy_from_slice(&generated_at.to_be_bytes());
    bytes[133..137].copy_from_slice(&counter.to_be_bytes());
    resign_code(&mut bytes, holder);
    bytes
}

/// Signs bytes [0, 65) again with `channel` (tests edit a field, then re-sign).
pub fn resign_certificate(bytes: &mut [u8; CODE_BYTES], channel: &KeyPair) {
    let signature = channel.sign(&bytes[..CERT_SIGNED_BYTES]);
    bytes[CERT_SIGNED_BYTES..CERT_BYTES].copy_from_slice(&signature);
}

/// Signs bytes [0, 137) again with `holder`.
pub fn resign_code(bytes: &mut [u8; CODE_BYTES], holder: &KeyPair) {
    let signature = holder.sign(&bytes[..CODE_SIGNED_BYTES]);
    bytes[CODE_SIGNED_BYTES..].copy_from_slice(&signature);
}

/// The `ESSC1.` text of a code.
pub fn code_text(bytes: &[u8; CODE_BYTES]) -> String {
    format::to_text(bytes)
}

/// The QR code of a ride code text, in byte mode at [`QR_EC_LEVEL`], smallest version that
/// holds it.
pub fn qr_code(text: &str) -> Result<qrcode::QrCode, IssueError> {
    use qrcode::bits::Bits;
    use qrcode::Version;
    let err = |e: qrcode::types::QrError| IssueError::Qr(e.to_string());
    for v in 1..=40 {
        let mut bits = Bits::new(Version::Normal(v));
        if bits.push_byte_data(text.as_bytes()).is_err()
            || bits.push_terminator(QR_EC_LEVEL).is_err()
        {
            continue;
        }
        return qrcode::QrCode::with_bits(bits, QR_EC_LEVEL).map_err(err);
    }
    Err(IssueError::Qr("text too long for any QR version".into()))
}

/// The QR code as a grey image with a quiet zone, [`QR_MODULE_PX`] pixels per module.
pub fn qr_image(text: &str) -> Result<image::GrayImage, IssueError> {
    Ok(qr_code(text)?
        .render::<image::Luma<u8>>()
        .quiet_zone(true)
        .module_dimensions(QR_MODULE_PX, QR_MODULE_PX)
        .build())
}

/// The QR code as PNG file bytes.
pub fn qr_png(text: &str) -> Result<Vec<u8>, IssueError> {
    let img = qr_image(text)?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| IssueError::Qr(e.to_string()))?;
    Ok(out.into_inner())
}

/// QR version number of a [`qr_code`] (1..=40).
pub fn qr_version(code: &qrcode::QrCode) -> i16 {
    match code.version() {
        qrcode::Version::Normal(v) | qrcode::Version::Micro(v) => v,
    }
}

/// The eight channel apps of the Dezhou notice, by channel id.
pub const DEZHOU_CHANNELS: [(u16, &str); 8] = [
    (1, "爱山东APP"),
    (2, "云闪付APP"),
    (3, "中国工商银行APP"),
    (4, "工行融e联APP"),
    (5, "中国农业银行APP"),
    (6, "中国建设银行APP"),
    (7, "邮储银行APP"),
    (8, "山东农信APP"),
];

/// Simulated channel apps for the demo and benchmarks: one key per channel (SM2 for odd
/// channel ids, P-256 for even ones), made from a seed, and holders whose certificates are
/// issued once and reused, as a phone does.
pub struct SimChannels {
    channels: Vec<(u16, KeyPair)>,
    holders: std::collections::HashMap<(u16, u64), (KeyPair, [u8; CERT_BYTES])>,
    seed: u64,
    /// Certificates are valid over this window (unix seconds).
    pub cert_window: (u32, u32),
}

impl SimChannels {
    pub fn new(seed: u64, cert_window: (u32, u32)) -> Self {
        let channels = DEZHOU_CHANNELS
            .iter()
            .map(|(id, _)| {
                let alg = if id % 2 == 1 { Alg::Sm2 } else { Alg::P256 };
                (*id, KeyPair::from_seed(alg, seed ^ (u64::from(*id) << 32)))
            })
            .collect();
        SimChannels {
            channels,
            holders: Default::default(),
            seed,
            cert_window,
        }
    }

    /// The validator's key file for these channels (key id 1 each).
    pub fn key_file(&self) -> KeyFile {
        KeyFile {
            version: KEY_FILE_VERSION,
            channels: self
                .channels
                .iter()
                .map(|(id, k)| KeyFileEntry {
                    channel_id: *id,
                    name: DEZHOU_CHANNELS
                        .iter()
                        .find(|(c, _)| c == id)
                        .map_or("", |(_, n)| n)
                        .to_string(),
                    key_id: 1,
                    alg: k.alg(),
                    public_key: hex::encode(k.public_key()),
                    not_before: i64::from(self.cert_window.0),
                    not_after: i64::from(self.cert_window.1),
                    revoked: false,
                })
                .collect(),
        }
    }

    /// A code from `channel` for `account`, generated at `generated_at` with `counter`. The
    /// holder's key and certificate are made on first use and kept.
    pub fn issue(
        &mut self,
        channel: u16,
        account: u64,
        card_no: CardNo,
        category: crate::types::RiderCategory,
        generated_at: u32,
        counter: u32,
    ) -> Option<String> {
        let (_, channel_key) = self.channels.iter().find(|(id, _)| *id == channel)?;
        let window = self.cert_window;
        let seed = self.seed;
        let (holder, cert) = self.holders.entry((channel, account)).or_insert_with(|| {
            let holder = KeyPair::from_seed(
                channel_key.alg(),
                seed ^ account.rotate_left(17) ^ u64::from(channel),
            );
            let fields = CertFields {
                alg: channel_key.alg(),
                channel_id: channel,
                channel_key_id: 1,
                account_id: account,
                card_no,
                rider_category: category as u8,
                cert_not_before: window.0,
                cert_not_after: window.1,
                holder_public_key: holder.public_key(),
            };
            let cert = certificate(&fields, channel_key);
            (holder, cert)
        });
        Some(code_text(&code(cert, generated_at, counter, holder)))
    }
}

/// One channel (channel 2, key 1) and one holder of it, both from fixed seeds, valid for
/// `window_s` either side of `now`: the smallest world a scan can be verified in, for tests,
/// benches and examples.
pub struct OneChannel {
    pub keys: super::ChannelKeys,
    pub cert: [u8; CERT_BYTES],
    pub holder: KeyPair,
}

impl OneChannel {
    pub fn new(alg: Alg, now: i64, window_s: u32) -> Self {
        let channel = KeyPair::from_seed(alg, 1);
        let holder = KeyPair::from_seed(alg, 2);
        let keys = super::ChannelKeys::from_file(&KeyFile {
            version: KEY_FILE_VERSION,
            channels: vec![KeyFileEntry {
                channel_id: 2,
                name: "one".into(),
                key_id: 1,
                alg,
                public_key: hex::encode(channel.public_key()),
                not_before: now - i64::from(window_s),
                not_after: now + i64::from(window_s),
                revoked: false,
            }],
        })
        .expect("a key file made from a fresh key pair is valid");
        let fields = CertFields {
            alg,
            channel_id: 2,
            channel_key_id: 1,
            account_id: 5,
            card_no: CardNo([0x37, 0x14, 0, 0, 0, 0, 0, 0, 0, 0x01]),
            rider_category: crate::types::RiderCategory::Adult as u8,
            cert_not_before: (now - i64::from(window_s)) as u32,
            cert_not_after: (now + i64::from(window_s)) as u32,
            holder_public_key: holder.public_key(),
        };
        let cert = certificate(&fields, &channel);
        OneChannel { keys, cert, holder }
    }

    /// A code of this holder, generated at `generated_at` with `counter`.
    pub fn code(&self, generated_at: u32, counter: u32) -> [u8; CODE_BYTES] {
        code(&self.cert, generated_at, counter, &self.holder)
    }

    pub fn text(&self, generated_at: u32, counter: u32) -> String {
        code_text(&self.code(generated_at, counter))
    }
}
