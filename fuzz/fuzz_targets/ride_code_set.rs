//! The fleet's verified-certificate set never changes a decision: a verifier holding the set
//! (every vector certificate the depot's check passes, listed) and one without give the same
//! verdict for any input, at any clock near the vectors'.
//!
//! The first byte picks the input: odd, the rest is the payload as is (base64url behind the
//! `ESSC1.` prefix, padded or cut to 201 bytes); even, the next byte picks a vector code and
//! the rest is XORed over its bytes, so that listed certificates meet forged code signatures,
//! altered dates, counters and keys. Two more bytes move the clock (±32767 s).
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fare_validator::ride_code::format::{CODE_BYTES, CODE_TEXT_CHARS, TEXT_PREFIX};
use fare_validator::ride_code::{
    cert_set, CertSet, ChannelKeys, RideCode, RideCodeConfig, Verifier,
};
use libfuzzer_sys::fuzz_target;

/// The vectors' clock.
const NOW_UNIX_S: i64 = 1_795_824_000;

struct World {
    codes: Vec<[u8; CODE_BYTES]>,
    without: Verifier,
    with: Verifier,
}

/// Every code text in the vector file (found by its prefix: no JSON parser needed).
fn vector_codes() -> Vec<[u8; CODE_BYTES]> {
    let text = include_str!("../../fixtures/ride-code-v1.json");
    text.match_indices(TEXT_PREFIX)
        .filter_map(|(i, _)| text.get(i..i + CODE_TEXT_CHARS))
        .filter_map(|t| RideCode::parse(t).ok())
        .map(|c| c.bytes)
        .collect()
}

fn world() -> &'static Mutex<World> {
    static WORLD: OnceLock<Mutex<World>> = OnceLock::new();
    WORLD.get_or_init(|| {
        let keys = ChannelKeys::from_json(include_str!("../../fixtures/ride-code-keys.json"))
            .expect("fixture key file");
        let codes = vector_codes();
        let listed = codes.iter().filter_map(|b| {
            let code = RideCode::from_bytes(*b).ok()?;
            cert_set::checked_digest(&keys, &code)
        });
        let set = CertSet::from_digests(1, &keys, listed);
        assert!(set.len() >= 2, "the vectors have good certificates");
        let config = RideCodeConfig::default();
        let mut with = Verifier::new(keys.clone(), config);
        with.set_cert_set(Arc::new(set));
        Mutex::new(World {
            codes,
            without: Verifier::new(keys, config),
            with,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((clock, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let now = NOW_UNIX_S + i64::from(i16::from_be_bytes(*clock));
    let Ok(mut w) = world().lock() else {
        return;
    };
    let mut payload = [0u8; CODE_BYTES];
    if mode & 1 == 1 {
        let n = rest.len().min(CODE_BYTES);
        payload[..n].copy_from_slice(&rest[..n]);
    } else {
        let Some((&pick, xor)) = rest.split_first() else {
            return;
        };
        payload = w.codes[usize::from(pick) % w.codes.len()];
        for (p, x) in payload.iter_mut().zip(xor) {
            *p ^= x;
        }
    }
    let text = format!("{TEXT_PREFIX}{}", URL_SAFE_NO_PAD.encode(payload));
    let without = w.without.verify(&text, now);
    let with = w.with.verify(&text, now);
    assert_eq!(without, with, "the verified-certificate set changed the verdict");
});
