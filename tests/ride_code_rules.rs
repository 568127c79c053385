//! Ride code rules, one test per rule, on codes issued here with keys generated from seeds.
//! Every reason of checks 1–10 is produced by a code made for it, and the first failing check
//! is the one reported.

use fare_validator::ride_code::format::{CODE_BYTES, SIGNATURE_BYTES};
use fare_validator::ride_code::issuer::{self, CertFields, KeyPair};
use fare_validator::ride_code::{
    Alg, ChannelKeys, KeyFile, KeyFileEntry, RideCodeConfig, Verifier,
};
use fare_validator::types::{CardNo, Reason, RiderCategory};
use proptest::prelude::*;
use std::sync::OnceLock;

/// The validator's clock in most tests: 2026-11-28T08:00:00+08:00.
const NOW: i64 = 1_795_824_000;
const KEY_NOT_BEFORE: i64 = NOW - 86_400 * 365;
const KEY_NOT_AFTER: i64 = NOW + 86_400 * 365;
const CERT_NOT_BEFORE: u32 = (NOW - 86_400) as u32;
const CERT_NOT_AFTER: u32 = (NOW + 86_400 * 30) as u32;

/// P-256 order n, big-endian.
const P256_N: [u8; 32] = hex32("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
/// SM2 order n, big-endian.
const SM2_N: [u8; 32] = hex32("fffffffeffffffffffffffffffffffff7203df6b21c6052b53bbf40939d54123");

const fn hex32(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

/// Channel keys the tests trust: (channel_id, key_id, alg, seed, window, revoked).
struct Channel {
    channel_id: u16,
    key_id: u8,
    pair: KeyPair,
    not_before: i64,
    not_after: i64,
    revoked: bool,
}

fn channels() -> Vec<Channel> {
    let ch = |channel_id, key_id, alg, seed, not_before, not_after, revoked| Channel {
        channel_id,
        key_id,
        pair: KeyPair::from_seed(alg, seed),
        not_before,
        not_after,
        revoked,
    };
    vec![
        ch(2, 1, Alg::P256, 21, KEY_NOT_BEFORE, KEY_NOT_AFTER, false),
        ch(2, 2, Alg::P256, 22, KEY_NOT_BEFORE, KEY_NOT_AFTER, true),
        ch(2, 3, Alg::P256, 23, KEY_NOT_BEFORE, NOW - 1, false),
        ch(2, 4, Alg::P256, 24, NOW + 1, KEY_NOT_AFTER, false),
        ch(1, 1, Alg::Sm2, 11, KEY_NOT_BEFORE, KEY_NOT_AFTER, false),
        ch(1, 2, Alg::Sm2, 12, KEY_NOT_BEFORE, KEY_NOT_AFTER, true),
    ]
}

fn key_file(channels: &[Channel]) -> KeyFile {
    KeyFile {
        version: 1,
        channels: channels
            .iter()
            .map(|c| KeyFileEntry {
                channel_id: c.channel_id,
                name: format!("channel {}", c.channel_id),
                key_id: c.key_id,
                alg: c.pair.alg(),
                public_key: hex::encode(c.pair.public_key()),
                not_before: c.not_before,
                not_after: c.not_after,
                revoked: c.revoked,
            })
            .collect(),
    }
}

/// Decoded once: SM2 keys cost a point decompression and a Z_A hash each.
fn test_keys() -> &'static ChannelKeys {
    static KEYS: OnceLock<ChannelKeys> = OnceLock::new();
    KEYS.get_or_init(|| ChannelKeys::from_file(&key_file(&channels())).expect("test key file"))
}

/// A fresh validator: empty certificate cache.
fn verifier() -> Verifier {
    Verifier::new(test_keys().clone(), RideCodeConfig::default())
}

fn channel(channel_id: u16, key_id: u8) -> KeyPair {
    channels()
        .into_iter()
        .find(|c| c.channel_id == channel_id && c.key_id == key_id)
        .expect("test channel")
        .pair
}

/// A holder and the certificate its channel gave it.
struct Holder {
    pair: KeyPair,
    cert: [u8; 129],
}

fn holder_with(channel_id: u16, key_id: u8, edit: impl FnOnce(&mut CertFields)) -> Holder {
    let signer = channel(channel_id, key_id);
    let pair = KeyPair::from_seed(signer.alg(), 1000 + u64::from(channel_id));
    let mut fields = CertFields {
        alg: signer.alg(),
        channel_id,
        channel_key_id: key_id,
        account_id: 8_800_001,
        card_no: "37140000000000000001".parse().expect("card no"),
        rider_category: RiderCategory::Student as u8,
        cert_not_before: CERT_NOT_BEFORE,
        cert_not_after: CERT_NOT_AFTER,
        holder_public_key: pair.public_key(),
    };
    edit(&mut fields);
    Holder {
        cert: issuer::certificate(&fields, &signer),
        pair,
    }
}

fn p256_holder() -> &'static Holder {
    static HOLDER: OnceLock<Holder> = OnceLock::new();
    HOLDER.get_or_init(|| holder_with(2, 1, |_| {}))
}

