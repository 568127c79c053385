//! `fare-validator bench blacklist`: the packed blacklist against what people would do
//! instead (a SQLite query per tap, a `HashSet<String>`), on the same keys and the same probes,
//! in one run.
//!
//! Keys are realistic rather than uniform: most card numbers are runs of consecutive serials
//! under a few issuer prefixes (`3714…` Dezhou, `3701…` Jinan…), some are uniform random, and
//! some entries are ride-code accounts. Probes are half hits, half misses, and half the misses
//! are neighbours of listed cards (the hardest case for a compact exact structure).
//!
//! Lookups are timed in batches of [`LOOKUP_BATCH`] with `Instant` (a single timer read costs
//! about as much as a lookup); every structure is timed the same way on the same probes.
//! `tap_wait_us_max_during_apply` times single lookups, each on its own, from the moment
//! another thread starts to verify and apply a 100,000-change delta until it has swapped it in
//! and freed the old version. The tap thread runs at real-time priority when allowed (as
//! `fare-validator run --realtime-priority` does), the apply at background priority.

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::file::{delta_file, open_snapshot, snapshot_file, Delta};
use super::{Blacklist, BlacklistHandle, Change, ChangeOp};
use crate::signed;
use crate::types::{AccountId, CardNo, ListId, ListReason, ReasonSet};

/// Lookups timed together; the report divides by it.
pub const LOOKUP_BATCH: usize = 16;
/// Probes for every structure (half hits, half misses).
pub const PROBES_DEFAULT: usize = 200_000;
/// Changes in the delta applied under load.
pub const DELTA_CHANGES: usize = 100_000;
/// Issuer prefixes that real card numbers cluster under.
const CARD_PREFIXES: [u128; 5] = [3714_0000, 3714_2400, 3701_0000, 3702_0000, 3100_0000];
/// Longest run of consecutive serials the generator makes.
const RUN_LEN_MAX: u64 = 2_000;
const IDLE_WINDOW_MS: u64 = 300;
/// The target for a tap's longest wait during an apply.
const TAP_WAIT_TARGET_NS: u128 = 100_000;

/// `fare-validator bench blacklist` options.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchBlacklistArgs {
    /// Entries in the list.
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: usize,
    /// Seed for keys and probes: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Lookups timed per structure.
    #[arg(long, default_value_t = PROBES_DEFAULT)]
    pub probes: usize,
    /// Print one JSON object (the only output format; kept for the command's contract).
    #[arg(long)]
    pub json: bool,
}

/// One run's measurements (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub entries: usize,
    pub seed: u64,
    pub probes: usize,
    pub lookup_batch: usize,
    pub build_ms: u64,
    pub snapshot_file_bytes: u64,
    pub bytes_per_entry: f64,
    pub open_ms: u64,
    pub open_read_ms: u64,
    pub open_verify_ms: u64,
    /// The open again, step by step: structure and CRC, signature (SHA-256 of the payload
    /// and Ed25519), table checks.
    pub open_crc_ms: u64,
    pub open_signature_ms: u64,
    pub open_tables_ms: u64,
    pub lookup_ns_p50: f64,
    pub lookup_ns_p99: f64,
    pub lookup_single_ns_p50: f64,
    pub lookup_mismatches: usize,
    pub sqlite_build_ms: u64,
    pub sqlite_lookup_ns_p50: f64,
    pub sqlite_lookup_ns_p99: f64,
    pub sqlite_mismatches: usize,
    pub hashset_string_lookup_ns_p50: f64,
    pub hashset_string_lookup_ns_p99: f64,
    pub hashset_string_bytes_per_entry: f64,
    pub hashset_string_mismatches: usize,
    pub sqlite_over_packed_lookup_ratio: f64,
    pub hashset_over_packed_lookup_ratio: f64,
    pub hashset_over_packed_bytes_ratio: f64,
    pub delta_changes: usize,
    pub apply_delta_ms: u64,
    pub tap_wait_us_max_during_apply: f64,
    pub tap_lookups_during_apply: u64,
    pub tap_lookups_over_100us_during_apply: u64,
    /// The same tap loop for a while with no apply running: the machine's own noise.
    pub tap_wait_us_max_idle: f64,
    pub tap_lookups_idle: u64,
    pub tap_lookups_over_100us_idle: u64,
    pub lookup_ns_p50_with_overlay: f64,
    /// Whether the tap thread ran at `SCHED_FIFO` (needs CAP_SYS_NICE); the delta is applied
    /// at `SCHED_IDLE` either way.
    pub tap_thread_realtime: bool,
    /// Other load on the machine during the run (/proc/loadavg, 1 minute), for reading the
    /// latency maxima.
    pub load_average_1m: Option<f64>,
}

