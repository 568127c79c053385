//! The bus validator as one program: `fare-validator validator --config validator.toml`.
//!
//! Two inputs, one engine. The card loop (PC/SC, [`card_loop`]) and the QR scanner
//! ([`scanner`]) each block in their own thread on their own device. The card loop owns the
//! PSAM; both share the engine's [`Core`] (journal, anti-passback, fares, ride-code verifier)
//! behind a [`Mutex`]. A scan checks the code (checks 1–10: layout, channel key, certificate,
//! signatures, freshness) before it takes the lock, through the core's own verifier reached
//! without it ([`RideCodeChecks`]), and holds the lock for the rest only (blacklist, replay,
//! anti-passback, one journal write). A card dialogue never holds it across a card or PSAM
//! exchange, only for its short steps in between ([`crate::engine::tap_card_with`]): the
//! longest is the grey record's or the record's journal write and sync. So a scan waits
//! behind a tap for one such step at most, never for the dialogue, and a tap's step waits
//! behind a scan's table looks and journal write, never its signature checks
//! (`bench validator` measures it); neither input polls the other. (A channel to one decision thread would need that thread to wait on the card
//! reader and the channel at once, which PC/SC's blocking status call cannot do without
//! polling.)
//!
//! A validator without a card reader (a bus with only a QR scanner, or a machine without
//! pcscd) is the same program with a core and no PSAM: the reader's state is `absent`.
//!
//! Beside them, the uplink ([`uplink`]) runs on tokio: whenever the depot answers it uploads
//! the records not yet acknowledged, takes home the downlink files and applies them to the
//! running engine. It reads the journal's durable files and never takes the engine's lock
//! for network work: the blacklist is swapped through its arc-swap handle without a lock,
//! fares and ride-code keys are swapped under the lock between two decisions, and the upload
//! cursor is handed to the tap thread (or, without a reader, the idle loop), which moves it
//! between taps.
//!
//! Every decision becomes one line on standard output ([`display`]); the state of the whole
//! program is a JSON status line ([`status`]).

pub mod bench;
pub mod config;
pub mod display;
pub mod scanner;
pub mod status;
pub mod uplink;

#[cfg(feature = "pcsc")]
pub mod card_loop;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::blacklist::BlacklistHandle;
use crate::card::apdu::CardChannel;
use crate::card::psam::Psam;
use crate::clock::Timestamp;
use crate::engine::{tap_card_with, Core, Decision, RideCodeChecks, Subject};
use crate::types::{Media, Reason};

use scanner::{ScanLine, ScannerState};

/// How often the loop between taps looks at the stop flag and the work handed over
/// ([`Shared::between_taps`]), milliseconds: the card loop's wait for a card, or the idle loop
/// of a validator without a card reader.
pub const IDLE_POLL_MS: u64 = 200;

/// The card loop's place in a validator without a card reader: the work between taps
/// (writing the upload cursor the depot moved), every [`IDLE_POLL_MS`], until `stop`.
pub fn idle_loop(shared: &Shared) {
    while !shared.stopping() {
        shared.between_taps();
        std::thread::sleep(std::time::Duration::from_millis(IDLE_POLL_MS));
    }
    shared.between_taps();
}

/// What the card reader is doing, for the status line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ReaderState {
    Starting = 0,
    /// Waiting for a card.
    Ready = 1,
    /// A card dialogue is running.
    Tapping = 2,
    /// The reader failed (gone, pcscd down); retried.
    Failed = 3,
    Stopped = 4,
    /// No card reader configured (a scanner-only validator).
    Absent = 5,
}

impl ReaderState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReaderState::Starting => "starting",
            ReaderState::Ready => "ready",
            ReaderState::Tapping => "tapping",
            ReaderState::Failed => "failed",
            ReaderState::Stopped => "stopped",
            ReaderState::Absent => "absent",
        }
    }

    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => ReaderState::Ready,
            2 => ReaderState::Tapping,
            3 => ReaderState::Failed,
            4 => ReaderState::Stopped,
            5 => ReaderState::Absent,
            _ => ReaderState::Starting,
        }
    }
}

/// The points a scanner line passes on its way to its decision line, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanHop {
    /// The line is complete in the scanner thread (its last byte read and split).
    Read = 0,
    /// Checks 1–10 made, before the core's lock.
    Checked = 1,
    /// The core's lock taken.
    Locked = 2,
    /// Checks 11–13 made and the record durable (journal write and sync); the lock let go.
    Decided = 3,
    /// The decision line written and flushed.
    Shown = 4,
}

/// Told by [`Shared::scan_probed`] as a scan passes each [`ScanHop`].
pub trait ScanProbe {
    fn mark(&mut self, hop: ScanHop);
}

/// No probe: the program's own scans.
impl ScanProbe for () {
    #[inline(always)]
    fn mark(&mut self, _hop: ScanHop) {}
}

/// Counts since start, for the status line.
#[derive(Default)]
pub struct Counters {
    pub taps: AtomicU64,
    pub scans: AtomicU64,
    /// Scanner lines refused before the engine (too long, not UTF-8, cut off).
    pub scans_malformed: AtomicU64,
}

/// The clock the program reads at each tap and scan.
pub type Clock = Box<dyn Fn() -> Timestamp + Send + Sync>;

