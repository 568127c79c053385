//! Where a tap becomes a decision.
//!
//! One file per medium around the shared decision and record core here:
//! [`card`] (the T-Union purse: dialogue, PSAM, debit, grey record recovery) and
//! [`ride_code`] (e-SSC ride codes). This file holds the [`Validator`] itself, the
//! [`Decision`] every medium answers with, anti-passback memory, and
//! `record_and_accept`: a record made durable in the journal before any acceptance.
//!
//! [`Validator::tap_card`] runs the whole dialogue with a card through [`CardChannel`] and the
//! PSAM, checks the reasons of docs/replay.md in their order, debits the purse, and
//! makes the record durable in the [`Journal`] before it returns an accepted [`Decision`].
//! The clock is an argument, so the same taps give the same decisions on a bus, in replay
//! and in tests. After start-up nothing on this path allocates: the tables below are sized
//! once, with named bounds.
//!
//! Nothing a card or PSAM answers can panic this path (docs/reliability.md lists the
//! `expect`s, asserts and indexing left on it and why each cannot fire;
//! `tests/tap_answers.rs` drives whole taps with arbitrary answers). A card value the engine
//! cannot carry (a balance that would leave the purse's range) is `unreadable` before any
//! debit.
//!
//! Card checks, in order: `unreadable`, `card_blocked`, `not_activated`,
//! `card_not_yet_valid` / `card_expired`, `blacklisted` (and the lock of a replaced or
//! cancelled card), `repeat_tap`, `issuer_not_accepted`, `insufficient_balance`,
//! `card_removed`. The fare follows the card's issuing city (file 0x17) as well as its card
//! type: only cards the fare table grants concessions get them ([`crate::fare`]).
//!
//! Before DEBIT FOR CAPP PURCHASE is sent, the intent to debit (a grey record, 灰记录: card,
//! offline counter, PSAM transaction number, amount and what the record will say) is made
//! durable in the journal folder ([`crate::journal::grey`]); if that fails the card is not
//! debited. The grey record is settled once the debit's record is durable, voided when the
//! card says it was not debited, and otherwise stays open across power cuts and restarts
//! (at most [`PENDING_DEBITS_MAX`]): when that card comes back, GET TRANSACTION PROOF for the
//! counter used tells whether the debit happened, and if so it is recorded once and the tap
//! accepted with the earlier fare, charging nothing more. On start the anti-passback memory
//! is rebuilt from the journal's newest records, so a restart forgets no acceptance the
//! journal holds.
//!
//! A validator is two parts: its PSAM, which only the card dialogue uses, and its [`Core`]
//! (journal, anti-passback, fares, blacklist handle, ride-code and QuickPass sides), which
//! taps and scans share. The card dialogue reaches the core through [`CoreAccess`] in short
//! steps between its card and PSAM exchanges, never across one, so the validator program can
//! keep the core behind a lock that a scan waits on for one such step at most
//! ([`tap_card_with`]).

mod card;
mod quickpass;
mod ride_code;

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use crate::blacklist::{Blacklist, BlacklistHandle, Change};
use crate::card::apdu::CardChannel;
use crate::card::psam::Psam;
use crate::card::quickpass::MaskedPan;
use crate::clock::Timestamp;
use crate::fare::{FareNote, FareTable};
use crate::journal::{Journal, JournalError, Record};
use crate::ride_code::replay_cache::ReplayKey;
use crate::types::{AccountId, BalanceFen, CardNo, Fen, ListId, Media, Reason};

pub use card::tap_card_with;
use quickpass::QuickPass;
pub use quickpass::UNPREDICTABLE_SEED_DEFAULT;
use ride_code::RideCodes;
pub use ride_code::{CheckedCode, RideCodeChecks};

/// Accepted taps remembered for anti-passback. A validator accepts at most a few taps a
/// second; 256 covers more than four a second over a 60 s window.
pub const ANTI_PASSBACK_ENTRIES_MAX: usize = 256;
/// Debits awaiting their proof (cards pulled away or cut off mid-debit, or accepted in a group
/// commit not yet synced) kept at once: the open grey records.
pub const PENDING_DEBITS_MAX: usize = crate::journal::GREY_OPEN_MAX;
/// Taps that may share one journal sync in group-commit mode.
pub const GROUP_COMMIT_TAPS_MAX: usize = 128;
/// Purchase key index this operator's cards use.
pub const PURCHASE_KEY_INDEX: u8 = 0x01;
/// A clock step larger than this (backwards) is logged as a jump.
pub const CLOCK_JUMP_LOG_S: i64 = 5;