/// Run with the default probe count.
pub fn bench_blacklist(entries: usize, seed: u64) -> BenchReport {
    bench_blacklist_with(entries, seed, PROBES_DEFAULT)
}

/// The command: run and print the JSON object.
pub fn run_bench(args: &BenchBlacklistArgs) -> Result<(), String> {
    let report = bench_blacklist_with(args.entries, args.seed, args.probes);
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}

struct Probe {
    id: ListId,
    text: String,
    expected: Option<ReasonSet>,
}

pub fn bench_blacklist_with(entries: usize, seed: u64, probes: usize) -> BenchReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let key = signed::signing_key_from_seed(rng.gen());
    let (list_entries, probes) = generate(&mut rng, entries, probes);
    tracing::info!(entries, "blacklist bench: keys generated");

    let t = Instant::now();
    let built = Blacklist::from_entries(1, list_entries.iter().copied());
    let build_ms = ms(t);
    let file = snapshot_file(&built, &key);
    drop(built);
    let snapshot_file_bytes = file.len() as u64;
    let dir = tempfile::tempdir().expect("bench needs a temporary folder");
    let path = dir.path().join("blacklist.snap");
    std::fs::write(&path, &file).expect("bench writes its snapshot");
    drop(file);

    let t = Instant::now();
    let bytes = super::aligned::AlignedBytes::read_file(&path).expect("bench reads its snapshot");
    let open_read_ms = ms(t);
    let t2 = Instant::now();
    let list = open_snapshot(bytes, Some(&key.verifying_key())).expect("bench snapshot opens");
    let open_verify_ms = ms(t2);
    let open_ms = ms(t);
    let steps = open_steps(&path, &key.verifying_key());

    let (lookup, lookup_mismatches) = time_lookups(&probes, LOOKUP_BATCH, |p| list.get(&p.id));
    let (single, _) = time_lookups(&probes, 1, |p| list.get(&p.id));
    let bytes_per_entry = list.memory_bytes() as f64 / entries.max(1) as f64;
    tracing::info!(lookup_ns_p50 = lookup.0, "blacklist bench: packed measured");

    let (hashset, hashset_mismatches, hashset_bytes) = bench_hashset(&list_entries, &probes);
    let (sqlite, sqlite_mismatches, sqlite_build_ms) = bench_sqlite(&list_entries, &probes);
    tracing::info!("blacklist bench: baselines measured");

    let delta = make_delta(&mut rng, &list, &list_entries);
    drop(list_entries);
    let delta_bytes = delta_file(&delta, &key);
    let swap = measure_swap(list, delta_bytes, &key.verifying_key(), &probes);

    BenchReport {
        entries,
        seed,
        probes: probes.len(),
        lookup_batch: LOOKUP_BATCH,
        build_ms,
        snapshot_file_bytes,
        bytes_per_entry,
        open_ms,
        open_read_ms,
        open_verify_ms,
        open_crc_ms: steps.0,
        open_signature_ms: steps.1,
        open_tables_ms: steps.2,
        lookup_ns_p50: lookup.0,
        lookup_ns_p99: lookup.1,
        lookup_single_ns_p50: single.0,
        lookup_mismatches,
        sqlite_build_ms,
        sqlite_lookup_ns_p50: sqlite.0,
        sqlite_lookup_ns_p99: sqlite.1,
        sqlite_mismatches,
        hashset_string_lookup_ns_p50: hashset.0,
        hashset_string_lookup_ns_p99: hashset.1,
        hashset_string_bytes_per_entry: hashset_bytes as f64 / entries.max(1) as f64,
        hashset_string_mismatches: hashset_mismatches,
        sqlite_over_packed_lookup_ratio: sqlite.0 / lookup.0,
        hashset_over_packed_lookup_ratio: hashset.0 / lookup.0,
        hashset_over_packed_bytes_ratio: hashset_bytes as f64
            / entries.max(1) as f64
            / bytes_per_entry,
        delta_changes: DELTA_CHANGES,
        apply_delta_ms: swap.apply_ms,
        tap_wait_us_max_during_apply: swap.during.max_us,
        tap_lookups_during_apply: swap.during.lookups,
        tap_lookups_over_100us_during_apply: swap.during.slow,
        tap_wait_us_max_idle: swap.idle.max_us,
        tap_lookups_idle: swap.idle.lookups,
        tap_lookups_over_100us_idle: swap.idle.slow,
        tap_thread_realtime: swap.during.realtime,
        lookup_ns_p50_with_overlay: swap.lookup_ns_p50_after,
        load_average_1m: load_average_1m(),
    }
}

