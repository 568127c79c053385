//! Ready-to-verify public keys for both algorithms, decoded once (at key-file load or when a
//! holder certificate is first verified) so that the scan path never parses a point.
//!
//! P-256 verification goes through `ring` (ECDSA_P256_SHA256_FIXED: r ‖ s, each 32 bytes),
//! which takes uncompressed SEC1 keys only; the `p256` crate decompresses and checks the point
//! once. SM2 goes through RustCrypto `sm2`, whose verifying key holds the precomputed Z_A.
//! Both refuse r or s equal to zero or not below the curve order.

use p256::elliptic_curve::sec1::ToEncodedPoint;
use sm2::dsa::signature::Verifier as _;

use super::format::{PUBLIC_KEY_BYTES, SIGNATURE_BYTES};
use super::{Alg, SM2_SIGNER_ID};

/// Uncompressed SEC1 P-256 point: 0x04 ‖ x ‖ y.
const P256_UNCOMPRESSED_BYTES: usize = 65;

#[derive(Clone, Debug)]
pub(crate) enum VerifyKey {
    P256([u8; P256_UNCOMPRESSED_BYTES]),
    Sm2(sm2::dsa::VerifyingKey),
}

impl VerifyKey {
    /// Decodes a SEC1 compressed point; `None` unless it is a point on the curve (and not the
    /// identity, which has no 33-byte encoding).
    pub(crate) fn from_compressed(alg: Alg, sec1: &[u8; PUBLIC_KEY_BYTES]) -> Option<Self> {
        if sec1[0] != 0x02 && sec1[0] != 0x03 {
            return None;
        }
        match alg {
            Alg::P256 => {
                let point = p256::PublicKey::from_sec1_bytes(sec1).ok()?;
                let encoded = point.to_encoded_point(false);
                let mut out = [0u8; P256_UNCOMPRESSED_BYTES];
                if encoded.as_bytes().len() != P256_UNCOMPRESSED_BYTES {
                    return None;
                }
                out.copy_from_slice(encoded.as_bytes());
                Some(VerifyKey::P256(out))
            }
            Alg::Sm2 => {
                let point = sm2::PublicKey::from_sec1_bytes(sec1).ok()?;
                sm2::dsa::VerifyingKey::new(SM2_SIGNER_ID, point)
                    .ok()
                    .map(VerifyKey::Sm2)
            }
        }
    }

    pub(crate) fn alg(&self) -> Alg {
        match self {
            VerifyKey::P256(_) => Alg::P256,
            VerifyKey::Sm2(_) => Alg::Sm2,
        }
    }

    /// True when `signature` (r ‖ s) is this key's signature over `message`.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8; SIGNATURE_BYTES]) -> bool {
        match self {
            VerifyKey::P256(point) => ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                &point[..],
            )
            .verify(message, signature)
            .is_ok(),
            VerifyKey::Sm2(key) => match sm2::dsa::Signature::from_slice(signature) {
                Ok(sig) => key.verify(message, &sig).is_ok(),
                Err(_) => false,
            },
        }
    }
}