fn sm2_holder() -> &'static Holder {
    static HOLDER: OnceLock<Holder> = OnceLock::new();
    HOLDER.get_or_init(|| holder_with(1, 1, |_| {}))
}

impl Holder {
    fn code(&self, generated_at: i64, counter: u32) -> [u8; CODE_BYTES] {
        issuer::code(&self.cert, generated_at as u32, counter, &self.pair)
    }

    fn text(&self, generated_at: i64) -> String {
        issuer::code_text(&self.code(generated_at, 1))
    }
}

fn text(bytes: &[u8; CODE_BYTES]) -> String {
    issuer::code_text(bytes)
}

fn verdict(text: &str, now: i64) -> Result<(), Reason> {
    verifier().verify(text, now).map(|_| ())
}

// ---- accepted ----

#[test]
fn p256_code_is_accepted_with_its_fields() {
    let code = verifier()
        .verify(&p256_holder().text(NOW - 5), NOW)
        .expect("accepted");
    assert_eq!(code.alg, Alg::P256);
    assert_eq!(code.account.to_string(), "2:8800001");
    assert_eq!(
        code.card_no,
        "37140000000000000001".parse::<CardNo>().unwrap()
    );
    assert_eq!(code.rider_category, RiderCategory::Student);
    assert_eq!(code.counter, 1);
    assert_eq!(code.generated_at, NOW - 5);
    assert_eq!(code.cert_not_after, i64::from(CERT_NOT_AFTER));
}

#[test]
fn sm2_code_is_accepted() {
    let code = verifier()
        .verify(&sm2_holder().text(NOW), NOW)
        .expect("accepted");
    assert_eq!(
        (code.alg, code.channel_id, code.channel_key_id),
        (Alg::Sm2, 1, 1)
    );
}

// ---- check 1: malformed ----

#[test]
fn truncated_text_is_malformed() {
    let t = p256_holder().text(NOW);
    assert_eq!(verdict(&t[..t.len() - 4], NOW), Err(Reason::Malformed));
    assert_eq!(verdict("", NOW), Err(Reason::Malformed));
}

#[test]
fn version_2_is_malformed_before_anything_else() {
    // Also from an unknown channel with a broken signature: check 1 comes first.
    let mut b = p256_holder().code(NOW, 1);
    b[0] = 2;
    b[2] = 0x7F;
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::Malformed));
}

#[test]
fn card_no_with_a_hex_digit_is_malformed_even_when_signed() {
    let h = p256_holder();
    let mut b = h.code(NOW, 1);
    b[22] = 0x0A;
    issuer::resign_certificate(&mut b, &channel(2, 1));
    issuer::resign_code(&mut b, &h.pair);
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::Malformed));
}

#[test]
fn rider_category_5_is_malformed_even_when_signed() {
    let h = holder_with(2, 1, |f| f.rider_category = 5);
    assert_eq!(verdict(&h.text(NOW), NOW), Err(Reason::Malformed));
}

// ---- checks 2–5: algorithm, channel, key ----

#[test]
fn algorithm_3_is_unsupported_algorithm() {
    let mut b = p256_holder().code(NOW, 1);
    b[1] = 3;
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::UnsupportedAlgorithm));
}

#[test]
fn channel_not_in_key_file_is_unsupported_channel() {
    let mut b = p256_holder().code(NOW, 1);
    b[2..4].copy_from_slice(&9u16.to_be_bytes());
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::UnsupportedChannel));
}

