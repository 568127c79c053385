//! Where a tap becomes a decision.
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

use std::sync::Arc;

use crate::blacklist::{Blacklist, BlacklistHandle, Change};
use crate::card::apdu::CardChannel;
use crate::card::psam::{issuer8_for_mac, Mac1Input, Psam};
use crate::card::tunion::{
    balance_after, covers, Boarding, CardError, CardSession, PublicInfo, Selected, BLOCK_HEADER,
    TX_TYPE_CAPP,
};
use crate::card::ChannelError;
use crate::clock::Timestamp;
use crate::fare::{FareTable, PreviousBoarding};
use crate::journal::{CardTx, GreyRecord, Journal, JournalError, QrTx, Record, RecordKind};
use crate::ride_code::replay_cache::ReplayKey;
use crate::ride_code::{ChannelKeys, ReplayCache, RideCode, RideCodeConfig, Verifier};
use crate::types::{AccountId, BalanceFen, CardNo, Fen, ListId, Media, Reason, RiderCategory};

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

    fn remember(&mut self, id: ListId, now_s: i64) {
        self.entries[self.next] = Some((id, now_s));
        self.next = (self.next + 1) % ANTI_PASSBACK_ENTRIES_MAX;
    }
}

/// One bus validator: its PSAM, fare table, blacklist, journal and short-term memory.
pub struct Validator<P: CardChannel> {
    cfg: EngineConfig,
    psam: Psam<P>,
    fares: FareTable,
    blacklist: Arc<BlacklistHandle>,
    journal: Journal,
    recent: RecentTaps,
    last_now_s: Option<i64>,
    /// Group commit: accepted taps whose records wait for [`Validator::commit`].
    deferred: heapless::Vec<ListId, GROUP_COMMIT_TAPS_MAX>,
    ride: RideCodes,
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

/// Map a card error to the reason a passenger sees.
fn card_reason(e: CardError) -> Reason {
    match e {
        CardError::Channel(ChannelError::Removed) => Reason::CardRemoved,
        _ => Reason::Unreadable,
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
        Validator {
            cfg,
            psam,
            fares,
            blacklist: Arc::new(BlacklistHandle::new(blacklist)),
            journal,
            recent,
            last_now_s: None,
            deferred: heapless::Vec::new(),
            ride,
            defer_commit: false,
        }
    }

    /// Group commit: from now on an accepted tap's record is appended but not synced, and the
    /// caller must call [`Validator::commit`] before it shows any of those decisions (at the
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

    /// Switch the validator off: its PSAM comes back (a real module keeps its transaction
    /// counter across power cycles); everything else in memory is gone.
    pub fn into_psam(self) -> Psam<P> {
        self.psam
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
        self.fares = fares;
    }

    fn observe_clock(&mut self, now: Timestamp) {
        if let Some(last) = self.last_now_s {
            if now.unix_s + CLOCK_JUMP_LOG_S < last {
                tracing::warn!(from = last, to = now.unix_s, "clock jumped backwards");
            }
        }
        self.last_now_s = Some(self.last_now_s.map_or(now.unix_s, |l| l.max(now.unix_s)));
    }

    /// A card is tapped: decide, debit, record durably, answer.
    pub fn tap_card<C: CardChannel + ?Sized>(&mut self, card: &mut C, now: Timestamp) -> Decision {
        self.observe_clock(now);
        let mut s = CardSession::new(card);
        let mut subject = Subject::Unknown;
        let result = self.card_dialogue(&mut s, now, &mut subject);
        let decision = match result {
            Ok(d) => d,
            Err(r) => Decision::refused(Media::Card, subject, r.reason, r.balance_fen),
        };
        tracing::debug!(?decision, "card tap");
        decision
    }

    fn card_dialogue<C: CardChannel + ?Sized>(
        &mut self,
        s: &mut CardSession<'_, C>,
        now: Timestamp,
        subject: &mut Subject,
    ) -> Result<Decision, Refusal> {
        match s.select().map_err(card_reason)? {
            Selected::Ok => {}
            Selected::Blocked => return Err(Reason::CardBlocked.into()),
            Selected::NoApplication => return Err(Reason::Unreadable.into()),
        }
        let info = s.read_public().map_err(card_reason)?;
        *subject = Subject::Card(info.card_no);
        let awaiting_group_sync = self.deferred.contains(&ListId::Card(info.card_no));
        if let Some(g) = self.journal.grey_for(info.card_no) {
            if !awaiting_group_sync {
                if let Some(d) = self.recover(s, g, now)? {
                    return Ok(d);
                }
            }
        }
        if info.enable_flag != 1 {
            return Err(Reason::NotActivated.into());
        }
        let today = now.local_ymd();
        if today < info.valid_from {
            return Err(Reason::CardNotYetValid.into());
        }
        if today > info.valid_until {
            return Err(Reason::CardExpired.into());
        }
        let listed_as = ListId::Card(info.card_no);
        if let Some(why) = self.blacklist.get(&listed_as) {
            if why.locks_card() {
                self.lock_card(s, &info);
            }
            return Err(Reason::Blacklisted.into());
        }
        if self
            .recent
            .is_repeat(&listed_as, now.unix_s, self.cfg.anti_passback_s)
        {
            return Err(Reason::RepeatTap.into());
        }
        self.purchase(s, &info, now)
    }

    fn purchase<C: CardChannel + ?Sized>(
        &mut self,
        s: &mut CardSession<'_, C>,
        info: &PublicInfo,
        now: Timestamp,
    ) -> Result<Decision, Refusal> {
        let category = s.read_holder().map_err(card_reason)?;
        let management = s.read_management().map_err(card_reason)?;
        let Some(issuer) = self
            .fares
            .issuer(management.issuer_city, management.interop_kind)
        else {
            return Err(Reason::IssuerNotAccepted.into());
        };
        let prev = s.read_boarding().map_err(card_reason)?;
        let route = self.cfg.route;
        let prev = prev.map(|b| PreviousBoarding {
            route: b.route,
            at_unix_s: i64::from(b.at_unix_s),
        });
        let fare_fen = self.fares.card_fare(category, issuer, route, &now, prev);
        let terminal_no = self.psam.terminal_no();
        let init = match s.init_purchase(PURCHASE_KEY_INDEX, fare_fen, terminal_no) {
            Ok(init) if covers(init.balance_fen, fare_fen) => init,
            Ok(init) => {
                return Err(Refusal {
                    reason: Reason::InsufficientBalance,
                    balance_fen: Some(init.balance_fen),
                })
            }
            Err(CardError::Status {
                sw: crate::card::apdu::sw::INSUFFICIENT_BALANCE,
                ..
            }) => {
                let balance_fen = s.get_balance().ok();
                return Err(Refusal {
                    reason: Reason::InsufficientBalance,
                    balance_fen,
                });
            }
            Err(e) => return Err(card_reason(e).into()),
        };
        let known_balance = Some(init.balance_fen);
        // Checked before anything is debited: a balance that would leave the purse's range is
        // a card value the engine cannot carry (it cannot happen once `covers` held).
        let Some(balance_fen) = balance_after(init.balance_fen, fare_fen) else {
            tracing::warn!(card = %info.card_no, balance_fen = init.balance_fen, fare_fen, "balance after the fare out of range");
            return Err(Refusal {
                reason: Reason::Unreadable,
                balance_fen: known_balance,
            });
        };
        let datetime = now.local_bcd();
        let mac_in = Mac1Input {
            card_random: init.card_random,
            offline_counter: init.offline_counter,
            amount_fen: fare_fen,
            tx_type: TX_TYPE_CAPP,
            datetime,
            key_version: init.key_version,
            alg_id: init.alg_id,
            card_serial8: info.card_no.serial_tail8(),
            issuer8: issuer8_for_mac(&info.issuer),
        };
        let (terminal_seq, mac1) = self.psam.mac1(&mac_in).map_err(|e| {
            tracing::error!(error = %e, "PSAM refused MAC1");
            Refusal {
                reason: Reason::Unreadable,
                balance_fen: known_balance,
            }
        })?;
        let boarding = Boarding {
            route,
            terminal_no,
            at_unix_s: now.unix_s.clamp(0, i64::from(u32::MAX)) as u32,
            fare_fen,
            category: category as u8,
        };
        s.update_boarding(&boarding).map_err(|e| Refusal {
            reason: card_reason(e),
            balance_fen: known_balance,
        })?;
        let grey = GreyRecord {
            card_no: info.card_no,
            offline_counter: init.offline_counter,
            terminal_seq,
            fare_fen,
            balance_after_fen: balance_fen,
            category,
            route,
            at_unix_s: now.unix_s,
            utc_offset_min: (now.utc_offset_s / 60) as i16,
            terminal_no,
        };
        if let Err(e) = self
            .journal_ready()
            .and_then(|()| self.journal.grey_intent(&grey))
        {
            tracing::error!(error = %e, "journal unavailable: no record, no ride");
            return Err(Refusal {
                reason: Reason::StorageUnavailable,
                balance_fen: known_balance,
            });
        }
        let proof = match s.debit(terminal_seq, datetime, mac1) {
            Ok(p) => p,
            Err(e @ CardError::Channel(_)) => {
                // The debit may or may not have happened: the grey record settles it later.
                return Err(Refusal {
                    reason: card_reason(e),
                    balance_fen: known_balance,
                });
            }
            Err(e) => {
                self.journal.grey_void(info.card_no);
                tracing::warn!(error = %e, card = %info.card_no, "debit refused by card");
                return Err(Refusal {
                    reason: Reason::Unreadable,
                    balance_fen: known_balance,
                });
            }
        };
        if let Err(e) = self.psam.verify_mac2(proof.mac2) {
            if matches!(e, CardError::Channel(_)) {
                // The PSAM could not be asked (a reader fault, a power cut): the card was
                // debited and holds its proof, so the grey record stays open for recovery.
                tracing::error!(error = %e, card = %info.card_no, "PSAM unreachable at MAC2");
                return Err(Refusal {
                    reason: Reason::Unreadable,
                    balance_fen: known_balance,
                });
            }
            self.journal.grey_void(info.card_no);
            tracing::error!(error = %e, card = %info.card_no, "MAC2 did not verify: card not genuine");
            return Err(Refusal {
                reason: Reason::Unreadable,
                balance_fen: known_balance,
            });
        }
        let card_tx = CardTx {
            offline_counter: init.offline_counter,
            terminal_seq,
            tac: proof.tac,
        };
        let rec = self.card_record(
            RecordKind::CardPurchase,
            info.card_no,
            category,
            fare_fen,
            Some(balance_fen),
            card_tx,
            now,
        );
        self.record_and_accept(rec, now)
    }

    /// Settle the card's open grey record `g` now that the card is in the field again.
    /// `Ok(None)`: it was never debited, go on with a normal tap.
    fn recover<C: CardChannel + ?Sized>(
        &mut self,
        s: &mut CardSession<'_, C>,
        g: GreyRecord,
        now: Timestamp,
    ) -> Result<Option<Decision>, Refusal> {
        let proof = s
            .transaction_proof(g.offline_counter)
            .map_err(card_reason)?;
        let Some(proof) = proof else {
            self.journal.grey_void(g.card_no);
            tracing::info!(card = %g.card_no, "torn tap: the card was not debited");
            return Ok(None);
        };
        let balance_fen = s.get_balance().map_err(card_reason)?;
        tracing::info!(card = %g.card_no, fare_fen = g.fare_fen, "torn tap: debit recovered from the card's proof");
        // The record says what the grey record promised (fare, category, route, counters),
        // at the time the passenger is told, with the purse as it is now: `journal show`
        // prints what the recovery tap printed.
        let rec = Record {
            seq: 0,
            kind: RecordKind::CardRecovered,
            at_unix_s: now.unix_s,
            utc_offset_min: (now.utc_offset_s / 60) as i16,
            route: g.route,
            category: g.category,
            fare_fen: g.fare_fen,
            balance_fen: Some(balance_fen),
            card_no: g.card_no,
            card_tx: CardTx {
                offline_counter: g.offline_counter,
                terminal_seq: g.terminal_seq,
                tac: proof.tac,
            },
            qr: None,
            terminal_no: g.terminal_no,
        };
        self.record_and_accept(rec, now).map(Some)
    }

    #[allow(clippy::too_many_arguments)]
    fn card_record(
        &self,
        kind: RecordKind,
        card_no: CardNo,
        category: RiderCategory,
        fare_fen: Fen,
        balance_fen: Option<BalanceFen>,
        card_tx: CardTx,
        now: Timestamp,
    ) -> Record {
        Record {
            seq: 0,
            kind,
            at_unix_s: now.unix_s,
            utc_offset_min: (now.utc_offset_s / 60) as i16,
            route: self.cfg.route,
            category,
            fare_fen,
            balance_fen,
            card_no,
            card_tx,
            qr: None,
            terminal_no: self.psam.terminal_no(),
        }
    }

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
        } else if rec.qr.is_none() {
            self.journal.grey_settle(rec.card_no);
        }
        self.recent.remember(passenger(&rec), now.unix_s);
        let subject = match rec.qr {
            Some(q) => Subject::Account(q.account),
            None => Subject::Card(rec.card_no),
        };
        Ok(Decision {
            media: rec.media(),
            subject,
            outcome: Ok(()),
            fare_fen: rec.fare_fen,
            balance_fen: rec.balance_fen,
            seq: Some(seq),
        })
    }

    fn journal_ready(&mut self) -> Result<(), JournalError> {
        if self.journal.is_degraded() {
            self.journal.ensure_ready()?;
            tracing::info!("journal storage is back");
        }
        Ok(())
    }

    /// Block a replaced or cancelled card's transport application, as validators do with dead
    /// cards. Failure is logged; the tap is refused either way.
    fn lock_card<C: CardChannel + ?Sized>(
        &mut self,
        s: &mut CardSession<'_, C>,
        info: &PublicInfo,
    ) {
        let result = s.get_challenge().and_then(|challenge| {
            let mac = self.psam.card_command_mac(
                info.card_no.serial_tail8(),
                issuer8_for_mac(&info.issuer),
                challenge,
                &BLOCK_HEADER,
            )?;
            s.block_permanently(mac)
        });
        match result {
            Ok(()) => tracing::info!(card = %info.card_no, "dead card blocked"),
            Err(e) => tracing::warn!(card = %info.card_no, error = %e, "could not block dead card"),
        }
    }
}

