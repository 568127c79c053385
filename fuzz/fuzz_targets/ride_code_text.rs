//! Arbitrary input never makes the ride code verifier panic, and its verdict is a pure
//! function of (text, clock): the same text gives the same answer on a warm certificate cache,
//! and a verifier with the certificate worker (two cores) gives the same answer as one without.
//!
//! The first byte picks how the rest is used: odd means "the rest is the scanned text"
//! (lossy UTF-8), even means "the rest is the payload": it is base64url-encoded behind the
//! `ESSC1.` prefix (padded or cut to 201 bytes), so mutations reach checks 2–10 and the
//! certificate cache, not only the text checks.
#![no_main]

use std::sync::{Mutex, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fare_validator::ride_code::format::{CODE_BYTES, TEXT_PREFIX};
use fare_validator::ride_code::{ChannelKeys, RideCodeConfig, Verifier};
use libfuzzer_sys::fuzz_target;

/// The vectors' clock: every vector case is decided at this time.
const NOW_UNIX_S: i64 = 1_795_824_000;

/// One verifier on the calling thread and one with the certificate worker.
fn verifiers() -> &'static Mutex<(Verifier, Verifier)> {
    static VERIFIERS: OnceLock<Mutex<(Verifier, Verifier)>> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        let keys = ChannelKeys::from_json(include_str!("../../fixtures/ride-code-keys.json"))
            .expect("fixture key file");
        let config = RideCodeConfig::default();
        Mutex::new((
            Verifier::new(keys.clone(), config),
            Verifier::with_cert_worker(keys, config),
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = if mode & 1 == 1 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let mut payload = [0u8; CODE_BYTES];
        let n = rest.len().min(CODE_BYTES);
        payload[..n].copy_from_slice(&rest[..n]);
        format!("{TEXT_PREFIX}{}", URL_SAFE_NO_PAD.encode(payload))
    };
    let Ok(mut pair) = verifiers().lock() else {
        return;
    };
    let (one_core, two_cores) = &mut *pair;
    let first = one_core.verify(&text, NOW_UNIX_S);
    let second = one_core.verify(&text, NOW_UNIX_S);
    assert_eq!(first, second, "verdict changed on a second look");
    let beside = two_cores.verify(&text, NOW_UNIX_S);
    assert_eq!(first, beside, "the certificate worker changed the verdict");
});
