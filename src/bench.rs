//! `fare-validator bench`: the engine measured under load against the naive validator a
//! user would otherwise write, in the same process, on the same cards and taps.
//!
//! - card taps with a large blacklist, the journal in memory (no sync);
//! - card taps made durable by group commit (a burst's grey records share one fdatasync
//!   before any of its debits, its records one more after them; a tap's latency runs until
//!   its group's record sync returns);
//! - the baseline: the same card dialogue, but a SQLite query per tap for the blacklist and
//!   one SQLite INSERT per tap with `synchronous=FULL` for the record.
//!
//! The durable workload is bursts: [`BENCH_BURST_TAPS`] taps arrive at once (a whole depot's
//! worth of readers, one card on each: [`Validator::tap_burst`]), the next burst when the last
//! is answered. A tap's latency runs from its burst's arrival to its answer, which is only
//! given once its record is durable. Group commit exists for exactly this: the burst's
//! intents share one sync and its records another, while the baseline pays one commit per
//! tap, one after another. The same taps one at a time (bursts of one, where group commit has
//! nothing to share: the intent's sync, then the record's) are reported beside it.

use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::blacklist::Blacklist;
use crate::card::apdu::CardChannel;
use crate::card::psam::Psam;
use crate::card::quickpass::{CaKeys, PanTokenKey};
use crate::card::sim::{CardSpec, SimCard, SimPsam, TestKeys};
use crate::card::sim_quickpass::{QuickPassSpec, SimPhysicalCard, SimQuickPass};
use crate::clock::Timestamp;
use crate::engine::{EngineConfig, Validator, GROUP_COMMIT_TAPS_MAX};
use crate::fare::FareTable;
use crate::journal::{FileLayer, Journal, OsFiles, UnsyncedFiles};
use crate::types::{AccountId, CardNo, ListId, ListReason, RiderCategory};

mod qr_fleet;

/// Distinct cards tapped in a run (each comes back only after the anti-passback window).
pub const BENCH_CARDS: usize = 1_000;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// A short run (under a minute on a 2-core machine).
    #[arg(long)]
    pub quick: bool,
    /// Blacklist entries (default: 1,000,000 quick, 5,000,000 otherwise).
    #[arg(long)]
    pub blacklist_entries: Option<usize>,
    /// Seed of the generated blacklist and cards.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Only the ride-code scans with the fleet's verified-certificate set and without it,
    /// alternated (the report's `qr_fleet`, printed alone).
    #[arg(long)]
    pub only_qr_fleet: bool,
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BenchPlan {
    pub blacklist_entries: usize,
    pub memory_taps: usize,
    pub qr_scans: usize,
    pub durable_taps: usize,
    pub baseline_taps: usize,
    /// Taps made one at a time (bursts of one), ours and the baseline's each.
    pub single_taps: usize,
    /// QuickPass taps: the whole dialogue with a simulated card, fDDA included.
    pub quickpass_taps: usize,
    /// Ride-code scans on each of the two buses of `qr_fleet` (with and without the set).
    pub qr_fleet_scans: usize,
    /// Entries of the verified-certificate set in `qr_fleet`.
    pub qr_fleet_set_entries: usize,
}