/// Who anti-passback and group commit know a record by: the card, or the ride-code account.
fn passenger(rec: &Record) -> ListId {
    match rec.qr {
        Some(q) => ListId::Account(q.account),
        None => ListId::Card(rec.card_no),
    }
}

/// The ride-code side of a validator: the channel keys and verifier, and the memory of codes
/// already accepted.
struct RideCodes {
    verifier: Verifier,
    replay: ReplayCache,
}

impl RideCodes {
    /// No channel keys yet: every code stops at check 3, so no certificate is ever checked
    /// and no worker thread is started.
    fn without_keys() -> Self {
        let config = RideCodeConfig::default();
        RideCodes {
            verifier: Verifier::new(ChannelKeys::empty(), config),
            replay: ReplayCache::new(&config),
        }
    }
}

impl<P: CardChannel> Validator<P> {
    /// Trust these channel keys from now on (a verified key file from the depot). Codes
    /// accepted before stay remembered.
    pub fn set_ride_code_keys(&mut self, keys: ChannelKeys, config: RideCodeConfig) {
        let replay = std::mem::replace(&mut self.ride.replay, ReplayCache::new(&config));
        self.ride = RideCodes {
            verifier: Verifier::with_cert_worker(keys, config),
            replay,
        };
    }

    /// A ride code is scanned: checks 1–13 of ride-code-v1.md in order, then the
    /// pay-after-ride record is made durable.
    pub fn scan_code(&mut self, text: &str, now: Timestamp) -> Decision {
        self.observe_clock(now);
        let decision = match self.decide_code(text, now) {
            Ok(d) => d,
            Err((subject, reason)) => Decision::refused(Media::Qr, subject, reason, None),
        };
        tracing::debug!(?decision, "ride code scan");
        decision
    }

