//! The ride code wire format: text form and the fixed 201-byte layout (check 1).
//!
//! See the byte table in the [module docs](super). Parsing decodes into a `[u8; 201]` on the
//! stack and copies fields into fixed arrays: nothing is allocated, and every malformation has
//! its own [`FormatError`], all of which the verifier reports as `malformed`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::types::{AccountId, CardNo, Reason, RiderCategory};

/// What the text starts with, exactly (case matters).
pub const TEXT_PREFIX: &str = "ESSC1.";
/// Decoded size of a code.
pub const CODE_BYTES: usize = 201;
/// base64url characters after the prefix: 201 bytes = 67 groups of 3 = 268 characters, so
/// there are never trailing bits or padding.
pub const CODE_BASE64_CHARS: usize = 268;
/// Total text length.
pub const CODE_TEXT_CHARS: usize = TEXT_PREFIX.len() + CODE_BASE64_CHARS;
/// The only version this module reads.
pub const CODE_VERSION: u8 = 1;

/// The channel key signs bytes [0, 65).
pub const CERT_SIGNED_BYTES: usize = 65;
/// The holder certificate is bytes [0, 129): signed part plus channel signature.
pub const CERT_BYTES: usize = 129;
/// The holder key signs bytes [0, 137).
pub const CODE_SIGNED_BYTES: usize = 137;
/// SHA-256 of the holder certificate (bytes [0, 129)): its identity in journal records and
/// in the fleet's verified-certificate set.
pub const CERT_DIGEST_BYTES: usize = 32;
/// SEC1 compressed point.
pub const PUBLIC_KEY_BYTES: usize = 33;
/// r ‖ s, 32 bytes each.
pub const SIGNATURE_BYTES: usize = 64;

/// Why a text is not a ride code. Every variant is [`Reason::Malformed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("text does not start with {TEXT_PREFIX}")]
    Prefix,
    #[error("text must be {CODE_TEXT_CHARS} characters, got {0}")]
    Length(usize),
    #[error("not base64url without padding")]
    Base64,
    #[error("version {0} is not {CODE_VERSION}")]
    Version(u8),
    #[error("card_no holds a non-decimal digit")]
    CardNo,
    #[error("rider_category {0} is not 0..=4")]
    RiderCategory(u8),
}

impl From<FormatError> for Reason {
    fn from(_: FormatError) -> Self {
        Reason::Malformed
    }
}

/// A ride code that passed check 1, fields decoded; signatures not yet checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RideCode {
    /// The 201 bytes, for the signed ranges and the certificate cache key.
    pub bytes: [u8; CODE_BYTES],
    /// Raw `alg` byte: check 2 decides whether it is supported.
    pub alg: u8,
    pub channel_id: u16,
    pub channel_key_id: u8,
    pub account_id: u64,
    pub card_no: CardNo,
    pub rider_category: RiderCategory,
    pub cert_not_before: u32,
    pub cert_not_after: u32,
    pub holder_public_key: [u8; PUBLIC_KEY_BYTES],
    pub cert_signature: [u8; SIGNATURE_BYTES],
    pub generated_at: u32,
    pub counter: u32,
    pub code_signature: [u8; SIGNATURE_BYTES],
}

impl RideCode {
    /// Check 1: the text form, length 201, version 1, card_no all decimal digits.
    ///
    /// A rider_category outside 0..=4 is also refused here: the spec lists no later check for
    /// it, and a category the fare table cannot price is a malformed code, not a free ride.
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let text = text.as_bytes();
        if text.len() != CODE_TEXT_CHARS {
            return Err(FormatError::Length(text.len()));
        }
        let (prefix, body) = text.split_at(TEXT_PREFIX.len());
        if prefix != TEXT_PREFIX.as_bytes() {
            return Err(FormatError::Prefix);
        }
        let mut bytes = [0u8; CODE_BYTES];
        // URL_SAFE_NO_PAD refuses '=', the standard alphabet's '+' and '/', and non-canonical
        // trailing bits; 268 characters decode to exactly 201 bytes.
        match URL_SAFE_NO_PAD.decode_slice(body, &mut bytes) {
            Ok(CODE_BYTES) => {}
            _ => return Err(FormatError::Base64),
        }
        Self::from_bytes(bytes)
    }

    /// Check 1 on already-decoded bytes.
    pub fn from_bytes(bytes: [u8; CODE_BYTES]) -> Result<Self, FormatError> {
        if bytes[0] != CODE_VERSION {
            return Err(FormatError::Version(bytes[0]));
        }
        let card_no = CardNo::from_bcd(array(&bytes, 13)).map_err(|_| FormatError::CardNo)?;
        let rider_category =
            RiderCategory::from_u8(bytes[23]).ok_or(FormatError::RiderCategory(bytes[23]))?;
        Ok(RideCode {
            bytes,
            alg: bytes[1],
            channel_id: u16::from_be_bytes(array(&bytes, 2)),
            channel_key_id: bytes[4],
            account_id: u64::from_be_bytes(array(&bytes, 5)),
            card_no,
            rider_category,
            cert_not_before: u32::from_be_bytes(array(&bytes, 24)),
            cert_not_after: u32::from_be_bytes(array(&bytes, 28)),
            holder_public_key: array(&bytes, 32),
            cert_signature: array(&bytes, 65),
            generated_at: u32::from_be_bytes(array(&bytes, 129)),
            counter: u32::from_be_bytes(array(&bytes, 133)),
            code_signature: array(&bytes, 137),
        })
    }

    pub fn account(&self) -> AccountId {
        AccountId {
            channel: self.channel_id,
            account: self.account_id,
        }
    }

    /// Bytes the channel key signs.
    pub fn cert_signed(&self) -> &[u8; CERT_SIGNED_BYTES] {
        self.bytes
            .first_chunk::<CERT_SIGNED_BYTES>()
            .expect("CERT_SIGNED_BYTES < CODE_BYTES")
    }

    /// The whole holder certificate: the cache key of a verified certificate.
    pub fn cert(&self) -> &[u8; CERT_BYTES] {
        self.bytes
            .first_chunk::<CERT_BYTES>()
            .expect("CERT_BYTES < CODE_BYTES")
    }

    /// SHA-256 of [`Self::cert`]: the certificate's signed bytes and the channel's signature.
    pub fn cert_digest(&self) -> CertDigest {
        cert_digest(self.cert())
    }

    /// Bytes the holder key signs.
    pub fn code_signed(&self) -> &[u8] {
        &self.bytes[..CODE_SIGNED_BYTES]
    }
}