impl BenchPlan {
    pub fn for_args(a: &BenchArgs) -> Self {
        let (entries, memory, qr, durable, baseline, single) = if a.quick {
            (1_000_000, 20_000, 3_000, 40_960, 1_280, 300)
        } else {
            (5_000_000, 200_000, 20_000, 204_800, 6_400, 2_000)
        };
        let quickpass = if a.quick { 2_000 } else { 10_000 };
        let (qr_fleet_scans, qr_fleet_set_entries) = if a.quick {
            (3_000, 1_000_000)
        } else {
            (20_000, 3_000_000)
        };
        BenchPlan {
            blacklist_entries: a.blacklist_entries.unwrap_or(entries),
            memory_taps: memory,
            qr_scans: qr,
            durable_taps: durable,
            baseline_taps: baseline,
            single_taps: single,
            quickpass_taps: quickpass,
            qr_fleet_scans,
            qr_fleet_set_entries,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub plan: BenchPlan,
    pub card_tap_us_p50: u64,
    pub card_tap_us_p99: u64,
    pub card_tap_us_max: u64,
    /// Ride-code scans from all eight channels (SM2 and P-256), mostly returning holders.
    pub qr_scan_us_p50: u64,
    pub qr_scan_us_p99: u64,
    pub qr_scan_p256_us_p99: u64,
    pub qr_scan_sm2_us_p99: u64,
    /// Ride-code scans with the fleet's verified-certificate set and without it, alternated
    /// (13 % of holders new to the bus, 1 % new to the fleet).
    pub qr_fleet: qr_fleet::QrFleetReport,
    /// QuickPass taps (docs/quickpass.md), the validator's side: SELECT of the transport
    /// application, PPSE, GPO, records, fDDA (three RSA recoveries), the PAN sealed for the
    /// acquirer and the record; the time the simulated card spends answering (its own RSA
    /// signing of the dynamic data, which a real card does in its chip) is taken out, and
    /// reported apart in `quickpass_card_us_*`.
    pub quickpass_tap_us_p50: u64,
    pub quickpass_tap_us_p99: u64,
    /// The simulated QuickPass card's own time in those taps (answering every APDU, its RSA
    /// signing with CRT included): the card's work, not the validator's.
    pub quickpass_card_us_p50: u64,
    pub quickpass_card_us_p99: u64,
    /// Taps arriving together in the durable workload.
    pub burst_taps: usize,
    /// Durable taps in bursts: from the burst's arrival to the tap's answer (record synced).
    pub durable_tap_us_p50: u64,
    pub durable_tap_us_p99: u64,
    pub durable_taps_per_s: u64,
    pub group_commit_taps: usize,
    /// The baseline on the same bursts, from arrival to its INSERT's commit.
    pub baseline_card_tap_us_p50: u64,
    pub baseline_card_tap_us_p99: u64,
    pub baseline_taps_per_s: u64,
    /// Baseline p99 over ours, durable against durable, same bursts.
    pub durable_p99_ratio: f64,
    /// Our durable throughput over the baseline's.
    pub throughput_ratio: f64,
    /// One tap at a time: ours (two syncs, each waited for: the grey record before DEBIT,
    /// the record before the answer; docs/journal.md) and the baseline's.
    pub durable_single_tap_us_p50: u64,
    pub durable_single_tap_us_p99: u64,
    pub baseline_single_tap_us_p50: u64,
    pub baseline_single_tap_us_p99: u64,
    pub single_p99_ratio: f64,
    /// The disk under the single taps, timed between them in the same rounds: one synchronous
    /// write in place of 64 bytes ([`OsFiles`]: `O_DIRECT | O_DSYNC` into a file made its full
    /// size, as each of a single tap's two syncs is), in µs.
    pub disk_sync_in_place_us_p50: u64,
    pub disk_sync_in_place_us_p99: u64,
    /// One append of 96 bytes and `fdatasync` to a growing file (as the journal synced a tap
    /// before grey records, once a tap), in µs, timed the same way.
    pub disk_append_fdatasync_us_p50: u64,
    pub disk_append_fdatasync_us_p99: u64,
    /// The validator program beside the engine alone (`bench validator` at this plan's
    /// blacklist size and scan count; a 100,000-change delta, or one change an entry below
    /// that size).
    pub validator: crate::validator::bench::ValidatorBenchReport,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits; construction cannot fail with these bounds.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// A blacklist of `n` random cards and accounts that no bench card is on.
pub fn random_blacklist(n: usize, seed: u64) -> Vec<(ListId, ListReason)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let reason = ListReason::ALL[rng.gen_range(0..4)];
            if i % 10 == 9 {
                let a = AccountId {
                    channel: rng.gen_range(1..=8),
                    account: rng.gen(),
                };
                (ListId::Account(a), ListReason::Arrears)
            } else {
                // Dezhou numbers (3714...) above the bench cards' range, and others.
                let n = if i % 2 == 0 {
                    3714_0000_0100_0000_0000u128 + rng.gen_range(0..10u128.pow(14))
                } else {
                    rng.gen_range(0..10u128.pow(20))
                };
                (
                    ListId::Card(CardNo::from_u128(n).expect("below 10^20")),
                    reason,
                )
            }
        })
        .collect()
}

