//! The issuer's side of QuickPass (闪付), for the demo and tests: a test UnionPay CA and a
//! test card issuer that personalise simulated cards ([`super::sim_quickpass`]) a validator
//! authenticates by fDDA, as a bank's personalisation bureau would with its real keys.
//!
//! The keys are test keys, public on purpose, in `fixtures/quickpass-test-issuer.json`
//! (docs/quickpass.md, "The demo"): a CA key (RID `A000000333`, index `F8`, 1152 bits, usable
//! through 2031-12-31), the issuer key it certifies (1024 bits, issuer identifier `628888`,
//! certificate valid through December 2030), one card (ICC) key of 1024 bits that every card
//! signs its dynamic data with (each card has its own ICC certificate, binding that key to its
//! PAN and expiry), and a forger's key of the issuer key's length that the CA never
//! certified. All exponents are 3. A bus in service never trusts this CA.
//!
//! Certificates follow EMV Book 2 (the formats [`super::quickpass`] checks):
//!
//! | certificate | recovered data (before the signer's private-key operation) |
//! | --- | --- |
//! | issuer `90` (Table 13), N_CA bytes | `6A 02` ‖ issuer identifier (cn 4, `F`-padded) ‖ expiry MMYY ‖ serial (3) ‖ `01 01` ‖ N_I ‖ exponent length ‖ leftmost N_CA − 36 bytes of the issuer modulus ‖ SHA-1 ‖ `BC`; `92` holds the rest of the modulus |
//! | ICC `9F46` (Table 14), N_I bytes | `6A 04` ‖ PAN (cn 10, `F`-padded) ‖ expiry MMYY ‖ serial (3) ‖ `01 01` ‖ N_IC ‖ exponent length ‖ leftmost N_I − 42 bytes of the ICC modulus ‖ SHA-1 ‖ `BC`; `9F48` holds the rest |
//!
//! The SHA-1 covers the bytes from the format to the modulus part ‖ the remainder ‖ the
//! exponent, and for the ICC certificate also the static data to be authenticated (the AIP:
//! `9F4A` lists `82`). The private-key operation is RustCrypto `rsa`'s raw one (its hazmat
//! `rsa_decrypt`, with the primes for the CRT); SHA-1 is the `sha1` crate.

use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey};
use serde::Deserialize;
use sha1::{Digest, Sha1};

use super::quickpass::{parse_ymd, CaKeys, Pan, UNIONPAY_RID};
use super::sim_quickpass::QuickPassSpec;

/// The test CA and issuer keys (module doc).
pub const TEST_ISSUER_JSON: &str = include_str!("../../fixtures/quickpass-test-issuer.json");
/// The AID of the cards personalised here (UnionPay debit).
pub const TEST_AID: &str = "A000000333010101";
/// The AIP of the cards personalised here: offline data authentication by (f)DDA supported.
pub const TEST_AIP: [u8; 2] = [0x20, 0x00];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[allow(dead_code)]
    note: String,
    ca: CaEntry,
    issuer: IssuerEntry,
    icc: KeyEntry,
    forger: KeyEntry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaEntry {
    index: String,
    expires: String,
    key: KeyEntry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerEntry {
    /// 3 to 8 leftmost PAN digits.
    identifier: String,
    /// The issuer certificate's expiry, MMYY.
    cert_expiry: String,
    key: KeyEntry,
}

/// An RSA key pair in hex: modulus, public and private exponents, primes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    n: String,
    e: String,
    d: String,
    p: String,
    q: String,
}

/// An RSA private key and its modulus's length, bytes.
struct KeyPair {
    key: RsaPrivateKey,
    n_bytes: usize,
}

fn big(name: &str, v: &str) -> Result<BigUint, String> {
    hex::decode(v)
        .map(|b| BigUint::from_bytes_be(&b))
        .map_err(|_| format!("{name} must be hex"))
}

impl KeyPair {
    fn from_entry(name: &str, k: &KeyEntry) -> Result<KeyPair, String> {
        let key = RsaPrivateKey::from_components(
            big(name, &k.n)?,
            big(name, &k.e)?,
            big(name, &k.d)?,
            vec![big(name, &k.p)?, big(name, &k.q)?],
        )
        .map_err(|e| format!("{name}: {e}"))?;
        key.validate().map_err(|e| format!("{name}: {e}"))?;
        let n_bytes = key.size();
        Ok(KeyPair { key, n_bytes })
    }

    fn modulus(&self) -> Vec<u8> {
        self.key.n().to_bytes_be()
    }

    fn exponent(&self) -> Vec<u8> {
        self.key.e().to_bytes_be()
    }

    /// The private-key operation on `plain` (as long as the modulus, below it).
    fn sign(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let m = BigUint::from_bytes_be(plain);
        let s = rsa::hazmat::rsa_decrypt(None::<&mut rand_chacha::ChaCha8Rng>, &self.key, &m)
            .map_err(|e| e.to_string())?;
        let b = s.to_bytes_be();
        let mut out = vec![0u8; self.n_bytes.saturating_sub(b.len())];
        out.extend_from_slice(&b);
        Ok(out)
    }
}