#[test]
fn unknown_key_id_is_unknown_key() {
    let mut b = p256_holder().code(NOW, 1);
    b[4] = 7;
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::UnknownKey));
}

#[test]
fn key_listed_for_the_other_algorithm_is_unknown_key() {
    // Channel 2 key 1 is a P-256 key; an SM2 code naming it has no key.
    let mut b = p256_holder().code(NOW, 1);
    b[1] = Alg::Sm2 as u8;
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::UnknownKey));
}

#[test]
fn revoked_channel_key_is_key_not_valid() {
    let h = holder_with(2, 2, |_| {});
    assert_eq!(verdict(&h.text(NOW), NOW), Err(Reason::KeyNotValid));
    let h = holder_with(1, 2, |_| {});
    assert_eq!(verdict(&h.text(NOW), NOW), Err(Reason::KeyNotValid));
}

#[test]
fn channel_key_outside_its_window_is_key_not_valid() {
    let ended = holder_with(2, 3, |_| {});
    assert_eq!(verdict(&ended.text(NOW), NOW), Err(Reason::KeyNotValid));
    assert_eq!(verdict(&ended.text(NOW - 1), NOW - 1), Ok(()));
    let not_started = holder_with(2, 4, |_| {});
    assert_eq!(
        verdict(&not_started.text(NOW), NOW),
        Err(Reason::KeyNotValid)
    );
    assert_eq!(verdict(&not_started.text(NOW + 1), NOW + 1), Ok(()));
}

#[test]
fn revoked_key_wins_over_an_expired_code() {
    let h = holder_with(2, 2, |_| {});
    assert_eq!(verdict(&h.text(NOW - 3600), NOW), Err(Reason::KeyNotValid));
}

// ---- check 6: bad certificate ----

#[test]
fn tampered_certificate_is_bad_certificate() {
    let h = p256_holder();
    let mut b = h.code(NOW, 1);
    b[12] ^= 0x01; // another account
    issuer::resign_code(&mut b, &h.pair); // the holder signs it; the channel did not
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::BadCertificate));
    let h = sm2_holder();
    let mut b = h.code(NOW, 1);
    b[23] = RiderCategory::Senior as u8; // a free ride
    issuer::resign_code(&mut b, &h.pair);
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::BadCertificate));
}

#[test]
fn certificate_signed_by_another_key_is_bad_certificate() {
    let h = p256_holder();
    let mut b = h.code(NOW, 1);
    issuer::resign_certificate(&mut b, &KeyPair::from_seed(Alg::P256, 999));
    issuer::resign_code(&mut b, &h.pair);
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::BadCertificate));
}

/// A compressed point whose x has no y on the curve (found by trying x = 1, 2, ...).
fn off_curve_point(alg: Alg) -> [u8; 33] {
    for x in 1u8..=255 {
        let mut p = [0u8; 33];
        p[0] = 0x02;
        p[32] = x;
        let on_curve = match alg {
            Alg::P256 => p256::PublicKey::from_sec1_bytes(&p).is_ok(),
            Alg::Sm2 => sm2::PublicKey::from_sec1_bytes(&p).is_ok(),
        };
        if !on_curve {
            return p;
        }
    }
    panic!("no off-curve x below 256");
}

#[test]
fn holder_key_off_curve_is_bad_certificate() {
    for (channel_id, alg) in [(2, Alg::P256), (1, Alg::Sm2)] {
        let h = holder_with(channel_id, 1, |f| {
            f.holder_public_key = off_curve_point(alg)
        });
        // The channel signed it, but no key can sign the code: any bytes do.
        assert_eq!(
            verdict(&h.text(NOW), NOW),
            Err(Reason::BadCertificate),
            "{alg:?}"
        );
        let mut tag = off_curve_point(alg);
        tag[0] = 0x05;
        let h = holder_with(channel_id, 1, |f| f.holder_public_key = tag);
        assert_eq!(
            verdict(&h.text(NOW), NOW),
            Err(Reason::BadCertificate),
            "{alg:?}"
        );
    }
}