pub(crate) fn bench_cards(seed: u64) -> Vec<SimCard> {
    let keys = TestKeys::default();
    (0..BENCH_CARDS)
        .map(|i| {
            let spec = CardSpec::new(
                CardNo::from_u128(3714_0000_0000_0000_0000u128 + i as u128).expect("20 digits"),
                RiderCategory::Adult,
                i64::from(crate::types::PURSE_BALANCE_FEN_MAX),
            );
            SimCard::new(&spec, &keys, seed).expect("valid bench card")
        })
        .collect()
}

fn validator(
    dir: &Path,
    layer: Box<dyn FileLayer>,
    list: Blacklist,
) -> Result<Validator<SimPsam>, String> {
    let (journal, _) = Journal::open_with(dir, layer).map_err(|e| e.to_string())?;
    let psam = Psam::open(SimPsam::new(TestKeys::default(), [0, 0, 0, 0, 0, 9], 1))
        .map_err(|e| e.to_string())?;
    Ok(Validator::new(
        EngineConfig::default(),
        psam,
        FareTable::default_policy(),
        list,
        journal,
    ))
}

/// The next tap: cards round-robin, one second apart, so none is a repeat.
struct Taps {
    cards: Vec<SimCard>,
    now: Timestamp,
    i: usize,
}

impl Taps {
    fn next(&mut self) -> (&mut SimCard, Timestamp) {
        self.now = self.now.plus_s(1);
        let i = self.i % self.cards.len();
        self.i += 1;
        let card = &mut self.cards[i];
        card.enter_field(None);
        (card, self.now)
    }

    /// The next `k` taps at once, one card on each of `k` readers: consecutive cards (from
    /// the first card again when too few are left), the clock moved on as for `k` taps.
    fn burst(&mut self, k: usize) -> (&mut [SimCard], Timestamp) {
        let k = k.min(self.cards.len());
        let mut from = self.i % self.cards.len();
        if from + k > self.cards.len() {
            from = 0;
        }
        self.i = from + k;
        self.now = self.now.plus_s(k as i64);
        let cards = &mut self.cards[from..from + k];
        for card in cards.iter_mut() {
            card.enter_field(None);
        }
        (cards, self.now)
    }
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros().max(1) as u64
}

/// Rounds in which our durable taps and the baseline's alternate, so that both meet the same
/// disk (a shared disk's sync time drifts by several times within a minute).
pub const BENCH_ROUNDS: usize = 10;

/// Taps arriving together in the durable workload: one group commit's worth.
pub const BENCH_BURST_TAPS: usize = GROUP_COMMIT_TAPS_MAX;

/// Run the whole benchmark.
pub fn run_bench(args: &BenchArgs) -> Result<BenchReport, String> {
    run_plan(BenchPlan::for_args(args), args.seed)
}

