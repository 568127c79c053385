//! Latency percentiles of one ride code scan, per algorithm, first-seen and returning holder.
//!
//! cargo run --release --example ride_code_latency [-- SAMPLES]
//!
//! Each sample times one `Verifier::verify` twice over: wall time (`Instant`) and this thread's
//! CPU time (CLOCK_THREAD_CPUTIME_ID), which other processes on a busy machine cannot inflate.
//! First-seen samples use a verifier made just before (cold certificate cache), outside the
//! timed span.

use std::time::Instant;

use fare_validator::ride_code::issuer;
use fare_validator::ride_code::{Alg, ChannelKeys, RideCodeConfig, Verifier};

const NOW: i64 = 1_795_824_000;
const SAMPLES_DEFAULT: usize = 5_000;

fn setup(alg: Alg) -> (ChannelKeys, String) {
    let world = issuer::OneChannel::new(alg, NOW, 3_600);
    let text = world.text(NOW as u32, 1);
    (world.keys, text)
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
        "{name:<24} n={:<6} wall p50={:>7.1} p99={:>7.1} us | cpu p50={:>7.1} p99={:>7.1} max={:>7.1} us",
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
    for (alg, name) in [(Alg::P256, "p256"), (Alg::Sm2, "sm2")] {
        let (keys, text) = setup(alg);
        let mut cold = Vec::with_capacity(samples);
        for _ in 0..samples {
            let mut v = Verifier::new(keys.clone(), RideCodeConfig::default());
            let (r, wall_ns, cpu_ns) = timed(|| v.verify(&text, NOW));
            cold.push((wall_ns, cpu_ns));
            assert!(r.is_ok());
        }
        report(&format!("{name} first-seen holder"), &mut cold);
        let mut v = Verifier::new(keys, RideCodeConfig::default());
        assert!(v.verify(&text, NOW).is_ok());
        let mut warm = Vec::with_capacity(samples);
        for _ in 0..samples {
            let (r, wall_ns, cpu_ns) = timed(|| v.verify(&text, NOW));
            warm.push((wall_ns, cpu_ns));
            assert!(r.is_ok());
        }
        report(&format!("{name} returning holder"), &mut warm);
    }
}