    fn decide_code(&mut self, text: &str, now: Timestamp) -> Result<Decision, (Subject, Reason)> {
        let code = self.ride.verifier.verify(text, now.unix_s).map_err(|r| {
            // Past check 1 the layout is sound: say whose code it was.
            let subject =
                RideCode::parse(text).map_or(Subject::Unknown, |c| Subject::Account(c.account()));
            (subject, r)
        })?;
        let subject = Subject::Account(code.account);
        let list = self.blacklist.load();
        let on_list = |id| list.get(&id).is_some();
        if on_list(ListId::Card(code.card_no)) || on_list(ListId::Account(code.account)) {
            return Err((subject, Reason::Blacklisted));
        }
        drop(list);
        if self.ride.replay.is_replay(&code, now.unix_s) {
            return Err((subject, Reason::Replayed));
        }
        let account = ListId::Account(code.account);
        if self
            .recent
            .is_repeat(&account, now.unix_s, self.cfg.anti_passback_s)
        {
            return Err((subject, Reason::RepeatTap));
        }
        let rec = Record {
            seq: 0,
            kind: RecordKind::QrRide,
            at_unix_s: now.unix_s,
            utc_offset_min: (now.utc_offset_s / 60) as i16,
            route: self.cfg.route,
            category: code.rider_category,
            fare_fen: self.fares.category_fare_at(
                code.rider_category,
                self.cfg.route,
                crate::fare::LocalTime::of(&now),
            ),
            balance_fen: None,
            card_no: code.card_no,
            card_tx: CardTx::default(),
            qr: Some(QrTx {
                account: code.account,
                counter: code.counter,
                generated_at: code.generated_at.clamp(0, i64::from(u32::MAX)) as u32,
            }),
            terminal_no: self.psam.terminal_no(),
        };
        let d = self
            .record_and_accept(rec, now)
            .map_err(|r| (subject, r.reason))?;
        self.ride.replay.remember_code(&code, now.unix_s);
        Ok(d)
    }
}
