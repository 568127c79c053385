//! One ride code scan (checks 1–10) for each algorithm: a first-seen holder (certificate cache
//! cold: a fresh verifier per iteration, two signature checks) and a returning holder (cache
//! warm: one signature check). Also the replay cache's check-and-remember.
//!
//! cargo bench --bench ride_code -- --warm-up-time 1 --measurement-time 3

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use fare_validator::ride_code::issuer;
use fare_validator::ride_code::{Alg, ReplayCache, ReplayKey, RideCode, RideCodeConfig, Verifier};

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

criterion_group!(benches, scans, parse_and_replay);
criterion_main!(benches);
