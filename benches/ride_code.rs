//! One ride code scan (checks 1–10) for each algorithm: a first-seen holder (certificate cache
//! cold: a fresh verifier per iteration, two signature checks), a first-seen holder the
//! fleet's verified-certificate set lists (the holder key decoded, one signature check) and a
//! returning holder (cache warm: one signature check). Also the replay cache's check-and-remember.
//!
//! cargo bench --bench ride_code -- --warm-up-time 1 --measurement-time 3

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use fare_validator::ride_code::issuer;
use fare_validator::ride_code::{
    Alg, CertSet, ReplayCache, ReplayKey, RideCode, RideCodeConfig, Verifier,
};

const NOW: i64 = 1_795_824_000;

/// A verifier trusting one channel key of `alg`, and a code from a holder of that channel.
fn setup(alg: Alg) -> (Verifier, String) {
    let world = issuer::OneChannel::new(alg, NOW, 3_600);
    let text = world.text(NOW as u32, 1);
    (Verifier::new(world.keys, RideCodeConfig::default()), text)
}

fn scans(c: &mut Criterion) {
    for (alg, name) in [(Alg::P256, "p256"), (Alg::Sm2, "sm2")] {
        let (verifier, text) = setup(alg);
        let keys = verifier.keys().clone();
        c.bench_function(&format!("ride_code/{name}/first_seen_holder"), |b| {
            b.iter_batched(
                || Verifier::new(keys.clone(), RideCodeConfig::default()),
                |mut v| {
                    let r = v.verify(black_box(&text), NOW);
                    assert!(r.is_ok());
                    (v, r)
                },
                BatchSize::SmallInput,
            )
        });
        // A first-seen holder the fleet's verified-certificate set lists: the holder key's
        // decoding and the code's check, no channel signature.
        let digest = RideCode::parse(&text).unwrap().cert_digest();
        let set = std::sync::Arc::new(CertSet::from_digests(1, &keys, [digest]));
        c.bench_function(&format!("ride_code/{name}/first_seen_listed_holder"), |b| {
            b.iter_batched(
                || {
                    let mut v = Verifier::new(keys.clone(), RideCodeConfig::default());
                    v.set_cert_set(set.clone());
                    v
                },
                |mut v| {
                    let r = v.verify(black_box(&text), NOW);
                    assert!(r.is_ok() && v.certs_from_set() == 1);
                    (v, r)
                },
                BatchSize::SmallInput,
            )
        });
        let mut warm = verifier;
        assert!(warm.verify(&text, NOW).is_ok());
        c.bench_function(&format!("ride_code/{name}/returning_holder"), |b| {
            b.iter(|| {
                let r = warm.verify(black_box(&text), NOW);
                assert!(r.is_ok());
                r
            })
        });
    }
}

/// The search of the fleet's set a first-seen holder costs, at a city's size (1M entries).
fn set_lookup(c: &mut Criterion) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20);
    let keys = issuer::OneChannel::new(Alg::P256, NOW, 3_600).keys;
    let digests: Vec<[u8; 32]> = (0..1_000_000).map(|_| rng.gen()).collect();
    let set = CertSet::from_digests(1, &keys, digests.iter().copied());
    let mut i = 0usize;
    c.bench_function("ride_code/cert_set_1m/contains", |b| {
        b.iter(|| {
            // A listed digest, a different one each time (cold cache lines, as on a bus).
            i = (i + 7_919) % digests.len();
            assert!(set.contains(black_box(&digests[i])));
        })
    });
}

fn parse_and_replay(c: &mut Criterion) {
    let (_, text) = setup(Alg::P256);
    c.bench_function("ride_code/parse", |b| {
        b.iter(|| RideCode::parse(black_box(&text)))
    });
    let mut cache = ReplayCache::new(&RideCodeConfig::default());
    let mut counter = 0u32;
    c.bench_function("ride_code/replay_check_and_remember", |b| {
        b.iter(|| {
            counter = counter.wrapping_add(1);
            let key = ReplayKey {
                channel_id: 2,
                account_id: u64::from(counter % 500),
                counter,
            };
            // One code a second of simulated time keeps the table at steady state.
            let now = NOW + i64::from(counter / 4);
            if !cache.contains(&key, now, now) {
                cache.remember(key, now, now);
            }
        })
    });
}

criterion_group!(benches, scans, set_lookup, parse_and_replay);
criterion_main!(benches);
