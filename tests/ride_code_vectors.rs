//! The shared ride-code-v1 vectors: every case on a fresh validator (no code seen before, empty
//! blacklist) with the vectors' config decides exactly as `expect` says.

use fare_validator::ride_code::format::{CERT_BYTES, CODE_BYTES, CODE_SIGNED_BYTES};
use fare_validator::ride_code::{
    cert_set, CertSet, ChannelKeys, KeyFile, ReplayCache, RideCode, RideCodeConfig, Verifier,
};
use fare_validator::types::Reason;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    spec: String,
    config: RideCodeConfig,
    keys: KeyFile,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    now: i64,
    code: String,
    expect: String,
}

fn vectors() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/ride-code-v1.json");
    let text = std::fs::read_to_string(path).expect("read vectors");
    serde_json::from_str(&text).expect("parse vectors")
}

/// What a bus validator decides for a scan with an empty blacklist: checks 1–10, then 12.
/// (Check 13, anti-passback, cannot fail on a fresh validator.)
fn decide(verifier: &mut Verifier, replay: &mut ReplayCache, text: &str, now: i64) -> String {
    match verifier.verify(text, now) {
        Err(reason) => reason.as_str().to_string(),
        Ok(code) if replay.is_replay(&code, now) => Reason::Replayed.as_str().to_string(),
        Ok(code) => {
            replay.remember_code(&code, now);
            "accepted".to_string()
        }
    }
}