/// Run the benchmark at the given sizes.
pub fn run_plan(plan: BenchPlan, seed: u64) -> Result<BenchReport, String> {
    tracing::info!(?plan, "building the blacklist");
    let entries = random_blacklist(plan.blacklist_entries, seed);
    let list = Blacklist::from_entries(1, entries.iter().copied());
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let start = Timestamp::parse_rfc3339("2026-11-28T06:00:00+08:00").map_err(|e| e.to_string())?;
    let mut taps = Taps {
        cards: bench_cards(seed),
        now: start,
        i: 0,
    };

    // In memory: the engine's own cost.
    let mut v = validator(
        &tmp.path().join("memory"),
        Box::new(UnsyncedFiles),
        list.clone(),
    )?;
    let mut mem = histogram();
    for _ in 0..plan.memory_taps {
        let (card, now) = taps.next();
        let t = Instant::now();
        let d = v.tap_card(card, now);
        mem.saturating_record(micros(t));
        if !d.accepted() {
            return Err(format!("bench tap refused: {d:?}"));
        }
    }
    let qr = scans(&mut v, start, plan.qr_scans, seed)?;
    let quickpass = quickpass_taps(&mut v, start, plan.quickpass_taps, seed)?;
    drop(v);
    tracing::info!("ride codes with and without the fleet's verified-certificate set");
    let qr_fleet = qr_fleet::run(plan.qr_fleet_scans, plan.qr_fleet_set_entries, seed)?;

    // Durable (group commit) and the baseline, round by round, in bursts and one at a time.
    let mut v = validator(&tmp.path().join("durable"), Box::new(OsFiles), list)?;
    v.set_group_commit(true);
    let mut naive = Naive::new(&tmp.path().join("baseline"), &entries)?;
    let (mut durable, mut base) = (histogram(), histogram());
    let (mut durable_one, mut base_one) = (histogram(), histogram());
    let mut disk = DiskFloor::new(&tmp.path().join("disk"))?;
    let (mut in_place, mut append) = (histogram(), histogram());
    let (mut durable_s, mut base_s) = (0.0, 0.0);
    for round in 0..BENCH_ROUNDS {
        tracing::info!(round, "durable and baseline round");
        durable_s += durable_round(
            &mut v,
            &mut taps,
            plan.durable_taps / BENCH_ROUNDS,
            BENCH_BURST_TAPS,
            &mut durable,
        )?;
        base_s += naive.round(
            &mut taps,
            plan.baseline_taps / BENCH_ROUNDS,
            BENCH_BURST_TAPS,
            &mut base,
        )?;
        let singles = plan.single_taps / BENCH_ROUNDS;
        durable_round(&mut v, &mut taps, singles, 1, &mut durable_one)?;
        naive.round(&mut taps, singles, 1, &mut base_one)?;
        disk.round(singles, &mut in_place, &mut append)?;
    }
    let durable_taps_per_s = (durable.len() as f64 / durable_s) as u64;
    let baseline_taps_per_s = (base.len() as f64 / base_s) as u64;
    drop(v);
    drop(naive);
    tracing::info!("the validator program");
    let validator = crate::validator::bench::run(&crate::validator::bench::ValidatorBenchArgs {
        scans: plan.qr_scans,
        taps: plan.memory_taps.min(2_000),
        blacklist_entries: plan.blacklist_entries,
        delta_changes: plan.blacklist_entries.min(100_000),
        seed,
        ..crate::validator::bench::ValidatorBenchArgs::default()
    })?;
    let p99_ratio = |theirs: &Histogram<u64>, ours: &Histogram<u64>| {
        theirs.value_at_quantile(0.99) as f64 / ours.value_at_quantile(0.99).max(1) as f64
    };
    Ok(BenchReport {
        plan,
        card_tap_us_p50: mem.value_at_quantile(0.50),
        card_tap_us_p99: mem.value_at_quantile(0.99),
        card_tap_us_max: mem.max(),
        qr_scan_us_p50: qr.all.value_at_quantile(0.50),
        qr_scan_us_p99: qr.all.value_at_quantile(0.99),
        qr_scan_p256_us_p99: qr.p256.value_at_quantile(0.99),
        qr_scan_sm2_us_p99: qr.sm2.value_at_quantile(0.99),
        qr_fleet,
        quickpass_tap_us_p50: quickpass.validator.value_at_quantile(0.50),
        quickpass_tap_us_p99: quickpass.validator.value_at_quantile(0.99),
        quickpass_card_us_p50: quickpass.card.value_at_quantile(0.50),
        quickpass_card_us_p99: quickpass.card.value_at_quantile(0.99),
        burst_taps: BENCH_BURST_TAPS,
        durable_tap_us_p50: durable.value_at_quantile(0.50),
        durable_tap_us_p99: durable.value_at_quantile(0.99),
        durable_taps_per_s,
        group_commit_taps: GROUP_COMMIT_TAPS_MAX,
        baseline_card_tap_us_p50: base.value_at_quantile(0.50),
        baseline_card_tap_us_p99: base.value_at_quantile(0.99),
        baseline_taps_per_s,
        durable_p99_ratio: p99_ratio(&base, &durable),
        throughput_ratio: durable_taps_per_s as f64 / baseline_taps_per_s.max(1) as f64,
        durable_single_tap_us_p50: durable_one.value_at_quantile(0.50),
        durable_single_tap_us_p99: durable_one.value_at_quantile(0.99),
        baseline_single_tap_us_p50: base_one.value_at_quantile(0.50),
        baseline_single_tap_us_p99: base_one.value_at_quantile(0.99),
        single_p99_ratio: p99_ratio(&base_one, &durable_one),
        disk_sync_in_place_us_p50: in_place.value_at_quantile(0.50),
        disk_sync_in_place_us_p99: in_place.value_at_quantile(0.99),
        disk_append_fdatasync_us_p50: append.value_at_quantile(0.50),
        disk_append_fdatasync_us_p99: append.value_at_quantile(0.99),
        validator,
    })
}