/// Settings of one validator.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub route: u16,
    pub anti_passback_s: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            route: 1,
            anti_passback_s: 60,
        }
    }
}

/// Who the decision is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Card(CardNo),
    Account(AccountId),
    /// A QuickPass card, known by its masked PAN.
    Quickpass(MaskedPan),
    /// Nothing could be read (an unreadable card, a malformed code).
    Unknown,
}

/// The answer to one tap or scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub media: Media,
    pub subject: Subject,
    pub outcome: Result<(), Reason>,
    pub fare_fen: Fen,
    /// The purse balance (negative: overdrawn), when the engine read it.
    pub balance_fen: Option<BalanceFen>,
    pub seq: Option<u64>,
    /// Why an accepted card tap's fare is not the plain one of its card type (an ended
    /// concession, another rider on the card); `None` otherwise and for every refusal.
    pub fare_note: Option<FareNote>,
}

impl Decision {
    pub fn accepted(&self) -> bool {
        self.outcome.is_ok()
    }

    fn refused(
        media: Media,
        subject: Subject,
        reason: Reason,
        balance_fen: Option<BalanceFen>,
    ) -> Self {
        Decision {
            media,
            subject,
            outcome: Err(reason),
            fare_fen: 0,
            balance_fen,
            seq: None,
            fare_note: None,
        }
    }
}

/// Fixed-size memory of recent acceptances, for anti-passback.
struct RecentTaps {
    entries: [Option<(ListId, i64)>; ANTI_PASSBACK_ENTRIES_MAX],
    next: usize,
}

impl RecentTaps {
    fn new() -> Self {
        RecentTaps {
            entries: [None; ANTI_PASSBACK_ENTRIES_MAX],
            next: 0,
        }
    }

    /// Whether `id` was accepted less than `window_s` before `now`. A tap stamped before the
    /// last acceptance (the clock went back) counts as within the window only if less than
    /// `window_s` before it, so a clock step can neither lock a passenger out for long nor
    /// let a quick second tap through.
    fn is_repeat(&self, id: &ListId, now_s: i64, window_s: u32) -> bool {
        let w = i64::from(window_s);
        self.entries
            .iter()
            .flatten()
            .any(|(k, at)| k == id && (now_s - at).abs() < w)
    }

    /// The card's (or account's) acceptances less than `window_s` from `now_s` (as
    /// [`Self::is_repeat`] counts them): how many, and the time of the earliest. `None` when
    /// there is none.
    fn group(&self, id: &ListId, now_s: i64, window_s: u32) -> Option<(usize, i64)> {
        let w = i64::from(window_s);
        self.entries
            .iter()
            .flatten()
            .filter(|(k, at)| k == id && (now_s - at).abs() < w)
            .fold(None, |acc, (_, at)| match acc {
                None => Some((1, *at)),
                Some((n, first)) => Some((n + 1, first.min(*at))),
            })
    }

    fn remember(&mut self, id: ListId, now_s: i64) {
        self.entries[self.next] = Some((id, now_s));
        self.next = (self.next + 1) % ANTI_PASSBACK_ENTRIES_MAX;
    }
}

/// One bus validator: its PSAM and its [`Core`] (every [`Core`] method is reachable through
/// it).
pub struct Validator<P: CardChannel> {
    psam: Psam<P>,
    core: Core,
}

impl<P: CardChannel> Deref for Validator<P> {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl<P: CardChannel> DerefMut for Validator<P> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.core
    }
}

