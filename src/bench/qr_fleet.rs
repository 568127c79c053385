//! Ride-code scans with the fleet's verified-certificate set and without it, alternated in
//! the same run (`qr_fleet` in the bench report).
//!
//! Two buses (two engines, the certificate worker each, as on a bus) see the same riders in
//! the same order, in rounds of [`QR_FLEET_ROUND_SCANS`] scans, one bus then the other; one
//! holds the set, the other not. Of the scans, [`QR_FLEET_NEW_TO_BUS_PCT`] % are holders the
//! bus has not seen (their certificate not in its cache) and of those
//! [`QR_FLEET_NEW_TO_FLEET_PCT`] % of all scans are holders the fleet has not seen either
//! (not in the set); the others are regulars whose certificate the bus verified already.
//! The set also lists `set_entries` other digests, so that the lookup is the size of a
//! city's riders.

use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{histogram, micros, validator};
use crate::blacklist::Blacklist;
use crate::clock::Timestamp;
use crate::journal::UnsyncedFiles;
use crate::ride_code::cert_set::CERT_SET_ENTRY_BYTES;
use crate::ride_code::issuer::SimChannels;
use crate::ride_code::{CertSet, ChannelKeys, RideCode, RideCodeConfig};
use crate::types::{CardNo, RiderCategory};

/// Scans of one bus before the other takes its turn.
pub const QR_FLEET_ROUND_SCANS: usize = 100;
/// Scans by holders new to the bus, percent (the fleet-new ones included).
pub const QR_FLEET_NEW_TO_BUS_PCT: u32 = 13;
/// Scans by holders new to the whole fleet, percent.
pub const QR_FLEET_NEW_TO_FLEET_PCT: u32 = 1;
/// Regular riders of the bus (their certificates fit its cache).
pub const QR_FLEET_REGULARS: usize = 300;

/// The comparison's figures.
#[derive(Debug, Clone, Serialize)]
pub struct QrFleetReport {
    /// Measured scans on each bus.
    pub scans: usize,
    pub new_to_bus_pct: u32,
    pub new_to_fleet_pct: u32,
    pub set_entries: usize,
    /// Signed snapshot bytes over entries.
    pub set_bytes_per_entry: f64,
    pub with_set_us_p50: u64,
    /// p90 and p95 beside p99: on a loaded machine the slowest 1 % are the scheduler's,
    /// and the bus-new holders' (13 %) show below it.
    pub with_set_us_p90: u64,
    pub with_set_us_p95: u64,
    pub with_set_us_p99: u64,
    pub without_set_us_p50: u64,
    pub without_set_us_p90: u64,
    pub without_set_us_p95: u64,
    pub without_set_us_p99: u64,
    /// With over without, p99.
    pub p99_ratio: f64,
    /// The scans the set is for alone: holders new to the bus whom the fleet met (listed),
    /// about 12 % of the scans. Their p99 is one class's tail, where the p99 of all scans
    /// falls at the 1 % of holders new to the fleet (two signature checks on either bus).
    pub listed_new_scans: usize,
    pub with_set_listed_new_us_p50: u64,
    pub with_set_listed_new_us_p99: u64,
    pub without_set_listed_new_us_p50: u64,
    pub without_set_listed_new_us_p99: u64,
    /// With over without, p99 of the listed new holders' scans.
    pub listed_new_p99_ratio: f64,
    /// Processor time of those scans, every thread of the process (the certificate worker's
    /// included), mean (half are SM2 holders, half P-256: a median falls between the two):
    /// what the set saves when the second core is not free.
    pub with_set_listed_new_cpu_us_mean: f64,
    pub without_set_listed_new_cpu_us_mean: f64,
    /// Scans by holders new to the whole fleet (the set lists none of them).
    pub new_to_fleet_scans: usize,
    /// First-seen certificates whose channel signature the set spared, on the bus with it.
    pub certs_from_set: u64,
}