fn set_signature(b: &mut [u8; CODE_BYTES], offset: usize, r: [u8; 32], s: [u8; 32]) {
    b[offset..offset + 32].copy_from_slice(&r);
    b[offset + 32..offset + SIGNATURE_BYTES].copy_from_slice(&s);
}

#[test]
fn certificate_signature_out_of_range_is_bad_certificate() {
    for (h, n) in [(p256_holder(), P256_N), (sm2_holder(), SM2_N)] {
        let good = h.code(NOW, 1);
        let (r, s) = (arr(&good[65..97]), arr(&good[97..129]));
        for (r, s) in [(r, [0; 32]), ([0; 32], s), (n, s), (r, n), ([0xFF; 32], s)] {
            let mut b = good;
            set_signature(&mut b, 65, r, s);
            issuer::resign_code(&mut b, &h.pair);
            assert_eq!(verdict(&text(&b), NOW), Err(Reason::BadCertificate));
        }
    }
}

// ---- check 7: certificate dates ----

#[test]
fn certificate_one_second_past_not_after_is_not_valid() {
    let h = holder_with(2, 1, |f| f.cert_not_after = NOW as u32);
    assert_eq!(verdict(&h.text(NOW), NOW), Ok(()));
    assert_eq!(
        verdict(&h.text(NOW + 1), NOW + 1),
        Err(Reason::CertificateNotValid)
    );
}

#[test]
fn certificate_before_not_before_is_not_valid() {
    let h = holder_with(1, 1, |f| f.cert_not_before = (NOW + 1) as u32);
    assert_eq!(verdict(&h.text(NOW), NOW), Err(Reason::CertificateNotValid));
    assert_eq!(verdict(&h.text(NOW + 1), NOW + 1), Ok(()));
}

#[test]
fn forged_certificate_wins_over_its_expired_dates() {
    let h = holder_with(2, 1, |f| f.cert_not_after = (NOW - 10) as u32);
    let mut b = h.code(NOW, 1);
    b[70] ^= 0x40;
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::BadCertificate));
}

// ---- check 8: code signature ----

#[test]
fn tampered_counter_is_bad_signature() {
    for h in [p256_holder(), sm2_holder()] {
        let mut b = h.code(NOW, 1);
        b[136] ^= 0x01;
        assert_eq!(verdict(&text(&b), NOW), Err(Reason::BadSignature));
    }
}

#[test]
fn code_signed_by_another_holder_is_bad_signature() {
    let h = p256_holder();
    let b = issuer::code(&h.cert, NOW as u32, 1, &KeyPair::from_seed(Alg::P256, 4242));
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::BadSignature));
}

#[test]
fn signature_with_s_zero_does_not_verify() {
    for h in [p256_holder(), sm2_holder()] {
        let mut b = h.code(NOW, 1);
        let r = arr(&b[137..169]);
        set_signature(&mut b, 137, r, [0; 32]);
        assert_eq!(verdict(&text(&b), NOW), Err(Reason::BadSignature));
    }
}

#[test]
fn signature_with_r_or_s_not_below_the_order_does_not_verify() {
    for (h, n) in [(p256_holder(), P256_N), (sm2_holder(), SM2_N)] {
        let good = h.code(NOW, 1);
        let (r, s) = (arr(&good[137..169]), arr(&good[169..201]));
        for (r, s) in [(n, s), (r, n), ([0; 32], s), ([0xFF; 32], [0xFF; 32])] {
            let mut b = good;
            set_signature(&mut b, 137, r, s);
            assert_eq!(verdict(&text(&b), NOW), Err(Reason::BadSignature));
        }
    }
}

#[test]
fn expired_certificate_wins_over_a_bad_code_signature() {
    let h = holder_with(2, 1, |f| f.cert_not_after = (NOW - 1) as u32);
    let mut b = h.code(NOW, 1);
    b[150] ^= 1;
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::CertificateNotValid));
}

// ---- checks 9, 10: freshness ----

#[test]
fn code_from_more_than_the_skew_ahead_is_not_yet_valid() {
    let h = sm2_holder();
    assert_eq!(verdict(&h.text(NOW + 30), NOW), Ok(()));
    assert_eq!(
        verdict(&h.text(NOW + 31), NOW),
        Err(Reason::CodeNotYetValid)
    );
}