/// What the threads of one validator program share. The PSAM is not here: the card loop
/// owns it.
pub struct Shared {
    core: Mutex<Core>,
    /// The core's ride-code verifier, for the checks a scan makes before taking `core`.
    ride_codes: RideCodeChecks,
    /// The live blacklist (the engine's own handle), swapped by the uplink without the lock.
    pub blacklist: Arc<BlacklistHandle>,
    out: Mutex<Box<dyn Write + Send>>,
    clock: Clock,
    /// Set by SIGTERM (or a test): every loop finishes what it is doing and returns.
    pub stop: AtomicBool,
    /// Highest seq durable in the journal (published after every decision).
    pub durable_seq: AtomicU64,
    /// Highest seq the journal's cursor file holds.
    pub acked_seq: AtomicU64,
    /// Cursor the depot acknowledged, waiting for the tap thread to write it.
    acked_wanted: AtomicU64,
    pub counters: Counters,
    pub reader_state: AtomicU8,
    pub scanner_state: AtomicU8,
    pub uplink: Mutex<status::UplinkStatus>,
    /// What opening the journal repaired or cut (torn tails, damaged side files).
    pub repairs_at_start: Vec<String>,
}

impl Shared {
    /// Wrap an engine's core (a validator's second part, [`crate::engine::Validator::into_parts`],
    /// or a scanner-only core); decisions are written to `out`, one line each.
    pub fn new(
        core: Core,
        out: Box<dyn Write + Send>,
        clock: Clock,
        repairs_at_start: Vec<String>,
    ) -> Self {
        let blacklist = Arc::clone(core.blacklist());
        let durable = core.journal().durable_seq();
        let acked = core.journal().acked_seq();
        Shared {
            ride_codes: core.ride_code_checks(),
            core: Mutex::new(core),
            blacklist,
            out: Mutex::new(out),
            clock,
            stop: AtomicBool::new(false),
            durable_seq: AtomicU64::new(durable),
            acked_seq: AtomicU64::new(acked),
            acked_wanted: AtomicU64::new(acked),
            counters: Counters::default(),
            reader_state: AtomicU8::new(ReaderState::Starting as u8),
            scanner_state: AtomicU8::new(ScannerState::None as u8),
            uplink: Mutex::new(status::UplinkStatus::default()),
            repairs_at_start,
        }
    }

    /// The engine's core, for a scan or a swap between decisions. A thread that panicked
    /// while holding it left nothing half-done that matters here (every record is durable or
    /// not at all), so a poisoned lock is taken over.
    pub fn engine(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// One card tap with the card loop's PSAM: the core's lock is taken for the dialogue's
    /// short steps only; then show the decision.
    pub fn tap<P: CardChannel, C: CardChannel + ?Sized>(
        &self,
        psam: &mut Psam<P>,
        card: &mut C,
    ) -> Decision {
        self.reader_state
            .store(ReaderState::Tapping as u8, Ordering::Relaxed);
        let now = self.now();
        let d = tap_card_with(psam, &mut &self.core, card, now);
        // fetch_max: a scan may have published a later seq since this tap's record.
        self.durable_seq
            .fetch_max(self.engine().journal().durable_seq(), Ordering::Relaxed);
        self.counters.taps.fetch_add(1, Ordering::Relaxed);
        self.reader_state
            .store(ReaderState::Ready as u8, Ordering::Relaxed);
        self.show(now, &d);
        d
    }

    /// One scanner line: a code goes to the engine; a line refused by the splitter is a
    /// `malformed` refusal without it. The code's signatures and dates are checked before the
    /// core's lock is taken, so a tap's step never waits for them.
    pub fn scan(&self, line: ScanLine<'_>) -> Decision {
        self.scan_probed(line, &mut ())
    }

    /// [`Shared::scan`], telling `probe` as the scan passes each [`ScanHop`] (`bench
    /// validator` times them; the program's own scans pass `()`, which does nothing).
    pub fn scan_probed(&self, line: ScanLine<'_>, probe: &mut impl ScanProbe) -> Decision {
        probe.mark(ScanHop::Read);
        let now = self.now();
        let d = match line {
            ScanLine::Code(text) => {
                let checked = self.ride_codes.check(text, now);
                probe.mark(ScanHop::Checked);
                let mut engine = self.engine();
                probe.mark(ScanHop::Locked);
                let d = engine.scan_checked(checked);
                self.durable_seq
                    .fetch_max(engine.journal().durable_seq(), Ordering::Relaxed);
                drop(engine);
                probe.mark(ScanHop::Decided);
                d
            }
            ScanLine::Malformed(why) => {
                tracing::debug!(?why, "scanner line refused");
                self.counters
                    .scans_malformed
                    .fetch_add(1, Ordering::Relaxed);
                Decision {
                    media: Media::Qr,
                    subject: Subject::Unknown,
                    outcome: Err(Reason::Malformed),
                    fare_fen: 0,
                    balance_fen: None,
                    seq: None,
                    fare_note: None,
                }
            }
        };
        self.counters.scans.fetch_add(1, Ordering::Relaxed);
        self.show(now, &d);
        probe.mark(ScanHop::Shown);
        d
    }

    /// Write the decision's line (its record is already durable), from a fixed buffer.
    fn show(&self, now: Timestamp, d: &Decision) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = display::write_feedback_line(&mut *out, now, d).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "decision line not written");
        }
    }

    /// The depot acknowledged up to `seq`: the tap thread writes the cursor between taps.
    pub fn ack_from_depot(&self, seq: u64) {
        self.acked_wanted.fetch_max(seq, Ordering::Relaxed);
    }

    /// Work done between taps: write the upload cursor the depot moved. Called by the card
    /// loop while no card is on the reader.
    pub fn between_taps(&self) {
        let wanted = self.acked_wanted.load(Ordering::Relaxed);
        if wanted <= self.acked_seq.load(Ordering::Relaxed) {
            return;
        }
        let mut engine = self.engine();
        match engine.journal_mut().set_acked(wanted) {
            Ok(()) => {
                let now_acked = engine.journal().acked_seq();
                self.acked_seq.store(now_acked, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "upload cursor not written; kept for later"),
        }
    }
}
