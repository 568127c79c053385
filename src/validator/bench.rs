//! `fare-validator bench validator`: the validator program's own figures, beside the engine
//! alone in the same run (issue: the program should add under 10 % to the engine's p99).
//!
//! - **scan under a tap**: a scanner line written to the loopback scanner socket (the whole
//!   line in one write, as the scanner's last byte completes it) until its decision line is
//!   written, while another thread taps cards without pause (so a card dialogue is nearly
//!   always in progress on the other input); against `scan_code` on an engine alone. The
//!   cards answer each exchange after `--card-exchange-us`, as a card in the reader's field
//!   does (a contactless APDU takes a millisecond or so over the air), so a tap lasts as long
//!   as a real one while leaving the CPU to the scan. The engine alone is measured twice:
//!   called directly with nothing else running (the issue's reference), and fed as the
//!   program is (the same socket, splitter and scanner thread calling `scan_code` on an
//!   engine of its own) while the same taps run on another engine: the same input path and
//!   the same load, nothing shared, so the difference from this one is what the program
//!   itself adds (the shared core and its lock, the decision line). The same
//!   scans go through a third engine whose tap holds the core's lock for its whole dialogue
//!   (the program before the lock was split) for comparison. All run in alternated blocks
//!   (`--rounds`), each on its own engine with its own cold caches and the same codes, so a
//!   slow minute of the machine falls on all of them.
//! - **tap under a delta**: taps (cards answering at once: the engine's own cost) while a
//!   blacklist delta of `--delta-changes` changes is applied to the live list (the uplink's
//!   work: build the next list, swap it through the handle, on a thread at the uplink's
//!   priority, [`crate::sched::set_uplink_priority`], as the program runs it); the longest
//!   tap, against taps on the engine alone measured just before and just after.
//!
//! The journals skip their syncs (the same on every side), so the figures are the program's
//! cost and not the disk's; `--durable` syncs them all, as on a bus.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{scanner, ScanHop, ScanProbe, Shared};
use crate::blacklist::{Blacklist, Change, ChangeOp, Delta};
use crate::card::apdu::{CardChannel, Response};
use crate::card::psam::Psam;
use crate::card::sim::{SimCard, SimPsam, TestKeys};
use crate::card::ChannelError;
use crate::clock::Timestamp;
use crate::engine::{tap_card_with, EngineConfig, Validator};
use crate::fare::FareTable;
use crate::journal::{Journal, OsFiles, UnsyncedFiles};
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
    /// Alternated blocks the scans are split into (engine alone, program, program with the
    /// tap holding the lock throughout).
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// How long a card takes to answer each exchange while scans run, microseconds.
    #[arg(long, default_value_t = 500)]
    pub card_exchange_us: u64,
    /// Card taps by the engine alone (the reference for the taps under a delta), half
    /// before and half after the delta.
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
    /// Every engine's journal on the operating system's files with its syncs (fdatasync),
    /// as on a bus, instead of in files whose sync does nothing: every side pays a sync per
    /// record, and the program's scans also wait behind a tap's sync made under the lock.
    #[arg(long)]
    pub durable: bool,
}

impl Default for ValidatorBenchArgs {
    /// The command's defaults.
    fn default() -> Self {
        ValidatorBenchArgs {
            scans: 2_000,
            rounds: 4,
            card_exchange_us: 500,
            taps: 2_000,
            blacklist_entries: 1_000_000,
            delta_changes: 100_000,
            seed: 42,
            durable: false,
        }
    }
}