/// A certificate made: the certificate itself and the remainder of the certified modulus.
struct Certificate {
    cert: Vec<u8>,
    remainder: Vec<u8>,
}

/// EMV Book 2 Tables 13 and 14: `head` (format to exponent length) ‖ the leftmost part of
/// `modulus` (padded with `BB`) ‖ SHA-1 over that ‖ the remainder ‖ `exponent` ‖ `static_data`
/// ‖ `BC`, signed with `signer`.
fn certify(
    signer: &KeyPair,
    head: &[u8],
    modulus: &[u8],
    exponent: &[u8],
    static_data: &[u8],
) -> Result<Certificate, String> {
    let n = signer.n_bytes;
    let room = n
        .checked_sub(1 + head.len() + 21)
        .ok_or("signer key too short")?;
    let (left, remainder) = modulus.split_at(modulus.len().min(room));
    let mut x = Vec::with_capacity(n);
    x.push(0x6A);
    x.extend_from_slice(head);
    x.extend_from_slice(left);
    x.resize(1 + head.len() + room, 0xBB);
    let mut h = Sha1::new();
    h.update(&x[1..]);
    h.update(remainder);
    h.update(exponent);
    h.update(static_data);
    x.extend_from_slice(&h.finalize());
    x.push(0xBC);
    Ok(Certificate {
        cert: signer.sign(&x)?,
        remainder: remainder.to_vec(),
    })
}

/// Digits as cn (compressed numeric), `F`-padded to `len` bytes.
fn cn(digits: &str, len: usize) -> Result<Vec<u8>, String> {
    if digits.len() > 2 * len || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{digits:?}: not up to {} digits", 2 * len));
    }
    let mut nibbles: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
    nibbles.resize(2 * len, 0x0F);
    Ok(nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect())
}

/// `YYYY-MM-DD` as the certificate expiry MMYY (n4, BCD).
fn mmyy(date: &str) -> Result<[u8; 2], String> {
    let ymd = parse_ymd(date).ok_or_else(|| format!("{date:?} is not YYYY-MM-DD"))?;
    let bcd = |v: u32| ((v / 10) << 4 | (v % 10)) as u8;
    Ok([bcd(ymd / 100 % 100), bcd(ymd / 10_000 % 100)])
}

/// The test UnionPay CA and card issuer (module doc).
pub struct TestIssuer {
    ca: KeyPair,
    ca_index: u8,
    ca_expires: String,
    issuer: KeyPair,
    issuer_id: String,
    icc: KeyPair,
    forger: KeyPair,
    /// The issuer certificate under the CA, made once: every card carries it.
    issuer_cert: Certificate,
    icc_private_exponent: String,
}

impl TestIssuer {
    /// The keys of `fixtures/quickpass-test-issuer.json`, the issuer certified by the CA.
    pub fn load() -> Result<TestIssuer, String> {
        let f: KeyFile = serde_json::from_str(TEST_ISSUER_JSON).map_err(|e| e.to_string())?;
        let ca = KeyPair::from_entry("ca", &f.ca.key)?;
        let issuer = KeyPair::from_entry("issuer", &f.issuer.key)?;
        let ca_index = match hex::decode(&f.ca.index).as_deref() {
            Ok([i]) => *i,
            _ => return Err("ca.index must be 2 hex digits".into()),
        };
        let expiry = hex::decode(&f.issuer.cert_expiry)
            .ok()
            .filter(|b| b.len() == 2)
            .ok_or("issuer.cert_expiry must be MMYY")?;
        if !(3..=8).contains(&f.issuer.identifier.len()) {
            return Err("issuer.identifier must be 3 to 8 digits".into());
        }
        let mut head = vec![0x02];
        head.extend(cn(&f.issuer.identifier, 4)?);
        head.extend_from_slice(&expiry);
        head.extend_from_slice(&[0x00, 0x00, 0x01, 0x01, 0x01]);
        head.push(u8::try_from(issuer.n_bytes).map_err(|_| "issuer key too long")?);
        head.push(issuer.exponent().len() as u8);
        let issuer_cert = certify(&ca, &head, &issuer.modulus(), &issuer.exponent(), &[])?;
        let icc = KeyPair::from_entry("icc", &f.icc)?;
        Ok(TestIssuer {
            ca,
            ca_index,
            ca_expires: f.ca.expires,
            issuer,
            issuer_id: f.issuer.identifier,
            icc,
            forger: KeyPair::from_entry("forger", &f.forger)?,
            issuer_cert,
            icc_private_exponent: f.icc.d,
        })
    }

    /// The issuer identifier: the leftmost digits of every PAN this issuer certifies.
    pub fn issuer_id(&self) -> &str {
        &self.issuer_id
    }

    /// CA.json (quickpass.md) holding the test CA's public key.
    pub fn ca_json(&self) -> String {
        serde_json::json!({
            "version": 1,
            "keys": [{
                "rid": hex::encode_upper(UNIONPAY_RID),
                "index": format!("{:02X}", self.ca_index),
                "modulus": hex::encode_upper(self.ca.modulus()),
                "exponent": hex::encode_upper(self.ca.exponent()),
                "expires": self.ca_expires,
            }]
        })
        .to_string()
    }