/// A holder certificate's SHA-256 ([`CERT_DIGEST_BYTES`]).
pub type CertDigest = [u8; CERT_DIGEST_BYTES];

/// SHA-256 of a holder certificate's 129 bytes (signed part and channel signature); no heap.
pub fn cert_digest(cert: &[u8; CERT_BYTES]) -> CertDigest {
    use sha2::{Digest, Sha256};
    Sha256::digest(cert).into()
}

/// Encodes 201 bytes as the text form.
pub fn to_text(bytes: &[u8; CODE_BYTES]) -> String {
    let mut text = String::with_capacity(CODE_TEXT_CHARS);
    text.push_str(TEXT_PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut text);
    text
}

/// A fixed-size field at a fixed offset of the layout. The offsets are constants of the
/// table above, all in range, so a failure here is a bug.
fn array<const N: usize>(bytes: &[u8; CODE_BYTES], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[offset..offset + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_bytes() -> [u8; CODE_BYTES] {
        let mut b = [0u8; CODE_BYTES];
        b[0] = 1;
        b[1] = 1;
        b[2..4].copy_from_slice(&2u16.to_be_bytes());
        b[13..23].copy_from_slice(&[0x37, 0x14, 0, 0, 0, 0, 0, 0, 0, 0x01]);
        b[129..133].copy_from_slice(&1_795_824_000u32.to_be_bytes());
        b
    }

    #[test]
    fn round_trips_text_and_fields() {
        let text = to_text(&sample_bytes());
        assert_eq!(text.len(), CODE_TEXT_CHARS);
        let code = RideCode::parse(&text).unwrap();
        assert_eq!(code.bytes, sample_bytes());
        assert_eq!(code.channel_id, 2);
        assert_eq!(code.card_no.to_string(), "37140000000000000001");
        assert_eq!(code.generated_at, 1_795_824_000);
    }

    #[test]
    fn prefix_is_case_sensitive() {
        let text = to_text(&sample_bytes()).replacen("ESSC1.", "essc1.", 1);
        assert_eq!(RideCode::parse(&text), Err(FormatError::Prefix));
    }

    #[test]
    fn padding_and_standard_alphabet_are_malformed() {
        let text = to_text(&sample_bytes());
        let padded = format!("{}=", &text[..text.len() - 1]);
        assert_eq!(RideCode::parse(&padded), Err(FormatError::Base64));
        let mut plus = text.clone().into_bytes();
        plus[10] = b'+';
        let plus = String::from_utf8(plus).unwrap();
        assert_eq!(RideCode::parse(&plus), Err(FormatError::Base64));
        assert_eq!(
            RideCode::parse(&format!("{text}A")),
            Err(FormatError::Length(CODE_TEXT_CHARS + 1))
        );
    }

    #[test]
    fn multibyte_text_is_malformed_not_a_panic() {
        let text = to_text(&sample_bytes());
        // Replace two ASCII chars by one 2-byte char: same byte length, not base64.
        let odd = format!("{}é", &text[..text.len() - 2]);
        assert_eq!(odd.len(), CODE_TEXT_CHARS);
        assert_eq!(RideCode::parse(&odd), Err(FormatError::Base64));
    }

    #[test]
    fn version_card_no_and_category_are_checked() {
        let mut b = sample_bytes();
        b[0] = 2;
        assert_eq!(RideCode::from_bytes(b), Err(FormatError::Version(2)));
        let mut b = sample_bytes();
        b[15] = 0x0A;
        assert_eq!(RideCode::from_bytes(b), Err(FormatError::CardNo));
        let mut b = sample_bytes();
        b[23] = 5;
        assert_eq!(RideCode::from_bytes(b), Err(FormatError::RiderCategory(5)));
    }
}
