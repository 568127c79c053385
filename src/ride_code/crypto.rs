//! Ready-to-verify public keys for both algorithms, decoded once (at key-file load or when a
//! holder certificate is first verified) so that the scan path never parses a point.
//!
//! P-256 verification goes through `ring` (ECDSA_P256_SHA256_FIXED: r ‖ s, each 32 bytes),
//! which takes uncompressed SEC1 keys only; the `p256` crate decompresses and checks the point
//! once. SM2 (GB/T 32918.2 §7) is split between crates, none of it hand-rolled: RustCrypto
//! `sm2` decompresses and checks the key and parses the signature (B1, B2: r and s in
//! [1, n−1]) and adds r + s (B5: t ≠ 0); `sm3` hashes Z_A (precomputed per key) and
//! e = SM3(Z_A ‖ M) (B3, B4); `efficient-sm2` computes [s]G + [t]P_A and compares its x with
//! r − e (B6, B7), rejecting the point at infinity. Both algorithms refuse r or s equal to
//! zero or not below the curve order.

use p256::elliptic_curve::sec1::ToEncodedPoint;
use sm3::Digest as _;

use super::format::{PUBLIC_KEY_BYTES, SIGNATURE_BYTES};
use super::{Alg, SM2_SIGNER_ID};

/// Uncompressed SEC1 point: 0x04 ‖ x ‖ y.
const UNCOMPRESSED_BYTES: usize = 65;
const COORDINATE_BYTES: usize = 32;

/// GB/T 32918.5 curve parameters a, b, x_G, y_G, hashed into Z_A (GB/T 32918.2 §5.5).
const SM2_A: [u8; 32] =
    hex_literal("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC");
const SM2_B: [u8; 32] =
    hex_literal("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93");
const SM2_GX: [u8; 32] =
    hex_literal("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7");
const SM2_GY: [u8; 32] =
    hex_literal("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0");

const fn hex_literal(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("not an upper-case hex digit"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 64, "a 32-byte constant is 64 hex digits");
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// An SM2 holder or channel key, ready for `efficient-sm2`, with Z_A for [`SM2_SIGNER_ID`].
#[derive(Clone)]
pub(crate) struct Sm2Key {
    key: efficient_sm2::PublicKey,
    z: [u8; 32],
}

impl std::fmt::Debug for Sm2Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sm2Key")
            .field("point", &hex::encode(self.key.bytes_less_safe()))
            .finish()
    }
}

impl Sm2Key {
    fn new(point: [u8; UNCOMPRESSED_BYTES]) -> Self {
        let id = SM2_SIGNER_ID.as_bytes();
        let entl = u16::try_from(id.len() * 8).expect("the signer ID is 16 bytes");
        let z = sm3::Sm3::new()
            .chain_update(entl.to_be_bytes())
            .chain_update(id)
            .chain_update(SM2_A)
            .chain_update(SM2_B)
            .chain_update(SM2_GX)
            .chain_update(SM2_GY)
            .chain_update(&point[1..])
            .finalize()
            .into();
        Sm2Key {
            key: efficient_sm2::PublicKey::from_slice(&point[1..]),
            z,
        }
    }

    fn verifies(&self, message: &[u8], signature: &[u8; SIGNATURE_BYTES]) -> bool {
        // B1, B2: r and s are non-zero scalars below n (checked by the parse).
        let Ok(sig) = sm2::dsa::Signature::from_slice(signature) else {
            return false;
        };
        // B5: t = (r + s) mod n must not be 0.
        let t: sm2::Scalar = *sig.r() + *sig.s();
        if bool::from(t.is_zero()) {
            return false;
        }
        // B3, B4: e = SM3(Z_A ‖ M).
        let e: [u8; 32] = sm3::Sm3::new()
            .chain_update(self.z)
            .chain_update(message)
            .finalize()
            .into();
        // B6, B7.
        let (r, s) = signature.split_at(COORDINATE_BYTES);
        let Ok(sig) = efficient_sm2::Signature::new(r, s) else {
            return false;
        };
        sig.verify_digest(&self.key, &e).is_ok()
    }
}

#[derive(Clone, Debug)]
pub(crate) enum VerifyKey {
    P256([u8; UNCOMPRESSED_BYTES]),
    Sm2(Sm2Key),
}

fn uncompressed(bytes: &[u8]) -> Option<[u8; UNCOMPRESSED_BYTES]> {
    bytes.try_into().ok()
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
                uncompressed(point.to_encoded_point(false).as_bytes()).map(VerifyKey::P256)
            }
            Alg::Sm2 => {
                let point = sm2::PublicKey::from_sec1_bytes(sec1).ok()?;
                let encoded = sm2::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&point, false);
                uncompressed(encoded.as_bytes()).map(|p| VerifyKey::Sm2(Sm2Key::new(p)))
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
            VerifyKey::Sm2(key) => key.verifies(message, signature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::dsa::signature::Signer as _;

    fn sm2_pair(seed: u8) -> (sm2::dsa::SigningKey, VerifyKey) {
        let sk = sm2::dsa::SigningKey::from_slice(SM2_SIGNER_ID, &[seed; 32]).unwrap();
        let p: sm2::PublicKey = sk.verifying_key().into();
        let c = sm2::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&p, true);
        let key = VerifyKey::from_compressed(Alg::Sm2, c.as_bytes().try_into().unwrap()).unwrap();
        (sk, key)
    }

    #[test]
    fn sm2_split_verification_agrees_with_the_sm2_crate() {
        use sm2::dsa::signature::Verifier as _;
        let (sk, key) = sm2_pair(7);
        let (_, other) = sm2_pair(8);
        for len in [0usize, 1, 64, 136, 201] {
            let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let sig: sm2::dsa::Signature = sk.sign(&msg);
            assert!(sk.verifying_key().verify(&msg, &sig).is_ok());
            let bytes: [u8; SIGNATURE_BYTES] = sig.to_bytes().into();
            assert!(key.verifies(&msg, &bytes), "len {len}");
            assert!(!other.verifies(&msg, &bytes));
            for bit in [0usize, 100, 255, 256, 400, 511] {
                let mut bad = bytes;
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(!key.verifies(&msg, &bad), "bit {bit}");
            }
            let mut wrong = msg.clone();
            wrong.push(1);
            assert!(!key.verifies(&wrong, &bytes));
        }
    }

    #[test]
    fn sm2_signatures_out_of_range_are_refused() {
        let (_, key) = sm2_pair(9);
        let n = hex_literal("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123");
        let one = {
            let mut a = [0u8; 32];
            a[31] = 1;
            a
        };
        for (r, s) in [
            ([0u8; 32], one),
            (one, [0u8; 32]),
            (n, one),
            (one, n),
            ([0xFF; 32], one),
        ] {
            let mut sig = [0u8; SIGNATURE_BYTES];
            sig[..32].copy_from_slice(&r);
            sig[32..].copy_from_slice(&s);
            assert!(!key.verifies(b"m", &sig));
        }
        // r + s = n (t = 0).
        let mut s = n;
        s[31] -= 1;
        let mut sig = [0u8; SIGNATURE_BYTES];
        sig[..32].copy_from_slice(&one);
        sig[32..].copy_from_slice(&s);
        assert!(!key.verifies(b"m", &sig));
    }
}