/// One run's figures, microseconds unless named otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct ValidatorBenchReport {
    pub scans: usize,
    pub rounds: usize,
    pub card_exchange_us: u64,
    /// Whether the journals synced (`--durable`); otherwise no side syncs.
    pub durable: bool,
    /// `scan_code` on an engine alone, nothing else running.
    pub engine_scan_us_p50: u64,
    pub engine_scan_us_p99: u64,
    /// Its two parts: `checked` (checks 1–10), `decided` (checks 11–13 and the record).
    pub engine_scan_parts: Vec<HopFigures>,
    /// The engine alone fed as the program is (the same scanner socket, splitter and
    /// thread, the line written at once, to its decision) while the same taps run on another
    /// engine: the program without what it adds (the shared core, the decision line).
    pub engine_fed_scan_us_p50: u64,
    pub engine_fed_scan_us_p99: u64,
    /// Card taps made on that other engine meanwhile.
    pub taps_during_engine_fed_scans: u64,
    /// Scanner line to decision line, with a tap in progress on the other input.
    pub program_scan_us_p50: u64,
    pub program_scan_us_p99: u64,
    pub program_scan_us_max: u64,
    /// (program p99 − engine p99) / engine p99, percent.
    pub program_scan_p99_added_pct: f64,
    /// (program p99 − fed engine p99) / fed engine p99, percent: what the program adds to
    /// the engine fed the same way under the same load.
    pub program_scan_p99_added_same_feed_pct: f64,
    /// Card taps made on the other input while the program's scans ran.
    pub taps_during_scans: u64,
    /// Where the program's scan time goes: each hop of every program scan, in order (the
    /// line written → complete in the scanner thread → checks 1–10 → the core's lock taken
    /// → checks 11–13 and the record → the decision line's last byte → the write returned
    /// → read by the bench).
    pub program_scan_hops: Vec<HopFigures>,
    /// The same first hop for the fed engine: the line written → complete in its scanner
    /// thread.
    pub engine_fed_read_us_p50: u64,
    pub engine_fed_read_us_p99: u64,
    /// The same scans when a tap holds the core's lock for its whole dialogue.
    pub whole_tap_lock_scan_us_p50: u64,
    pub whole_tap_lock_scan_us_p99: u64,
    pub whole_tap_lock_scan_p99_added_pct: f64,
    /// Card taps made while those scans ran.
    pub taps_during_whole_tap_lock_scans: u64,
    pub engine_tap_us_p99: u64,
    pub engine_tap_us_max: u64,
    pub delta_changes: usize,
    pub delta_apply_ms: u64,
    pub taps_during_delta: u64,
    pub program_tap_us_p99_during_delta: u64,
    pub program_tap_us_max_during_delta: u64,
}

/// One hop of the program's scans, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct HopFigures {
    /// From the point before to this one: `read` (the line complete in the scanner thread),
    /// `checked` (checks 1–10), `locked` (the core's lock taken), `decided` (checks 11–13
    /// and the record durable, the lock let go), `line` (the decision line's last byte
    /// written: where the program's figure ends), `shown` (the write and flush returned;
    /// the bench's stand-in for standard output hands the time over meanwhile), `received`
    /// (the bench has read that time).
    pub hop: &'static str,
    pub us_p50: u64,
    pub us_p99: u64,
    pub us_max: u64,
}

impl HopFigures {
    fn of(hop: &'static str, h: &Histogram<u64>) -> Self {
        HopFigures {
            hop,
            us_p50: h.value_at_quantile(0.50),
            us_p99: h.value_at_quantile(0.99),
            us_max: h.max(),
        }
    }
}

/// The time a scan passed each [`ScanHop`].
#[derive(Clone, Copy, Default)]
struct Marks([Option<Instant>; 5]);

impl ScanProbe for Marks {
    fn mark(&mut self, hop: ScanHop) {
        self.0[hop as usize] = Some(Instant::now());
    }
}