/// A scan of the workload: when, the code text, and whether its holder is new to the bus
/// while the fleet met them (listed in the set), or new to the fleet.
struct Scan {
    at: u32,
    text: String,
    listed_new: bool,
    new_to_fleet: bool,
}

/// Warm-up scans, measured scans, the certificate digests the fleet knows.
type Workload = (Vec<Scan>, Vec<Scan>, Vec<crate::ride_code::CertDigest>);

/// The workload: warm-up scans by the regulars (not measured), then the measured scans, and
/// the digests the fleet knows.
fn workload(
    scans: usize,
    seed: u64,
    t0: u32,
    channels: &mut SimChannels,
) -> Result<Workload, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x000F_1EE7);
    let mut fleet = Vec::new();
    let mut at = t0;
    let mut counter = 0u32;
    let mut issue = |holder: u64, at: u32| -> Result<String, String> {
        let channel = 1 + (holder % 8) as u16;
        let card = CardNo::from_u128(3714_0000_0000_0000_0000u128 + u128::from(holder))
            .map_err(|e| e.to_string())?;
        counter += 1;
        channels
            .issue(channel, holder, card, RiderCategory::Adult, at - 2, counter)
            .ok_or_else(|| "unknown bench channel".to_string())
    };
    let digest = |text: &str| RideCode::parse(text).map(|c| c.cert_digest());
    let mut warm = Vec::new();
    for h in 0..QR_FLEET_REGULARS as u64 {
        at += 1;
        let text = issue(h, at)?;
        fleet.push(digest(&text).map_err(|e| e.to_string())?);
        warm.push(Scan {
            at,
            text,
            listed_new: false,
            new_to_fleet: false,
        });
    }
    let mut measured = Vec::with_capacity(scans);
    let mut fresh = 1_000_000u64;
    for i in 0..scans {
        at += 1;
        let roll = rng.gen_range(0..100u32);
        let holder = if roll < QR_FLEET_NEW_TO_BUS_PCT {
            fresh += 1;
            fresh
        } else {
            (i % QR_FLEET_REGULARS) as u64
        };
        let text = issue(holder, at)?;
        // The fleet knows every holder but the fleet-new ones.
        if roll >= QR_FLEET_NEW_TO_FLEET_PCT {
            fleet.push(digest(&text).map_err(|e| e.to_string())?);
        }
        measured.push(Scan {
            at,
            text,
            listed_new: (QR_FLEET_NEW_TO_FLEET_PCT..QR_FLEET_NEW_TO_BUS_PCT).contains(&roll),
            new_to_fleet: roll < QR_FLEET_NEW_TO_FLEET_PCT,
        });
    }
    Ok((warm, measured, fleet))
}

