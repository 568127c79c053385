//! `fare-validator bench validator`: the validator program's own figures, beside the engine
//! alone in the same run (issue: the program should add under 10 % to the engine's p99).
//!
//! - **scan under a tap**: a scanner line written to the loopback scanner socket until its
//!   decision line is written, while another thread taps cards without pause (so a card
//!   dialogue is nearly always in progress on the other input, holding the engine's lock);
//!   against `scan_code` on an engine alone;
//! - **tap under a delta**: taps while a blacklist delta of `--delta-changes` changes is
//!   applied to the live list (the uplink's work: build the next list, swap it through the
//!   handle); the longest tap, against taps on an engine alone.
//!
//! Cards are the bench's simulated cards in process (a PC/SC card dialogue is slower, and a
//! scan may wait for one whole tap); the journal is in memory (no sync), so the figures are
//! the program's cost and not the disk's.

use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{scanner, Shared};
use crate::blacklist::{Blacklist, Change, ChangeOp, Delta};
use crate::card::psam::Psam;
use crate::card::sim::{SimCard, SimPsam, TestKeys};
use crate::clock::Timestamp;
use crate::engine::{EngineConfig, Validator};
use crate::fare::FareTable;
use crate::journal::{Journal, UnsyncedFiles};
use crate::replay::REPLAY_TERMINAL_NO;
use crate::ride_code::issuer::SimChannels;
use crate::ride_code::{ChannelKeys, RideCodeConfig};
use crate::types::{CardNo, ListId, ListReason, RiderCategory};

/// Ride-code holders the scans cycle through.
const HOLDERS: usize = 400;
const T0_UNIX_S: i64 = 1_795_824_000;
const UTC_OFFSET_S: i32 = 8 * 3600;

#[derive(clap::Args, Debug, Clone)]
pub struct ValidatorBenchArgs {
    /// Ride codes scanned, by the engine alone and through the program each.
    #[arg(long, default_value_t = 2_000)]
    pub scans: usize,
    /// Card taps by the engine alone (the reference for the taps under a delta).
    #[arg(long, default_value_t = 2_000)]
    pub taps: usize,
    /// Entries of the blacklist the delta applies to.
    #[arg(long, default_value_t = 1_000_000)]
    pub blacklist_entries: usize,
    /// Changes in the delta applied while taps go on.
    #[arg(long, default_value_t = 100_000)]
    pub delta_changes: usize,
    /// Seed of the blacklist, the delta and the codes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// One run's figures, microseconds unless named otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct ValidatorBenchReport {
    pub scans: usize,
    pub engine_scan_us_p50: u64,
    pub engine_scan_us_p99: u64,
    pub program_scan_us_p50: u64,
    pub program_scan_us_p99: u64,
    /// (program p99 − engine p99) / engine p99, percent.
    pub program_scan_p99_added_pct: f64,
    /// Card taps made on the other input while the program's scans ran.
    pub taps_during_scans: u64,
    pub engine_tap_us_p99: u64,
    pub engine_tap_us_max: u64,
    pub delta_changes: usize,
    pub delta_apply_ms: u64,
    pub taps_during_delta: u64,
    pub program_tap_us_p99_during_delta: u64,
    pub program_tap_us_max_during_delta: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn at(unix_s: i64) -> Timestamp {
    Timestamp {
        unix_s,
        utc_offset_s: UTC_OFFSET_S,
    }
}

fn engine(
    dir: &std::path::Path,
    list: Blacklist,
    keys: &ChannelKeys,
) -> Result<Validator<SimPsam>, String> {
    let (journal, _) =
        Journal::open_with(dir, Box::new(UnsyncedFiles)).map_err(|e| e.to_string())?;
    let psam = Psam::open(SimPsam::new(TestKeys::default(), REPLAY_TERMINAL_NO, 1))
        .map_err(|e| e.to_string())?;
    let mut v = Validator::new(
        EngineConfig::default(),
        psam,
        FareTable::default_policy(),
        list,
        journal,
    );
    v.set_ride_code_keys(keys.clone(), RideCodeConfig::default());
    Ok(v)
}

/// Codes issued beforehand (the phone's cost is not the validator's): (scan time, text).
fn codes(n: usize, seed: u64) -> Result<(ChannelKeys, Vec<(i64, String)>), String> {
    let t0 = T0_UNIX_S as u32;
    let mut channels = SimChannels::new(seed, (t0 - 86_400, t0 + 86_400 * 30));
    let keys = ChannelKeys::from_file(&channels.key_file()).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let holder = i % HOLDERS;
        let channel = 1 + (holder % 8) as u16;
        let card = CardNo::from_u128(3714_0000_0000_0009_0000u128 + holder as u128)
            .map_err(|e| e.to_string())?;
        let scan_at = t0 + 1_000 + i as u32;
        let text = channels
            .issue(
                channel,
                holder as u64,
                card,
                RiderCategory::Adult,
                scan_at - 2,
                i as u32,
            )
            .ok_or("unknown bench channel")?;
        out.push((i64::from(scan_at), text));
    }
    Ok((keys, out))
}