/// One fed line: when it was written, when its decision line was complete, when the bench
/// had that time.
type Fed3 = (Instant, Instant, Instant);

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
    durable: bool,
) -> Result<Validator<SimPsam>, String> {
    let layer: Box<dyn crate::journal::FileLayer> = if durable {
        Box::new(OsFiles)
    } else {
        Box::new(UnsyncedFiles)
    };
    let (journal, _) = Journal::open_with(dir, layer).map_err(|e| e.to_string())?;
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

/// One code to scan: when, and its scanner line (the text and its LF).
struct Code {
    at_unix_s: i64,
    line: String,
}

impl Code {
    fn text(&self) -> &str {
        self.line.trim_end_matches('\n')
    }
}

/// Codes issued beforehand (the phone's cost is not the validator's).
fn codes(n: usize, seed: u64) -> Result<(ChannelKeys, Vec<Code>), String> {
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
        let mut line = channels
            .issue(
                channel,
                holder as u64,
                card,
                RiderCategory::Adult,
                scan_at - 2,
                i as u32,
            )
            .ok_or("unknown bench channel")?;
        line.push('\n');
        out.push(Code {
            at_unix_s: i64::from(scan_at),
            line,
        });
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

/// A card in the reader's field: each exchange answered after `delay` (none: at once).
struct OnAir<'a> {
    card: &'a mut SimCard,
    delay: Duration,
}

impl CardChannel for OnAir<'_> {
    fn transmit(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.card.transmit(command, response)
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

/// One validator program in process: its shared part, its scanner socket, the PSAM and the
/// cards its card loop owns while no tap thread runs.
struct Program {
    shared: Arc<Shared>,
    clock: Arc<AtomicI64>,
    stamps: mpsc::Receiver<Instant>,
    sock: TcpStream,
    scanner: Option<std::thread::JoinHandle<()>>,
    /// Each scan's [`Marks`], in the order of the lines.
    marks: Arc<Mutex<Vec<Marks>>>,
    /// Each line fed: written, decided, received.
    fed: Vec<Fed3>,
    psam: Option<Psam<SimPsam>>,
    cards: Option<Vec<SimCard>>,
    /// The tap holds the core's lock for its whole dialogue (the program before the split).
    whole_tap_lock: bool,
}

/// What a tap thread hands back when it stops: the PSAM, the cards, each tap's duration.
type TapRun = (Psam<SimPsam>, Vec<SimCard>, Vec<u64>);

impl Program {
    fn start(v: Validator<SimPsam>, seed: u64, whole_tap_lock: bool) -> Result<Self, String> {
        let clock = Arc::new(AtomicI64::new(T0_UNIX_S));
        let (tx, stamps) = mpsc::channel();
        let (psam, core) = v.into_parts();
        let c = Arc::clone(&clock);
        let shared = Arc::new(Shared::new(
            core,
            Box::new(Stamp {
                line: Vec::new(),
                tx,
            }),
            Box::new(move || at(c.load(Ordering::Relaxed))),
            Vec::new(),
        ));
        let listener = scanner::bind_tcp("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?)
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let marks = Arc::new(Mutex::new(Vec::new()));
        let scanner = {
            let p = Arc::clone(&shared);
            let marks = Arc::clone(&marks);
            std::thread::spawn(move || {
                scanner::serve_tcp(listener, &p.scanner_state, &p.stop, &mut |l| {
                    let mut m = Marks::default();
                    p.scan_probed(l, &mut m);
                    marks.lock().unwrap_or_else(|e| e.into_inner()).push(m);
                })
            })
        };
        let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let _ = sock.set_nodelay(true);
        Ok(Program {
            shared,
            clock,
            stamps,
            sock,
            scanner: Some(scanner),
            marks,
            fed: Vec::new(),
            psam: Some(psam),
            cards: Some(crate::bench::bench_cards(seed)),
            whole_tap_lock,
        })
    }

    /// Tap without pause until `tapping` is cleared (once at least); with `tick`, each tap a
    /// second later than the one before (the clock is the taps' own).
    fn spawn_taps(
        &mut self,
        tapping: &Arc<AtomicBool>,
        delay: Duration,
        tick: bool,
    ) -> std::thread::JoinHandle<TapRun> {
        let p = Arc::clone(&self.shared);
        let clock = Arc::clone(&self.clock);
        let tapping = Arc::clone(tapping);
        let whole = self.whole_tap_lock;
        let mut psam = self.psam.take().expect("no tap thread running");
        let mut cards = self.cards.take().expect("no tap thread running");
        std::thread::spawn(move || {
            let mut took = Vec::new();
            let mut i = 0usize;
            // At least one tap, however soon `tapping` is cleared: each side's count of
            // taps meanwhile is never 0 by the scheduler's whim.
            loop {
                if tick {
                    clock.fetch_add(1, Ordering::Relaxed);
                }
                let n = cards.len();
                let card = &mut cards[i % n];
                card.enter_field(None);
                let mut on_air = OnAir { card, delay };
                let start = Instant::now();
                if whole {
                    let now = p.now();
                    tap_card_with(&mut psam, &mut *p.engine(), &mut on_air, now);
                } else {
                    p.tap(&mut psam, &mut on_air);
                }
                took.push(micros(start));
                i += 1;
                if !tapping.load(Ordering::Relaxed) {
                    break;
                }
            }
            (psam, cards, took)
        })
    }

    fn join_taps(&mut self, t: std::thread::JoinHandle<TapRun>) -> Result<Vec<u64>, String> {
        let (psam, cards, took) = t.join().map_err(|_| "tap thread panicked")?;
        self.psam = Some(psam);
        self.cards = Some(cards);
        Ok(took)
    }

    /// Scan `codes` through the socket with a tap in progress on the other input: the time
    /// from the line's write (the whole line at once) to its decision line, into `hist`.
    /// Returns the taps made.
    fn scans(
        &mut self,
        codes: &[Code],
        exchange: Duration,
        hist: &mut Histogram<u64>,
    ) -> Result<u64, String> {
        let tapping = Arc::new(AtomicBool::new(true));
        let taps = self.spawn_taps(&tapping, exchange, false);
        let result = feed(
            &self.clock,
            &mut self.sock,
            &self.stamps,
            codes,
            hist,
            &mut self.fed,
        );
        tapping.store(false, Ordering::Relaxed);
        let took = self.join_taps(taps)?;
        result.map(|()| took.len() as u64)
    }

    fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.scanner.take() {
            let _ = t.join();
        }
    }

    /// Each hop of the scans so far (see [`HopFigures`]).
    fn hops(&self) -> Vec<HopFigures> {
        const NAMES: [&str; 7] = [
            "read", "checked", "locked", "decided", "line", "shown", "received",
        ];
        let mut h: Vec<Histogram<u64>> = NAMES.iter().map(|_| histogram()).collect();
        let marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        for (m, &(written, line, received)) in marks.iter().zip(&self.fed) {
            let Marks([Some(read), Some(checked), Some(locked), Some(decided), Some(shown)]) = *m
            else {
                continue; // a malformed line has no checks: not in this bench
            };
            let points = [
                written, read, checked, locked, decided, line, shown, received,
            ];
            for (i, w) in points.windows(2).enumerate() {
                h[i].saturating_record(between(w[0], w[1]));
            }
        }
        NAMES
            .iter()
            .zip(h)
            .map(|(hop, h)| HopFigures::of(hop, &h))
            .collect()
    }
}

fn between(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX)
}

/// Write each code's line to the scanner socket `sock` (the whole line at once, the clock set
/// to its scan time) and wait for its decision's stamp: the time from the write to the
/// decision, into `hist`; each line's times onto `fed`.
fn feed(
    clock: &AtomicI64,
    sock: &mut TcpStream,
    stamps: &mpsc::Receiver<Instant>,
    codes: &[Code],
    hist: &mut Histogram<u64>,
    fed: &mut Vec<Fed3>,
) -> Result<(), String> {
    fed.reserve(codes.len());
    for code in codes {
        clock.store(code.at_unix_s, Ordering::Relaxed);
        let start = Instant::now();
        sock.write_all(code.line.as_bytes())
            .map_err(|e| e.to_string())?;
        let done = stamps.recv().map_err(|e| e.to_string())?;
        fed.push((start, done, Instant::now()));
        hist.saturating_record(between(start, done));
    }
    Ok(())
}

/// The engine alone fed as the program is: the same loopback scanner socket, line splitter
/// and scanner thread, that thread calling `scan_code` on an engine of its own (no lock, no
/// decision line, nothing else on it) and stamping each decision.
struct Fed {
    clock: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    stamps: mpsc::Receiver<Instant>,
    sock: TcpStream,
    scanner: Option<std::thread::JoinHandle<Result<(), String>>>,
    /// When each line was complete in the scanner thread.
    reads: Arc<Mutex<Vec<Instant>>>,
    fed: Vec<Fed3>,
}

impl Fed {
    fn start(mut v: Validator<SimPsam>) -> Result<Self, String> {
        let clock = Arc::new(AtomicI64::new(T0_UNIX_S));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, stamps) = mpsc::channel();
        let listener = scanner::bind_tcp("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?)
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (c, st) = (Arc::clone(&clock), Arc::clone(&stop));
        let reads = Arc::new(Mutex::new(Vec::new()));
        let r = Arc::clone(&reads);
        let scanner = std::thread::spawn(move || {
            let state = std::sync::atomic::AtomicU8::new(0);
            let mut refused = Ok(());
            scanner::serve_tcp(listener, &state, &st, &mut |line| {
                let read = Instant::now();
                let d = match line {
                    scanner::ScanLine::Code(text) => {
                        v.scan_code(text, at(c.load(Ordering::Relaxed)))
                    }
                    scanner::ScanLine::Malformed(m) => {
                        refused = Err(format!("bench line malformed: {m:?}"));
                        return;
                    }
                };
                let _ = tx.send(Instant::now());
                r.lock().unwrap_or_else(|e| e.into_inner()).push(read);
                if !d.accepted() && refused.is_ok() {
                    refused = Err(format!("bench scan refused: {d:?}"));
                }
            });
            refused
        });
        let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let _ = sock.set_nodelay(true);
        Ok(Fed {
            clock,
            stop,
            stamps,
            sock,
            scanner: Some(scanner),
            reads,
            fed: Vec::new(),
        })
    }

    fn scans(&mut self, codes: &[Code], hist: &mut Histogram<u64>) -> Result<(), String> {
        feed(
            &self.clock,
            &mut self.sock,
            &self.stamps,
            codes,
            hist,
            &mut self.fed,
        )
    }

    /// Each line's time from its write to complete in the scanner thread.
    fn read_hop(&self) -> Histogram<u64> {
        let mut h = histogram();
        let reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        for (&read, &(written, _, _)) in reads.iter().zip(&self.fed) {
            h.saturating_record(between(written, read));
        }
        h
    }

    /// Stop the scanner thread: whether every scan was accepted.
    fn stop(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.scanner.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("fed engine's scanner thread panicked".into()),
            None => Ok(()),
        }
    }
}