/// Runs the comparison: `scans` measured scans on each bus, the set padded to `set_entries`.
pub fn run(scans: usize, set_entries: usize, seed: u64) -> Result<QrFleetReport, String> {
    let start = Timestamp::parse_rfc3339("2026-11-28T06:00:00+08:00").map_err(|e| e.to_string())?;
    let t0 = start.unix_s as u32 + 100_000;
    let mut channels = SimChannels::new(seed, (t0 - 86_400, t0 + 86_400 * 30));
    let keys = ChannelKeys::from_file(&channels.key_file()).map_err(|e| e.to_string())?;
    let (warm, measured, mut fleet) = workload(scans, seed, t0, &mut channels)?;
    fleet.sort_unstable();
    fleet.dedup();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Random digests stand for the rest of the city's riders (a collision with the
    // workload's is as likely as any SHA-256 collision).
    let others = (fleet.len()..set_entries.max(fleet.len())).map(|_| rng.gen::<[u8; 32]>());
    let set = CertSet::from_digests(1, &keys, fleet.iter().copied().chain(others));
    let key = crate::signed::signing_key_from_seed([1; 32]);
    let dates = crate::signed::Dates::starting(t0, 86_400);
    let file_bytes = crate::ride_code::cert_set::snapshot_file(&set, dates, &key).len();
    let set_entries = set.len();
    debug_assert_eq!(set.memory_bytes(), set.len() * CERT_SET_ENTRY_BYTES);
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut buses = [true, false].map(|with_set| {
        let v = validator(
            &tmp.path().join(format!("bus-{with_set}")),
            Box::new(UnsyncedFiles),
            Blacklist::empty(),
        );
        (with_set, v, [histogram(), histogram(), histogram()])
    });
    let set = Arc::new(set);
    for (with_set, v, _) in buses.iter_mut() {
        let v = v.as_mut().map_err(|e| e.clone())?;
        v.set_ride_code_keys(keys.clone(), RideCodeConfig::default());
        if *with_set {
            v.set_verified_certs(Arc::clone(&set));
        }
        for s in &warm {
            scan(v, s, &start)?;
        }
    }
    for round in measured.chunks(QR_FLEET_ROUND_SCANS) {
        for (_, v, [all, listed, listed_cpu]) in buses.iter_mut() {
            let v = v.as_mut().map_err(|e| e.clone())?;
            for s in round {
                let cpu = process_cpu_ns();
                let us = scan(v, s, &start)?;
                let cpu_us = process_cpu_ns().saturating_sub(cpu) / 1_000;
                all.saturating_record(us);
                if s.listed_new {
                    listed.saturating_record(us);
                    listed_cpu.saturating_record(cpu_us.max(1));
                }
            }
        }
    }
    let listed_new_scans = measured.iter().filter(|s| s.listed_new).count();
    let new_to_fleet_scans = measured.iter().filter(|s| s.new_to_fleet).count();
    let [(_, with, [w, wl, wlc]), (_, _, [wo, wol, wolc])] = buses;
    let certs_from_set = with?.verified_certs_spared();
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99);
    Ok(QrFleetReport {
        scans,
        new_to_bus_pct: QR_FLEET_NEW_TO_BUS_PCT,
        new_to_fleet_pct: QR_FLEET_NEW_TO_FLEET_PCT,
        set_entries,
        set_bytes_per_entry: file_bytes as f64 / set_entries.max(1) as f64,
        with_set_us_p50: w.value_at_quantile(0.5),
        with_set_us_p90: w.value_at_quantile(0.90),
        with_set_us_p95: w.value_at_quantile(0.95),
        with_set_us_p99: p99(&w),
        without_set_us_p50: wo.value_at_quantile(0.5),
        without_set_us_p90: wo.value_at_quantile(0.90),
        without_set_us_p95: wo.value_at_quantile(0.95),
        without_set_us_p99: p99(&wo),
        p99_ratio: p99(&w) as f64 / p99(&wo).max(1) as f64,
        listed_new_scans,
        with_set_listed_new_us_p50: wl.value_at_quantile(0.5),
        with_set_listed_new_us_p99: p99(&wl),
        without_set_listed_new_us_p50: wol.value_at_quantile(0.5),
        without_set_listed_new_us_p99: p99(&wol),
        listed_new_p99_ratio: p99(&wl) as f64 / p99(&wol).max(1) as f64,
        with_set_listed_new_cpu_us_mean: wlc.mean(),
        without_set_listed_new_cpu_us_mean: wolc.mean(),
        new_to_fleet_scans,
        certs_from_set,
    })
}

/// Processor time of every thread of this process so far, nanoseconds (outside the
/// measured window: a system call).
fn process_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return 0;
    }
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// One scan, accepted, and its time in microseconds.
fn scan(
    v: &mut crate::engine::Validator<crate::card::sim::SimPsam>,
    s: &Scan,
    start: &Timestamp,
) -> Result<u64, String> {
    let now = Timestamp {
        unix_s: i64::from(s.at),
        utc_offset_s: start.utc_offset_s,
    };
    let t = Instant::now();
    let d = v.scan_code(&s.text, now);
    let us = micros(t);
    if !d.accepted() {
        return Err(format!("bench scan refused: {d:?}"));
    }
    Ok(us)
}