/// The vectors' first card and CA keys (fixtures/quickpass-v1.json), built in.
pub fn quickpass_vector_card() -> Result<(SimPhysicalCard, CaKeys), String> {
    let v: serde_json::Value = serde_json::from_str(include_str!("../fixtures/quickpass-v1.json"))
        .map_err(|e| e.to_string())?;
    let spec: QuickPassSpec =
        serde_json::from_value(v["cases"][0]["card"].clone()).map_err(|e| e.to_string())?;
    let ca = CaKeys::from_json(&v["ca_keys"].to_string())?;
    Ok((
        SimPhysicalCard::new(None, Some(SimQuickPass::new(&spec, 1)?)),
        ca,
    ))
}

/// A card whose time answering APDUs is added up, so that a tap's time can be split into
/// the validator's side and the card's.
struct TimedCard<C> {
    card: C,
    spent: std::time::Duration,
}

impl<C: CardChannel> CardChannel for TimedCard<C> {
    fn transmit(
        &mut self,
        command: &[u8],
        response: &mut crate::card::apdu::Response,
    ) -> Result<(), crate::card::apdu::ChannelError> {
        let t = Instant::now();
        let r = self.card.transmit(command, response);
        self.spent += t.elapsed();
        r
    }
}

/// The validator's side and the card's side of QuickPass taps, microseconds.
struct QuickPassHistograms {
    validator: Histogram<u64>,
    card: Histogram<u64>,
}

/// QuickPass taps of one card, each past the anti-passback window of the one before.
fn quickpass_taps(
    v: &mut Validator<SimPsam>,
    start: Timestamp,
    n: usize,
    seed: u64,
) -> Result<QuickPassHistograms, String> {
    let (card, ca) = quickpass_vector_card()?;
    let mut card = TimedCard {
        card,
        spent: std::time::Duration::ZERO,
    };
    v.set_quickpass(ca, PanTokenKey::TEST, seed);
    let step_s = i64::from(v.config().anti_passback_s) + 1;
    let mut h = QuickPassHistograms {
        validator: histogram(),
        card: histogram(),
    };
    let mut now = start;
    for _ in 0..n {
        now = now.plus_s(step_s);
        card.card.enter_field(None);
        card.spent = std::time::Duration::ZERO;
        let t = Instant::now();
        let d = v.tap_card(&mut card, now);
        let whole = t.elapsed();
        let card_us = u64::try_from(card.spent.as_micros()).unwrap_or(u64::MAX);
        let validator_us =
            u64::try_from(whole.saturating_sub(card.spent).as_micros()).unwrap_or(u64::MAX);
        h.validator.saturating_record(validator_us.max(1));
        h.card.saturating_record(card_us.max(1));
        if !d.accepted() {
            return Err(format!("bench QuickPass tap refused: {d:?}"));
        }
    }
    Ok(h)
}