#[test]
fn code_one_second_past_validity_is_expired() {
    let h = p256_holder();
    assert_eq!(verdict(&h.text(NOW - 60), NOW), Ok(()));
    assert_eq!(verdict(&h.text(NOW - 61), NOW), Err(Reason::CodeExpired));
}

#[test]
fn bad_signature_wins_over_an_expired_code() {
    let h = p256_holder();
    let mut b = h.code(NOW - 3600, 1);
    b[190] ^= 1;
    assert_eq!(verdict(&text(&b), NOW), Err(Reason::BadSignature));
}

#[test]
fn config_changes_the_windows() {
    let keys = ChannelKeys::from_file(&key_file(&channels())).unwrap();
    let config = RideCodeConfig {
        code_validity_s: 10,
        clock_skew_s: 2,
    };
    let mut v = Verifier::new(keys, config);
    let h = p256_holder();
    assert!(v.verify(&h.text(NOW - 10), NOW).is_ok());
    assert_eq!(v.verify(&h.text(NOW - 11), NOW), Err(Reason::CodeExpired));
    assert_eq!(
        v.verify(&h.text(NOW + 3), NOW),
        Err(Reason::CodeNotYetValid)
    );
}

// ---- the holder-certificate cache ----

#[test]
fn returning_holder_uses_the_cached_certificate() {
    let mut v = verifier();
    let h = p256_holder();
    assert!(v.verify(&h.text(NOW), NOW).is_ok());
    assert_eq!(v.cached_certificates(), 1);
    assert!(v.verify(&h.text(NOW + 20), NOW + 20).is_ok());
    assert_eq!(v.cached_certificates(), 1);
}

#[test]
fn cache_hit_still_checks_certificate_dates() {
    let mut v = verifier();
    let h = holder_with(1, 1, |f| f.cert_not_after = (NOW + 100) as u32);
    assert!(v.verify(&h.text(NOW), NOW).is_ok());
    let later = NOW + 101;
    assert_eq!(
        v.verify(&h.text(later), later),
        Err(Reason::CertificateNotValid)
    );
}

#[test]
fn cache_hit_still_checks_the_channel_key_window() {
    let mut v = verifier();
    let h = holder_with(2, 3, |_| {}); // key window ends at NOW - 1
    let before = NOW - 30;
    assert!(v.verify(&h.text(before), before).is_ok());
    assert_eq!(v.cached_certificates(), 1);
    assert_eq!(v.verify(&h.text(NOW), NOW), Err(Reason::KeyNotValid));
}

#[test]
fn revocation_in_a_new_key_file_applies_to_cached_holders() {
    let mut chans = channels();
    let h = p256_holder();
    let mut v = verifier();
    assert!(v.verify(&h.text(NOW), NOW).is_ok());
    chans[0].revoked = true;
    let mut v = Verifier::new(
        ChannelKeys::from_file(&key_file(&chans)).unwrap(),
        RideCodeConfig::default(),
    );
    assert_eq!(
        v.verify(&h.text(NOW + 1), NOW + 1),
        Err(Reason::KeyNotValid)
    );
}

#[test]
fn cache_hit_still_checks_the_code_signature() {
    let mut v = verifier();
    let h = sm2_holder();
    assert!(v.verify(&h.text(NOW), NOW).is_ok());
    let mut b = h.code(NOW + 1, 2);
    b[140] ^= 1;
    assert_eq!(v.verify(&text(&b), NOW + 1), Err(Reason::BadSignature));
}

#[test]
fn cached_certificate_does_not_vouch_for_a_modified_one() {
    let mut v = verifier();
    let h = p256_holder();
    assert!(v.verify(&h.text(NOW), NOW).is_ok());
    let mut b = h.code(NOW, 2);
    b[23] = RiderCategory::Veteran as u8;
    issuer::resign_code(&mut b, &h.pair);
    assert_eq!(v.verify(&text(&b), NOW), Err(Reason::BadCertificate));
}

fn arr(s: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(s);
    out
}