    /// The test CA's public key as a validator holds it.
    pub fn ca_keys(&self) -> Result<CaKeys, String> {
        CaKeys::from_json(&self.ca_json())
    }

    /// A card of this issuer: its CARDS.json fields (quickpass.md), its ICC certificate
    /// binding the test card key to `pan` through the month of `expiry` (`YYYY-MM-DD`).
    pub fn card(
        &self,
        pan: &str,
        pan_seq: u8,
        expiry: &str,
        atc: u16,
    ) -> Result<QuickPassSpec, String> {
        self.card_signed_by(&self.issuer, pan, pan_seq, expiry, atc)
    }

    /// A forged card (a broken chain): the genuine issuer certificate, but an ICC certificate
    /// signed with the forger's key, which the CA never certified. A validator refuses it as
    /// `bad_certificate`.
    pub fn forged_card(
        &self,
        pan: &str,
        pan_seq: u8,
        expiry: &str,
        atc: u16,
    ) -> Result<QuickPassSpec, String> {
        self.card_signed_by(&self.forger, pan, pan_seq, expiry, atc)
    }

    fn card_signed_by(
        &self,
        signer: &KeyPair,
        pan: &str,
        pan_seq: u8,
        expiry: &str,
        atc: u16,
    ) -> Result<QuickPassSpec, String> {
        Pan::parse(pan).ok_or_else(|| format!("{pan:?}: not a PAN"))?;
        if !pan.starts_with(&self.issuer_id) {
            return Err(format!("a PAN of this issuer begins {}", self.issuer_id));
        }
        let mut head = vec![0x04];
        head.extend(cn(pan, 10)?);
        head.extend_from_slice(&mmyy(expiry)?);
        head.extend_from_slice(&[0x00, 0x00, 0x01, 0x01, 0x01]);
        head.push(u8::try_from(self.icc.n_bytes).map_err(|_| "ICC key too long")?);
        head.push(self.icc.exponent().len() as u8);
        let icc = certify(
            signer,
            &head,
            &self.icc.modulus(),
            &self.icc.exponent(),
            &TEST_AIP,
        )?;
        let up = |b: &[u8]| hex::encode_upper(b);
        Ok(QuickPassSpec {
            pan: pan.to_string(),
            pan_seq,
            expiry: expiry.to_string(),
            aid: TEST_AID.to_string(),
            aip: up(&TEST_AIP),
            ca_index: format!("{:02X}", self.ca_index),
            issuer_cert: up(&self.issuer_cert.cert),
            issuer_remainder: up(&self.issuer_cert.remainder),
            issuer_exponent: up(&self.issuer.exponent()),
            icc_cert: up(&icc.cert),
            icc_remainder: up(&icc.remainder),
            icc_exponent: up(&self.icc.exponent()),
            icc_modulus: up(&self.icc.modulus()),
            icc_private_exponent: self.icc_private_exponent.to_uppercase(),
            atc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::quickpass::{authenticate, read_card, AuthError, TerminalData};
    use crate::card::sim_quickpass::SimQuickPass;

    fn decide(spec: &QuickPassSpec, ca: &CaKeys, today_ymd: u32) -> Result<(), AuthError> {
        let t = TerminalData {
            amount_fen: 200,
            datetime_bcd: [0x20, 0x26, 0x11, 0x28, 0x08, 0x00, 0x00],
            unpredictable_number: [1, 2, 3, 4],
        };
        let mut card = SimQuickPass::new(spec, 1).unwrap();
        let d = read_card(&mut card, &t).unwrap();
        authenticate(&d, ca, today_ymd)
    }

    #[test]
    fn personalised_cards_authenticate_and_forged_ones_do_not() {
        let issuer = TestIssuer::load().unwrap();
        let ca = issuer.ca_keys().unwrap();
        let good = issuer.card("6288880000000001", 1, "2030-06-30", 5).unwrap();
        assert_eq!(decide(&good, &ca, 2026_11_28), Ok(()));
        let odd = issuer
            .card("6288880000000000019", 0, "2030-06-30", 5)
            .unwrap();
        assert_eq!(decide(&odd, &ca, 2026_11_28), Ok(()));
        let forged = issuer
            .forged_card("6288880000000002", 1, "2030-06-30", 5)
            .unwrap();
        assert!(matches!(
            decide(&forged, &ca, 2026_11_28),
            Err(AuthError::Certificate(_))
        ));
        // The ICC certificate lapses with the card's month.
        let short = issuer.card("6288880000000003", 1, "2026-10-15", 5).unwrap();
        assert_eq!(
            decide(&short, &ca, 2026_11_28),
            Err(AuthError::Certificate("ICC certificate expired"))
        );
        // Another CA's keys: nothing of this issuer is trusted.
        assert!(decide(&good, &CaKeys::empty(), 2026_11_28).is_err());
        assert!(issuer.card("6217000000000001", 1, "2030-06-30", 5).is_err());
    }
}