/// What taps and scans share: fare table, blacklist handle, journal, anti-passback memory,
/// the ride-code and QuickPass sides. A scanner-only validator (no card reader, no PSAM) is a
/// core alone.
pub struct Core {
    cfg: EngineConfig,
    /// The PSAM's terminal number (file 0x16), or the configured one without a PSAM.
    terminal_no: [u8; 6],
    fares: FareTable,
    blacklist: Arc<BlacklistHandle>,
    journal: Journal,
    recent: RecentTaps,
    last_now_s: Option<i64>,
    /// Group commit: accepted taps whose records wait for [`Core::commit`].
    deferred: heapless::Vec<ListId, GROUP_COMMIT_TAPS_MAX>,
    ride: RideCodes,
    quickpass: QuickPass,
    defer_commit: bool,
}

/// Why a card dialogue stopped, and what was known by then.
struct Refusal {
    reason: Reason,
    balance_fen: Option<BalanceFen>,
}

impl From<Reason> for Refusal {
    fn from(reason: Reason) -> Self {
        Refusal {
            reason,
            balance_fen: None,
        }
    }
}

/// How a card dialogue reaches the [`Core`]: directly on one thread, or through a lock
/// taken for each short step (a few table looks, one journal write and sync) and released
/// before the next card or PSAM exchange.
pub trait CoreAccess {
    fn with<R>(&mut self, f: impl FnOnce(&mut Core) -> R) -> R;
}

impl CoreAccess for Core {
    fn with<R>(&mut self, f: impl FnOnce(&mut Core) -> R) -> R {
        f(self)
    }
}