// ---- nothing panics ----

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_text_is_refused_without_panic(s in ".{0,300}") {
        let r = verdict(&s, NOW);
        prop_assert!(r.is_err());
    }

    #[test]
    fn random_payload_is_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), CODE_BYTES)) {
        let mut b = [0u8; CODE_BYTES];
        b.copy_from_slice(&bytes);
        prop_assert!(verdict(&text(&b), NOW).is_err());
    }

    #[test]
    fn truncated_or_mutated_code_is_refused(
        sm2 in any::<bool>(),
        cut in 0usize..274,
        pos in 0usize..274,
        replacement in any::<char>(),
    ) {
        let h = if sm2 { sm2_holder() } else { p256_holder() };
        let good = h.text(NOW);
        prop_assert!(verdict(&good[..cut], NOW) == Err(Reason::Malformed));
        let mut mutated: String = good.chars().take(pos).collect();
        mutated.push(replacement);
        mutated.extend(good.chars().skip(pos + 1));
        let r = verdict(&mutated, NOW);
        if mutated == good {
            prop_assert!(r.is_ok());
        } else {
            prop_assert!(r.is_err(), "mutation at {} accepted", pos);
        }
    }
}

#[test]
fn extreme_clocks_give_a_reason_not_a_panic() {
    let t = p256_holder().text(NOW);
    for now in [i64::MIN, -1, 0, i64::from(u32::MAX) + 1, i64::MAX] {
        assert_eq!(verdict(&t, now), Err(Reason::KeyNotValid), "{now}");
    }
    let mut replay = fare_validator::ride_code::ReplayCache::new(&RideCodeConfig::default());
    let code = verifier().verify(&t, NOW).unwrap();
    replay.remember_code(&code, NOW);
    assert!(!replay.is_replay(&code, i64::MAX));
    assert!(replay.is_replay(&code, i64::MIN));
}

// ---- the fleet's verified-certificate set: only check 6's signature is spared ----

/// A verifier holding a set that lists these codes' certificates (made for the test keys).
fn verifier_listing(codes: &[&[u8; CODE_BYTES]]) -> Verifier {
    use fare_validator::ride_code::{CertSet, RideCode};
    let digests = codes.iter().map(|b| {
        RideCode::from_bytes(**b)
            .expect("well-formed")
            .cert_digest()
    });
    let set = CertSet::from_digests(1, test_keys(), digests);
    let mut v = verifier();
    v.set_cert_set(std::sync::Arc::new(set));
    v
}

#[test]
fn a_listed_certificate_skips_only_the_channel_signature_check() {
    for h in [p256_holder(), sm2_holder()] {
        // A certificate the channel never signed, listed: its check is skipped (which is
        // why only the depot, after checking it, may list one) ...
        let mut b = h.code(NOW, 1);
        issuer::resign_certificate(&mut b, &KeyPair::from_seed(h.pair.alg(), 999));
        issuer::resign_code(&mut b, &h.pair);
        assert_eq!(verdict(&text(&b), NOW), Err(Reason::BadCertificate));
        let mut v = verifier_listing(&[&b]);
        assert_eq!(v.verify(&text(&b), NOW).map(|_| ()), Ok(()));
        assert_eq!(v.certs_from_set(), 1);
        // ... and nothing else: a listed certificate with a forged code signature.
        let mut forged = h.code(NOW, 2);
        forged[137..].copy_from_slice(&[0x5A; SIGNATURE_BYTES]);
        let mut v = verifier_listing(&[&forged]);
        assert_eq!(
            v.verify(&text(&forged), NOW).map(|_| ()),
            Err(Reason::BadSignature)
        );
        // Signed by another holder key than the certificate's.
        let mut other = h.code(NOW, 3);
        issuer::resign_code(&mut other, &KeyPair::from_seed(h.pair.alg(), 4242));
        let mut v = verifier_listing(&[&other]);
        assert_eq!(
            v.verify(&text(&other), NOW).map(|_| ()),
            Err(Reason::BadSignature)
        );
        // Freshness still applies.
        let old = h.code(NOW - 61, 4);
        let mut v = verifier_listing(&[&old]);
        assert_eq!(
            v.verify(&text(&old), NOW).map(|_| ()),
            Err(Reason::CodeExpired)
        );
    }
}

#[test]
fn a_listed_certificate_with_a_holder_key_off_the_curve_is_still_bad_certificate() {
    let h = holder_with(2, 1, |f| f.holder_public_key = off_curve_point(Alg::P256));
    let b = issuer::code(&h.cert, NOW as u32, 1, &h.pair);
    let mut v = verifier_listing(&[&b]);
    assert_eq!(
        v.verify(&text(&b), NOW).map(|_| ()),
        Err(Reason::BadCertificate)
    );
}