/// `codes` scanned by the engine alone, each timed into `hist` and its two parts into
/// `parts` (checks 1–10; checks 11–13 and the record); every one must be accepted. The
/// parts are `scan_code`'s own two steps, called in a row as it calls them.
fn engine_scans(
    v: &mut Validator<SimPsam>,
    codes: &[Code],
    hist: &mut Histogram<u64>,
    parts: &mut [Histogram<u64>; 2],
) -> Result<(), String> {
    let checks = v.ride_code_checks();
    for code in codes {
        let start = Instant::now();
        let checked = checks.check(code.text(), at(code.at_unix_s));
        let mid = Instant::now();
        let d = v.scan_checked(checked);
        let end = Instant::now();
        hist.saturating_record(between(start, end));
        parts[0].saturating_record(between(start, mid));
        parts[1].saturating_record(between(mid, end));
        if !d.accepted() {
            return Err(format!("bench scan refused: {d:?}"));
        }
    }
    Ok(())
}

/// Taps on the engine alone, cards answering at once, one second apart from `from_s`.
fn engine_taps(
    v: &mut Validator<SimPsam>,
    cards: &mut [SimCard],
    n: usize,
    from_s: i64,
    hist: &mut Histogram<u64>,
) {
    for i in 0..n {
        let k = cards.len();
        let card = &mut cards[i % k];
        card.enter_field(None);
        let start = Instant::now();
        v.tap_card(card, at(from_s + i as i64));
        hist.saturating_record(micros(start));
    }
}