/// Durable taps in bursts of `burst` that share one sync: every tap of a burst waits from
/// the burst's arrival until the sync returns. Returns the seconds taken.
fn durable_round(
    v: &mut Validator<SimPsam>,
    taps: &mut Taps,
    n: usize,
    burst: usize,
    hist: &mut Histogram<u64>,
) -> Result<f64, String> {
    let burst = burst.clamp(1, GROUP_COMMIT_TAPS_MAX);
    let began = Instant::now();
    let mut done = 0;
    while done < n {
        let arrived = Instant::now();
        let k = burst.min(n - done);
        if k == 1 {
            let (card, now) = taps.next();
            let d = v.tap_card(card, now);
            if !d.accepted() {
                return Err(format!("bench tap refused: {d:?}"));
            }
        } else {
            let (cards, now) = taps.burst(k);
            for d in v.tap_burst(cards, now) {
                if !d.accepted() {
                    return Err(format!("bench tap refused: {d:?}"));
                }
            }
        }
        v.commit().map_err(|e| e.to_string())?;
        let waited = micros(arrived);
        for _ in 0..k {
            hist.saturating_record(waited);
        }
        done += k;
    }
    Ok(began.elapsed().as_secs_f64())
}

/// Bytes of the file the disk's in-place writes go round (as `grey.dat`'s slots do).
const DISK_FLOOR_FILE_BYTES: u64 = 256 * 1_024;
/// Bytes of one in-place write: a grey entry's size.
const DISK_FLOOR_WRITE_BYTES: usize = 64;
/// Bytes of one append: a record's size.
const DISK_FLOOR_APPEND_BYTES: usize = 96;

/// The disk's own time under a durable tap: the primitives of the journal's syncs, timed
/// alone, so that a single tap's time can be read as the engine's work plus its syncs.
struct DiskFloor {
    in_place: Box<dyn crate::journal::SegmentFile>,
    at: u64,
    append: std::fs::File,
}

impl DiskFloor {
    fn new(dir: &Path) -> Result<DiskFloor, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let in_place = OsFiles
            .open_segment(&dir.join("in-place.dat"), DISK_FLOOR_FILE_BYTES)
            .map_err(|e| e.to_string())?;
        let append = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("append.log"))
            .map_err(|e| e.to_string())?;
        Ok(DiskFloor {
            in_place,
            at: 0,
            append,
        })
    }

    /// `n` synchronous writes in place and `n` appends with `fdatasync`, alternated.
    fn round(
        &mut self,
        n: usize,
        in_place: &mut Histogram<u64>,
        append: &mut Histogram<u64>,
    ) -> Result<(), String> {
        use std::io::Write;
        for _ in 0..n {
            let t = Instant::now();
            self.in_place
                .write_at(self.at, &[0x5a; DISK_FLOOR_WRITE_BYTES])
                .and_then(|()| self.in_place.sync())
                .map_err(|e| e.to_string())?;
            in_place.saturating_record(micros(t));
            self.at = (self.at + DISK_FLOOR_WRITE_BYTES as u64) % DISK_FLOOR_FILE_BYTES;
            let t = Instant::now();
            self.append
                .write_all(&[0x5a; DISK_FLOOR_APPEND_BYTES])
                .and_then(|()| self.append.sync_data())
                .map_err(|e| e.to_string())?;
            append.saturating_record(micros(t));
        }
        Ok(())
    }
}