#[test]
fn an_expired_certificate_is_refused_though_listed() {
    for (nb, na) in [
        (CERT_NOT_BEFORE, (NOW - 1) as u32),
        ((NOW + 1) as u32, CERT_NOT_AFTER),
    ] {
        let h = holder_with(2, 1, |f| {
            f.cert_not_before = nb;
            f.cert_not_after = na;
        });
        let b = issuer::code(&h.cert, NOW as u32, 1, &h.pair);
        let mut v = verifier_listing(&[&b]);
        assert_eq!(
            v.verify(&text(&b), NOW).map(|_| ()),
            Err(Reason::CertificateNotValid)
        );
    }
}

#[test]
fn a_revoked_key_or_one_outside_its_window_is_refused_though_listed() {
    // Key 2 of channel 2 is revoked, key 3 ended before NOW, key 4 starts after; channel
    // 1's key 2 (SM2) is revoked.
    for (channel_id, key_id) in [(2, 2), (2, 3), (2, 4), (1, 2)] {
        let h = holder_with(channel_id, key_id, |_| {});
        let b = issuer::code(&h.cert, NOW as u32, 1, &h.pair);
        let mut v = verifier_listing(&[&b]);
        assert_eq!(
            v.verify(&text(&b), NOW).map(|_| ()),
            Err(Reason::KeyNotValid),
            "channel {channel_id} key {key_id}"
        );
        assert_eq!(v.certs_from_set(), 0);
    }
}

/// The set names the keys' material, not their dates or revocation: a key file that revokes
/// a key keeps the set in use (as it keeps the cache's certificates), and check 5 refuses the
/// holders the set lists under that key, on the scan after the new file, with no channel
/// signature asked.
#[test]
fn a_key_revoked_in_a_new_key_file_refuses_the_holders_the_set_lists() {
    use fare_validator::ride_code::{CertSet, RideCode};
    for (channel_id, h) in [(2, p256_holder()), (1, sm2_holder())] {
        let b = h.code(NOW, 1);
        let digest = RideCode::from_bytes(b).unwrap().cert_digest();
        let set = std::sync::Arc::new(CertSet::from_digests(1, test_keys(), [digest]));
        let mut before = verifier();
        before.set_cert_set(set.clone());
        assert_eq!(before.verify(&text(&b), NOW).map(|_| ()), Ok(()));
        assert_eq!(before.certs_from_set(), 1);

        let mut chans = channels();
        chans
            .iter_mut()
            .filter(|c| c.channel_id == channel_id && c.key_id == 1)
            .for_each(|c| c.revoked = true);
        let revoked = ChannelKeys::from_file(&key_file(&chans)).unwrap();
        assert_eq!(revoked.material_digest(), test_keys().material_digest());
        let mut after = Verifier::new(revoked, RideCodeConfig::default());
        after.set_cert_set(set);
        let later = h.code(NOW + 1, 2);
        assert_eq!(
            after.verify(&text(&later), NOW + 1).map(|_| ()),
            Err(Reason::KeyNotValid),
            "channel {channel_id}"
        );
        assert_eq!(after.certs_from_set(), 0);
    }
}

#[test]
fn a_set_made_for_other_channel_keys_is_not_used() {
    use fare_validator::ride_code::{CertSet, RideCode};
    let h = p256_holder();
    let mut b = h.code(NOW, 1);
    issuer::resign_certificate(&mut b, &KeyPair::from_seed(Alg::P256, 999));
    issuer::resign_code(&mut b, &h.pair);
    let digest = RideCode::from_bytes(b).unwrap().cert_digest();
    let mut other = channels();
    other[0].pair = KeyPair::from_seed(Alg::P256, 777);
    let other_keys = ChannelKeys::from_file(&key_file(&other)).unwrap();
    let mut v = verifier();
    v.set_cert_set(std::sync::Arc::new(CertSet::from_digests(
        1,
        &other_keys,
        [digest],
    )));
    assert_eq!(
        v.verify(&text(&b), NOW).map(|_| ()),
        Err(Reason::BadCertificate)
    );
}
