//! Latency percentiles of one ride code scan, per algorithm: first-seen holders on one core
//! and with the certificate worker (`Verifier::with_cert_worker`), each back to back and after
//! a pause (on a bus, scans are seconds apart: caches are cold and the worker is parked), then
//! returning holders.
//!
//! cargo run --release --example ride_code_latency [-- SAMPLES]
//!
//! Each sample times one `Verifier::verify` twice over: wall time (`Instant`) and this thread's
//! CPU time (CLOCK_THREAD_CPUTIME_ID), which other processes on a busy machine cannot inflate.
//! First-seen samples are codes of distinct holders, each scanned once.

use std::time::Instant;

use fare_validator::ride_code::issuer::SimChannels;
use fare_validator::ride_code::{Alg, ChannelKeys, RideCodeConfig, Verifier};
use fare_validator::types::{CardNo, RiderCategory};

const NOW: i64 = 1_795_824_000;
const SAMPLES_DEFAULT: usize = 2_000;
/// The pause before each "after a pause" sample: longer than the worker polls.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// The key file and one code for each of `n` distinct holders of one channel of `alg`.
fn setup(alg: Alg, n: usize) -> (ChannelKeys, Vec<String>) {
    let mut channels = SimChannels::new(7, (NOW as u32 - 3_600, NOW as u32 + 3_600));
    // SimChannels: SM2 on odd channel ids, P-256 on even ones.
    let channel = if alg == Alg::Sm2 { 1 } else { 2 };
    let keys = ChannelKeys::from_file(&channels.key_file()).expect("simulated key file");
    let texts = (0..n)
        .map(|holder| {
            let card =
                CardNo::from_u128(3714_0000_0000_0001_0000 + holder as u128).expect("20 digits");
            let (category, at) = (RiderCategory::Adult, NOW as u32);
            channels
                .issue(channel, holder as u64, card, category, at, 1)
                .expect("a simulated channel")
        })
        .collect();
    (keys, texts)
}

/// Times each text once through `v`, after `pause` each if one is given.
fn scan_all(
    v: &mut Verifier,
    texts: &[String],
    pause: Option<std::time::Duration>,
) -> Vec<(u64, u64)> {
    texts
        .iter()
        .map(|text| {
            if let Some(p) = pause {
                std::thread::sleep(p);
            }
            let (r, wall_ns, cpu_ns) = timed(|| v.verify(text, NOW));
            assert!(r.is_ok(), "{r:?}");
            (wall_ns, cpu_ns)
        })
        .collect()
}

/// This thread's CPU time in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Times one call: (wall ns, thread CPU ns).
fn timed<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let (wall, cpu) = (Instant::now(), thread_cpu_ns());
    let out = f();
    let cpu_ns = thread_cpu_ns() - cpu;
    (out, wall.elapsed().as_nanos() as u64, cpu_ns)
}

fn report(name: &str, samples: &mut [(u64, u64)]) {
    let mut wall: Vec<u64> = samples.iter().map(|s| s.0).collect();
    let mut cpu: Vec<u64> = samples.iter().map(|s| s.1).collect();
    wall.sort_unstable();
    cpu.sort_unstable();
    let at = |v: &[u64], q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "{name:<32} n={:<6} wall p50={:>7.1} p99={:>7.1} us | cpu p50={:>7.1} p99={:>7.1} max={:>7.1} us",
        wall.len(),
        at(&wall, 0.50),
        at(&wall, 0.99),
        at(&cpu, 0.50),
        at(&cpu, 0.99),
        at(&cpu, 1.0)
    );
}

fn main() {
    let samples: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(SAMPLES_DEFAULT);
    let config = RideCodeConfig::default();
    for (alg, name) in [(Alg::P256, "p256"), (Alg::Sm2, "sm2")] {
        let (keys, texts) = setup(alg, samples);
        for (worker, pause, row) in [
            (false, None, "first-seen"),
            (false, Some(PAUSE), "first-seen, paused"),
            (true, None, "first-seen, worker"),
            (true, Some(PAUSE), "first-seen, worker, paused"),
        ] {
            let mut v = if worker {
                let v = Verifier::with_cert_worker(keys.clone(), config);
                assert!(v.has_cert_worker(), "the worker needs a second core");
                v
            } else {
                Verifier::new(keys.clone(), config)
            };
            report(
                &format!("{name} {row}"),
                &mut scan_all(&mut v, &texts, pause),
            );
            if worker && pause.is_some() {
                // Every certificate is known now: each holder returns.
                report(
                    &format!("{name} returning"),
                    &mut scan_all(&mut v, &texts, None),
                );
            }
        }
    }
}