/// Standard output of the program: the time each ride-code decision line was complete.
struct Stamp {
    line: Vec<u8>,
    tx: mpsc::Sender<Instant>,
}

impl Write for Stamp {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        for &c in b {
            if c == b'\n' {
                if self.line.windows(11).any(|w| w == b"\"media\":\"qr") {
                    let _ = self.tx.send(Instant::now());
                }
                self.line.clear();
            } else {
                self.line.push(c);
            }
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn blacklist_and_delta(args: &ValidatorBenchArgs) -> (Blacklist, Delta) {
    let base = Blacklist::from_entries(
        1,
        crate::bench::random_blacklist(args.blacklist_entries, args.seed),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0xD17A);
    let changes = (0..args.delta_changes)
        .map(|_| Change {
            op: ChangeOp::Add,
            id: ListId::Card(
                CardNo::from_u128(rng.gen_range(0..10u128.pow(20))).expect("20 digits"),
            ),
            reason: ListReason::Lost,
        })
        .collect();
    let delta = Delta {
        from_version: 1,
        to_version: 2,
        changes,
    };
    (base, delta)
}

/// Run the bench and report.
pub fn run(args: &ValidatorBenchArgs) -> Result<ValidatorBenchReport, String> {
    let (keys, codes) = codes(args.scans, args.seed)?;
    let (base, delta) = blacklist_and_delta(args);
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cards: Vec<SimCard> = crate::bench::bench_cards(args.seed);

    // A first pass on a throwaway engine: the process's one-time costs (precomputed curve
    // tables, page faults, the certificate worker's start) are paid before either side is
    // measured. Each measured side then starts with its own cold certificate cache.
    let mut warm = engine(&tmp.path().join("warm"), Blacklist::empty(), &keys)?;
    for (t, text) in &codes {
        warm.scan_code(text, at(*t));
    }
    drop(warm);

    // The engine alone: scans, then taps.
    let mut alone = engine(&tmp.path().join("alone"), base.clone(), &keys)?;
    let mut engine_scan = histogram();
    for (t, text) in &codes {
        let start = Instant::now();
        let d = alone.scan_code(text, at(*t));
        engine_scan.saturating_record(micros(start));
        if !d.accepted() {
            return Err(format!("bench scan refused: {d:?}"));
        }
    }
    let mut engine_tap = histogram();
    for i in 0..args.taps {
        let n = cards.len();
        let card = &mut cards[i % n];
        card.enter_field(None);
        let start = Instant::now();
        alone.tap_card(card, at(T0_UNIX_S + 100_000 + i as i64));
        engine_tap.saturating_record(micros(start));
    }
    drop(alone);

    // The program: scanner socket, card thread, the list swapped under it.
    let clock = Arc::new(AtomicI64::new(T0_UNIX_S));
    let (tx, stamps) = mpsc::channel();
    let program = {
        let v = engine(&tmp.path().join("program"), base, &keys)?;
        let clock = Arc::clone(&clock);
        Arc::new(Shared::new(
            v,
            Box::new(Stamp {
                line: Vec::new(),
                tx,
            }),
            Box::new(move || at(clock.load(Ordering::Relaxed))),
            Vec::new(),
        ))
    };
    let listener = scanner::bind_tcp("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?)
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let scan_thread = {
        let p = Arc::clone(&program);
        std::thread::spawn(move || {
            scanner::serve_tcp(listener, &p.scanner_state, &p.stop, &mut |l| {
                p.scan(l);
            })
        })
    };
    let tapping = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (tap_tx, tap_rx) = mpsc::channel::<u64>();
    let tap_thread = {
        let p = Arc::clone(&program);
        let tapping = Arc::clone(&tapping);
        std::thread::spawn(move || {
            let mut i = 0usize;
            while tapping.load(Ordering::Relaxed) {
                let n = cards.len();
                let card = &mut cards[i % n];
                card.enter_field(None);
                let start = Instant::now();
                p.tap(card);
                let _ = tap_tx.send(micros(start));
                i += 1;
            }
        })
    };
    let mut program_scan = histogram();
    {
        let mut sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let _ = sock.set_nodelay(true);
        for (t, text) in &codes {
            clock.store(*t, Ordering::Relaxed);
            let start = Instant::now();
            sock.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
            sock.write_all(b"\n").map_err(|e| e.to_string())?;
            let done = stamps.recv().map_err(|e| e.to_string())?;
            program_scan.saturating_record(
                u64::try_from(done.duration_since(start).as_micros()).unwrap_or(u64::MAX),
            );
        }
    }
    let taps_during_scans = tap_rx.try_iter().count() as u64;

    // A delta applied to the live list while the card thread taps on.
    let start = Instant::now();
    program
        .blacklist
        .install_delta(&delta)
        .map_err(|e| e.to_string())?;
    let delta_apply_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut during = histogram();
    for us in tap_rx.try_iter() {
        during.saturating_record(us);
    }
    tapping.store(false, Ordering::Relaxed);
    let _ = tap_thread.join();
    program.stop.store(true, Ordering::Relaxed);
    let _ = scan_thread.join();

    let e99 = engine_scan.value_at_quantile(0.99);
    let p99 = program_scan.value_at_quantile(0.99);
    Ok(ValidatorBenchReport {
        scans: codes.len(),
        engine_scan_us_p50: engine_scan.value_at_quantile(0.50),
        engine_scan_us_p99: e99,
        program_scan_us_p50: program_scan.value_at_quantile(0.50),
        program_scan_us_p99: p99,
        program_scan_p99_added_pct: (p99 as f64 - e99 as f64) * 100.0 / e99.max(1) as f64,
        taps_during_scans,
        engine_tap_us_p99: engine_tap.value_at_quantile(0.99),
        engine_tap_us_max: engine_tap.max(),
        delta_changes: delta.changes.len(),
        delta_apply_ms,
        taps_during_delta: during.len(),
        program_tap_us_p99_during_delta: during.value_at_quantile(0.99),
        program_tap_us_max_during_delta: during.max(),
    })
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_measures_both_sides() {
        let r = run(&ValidatorBenchArgs {
            scans: 20,
            taps: 20,
            blacklist_entries: 2_000,
            delta_changes: 2_000,
            seed: 3,
        })
        .unwrap();
        assert_eq!(r.scans, 20);
        assert!(r.engine_scan_us_p99 >= r.engine_scan_us_p50 && r.engine_scan_us_p50 > 0);
        assert!(r.program_scan_us_p99 >= r.program_scan_us_p50 && r.program_scan_us_p50 > 0);
        assert_eq!(r.delta_changes, 2_000);
    }
}
