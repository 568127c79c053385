//! Latency percentiles of one ride code scan, per algorithm, first-seen and returning holder.
//!
//! cargo run --release --example ride_code_latency [-- SAMPLES]
//!
//! Each sample times one `Verifier::verify` with `Instant`; first-seen samples use a verifier
//! made just before (cold certificate cache), outside the timed span.

use std::time::Instant;

use fare_validator::ride_code::issuer::{self, CertFields, KeyPair};
use fare_validator::ride_code::{
    Alg, ChannelKeys, KeyFile, KeyFileEntry, RideCodeConfig, Verifier,
};
use fare_validator::types::RiderCategory;

const NOW: i64 = 1_795_824_000;
const SAMPLES_DEFAULT: usize = 5_000;

fn setup(alg: Alg) -> (ChannelKeys, String) {
    let channel = KeyPair::from_seed(alg, 1);
    let holder = KeyPair::from_seed(alg, 2);
    let keys = ChannelKeys::from_file(&KeyFile {
        version: 1,
        channels: vec![KeyFileEntry {
            channel_id: 2,
            name: "latency".into(),
            key_id: 1,
            alg,
            public_key: hex::encode(channel.public_key()),
            not_before: NOW - 86_400,
            not_after: NOW + 86_400,
            revoked: false,
        }],
    })
    .expect("key file");
    let fields = CertFields {
        alg,
        channel_id: 2,
        channel_key_id: 1,
        account_id: 1,
        card_no: "37140000000000000001".parse().expect("card"),
        rider_category: RiderCategory::Adult as u8,
        cert_not_before: (NOW - 3600) as u32,
        cert_not_after: (NOW + 3600) as u32,
        holder_public_key: holder.public_key(),
    };
    let cert = issuer::certificate(&fields, &channel);
    (
        keys,
        issuer::code_text(&issuer::code(&cert, NOW as u32, 1, &holder)),
    )
}

fn report(name: &str, mut samples_ns: Vec<u64>) {
    samples_ns.sort_unstable();
    let at = |q: f64| samples_ns[((samples_ns.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "{name:<28} n={:<6} p50={:>7.1} us  p99={:>7.1} us  max={:>7.1} us",
        samples_ns.len(),
        at(0.50),
        at(0.99),
        at(1.0)
    );
}

fn main() {
    let samples: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(SAMPLES_DEFAULT);
    for (alg, name) in [(Alg::P256, "p256"), (Alg::Sm2, "sm2")] {
        let (keys, text) = setup(alg);
        let mut cold = Vec::with_capacity(samples);
        for _ in 0..samples {
            let mut v = Verifier::new(keys.clone(), RideCodeConfig::default());
            let t = Instant::now();
            let r = v.verify(&text, NOW);
            cold.push(t.elapsed().as_nanos() as u64);
            assert!(r.is_ok());
        }
        report(&format!("{name} first-seen holder"), cold);
        let mut v = Verifier::new(keys, RideCodeConfig::default());
        assert!(v.verify(&text, NOW).is_ok());
        let mut warm = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = Instant::now();
            let r = v.verify(&text, NOW);
            warm.push(t.elapsed().as_nanos() as u64);
            assert!(r.is_ok());
        }
        report(&format!("{name} returning holder"), warm);
    }
}