struct ScanHistograms {
    all: Histogram<u64>,
    p256: Histogram<u64>,
    sm2: Histogram<u64>,
}

/// Holders scanning in the bench: each comes back every this many scans (a second apart), so
/// after the first round their certificates are already verified.
pub const BENCH_QR_HOLDERS: usize = 400;

/// Ride-code scans, codes issued beforehand (the phone's cost is not the validator's).
fn scans(
    v: &mut Validator<SimPsam>,
    start: Timestamp,
    n: usize,
    seed: u64,
) -> Result<ScanHistograms, String> {
    use crate::ride_code::{issuer::SimChannels, ChannelKeys, RideCodeConfig};
    let t0 = start.unix_s as u32;
    let mut channels = SimChannels::new(seed, (t0 - 86_400, t0 + 86_400 * 30));
    let keys = ChannelKeys::from_file(&channels.key_file()).map_err(|e| e.to_string())?;
    v.set_ride_code_keys(keys, RideCodeConfig::default());
    let mut codes = Vec::with_capacity(n);
    for i in 0..n {
        let holder = i % BENCH_QR_HOLDERS;
        let channel = 1 + (holder % 8) as u16;
        let card =
            CardNo::from_u128(3714_0000_0000_0009_0000u128 + holder as u128).expect("20 digits");
        let at = t0 + 100_000 + i as u32;
        let text = channels
            .issue(
                channel,
                holder as u64,
                card,
                RiderCategory::Adult,
                at - 2,
                i as u32,
            )
            .ok_or("unknown bench channel")?;
        codes.push((channel, at, text));
    }
    let mut h = ScanHistograms {
        all: histogram(),
        p256: histogram(),
        sm2: histogram(),
    };
    for (channel, at, text) in &codes {
        let now = Timestamp {
            unix_s: i64::from(*at),
            utc_offset_s: start.utc_offset_s,
        };
        let t = Instant::now();
        let d = v.scan_code(text, now);
        let us = micros(t);
        if !d.accepted() {
            return Err(format!("bench scan refused: {d:?}"));
        }
        h.all.saturating_record(us);
        if channel % 2 == 1 {
            h.sm2.saturating_record(us);
        } else {
            h.p256.saturating_record(us);
        }
    }
    Ok(h)
}

/// The naive validator: the same card dialogue, a SQLite query per tap for the blacklist and
/// a SQLite INSERT per tap with synchronous=FULL.
struct Naive {
    db: rusqlite::Connection,
    engine: Validator<SimPsam>,
}

fn sql(e: rusqlite::Error) -> String {
    e.to_string()
}

impl Naive {
    fn new(dir: &Path, entries: &[(ListId, ListReason)]) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let mut db = rusqlite::Connection::open(dir.join("naive.db")).map_err(sql)?;
        db.execute_batch(
            "CREATE TABLE blacklist (id TEXT PRIMARY KEY, reason TEXT NOT NULL);
             CREATE TABLE taps (id INTEGER PRIMARY KEY, card TEXT, at INTEGER, fare INTEGER, balance INTEGER);",
        )
        .map_err(sql)?;
        let tx = db.transaction().map_err(sql)?;
        {
            let mut ins = tx
                .prepare("INSERT OR REPLACE INTO blacklist VALUES (?1, ?2)")
                .map_err(sql)?;
            for (id, why) in entries {
                ins.execute((id.to_string(), why.as_str())).map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)?;
        db.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
        // Its engine decides with an empty in-memory list: the blacklist answer comes from SQLite.
        let engine = validator(
            &dir.join("engine"),
            Box::new(UnsyncedFiles),
            Blacklist::empty(),
        )?;
        Ok(Naive { db, engine })
    }