fn open_steps(path: &std::path::Path, key: &ed25519_dalek::VerifyingKey) -> (u64, u64, u64) {
    let Ok(bytes) = super::aligned::AlignedBytes::read_file(path) else {
        return (0, 0, 0);
    };
    let t = Instant::now();
    let Ok(file) = signed::parse(&bytes) else {
        return (0, 0, 0);
    };
    let crc_ms = ms(t);
    let t = Instant::now();
    let signature_ok = file.verify(key).is_ok();
    let signature_ms = ms(t);
    let t = Instant::now();
    let tables_ok = super::Base::parse(bytes, signed::HEADER_LEN, super::Coding::Sets).is_ok();
    let tables_ms = ms(t);
    if !(signature_ok && tables_ok) {
        tracing::error!("bench snapshot failed a step of its second open");
    }
    (crc_ms, signature_ms, tables_ms)
}

fn load_average_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn ms(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

// ---------------------------------------------------------------------------------------
// Keys and probes.

fn random_card(rng: &mut ChaCha8Rng) -> ListId {
    let n = rng.gen_range(0..10u128.pow(20));
    ListId::Card(CardNo::from_u128(n).unwrap_or(CardNo([0; 10])))
}

fn random_account(rng: &mut ChaCha8Rng) -> ListId {
    let account = if rng.gen_bool(0.5) {
        rng.gen()
    } else {
        rng.gen_range(0..10_000_000)
    };
    ListId::Account(AccountId {
        channel: rng.gen_range(1..=8),
        account,
    })
}

/// Cards in runs of consecutive serials under the real prefixes.
struct ClusteredCards {
    next: u128,
    left: u64,
}

impl ClusteredCards {
    fn next(&mut self, rng: &mut ChaCha8Rng) -> ListId {
        if self.left == 0 {
            let prefix = CARD_PREFIXES[rng.gen_range(0..CARD_PREFIXES.len())];
            self.next = prefix * 10u128.pow(12) + rng.gen_range(0..10u128.pow(12));
            self.left = rng.gen_range(1..=RUN_LEN_MAX);
        }
        self.left -= 1;
        self.next += rng.gen_range(1..=3);
        ListId::Card(CardNo::from_u128(self.next).unwrap_or(CardNo([0; 10])))
    }
}

fn random_reason(rng: &mut ChaCha8Rng, id: &ListId) -> ListReason {
    match id {
        ListId::Account(_) | ListId::Pan(_) => ListReason::Arrears,
        ListId::Card(_) => [
            ListReason::Lost,
            ListReason::Lost,
            ListReason::Replaced,
            ListReason::Cancelled,
        ][rng.gen_range(0..4)],
    }
}

fn generate_id(rng: &mut ChaCha8Rng, clustered: &mut ClusteredCards) -> ListId {
    match rng.gen_range(0..100) {
        0..=59 => clustered.next(rng),
        60..=84 => random_card(rng),
        _ => random_account(rng),
    }
}

fn generate(
    rng: &mut ChaCha8Rng,
    n: usize,
    probes_n: usize,
) -> (Vec<(ListId, ListReason)>, Vec<Probe>) {
    let mut clustered = ClusteredCards { next: 0, left: 0 };
    let mut seen: HashSet<ListId> = HashSet::with_capacity(n);
    let mut entries = Vec::with_capacity(n);
    while entries.len() < n {
        let id = generate_id(rng, &mut clustered);
        if seen.insert(id) {
            entries.push((id, random_reason(rng, &id)));
        }
    }
    let mut probes = Vec::with_capacity(probes_n);
    while probes.len() < probes_n && !entries.is_empty() {
        let (hit, reason) = entries[rng.gen_range(0..entries.len())];
        let id = match probes.len() % 4 {
            0 | 1 => {
                probes.push(Probe {
                    id: hit,
                    text: hit.to_string(),
                    expected: Some(ReasonSet::of(reason)),
                });
                continue;
            }
            2 => neighbour(&hit),
            _ => generate_id(rng, &mut clustered),
        };
        if !seen.contains(&id) {
            probes.push(Probe {
                id,
                text: id.to_string(),
                expected: None,
            });
        }
    }
    probes.shuffle(rng);
    (entries, probes)
}

fn neighbour(id: &ListId) -> ListId {
    match id {
        ListId::Card(c) => ListId::Card(CardNo::from_u128(c.as_u128() + 1).unwrap_or(*c)),
        ListId::Account(a) => ListId::Account(AccountId {
            channel: a.channel,
            account: a.account.wrapping_add(1),
        }),
        ListId::Pan(t) => ListId::Pan(crate::card::quickpass::PanToken(t.0.wrapping_add(1))),
    }
}

fn make_delta(rng: &mut ChaCha8Rng, list: &Blacklist, entries: &[(ListId, ListReason)]) -> Delta {
    let mut changes = Vec::with_capacity(DELTA_CHANGES);
    let mut clustered = ClusteredCards { next: 0, left: 0 };
    while changes.len() < DELTA_CHANGES && !entries.is_empty() {
        if changes.len() % 2 == 0 {
            let (id, reason) = entries[rng.gen_range(0..entries.len())];
            changes.push(Change {
                op: ChangeOp::Remove,
                id,
                reason,
            });
        } else {
            let id = generate_id(rng, &mut clustered);
            if list.get(&id).is_none() {
                changes.push(Change {
                    op: ChangeOp::Add,
                    id,
                    reason: random_reason(rng, &id),
                });
            }
        }
    }
    Delta {
        from_version: list.version(),
        to_version: list.version() + 1,
        changes,
    }
}

// ---------------------------------------------------------------------------------------
// Timing.

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Per-lookup ns (p50, p99) over batches of `batch` probes, and the count of wrong answers.
fn time_lookups(
    probes: &[Probe],
    batch: usize,
    mut f: impl FnMut(&Probe) -> Option<ReasonSet>,
) -> ((f64, f64), usize) {
    let mismatches = probes.iter().filter(|p| f(p) != p.expected).count();
    let mut per: Vec<f64> = Vec::with_capacity(probes.len() / batch + 1);
    for chunk in probes.chunks(batch) {
        let t = Instant::now();
        for p in chunk {
            black_box(f(black_box(p)));
        }
        per.push(t.elapsed().as_nanos() as f64 / chunk.len() as f64);
    }
    per.sort_by(f64::total_cmp);
    ((percentile(&per, 0.50), percentile(&per, 0.99)), mismatches)
}

fn bench_hashset(entries: &[(ListId, ListReason)], probes: &[Probe]) -> ((f64, f64), usize, usize) {
    let set: HashSet<String> = entries.iter().map(|(id, _)| id.to_string()).collect();
    let string_heap: usize = set.iter().map(|s| s.capacity()).sum();
    let bytes = set.capacity() * (std::mem::size_of::<String>() + 8) + string_heap;
    // The set knows membership only, not the reason: compare membership.
    let (times, mismatches) = time_lookups(probes, LOOKUP_BATCH, |p| {
        let hit = set.contains(p.text.as_str());
        match (hit, p.expected) {
            (true, Some(r)) => Some(r),
            (true, None) => Some(ReasonSet::of(ListReason::Lost)),
            (false, _) => None,
        }
    });
    (times, mismatches, bytes)
}

fn bench_sqlite(entries: &[(ListId, ListReason)], probes: &[Probe]) -> ((f64, f64), usize, u64) {
    let t = Instant::now();
    let mut db = rusqlite::Connection::open_in_memory().expect("in-memory SQLite");
    db.execute_batch(
        "CREATE TABLE blacklist (kind TEXT NOT NULL, id TEXT NOT NULL, reason TEXT NOT NULL,
         PRIMARY KEY (kind, id)) WITHOUT ROWID;",
    )
    .expect("create table");
    {
        let tx = db.transaction().expect("transaction");
        {
            let mut insert = tx
                .prepare("INSERT INTO blacklist (kind, id, reason) VALUES (?1, ?2, ?3)")
                .expect("prepare insert");
            for (id, reason) in entries {
                insert
                    .execute((id.kind(), id.to_string(), reason.as_str()))
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let build_ms = ms(t);
    let mut query = db
        .prepare("SELECT reason FROM blacklist WHERE kind = ?1 AND id = ?2")
        .expect("prepare query");
    let (times, mismatches) = time_lookups(probes, LOOKUP_BATCH, |p| {
        let mut rows = query.query((p.id.kind(), p.text.as_str())).ok()?;
        let row = rows.next().ok()??;
        let text: String = row.get(0).ok()?;
        text.parse().ok().map(ReasonSet::of)
    });
    (times, mismatches, build_ms)
}

struct SwapReport {
    apply_ms: u64,
    during: TapStats,
    idle: TapStats,
    lookup_ns_p50_after: f64,
}

/// Max single-lookup time of a tap thread that runs until `stop`, at real-time priority when
/// the system allows it (as the validator's tap loop runs).
/// Only lookups made while `window` is set are counted.
fn tap_loop(
    handle: &BlacklistHandle,
    probes: &[Probe],
    stop: &AtomicBool,
    window: &AtomicBool,
) -> TapStats {
    let realtime = crate::sched::set_realtime_priority(crate::sched::TAP_REALTIME_PRIORITY)
        .map_err(|e| tracing::info!(error = %e, "tap thread stays at normal priority"))
        .is_ok();
    let mut max_ns = 0u128;
    let mut n = 0u64;
    let mut slow = 0u64;
    for p in probes.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let t = Instant::now();
        black_box(handle.get(black_box(&p.id)));
        let ns = t.elapsed().as_nanos();
        if !window.load(Ordering::Relaxed) {
            continue;
        }
        max_ns = max_ns.max(ns);
        slow += u64::from(ns > TAP_WAIT_TARGET_NS);
        n += 1;
    }
    TapStats {
        max_us: max_ns as f64 / 1000.0,
        lookups: n,
        slow,
        realtime,
    }
}

/// What a tap thread saw: its longest lookup, how many it made, how many took over
/// [`TAP_WAIT_TARGET_NS`] (preemption by other processes shows up here, apply or not).
#[derive(Clone, Copy, Default)]
struct TapStats {
    max_us: f64,
    lookups: u64,
    slow: u64,
    realtime: bool,
}

fn measure_swap(
    list: Blacklist,
    delta: Vec<u8>,
    key: &ed25519_dalek::VerifyingKey,
    probes: &[Probe],
) -> SwapReport {
    let handle = Arc::new(BlacklistHandle::new(list));
    let stop = AtomicBool::new(false);
    let window = AtomicBool::new(true);
    // Idle: the same loop with no writer, to tell scheduler noise from apply cost.
    let idle = thread::scope(|s| {
        let tap = s.spawn(|| tap_loop(&handle, probes, &stop, &window));
        thread::sleep(Duration::from_millis(IDLE_WINDOW_MS));
        stop.store(true, Ordering::Relaxed);
        tap.join().unwrap_or_default()
    });
    stop.store(false, Ordering::Relaxed);
    let mut apply_ms = 0;
    window.store(false, Ordering::Relaxed);
    // During: lookups from the moment the writer starts until its swap has returned.
    let during = thread::scope(|s| {
        let tap = s.spawn(|| tap_loop(&handle, probes, &stop, &window));
        thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        window.store(true, Ordering::Relaxed);
        let writer = handle.spawn_install_delta(delta, *key);
        let installed = writer.join();
        window.store(false, Ordering::Relaxed);
        apply_ms = ms(t);
        if !matches!(installed, Ok(Ok(_))) {
            tracing::error!("bench delta was not installed");
        }
        stop.store(true, Ordering::Relaxed);
        tap.join().unwrap_or_default()
    });
    let after = handle.load();
    let ((lookup_ns_p50_after, _), _) = time_lookups(probes, LOOKUP_BATCH, |p| after.get(&p.id));
    SwapReport {
        apply_ms,
        during,
        idle,
        lookup_ns_p50_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bench_is_exact_and_reports_every_field() {
        let r = bench_blacklist_with(20_000, 7, 2_000);
        assert_eq!(
            (
                r.lookup_mismatches,
                r.sqlite_mismatches,
                r.hashset_string_mismatches
            ),
            (0, 0, 0)
        );
        assert_eq!(r.entries, 20_000);
        assert!(r.bytes_per_entry > 0.0 && r.lookup_ns_p50 > 0.0);
        let json = serde_json::to_value(&r).unwrap();
        for field in [
            "open_ms",
            "lookup_ns_p99",
            "sqlite_lookup_ns_p50",
            "hashset_string_bytes_per_entry",
            "tap_wait_us_max_during_apply",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
    }
}