/// Every case on a fresh verifier made by `make`.
fn every_vector_decides_as_expected_with(make: fn(ChannelKeys, RideCodeConfig) -> Verifier) {
    let v = vectors();
    assert_eq!(v.spec, "ride-code-v1");
    let keys = ChannelKeys::from_file(&v.keys).expect("vector key file");
    assert!(!v.cases.is_empty());
    let mut failures = Vec::new();
    for case in &v.cases {
        let mut verifier = make(keys.clone(), v.config);
        let mut replay = ReplayCache::new(&v.config);
        let got = decide(&mut verifier, &mut replay, &case.code, case.now);
        if got != case.expect {
            failures.push(format!(
                "{}: expected {}, got {got}",
                case.name, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_vector_decides_as_expected() {
    every_vector_decides_as_expected_with(Verifier::new);
}

/// The same reasons when a worker checks first-seen certificates beside the scanning thread.
#[test]
fn every_vector_decides_as_expected_with_a_certificate_worker() {
    every_vector_decides_as_expected_with(|keys, config| {
        let v = Verifier::with_cert_worker(keys, config);
        // One core (a restricted container): the verifier works alone, as it should.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(v.has_cert_worker(), cores >= 2);
        v
    });
}

#[test]
fn vector_key_file_matches_the_shipped_key_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/ride-code-keys.json");
    let text = std::fs::read_to_string(path).expect("read key file");
    let shipped: KeyFile = serde_json::from_str(&text).expect("parse key file");
    assert_eq!(shipped, vectors().keys);
    assert!(ChannelKeys::load(path).is_ok());
}

#[test]
fn accepted_vectors_are_replayed_when_shown_twice() {
    let v = vectors();
    let keys = ChannelKeys::from_file(&v.keys).expect("vector key file");
    let mut verifier = Verifier::new(keys, v.config);
    let mut replay = ReplayCache::new(&v.config);
    for case in v.cases.iter().filter(|c| c.expect == "accepted") {
        assert_eq!(
            decide(&mut verifier, &mut replay, &case.code, case.now),
            "accepted"
        );
        // Second scan: the certificate is cached now; the verdict is still replayed.
        let again = decide(&mut verifier, &mut replay, &case.code, case.now + 5);
        assert_eq!(again, "replayed", "{}", case.name);
    }
}

/// The fleet's set as the depot would make it for the vectors: every vector certificate
/// that passes the depot's check (check 6) under the vector keys.
fn fleet_set(keys: &ChannelKeys) -> std::sync::Arc<CertSet> {
    let cases = vectors().cases;
    let digests = cases.iter().filter_map(|c| {
        let code = RideCode::parse(&c.code).ok()?;
        cert_set::checked_digest(keys, &code)
    });
    std::sync::Arc::new(CertSet::from_digests(1, keys, digests))
}

/// Decisions are the same with the fleet's set as without: every vector, the set listing
/// every certificate the depot would list (and the set is used: certificates are taken from
/// it instead of checked).
#[test]
fn every_vector_decides_as_expected_with_the_fleet_set() {
    let v = vectors();
    let keys = ChannelKeys::from_file(&v.keys).expect("vector key file");
    let set = fleet_set(&keys);
    assert!(set.len() >= 2, "the vectors have good certificates");
    every_vector_decides_as_expected_with(|keys, config| {
        let set = fleet_set(&keys);
        let mut v = Verifier::with_cert_worker(keys, config);
        v.set_cert_set(set);
        v
    });
    let mut spared = 0;
    for case in &v.cases {
        let mut verifier = Verifier::new(keys.clone(), v.config);
        verifier.set_cert_set(set.clone());
        let mut replay = ReplayCache::new(&v.config);
        decide(&mut verifier, &mut replay, &case.code, case.now);
        spared += verifier.certs_from_set();
    }
    assert!(spared >= 2, "the set spared {spared} certificate checks");
}

/// The fuzz target `fuzz/fuzz_targets/ride_code_set.rs` as a seeded test: vector codes altered
/// where the set matters (a listed certificate under a forged or borrowed code signature,
/// changed dates, counters and keys), scanned at clocks around the vectors' and across the key
/// and certificate windows, decide the same on a verifier holding the fleet's set as on one
/// without. Each pair is fresh (the set is only asked on a certificate-cache miss); one in ten
/// checks first-seen certificates on a worker.
#[test]
fn the_fleet_set_never_changes_a_decision_for_altered_vector_codes() {
    use rand::{Rng, SeedableRng};
    const ROUNDS: usize = 2_000;
    let v = vectors();
    let keys = ChannelKeys::from_file(&v.keys).expect("vector key file");
    let set = fleet_set(&keys);
    let codes: Vec<(i64, [u8; CODE_BYTES])> = v
        .cases
        .iter()
        .filter_map(|c| Some((c.now, RideCode::parse(&c.code).ok()?.bytes)))
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20);
    let (mut spared, mut accepted) = (0, 0);
    for round in 0..ROUNDS {
        let (case_now, issued) = codes[rng.gen_range(0..codes.len())];
        let mut b = issued;
        match rng.gen_range(0..5) {
            // As issued, at another clock.
            0 => {}
            // A few bytes anywhere: the certificate changes, so it is no longer listed.
            1 => {
                for _ in 0..rng.gen_range(1..=3) {
                    b[rng.gen_range(0..CODE_BYTES)] ^= rng.gen_range(1..=255u8);
                }
            }
            // A few bytes of the code's own part: generated_at, counter, signature.
            2 => {
                for _ in 0..rng.gen_range(1..=3) {
                    b[rng.gen_range(CERT_BYTES..CODE_BYTES)] ^= rng.gen_range(1..=255u8);
                }
            }
            // A forged code signature under a listed certificate.
            3 => rng.fill(&mut b[CODE_SIGNED_BYTES..]),
            // Another holder's code (and signature) under this certificate.
            _ => {
                let (_, other) = codes[rng.gen_range(0..codes.len())];
                b[CERT_BYTES..].copy_from_slice(&other[CERT_BYTES..]);
            }
        }
        let now = match rng.gen_range(0..4) {
            0 => case_now + rng.gen_range(-86_400 * 400..=86_400 * 400),
            // Across the freshness window (30 s of skew ahead, 60 s of validity behind).
            _ => case_now + rng.gen_range(-45..=75),
        };
        let text = fare_validator::ride_code::format::to_text(&b);
        let mut without = Verifier::new(keys.clone(), v.config);
        let mut with = if round % 10 == 0 {
            Verifier::with_cert_worker(keys.clone(), v.config)
        } else {
            Verifier::new(keys.clone(), v.config)
        };
        with.set_cert_set(set.clone());
        let want = without.verify(&text, now);
        assert_eq!(
            with.verify(&text, now),
            want,
            "round {round}: code {} at {now}",
            hex::encode(b)
        );
        spared += with.certs_from_set();
        accepted += usize::from(want.is_ok());
    }
    // The set was used, and the comparison met accepted codes as well as refused ones.
    assert!(
        spared > ROUNDS as u64 / 10,
        "the set spared {spared} checks"
    );
    assert!(accepted > ROUNDS / 100, "{accepted} accepted");
}