    /// Taps in bursts of `burst`, one after another, each with its own commit; a tap waits
    /// from its burst's arrival until its INSERT commits.
    fn round(
        &mut self,
        taps: &mut Taps,
        n: usize,
        burst: usize,
        hist: &mut Histogram<u64>,
    ) -> Result<f64, String> {
        let mut lookup = self
            .db
            .prepare_cached("SELECT reason FROM blacklist WHERE id = ?1")
            .map_err(sql)?;
        let mut insert = self
            .db
            .prepare_cached("INSERT INTO taps (card, at, fare, balance) VALUES (?1, ?2, ?3, ?4)")
            .map_err(sql)?;
        let began = Instant::now();
        let mut done = 0;
        while done < n {
            let arrived = Instant::now();
            let k = burst.max(1).min(n - done);
            for _ in 0..k {
                let (card, now) = taps.next();
                let card_no = card.card_no().to_string();
                let listed: Option<String> = lookup.query_row([&card_no], |r| r.get(0)).ok();
                if listed.is_some() {
                    return Err("a bench card is on the blacklist".into());
                }
                let d = self.engine.tap_card(card, now);
                insert
                    .execute((&card_no, now.unix_s, d.fare_fen, d.balance_fen))
                    .map_err(sql)?;
                hist.saturating_record(micros(arrived));
            }
            done += k;
        }
        Ok(began.elapsed().as_secs_f64())
    }
}

/// `fare-validator bench`.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    if args.only_qr_fleet {
        let plan = BenchPlan::for_args(args);
        let r = qr_fleet::run(plan.qr_fleet_scans, plan.qr_fleet_set_entries, args.seed)?;
        println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
        return Ok(());
    }
    let r = run_bench(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_measures_every_tap_and_reports_the_ratios() {
        let plan = BenchPlan {
            blacklist_entries: 2_000,
            memory_taps: 200,
            qr_scans: 40,
            durable_taps: 2 * BENCH_BURST_TAPS * BENCH_ROUNDS,
            baseline_taps: BENCH_BURST_TAPS * BENCH_ROUNDS,
            single_taps: 2 * BENCH_ROUNDS,
            quickpass_taps: 20,
            qr_fleet_scans: 200,
            qr_fleet_set_entries: 1_000,
        };
        let r = run_plan(plan, 5).unwrap();
        assert_eq!(r.burst_taps, BENCH_BURST_TAPS);
        assert!(r.card_tap_us_p50 >= 1 && r.card_tap_us_p99 >= r.card_tap_us_p50);
        assert!(r.qr_scan_us_p99 >= r.qr_scan_us_p50);
        assert!(r.quickpass_tap_us_p50 >= 1 && r.quickpass_tap_us_p99 >= r.quickpass_tap_us_p50);
        // In a burst the baseline commits tap after tap, so its last tap waits for all of them.
        assert!(r.baseline_card_tap_us_p99 > r.baseline_card_tap_us_p50);
        assert!(r.durable_taps_per_s > 0 && r.baseline_taps_per_s > 0);
        assert!(r.durable_p99_ratio > 0.0 && r.single_p99_ratio > 0.0);
        assert!(r.disk_sync_in_place_us_p99 >= r.disk_sync_in_place_us_p50);
        assert!(r.disk_append_fdatasync_us_p99 >= r.disk_append_fdatasync_us_p50);
        let json = serde_json::to_value(&r).unwrap();
        for field in [
            "card_tap_us_p50",
            "card_tap_us_p99",
            "qr_scan_us_p50",
            "qr_scan_us_p99",
            "qr_fleet",
            "durable_taps_per_s",
            "baseline_card_tap_us_p99",
            "baseline_taps_per_s",
            "durable_p99_ratio",
            "throughput_ratio",
            "durable_single_tap_us_p99",
            "baseline_single_tap_us_p99",
            "disk_sync_in_place_us_p99",
            "disk_append_fdatasync_us_p99",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
    }
}