/// A core shared by threads. A thread that panicked while holding it left nothing half-done
/// that matters (every record is durable or not at all), so a poisoned lock is taken over.
impl CoreAccess for &Mutex<Core> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Core) -> R) -> R {
        f(&mut self.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<P: CardChannel> Validator<P> {
    pub fn new(
        cfg: EngineConfig,
        psam: Psam<P>,
        fares: FareTable,
        blacklist: Blacklist,
        journal: Journal,
    ) -> Self {
        let core = Core::new(cfg, psam.terminal_no(), fares, blacklist, journal);
        Validator { psam, core }
    }

    /// The PSAM (for the card dialogue) and the core (shared with scans), apart.
    pub fn into_parts(self) -> (Psam<P>, Core) {
        (self.psam, self.core)
    }

    /// Switch the validator off: its PSAM comes back (a real module keeps its transaction
    /// counter across power cycles); everything else in memory is gone.
    pub fn into_psam(self) -> Psam<P> {
        self.psam
    }
}

impl Core {
    /// A validator's shared part; `terminal_no` is written in every record.
    pub fn new(
        cfg: EngineConfig,
        terminal_no: [u8; 6],
        fares: FareTable,
        blacklist: Blacklist,
        journal: Journal,
    ) -> Self {
        // A restart forgets nothing the journal holds: the newest acceptances count for
        // anti-passback as if the validator had never stopped.
        let mut recent = RecentTaps::new();
        for rec in journal.recent_records() {
            recent.remember(passenger(rec), rec.at_unix_s);
        }
        let mut ride = RideCodes::without_keys();
        for rec in journal.recent_records() {
            if let Some(q) = rec.qr {
                // Codes accepted before the restart stay spent (check 12).
                let key = ReplayKey {
                    channel_id: q.account.channel,
                    account_id: q.account.account,
                    counter: q.counter,
                };
                ride.replay
                    .remember(key, i64::from(q.generated_at), rec.at_unix_s);
            }
        }
        let open = journal.grey_open().len();
        if open > 0 {
            tracing::info!(
                open,
                "grey records open: recovered when their cards come back"
            );
        }
        Core {
            cfg,
            terminal_no,
            fares: fares.indexed(),
            blacklist: Arc::new(BlacklistHandle::new(blacklist)),
            journal,
            recent,
            last_now_s: None,
            deferred: heapless::Vec::new(),
            ride,
            quickpass: QuickPass::without_keys(),
            defer_commit: false,
        }
    }

    /// Group commit: from now on an accepted tap's record is appended but not synced, and the
    /// caller must call [`Core::commit`] before it shows any of those decisions (at the
    /// latest after [`GROUP_COMMIT_TAPS_MAX`] taps, when it is forced). Each debit's grey
    /// record is still synced before its debit: only the records share a sync.
    pub fn set_group_commit(&mut self, on: bool) {
        self.defer_commit = on;
    }

    /// Make every deferred record durable. On error none of the deferred taps may be shown
    /// as accepted: their debits stay pending and are recovered when the cards come back.
    pub fn commit(&mut self) -> Result<u64, JournalError> {
        let result = self.journal.commit();
        if result.is_ok() {
            for id in std::mem::take(&mut self.deferred) {
                if let ListId::Card(card_no) = id {
                    self.journal.grey_settle(card_no);
                }
            }
        } else {
            self.deferred.clear();
        }
        result
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The terminal number written in every record.
    pub fn terminal_no(&self) -> [u8; 6] {
        self.terminal_no
    }

    /// The vehicle now runs `route`.
    pub fn set_route(&mut self, route: u16) {
        self.cfg.route = route;
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn journal_mut(&mut self) -> &mut Journal {
        &mut self.journal
    }

    /// The live blacklist: another thread may install verified deltas and snapshots through
    /// it while taps go on (a tap sees the old version or the new one, never a mix).
    pub fn blacklist(&self) -> &Arc<BlacklistHandle> {
        &self.blacklist
    }

    /// Apply one blacklist change (a loss report, an un-report...) between taps.
    pub fn apply_blacklist(&mut self, change: &Change) {
        self.blacklist.apply_change(change);
    }

    pub fn fares(&self) -> &FareTable {
        &self.fares
    }

    /// Charge by this fare table from the next tap on (a verified table from the depot).
    pub fn set_fares(&mut self, fares: FareTable) {
        self.fares = fares.indexed();
    }

    fn observe_clock(&mut self, now: Timestamp) {
        if let Some(last) = self.last_now_s {
            if now.unix_s + CLOCK_JUMP_LOG_S < last {
                tracing::warn!(from = last, to = now.unix_s, "clock jumped backwards");
            }
        }
        self.last_now_s = Some(self.last_now_s.map_or(now.unix_s, |l| l.max(now.unix_s)));
    }
}

impl Core {
    /// Make the record durable, then accept. If the journal fails, the debit stays pending
    /// (the card holds its proof) and the passenger is refused: no record, no ride.
    fn record_and_accept(&mut self, mut rec: Record, now: Timestamp) -> Result<Decision, Refusal> {
        let storage_refusal = Refusal {
            reason: Reason::StorageUnavailable,
            balance_fen: rec.balance_fen,
        };
        if self.defer_commit && self.deferred.is_full() {
            // The group is as large as it may get: sync it before taking another.
            self.commit().map_err(|_| Refusal { ..storage_refusal })?;
        }
        let defer = self.defer_commit;
        let seq = self.journal.append(&mut rec).and_then(|seq| {
            if defer {
                Ok(seq)
            } else {
                self.journal.commit().map(|_| seq)
            }
        });
        let seq = seq.map_err(|e| {
            tracing::error!(error = %e, "journal write failed: no record, no ride");
            storage_refusal
        })?;
        if defer {
            // Its grey record stays open until the group is durable; capacity was made above.
            let _ = self.deferred.push(passenger(&rec));
        } else if rec.qr.is_none() && rec.quickpass.is_none() {
            self.journal.grey_settle(rec.card_no);
        }
        self.recent.remember(passenger(&rec), now.unix_s);
        let subject = match (rec.qr, rec.quickpass) {
            (Some(q), _) => Subject::Account(q.account),
            (None, Some(p)) => Subject::Quickpass(p.masked_pan),
            (None, None) => Subject::Card(rec.card_no),
        };
        Ok(Decision {
            media: rec.media(),
            subject,
            outcome: Ok(()),
            fare_fen: rec.fare_fen,
            balance_fen: rec.balance_fen,
            seq: Some(seq),
            fare_note: None,
        })
    }

    fn journal_ready(&mut self) -> Result<(), JournalError> {
        if self.journal.is_degraded() {
            self.journal.ensure_ready()?;
            tracing::info!("journal storage is back");
        }
        Ok(())
    }
}

/// Who anti-passback and group commit know a record by: the card, or the ride-code account.
fn passenger(rec: &Record) -> ListId {
    match (rec.qr, rec.quickpass) {
        (Some(q), _) => ListId::Account(q.account),
        (None, Some(p)) => ListId::Pan(p.pan_token),
        (None, None) => ListId::Card(rec.card_no),
    }
}
