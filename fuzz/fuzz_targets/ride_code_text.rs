//! Arbitrary input never makes the ride code verifier panic, and its verdict is a pure
//! function of (text, clock): the same text gives the same answer on a warm certificate cache.
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

fn verifier() -> &'static Mutex<Verifier> {
    static VERIFIER: OnceLock<Mutex<Verifier>> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let keys = ChannelKeys::from_json(include_str!("../../fixtures/ride-code-keys.json"))
            .expect("fixture key file");
        Mutex::new(Verifier::new(keys, RideCodeConfig::default()))
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
    let Ok(mut v) = verifier().lock() else {
        return;
    };
    let first = v.verify(&text, NOW_UNIX_S);
    let second = v.verify(&text, NOW_UNIX_S);
    assert_eq!(first, second, "verdict changed on a second look");
});