fn added_pct(p99: u64, base: u64) -> f64 {
    (p99 as f64 - base as f64) * 100.0 / base.max(1) as f64
}

/// Run the bench and report.
pub fn run(args: &ValidatorBenchArgs) -> Result<ValidatorBenchReport, String> {
    let (keys, codes) = codes(args.scans, args.seed)?;
    let (base, delta) = blacklist_and_delta(args);
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let exchange = Duration::from_micros(args.card_exchange_us);

    // A first pass on a throwaway engine: the process's one-time costs (precomputed curve
    // tables, page faults, the certificate worker's start) are paid before either side is
    // measured. Each measured side then starts with its own cold certificate cache.
    let mut warm = engine(
        &tmp.path().join("warm"),
        Blacklist::empty(),
        &keys,
        args.durable,
    )?;
    for code in &codes {
        warm.scan_code(code.text(), at(code.at_unix_s));
    }
    drop(warm);

    let mut alone = engine(&tmp.path().join("alone"), base.clone(), &keys, args.durable)?;
    let mut fed = Fed::start(engine(
        &tmp.path().join("fed"),
        base.clone(),
        &keys,
        args.durable,
    )?)?;
    // Only its taps are used: the load beside the fed engine.
    let mut load = Program::start(
        engine(
            &tmp.path().join("load"),
            Blacklist::empty(),
            &keys,
            args.durable,
        )?,
        args.seed,
        false,
    )?;
    let mut program = Program::start(
        engine(&tmp.path().join("program"), base, &keys, args.durable)?,
        args.seed,
        false,
    )?;
    let mut whole = Program::start(
        engine(
            &tmp.path().join("whole"),
            Blacklist::empty(),
            &keys,
            args.durable,
        )?,
        args.seed,
        true,
    )?;
    let (mut engine_scan, mut fed_scan, mut program_scan, mut whole_scan) =
        (histogram(), histogram(), histogram(), histogram());
    let mut engine_parts = [histogram(), histogram()];
    let (mut taps_during_scans, mut taps_during_whole, mut taps_during_fed) = (0, 0, 0);
    let block = codes.len().div_ceil(args.rounds.max(1)).max(1);
    for part in codes.chunks(block) {
        engine_scans(&mut alone, part, &mut engine_scan, &mut engine_parts)?;
        let tapping = Arc::new(AtomicBool::new(true));
        let taps = load.spawn_taps(&tapping, exchange, false);
        let scanned = fed.scans(part, &mut fed_scan);
        tapping.store(false, Ordering::Relaxed);
        taps_during_fed += load.join_taps(taps)?.len() as u64;
        scanned?;
        taps_during_scans += program.scans(part, exchange, &mut program_scan)?;
        taps_during_whole += whole.scans(part, exchange, &mut whole_scan)?;
    }
    whole.stop();
    load.stop();
    let fed_read = fed.read_hop();
    fed.stop()?;
    let program_scan_hops = program.hops();

    // Taps while a delta is applied to the live list, between two blocks of the engine alone.
    let mut alone_cards = crate::bench::bench_cards(args.seed);
    let mut engine_tap = histogram();
    let half = args.taps / 2;
    engine_taps(
        &mut alone,
        &mut alone_cards,
        half,
        T0_UNIX_S + 100_000,
        &mut engine_tap,
    );
    program.clock.store(T0_UNIX_S + 200_000, Ordering::Relaxed);
    let tapping = Arc::new(AtomicBool::new(true));
    let taps = program.spawn_taps(&tapping, Duration::ZERO, true);
    let start = Instant::now();
    // Applied as the program's uplink applies it: on its own thread, at the uplink's priority.
    let installed = std::thread::scope(|s| {
        s.spawn(|| {
            crate::sched::set_uplink_priority();
            program.shared.blacklist.install_delta(&delta)
        })
        .join()
        .map_err(|_| "the delta's thread panicked".to_string())
    })?;
    let delta_apply_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    tapping.store(false, Ordering::Relaxed);
    let took = program.join_taps(taps)?;
    installed.map_err(|e| e.to_string())?;
    engine_taps(
        &mut alone,
        &mut alone_cards,
        args.taps - half,
        T0_UNIX_S + 300_000,
        &mut engine_tap,
    );
    let mut during = histogram();
    for us in took {
        during.saturating_record(us);
    }
    program.stop();

    let e99 = engine_scan.value_at_quantile(0.99);
    let l99 = fed_scan.value_at_quantile(0.99);
    let p99 = program_scan.value_at_quantile(0.99);
    let w99 = whole_scan.value_at_quantile(0.99);
    Ok(ValidatorBenchReport {
        scans: codes.len(),
        rounds: args.rounds,
        card_exchange_us: args.card_exchange_us,
        durable: args.durable,
        engine_scan_us_p50: engine_scan.value_at_quantile(0.50),
        engine_scan_us_p99: e99,
        engine_scan_parts: ["checked", "decided"]
            .iter()
            .zip(&engine_parts)
            .map(|(hop, h)| HopFigures::of(hop, h))
            .collect(),
        engine_fed_scan_us_p50: fed_scan.value_at_quantile(0.50),
        engine_fed_scan_us_p99: l99,
        taps_during_engine_fed_scans: taps_during_fed,
        program_scan_us_p50: program_scan.value_at_quantile(0.50),
        program_scan_us_p99: p99,
        program_scan_us_max: program_scan.max(),
        program_scan_p99_added_pct: added_pct(p99, e99),
        program_scan_p99_added_same_feed_pct: added_pct(p99, l99),
        taps_during_scans,
        program_scan_hops,
        engine_fed_read_us_p50: fed_read.value_at_quantile(0.50),
        engine_fed_read_us_p99: fed_read.value_at_quantile(0.99),
        whole_tap_lock_scan_us_p50: whole_scan.value_at_quantile(0.50),
        whole_tap_lock_scan_us_p99: w99,
        whole_tap_lock_scan_p99_added_pct: added_pct(w99, e99),
        taps_during_whole_tap_lock_scans: taps_during_whole,
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
            rounds: 2,
            card_exchange_us: 100,
            taps: 20,
            blacklist_entries: 2_000,
            delta_changes: 2_000,
            seed: 3,
            durable: false,
        })
        .unwrap();
        assert_eq!(r.scans, 20);
        assert!(r.engine_scan_us_p99 >= r.engine_scan_us_p50 && r.engine_scan_us_p50 > 0);
        assert!(r.program_scan_us_p99 >= r.program_scan_us_p50 && r.program_scan_us_p50 > 0);
        assert!(r.whole_tap_lock_scan_us_p50 > 0 && r.taps_during_scans > 0);
        assert!(r.engine_fed_scan_us_p50 > 0 && r.taps_during_engine_fed_scans > 0);
        assert_eq!(r.delta_changes, 2_000);
        let hops: Vec<&str> = r.program_scan_hops.iter().map(|h| h.hop).collect();
        assert_eq!(
            hops,
            ["read", "checked", "locked", "decided", "line", "shown", "received"]
        );
        // Every scan passed every hop: its checks took time, its line came after them.
        assert!(r.program_scan_hops[1].us_p50 > 0 && r.engine_scan_parts[0].us_p50 > 0);
        assert!(r.engine_fed_read_us_p99 >= r.engine_fed_read_us_p50);
    }
}
