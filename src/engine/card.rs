//! The T-Union purse tap (JT/T 978 through the PSAM): the card checks in the order of
//! docs/replay.md, the debit behind its grey record, and the recovery of a torn debit.

use crate::card::apdu::CardChannel;
use crate::card::psam::{issuer8_for_mac, Mac1Input, Psam};
use crate::card::tunion::{
    balance_after, covers, Boarding, CardError, CardSession, PublicInfo, Selected, BLOCK_HEADER,
    TX_TYPE_CAPP,
};
use crate::card::ChannelError;
use crate::clock::Timestamp;
use crate::fare::{concession_status, CardFare, FareNote, FareRule, Issuer, PreviousBoarding};
use crate::journal::{CardTx, GreyRecord, Record, RecordKind};
use crate::types::{BalanceFen, ListId, Media, Reason, RiderCategory};

use super::{
    CoreAccess, Decision, Refusal, Subject, Validator, GROUP_COMMIT_TAPS_MAX, PURCHASE_KEY_INDEX,
};

/// A purchase up to DEBIT FOR CAPP PURCHASE: the card checked and its purchase initialised;
/// then signed (MAC1, the boarding written to the card).
#[derive(Clone, Copy, Debug)]
struct Prepared {
    /// What the record will say; its terminal sequence is MAC1's once signed.
    grey: GreyRecord,
    mac_in: Mac1Input,
    /// Written to the card before the debit.
    boarding: Boarding,
    /// Set once MAC1 is computed and the boarding written.
    mac1: Option<[u8; 4]>,
    /// The purse before the debit, as INITIALIZE FOR CAPP PURCHASE read it.
    known_balance: Option<BalanceFen>,
    /// What the display says of the fare (an ended concession, another rider).
    fare_note: Option<FareNote>,
}

/// How a card's checks ended: decided already (a refusal, a recovered debit), or a purchase
/// waiting for its intent to be durable.
enum Checked {
    Done(Decision),
    Purchase(Prepared),
}

/// Map a card error to the reason a passenger sees.
fn card_reason(e: CardError) -> Reason {
    match e {
        CardError::Channel(ChannelError::Removed) => Reason::CardRemoved,
        _ => Reason::Unreadable,
    }
}

/// A card is tapped: decide, debit, record durably, answer. The grey record is synced before
/// the debit and the record before the answer: two syncs for an accepted tap (the record's is
/// shared in group-commit mode).
///
/// The PSAM is the dialogue's own; the core is reached through `core` in short steps, none
/// of them across a card or PSAM exchange: the grey record and anti-passback looks at the
/// start, the fare, the grey record's write before the debit, the record after it. The grey
/// record's order is the same as on one thread (intent durable before DEBIT, settled after
/// the record), so a power cut anywhere loses nothing.
pub fn tap_card_with<P: CardChannel, A: CoreAccess, C: CardChannel + ?Sized>(
    psam: &mut Psam<P>,
    core: &mut A,
    card: &mut C,
    now: Timestamp,
) -> Decision {
    core.with(|c| c.observe_clock(now));
    let mut tap = CardTap { psam, core };
    let mut s = CardSession::new(card);
    let mut subject = Subject::Unknown;
    let result = tap
        .card_dialogue(&mut s, now, &mut subject, &[])
        .and_then(|step| match step {
            Checked::Done(d) => Ok(d),
            Checked::Purchase(mut p) => {
                p.grey.terminal_seq = tap.sign_purchase(&mut s, &mut p)?;
                tap.write_intent(&p, true)?;
                tap.finish_purchase(&mut s, &p, now)
            }
        });
    let decision = match result {
        Ok(d) => d,
        Err(r) => Decision::refused(Media::Card, subject, r.reason, r.balance_fen),
    };
    tracing::debug!(?decision, "card tap");
    decision
}

/// One card dialogue: the PSAM, and the way to the core.
pub(super) struct CardTap<'a, P: CardChannel, A: CoreAccess> {
    pub(super) psam: &'a mut Psam<P>,
    pub(super) core: &'a mut A,
}

impl<P: CardChannel> Validator<P> {
    /// A card is tapped: [`tap_card_with`] this validator's PSAM and core.
    pub fn tap_card<C: CardChannel + ?Sized>(&mut self, card: &mut C, now: Timestamp) -> Decision {
        tap_card_with(&mut self.psam, &mut self.core, card, now)
    }

    /// Cards tapped on several readers at once (doors with a reader each, a depot's gate):
    /// the first [`GROUP_COMMIT_TAPS_MAX`] of `cards` are tapped, the rest are left for the
    /// next burst. Each card's dialogue runs up to its debit and its grey record is written;
    /// one sync of `grey.dat` makes every intent durable; then each card is debited and its
    /// record appended, and the records share one journal commit. Each debit still follows
    /// its own intent's sync: a burst costs two syncs, not two per tap.
    ///
    /// Returns one decision per card tapped, in order. In group-commit mode the records
    /// wait for [`Validator::commit`] like any tap's; otherwise they are committed before
    /// this returns (if that fails, the burst's acceptances become `storage_unavailable`
    /// and their debits are recovered when the cards come back). The same card on two
    /// readers boards once: the second is a `repeat_tap`.
    pub fn tap_burst<C: CardChannel>(
        &mut self,
        cards: &mut [C],
        now: Timestamp,
    ) -> heapless::Vec<Decision, GROUP_COMMIT_TAPS_MAX> {
        let mut tap = CardTap {
            psam: &mut self.psam,
            core: &mut self.core,
        };
        tap.tap_burst(cards, now)
    }
}

impl<P: CardChannel, A: CoreAccess> CardTap<'_, P, A> {
    fn tap_burst<C: CardChannel>(
        &mut self,
        cards: &mut [C],
        now: Timestamp,
    ) -> heapless::Vec<Decision, GROUP_COMMIT_TAPS_MAX> {
        let group_mode = self.core.with(|c| {
            c.observe_clock(now);
            std::mem::replace(&mut c.defer_commit, true)
        });
        let mut decisions: heapless::Vec<Decision, GROUP_COMMIT_TAPS_MAX> = heapless::Vec::new();
        let mut prepared: heapless::Vec<Prepared, GROUP_COMMIT_TAPS_MAX> = heapless::Vec::new();
        let mut slots: heapless::Vec<usize, GROUP_COMMIT_TAPS_MAX> = heapless::Vec::new();
        for (i, card) in cards.iter_mut().take(GROUP_COMMIT_TAPS_MAX).enumerate() {
            let mut s = CardSession::new(card);
            let mut subject = Subject::Unknown;
            let step = self
                .card_dialogue(&mut s, now, &mut subject, &prepared)
                .and_then(|step| match step {
                    Checked::Purchase(mut p) => {
                        // Written ahead of MAC1: the sequence the PSAM should give it.
                        p.grey.terminal_seq = self
                            .psam
                            .next_terminal_seq()
                            .map_or(0, |n| n.wrapping_add(prepared.len() as u32));
                        self.write_intent(&p, false).map(|()| Checked::Purchase(p))
                    }
                    Checked::Done(_) => Ok(step),
                });
            let d = match step {
                Ok(Checked::Done(d)) => d,
                Ok(Checked::Purchase(p)) => {
                    // Capacity: at most GROUP_COMMIT_TAPS_MAX cards are taken above.
                    let _ = prepared.push(p);
                    let _ = slots.push(i);
                    // Replaced once the card is debited.
                    Decision::refused(Media::Card, subject, Reason::StorageUnavailable, None)
                }
                Err(r) => Decision::refused(Media::Card, subject, r.reason, r.balance_fen),
            };
            let _ = decisions.push(d);
        }
        if !prepared.is_empty() {
            if let Err(e) = self.core.with(|c| c.journal.grey_sync()) {
                tracing::error!(error = %e, "grey records not synced: no debit, no ride");
                self.core.with(|c| {
                    for p in &prepared {
                        c.journal.grey_void(p.grey.card_no);
                    }
                });
                prepared.clear();
            }
        }
        for k in 0..prepared.len() {
            let i = slots[k];
            let mut s = CardSession::new(&mut cards[i]);
            let result = self
                .sign_burst_purchase(&mut s, &mut prepared[k..])
                .and_then(|()| self.finish_purchase(&mut s, &prepared[k], now));
            decisions[i] = match result {
                Ok(d) => d,
                Err(r) => Decision::refused(
                    Media::Card,
                    Subject::Card(prepared[k].grey.card_no),
                    r.reason,
                    r.balance_fen,
                ),
            };
        }
        let committed = self.core.with(|c| {
            c.defer_commit = group_mode;
            group_mode || c.commit().is_ok()
        });
        if !committed {
            tracing::error!(
                "journal commit failed: the burst's taps refused, debits recovered later"
            );
            for d in decisions.iter_mut().filter(|d| d.seq.is_some()) {
                *d = Decision::refused(
                    d.media,
                    d.subject,
                    Reason::StorageUnavailable,
                    d.balance_fen,
                );
            }
        }
        for decision in &decisions {
            tracing::debug!(?decision, "card tap (burst)");
        }
        decisions
    }

    /// Sign the first of a burst's purchases left (`rest[0]`). If MAC1 took another terminal
    /// sequence than its intent says (the first burst after a start, a MAC1 whose answer was
    /// lost), the intents of `rest` are written again from MAC1's and synced, before any of
    /// their debits. If signing fails, nothing was debited: the intent is voided.
    fn sign_burst_purchase<C: CardChannel + ?Sized>(
        &mut self,
        s: &mut CardSession<'_, C>,
        rest: &mut [Prepared],
    ) -> Result<(), Refusal> {
        let Some(p) = rest.first_mut() else {
            return Ok(());
        };
        let terminal_seq = match self.sign_purchase(s, p) {
            Ok(seq) => seq,
            Err(r) => {
                self.core.with(|c| c.journal.grey_void(p.grey.card_no));
                return Err(r);
            }
        };
        if terminal_seq == p.grey.terminal_seq {
            return Ok(());
        }
        tracing::debug!(
            terminal_seq,
            written = p.grey.terminal_seq,
            "grey records written ahead again"
        );
        let mut written = Ok(());
        for (n, q) in rest.iter_mut().enumerate() {
            q.grey.terminal_seq = terminal_seq.wrapping_add(n as u32);
            written = written.and_then(|()| self.write_intent(q, false));
        }
        let synced = written.and_then(|()| {
            self.core.with(|c| c.journal.grey_sync()).map_err(|e| {
                tracing::error!(error = %e, "grey records not synced: no debit, no ride");
                Refusal {
                    reason: Reason::StorageUnavailable,
                    balance_fen: rest[0].known_balance,
                }
            })
        });
        if synced.is_err() {
            // Not debited; the rest are refused by `finish_purchase` (their intents are not
            // durable) and voided there.
            self.core
                .with(|c| c.journal.grey_void(rest[0].grey.card_no));
        }
        synced
    }

    /// Write the purchase's intent (synced, or to be synced with others' before any of
    /// their debits). On error the card is not debited: `storage_unavailable`.
    fn write_intent(&mut self, p: &Prepared, sync: bool) -> Result<(), Refusal> {
        let written = self.core.with(|c| {
            c.journal_ready().and_then(|()| {
                if sync {
                    c.journal.grey_intent(&p.grey)
                } else {
                    c.journal.grey_intent_unsynced(&p.grey)
                }
            })
        });
        written.map_err(|e| {
            tracing::error!(error = %e, "journal unavailable: no record, no ride");
            Refusal {
                reason: Reason::StorageUnavailable,
                balance_fen: p.known_balance,
            }
        })
    }

    /// The checks of a card tap, up to the debit. `burst`: purchases of the same burst
    /// already prepared (a card among them boards once).
    fn card_dialogue<C: CardChannel + ?Sized>(
        &mut self,
        s: &mut CardSession<'_, C>,
        now: Timestamp,
        subject: &mut Subject,
        burst: &[Prepared],
    ) -> Result<Checked, Refusal> {
        match s.select().map_err(card_reason)? {
            Selected::Ok => {}
            Selected::Blocked => return Err(Reason::CardBlocked.into()),
            Selected::NoApplication => {
                return self
                    .quickpass_instead(s.channel, now, Reason::Unreadable)
                    .map(Checked::Done)
            }
        }
        let info = s.read_public().map_err(card_reason)?;
        *subject = Subject::Card(info.card_no);
        if burst.iter().any(|p| p.grey.card_no == info.card_no) {
            return Err(Reason::RepeatTap.into());
        }
        // A card's open intent is recovered, unless its record only waits for the group's
        // sync (the group is looked through only when an intent is open).
        let to_recover = self.core.with(|c| {
            c.journal
                .grey_for(info.card_no)
                .filter(|_| !c.deferred.contains(&ListId::Card(info.card_no)))
        });
        if let Some(g) = to_recover {
            if let Some(d) = self.recover(s, g, now)? {
                return Ok(Checked::Done(d));
            }
        }
        if info.enable_flag != 1 {
            return self
                .quickpass_instead(s.channel, now, Reason::NotActivated)
                .map(Checked::Done);
        }
        let today = now.local_ymd();
        if today < info.valid_from {
            return Err(Reason::CardNotYetValid.into());
        }
        if today > info.valid_until {
            return Err(Reason::CardExpired.into());
        }
        let listed_as = ListId::Card(info.card_no);
        if let Some(why) = self.core.with(|c| c.blacklist.get(&listed_as)) {
            if why.locks_card() {
                self.lock_card(s, &info);
            }
            return Err(Reason::Blacklisted.into());
        }
        let repeat = self.core.with(|c| {
            c.recent
                .is_repeat(&listed_as, now.unix_s, c.cfg.anti_passback_s)
        });
        let extra_rider = if repeat {
            match self.another_rider(s, &listed_as, now)? {
                Some(rider) => Some(rider),
                None => return Err(Reason::RepeatTap.into()),
            }
        } else {
            None
        };
        self.prepare_purchase(s, &info, now, extra_rider)
            .map(Checked::Purchase)
    }

    /// A card tapped again within anti-passback: when the fare table lets its card type board
    /// several riders (连刷) and its group is still open (less than `window_s` since the
    /// group's first boarding, fewer than `riders_max` riders), the card type and the new
    /// rider's number; otherwise `None` (a `repeat_tap`). The group is the card's acceptances
    /// on this validator within the anti-passback window.
    fn another_rider<C: CardChannel + ?Sized>(
        &mut self,
        s: &mut CardSession<'_, C>,
        id: &ListId,
        now: Timestamp,
    ) -> Result<Option<(RiderCategory, u8)>, Refusal> {
        if self.core.with(|c| c.fares.several_riders.is_empty()) {
            return Ok(None);
        }
        let category = s.read_holder().map_err(card_reason)?;
        Ok(self.core.with(|c| {
            let rule = c.fares.several_riders_of(category)?;
            let (riders, first_at) = c.recent.group(id, now.unix_s, c.cfg.anti_passback_s)?;
            let open = (0..i64::from(rule.window_s)).contains(&(now.unix_s - first_at))
                && riders < usize::from(rule.riders_max);
            // riders < riders_max ≤ SEVERAL_RIDERS_MAX: the number fits u8.
            open.then_some((category, riders as u8 + 1))
        }))
    }

    /// Everything of a purchase before its debit: fare, INITIALIZE FOR CAPP PURCHASE, MAC1,
    /// the boarding written to the card, and the grey record the debit needs.
    fn prepare_purchase<C: CardChannel + ?Sized>(
        &mut self,
        s: &mut CardSession<'_, C>,
        info: &PublicInfo,
        now: Timestamp,
        extra_rider: Option<(RiderCategory, u8)>,
    ) -> Result<Prepared, Refusal> {
        let category = match extra_rider {
            Some((category, _)) => category,
            None => s.read_holder().map_err(card_reason)?,
        };
        let management = s.read_management().map_err(card_reason)?;
        let Some(issuer) = self.core.with(|c| {
            c.fares
                .issuer(management.issuer_city, management.interop_kind)
        }) else {
            return Err(Reason::IssuerNotAccepted.into());
        };
        // A concession holds only while the card's own dates say so: past them, the adult fare.
        let concession = match issuer {
            Issuer::Concessions if category != RiderCategory::Adult => {
                let dates = management.concession_dates().map_err(card_reason)?;
                concession_status(category, dates, now.local_ymd())
            }
            _ => None,
        };
        let priced_as = if concession.is_some() {
            RiderCategory::Adult
        } else {
            category
        };
        let fare_note = concession.or(extra_rider.map(|(_, n)| FareNote::ExtraRider(n)));
        let prev = s.read_boarding().map_err(card_reason)?;
        let prev = prev.map(|b| PreviousBoarding {
            route: b.route,
            at_unix_s: i64::from(b.at_unix_s),
            fare_fen: b.fare_fen,
            transfers: b.transfers,
        });
        // One look for route and fare: a fare table or route swapped in between applies to
        // the whole of the next tap.
        let (
            route,
            CardFare {
                fare_fen,
                transfers,
                rule,
            },
        ) = self.core.with(|c| {
            let route = c.cfg.route;
            (
                route,
                c.fares.card_fare(priced_as, issuer, route, &now, prev),
            )
        });
        // Another rider on one card is priced as its card type, and named for the rule that
        // let it board.
        let rule = match extra_rider {
            Some(_) => FareRule::SeveralRiders,
            None => rule,
        };
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
        let boarding = Boarding {
            route,
            terminal_no,
            at_unix_s: now.unix_s.clamp(0, i64::from(u32::MAX)) as u32,
            fare_fen,
            category: category as u8,
            transfers,
        };
        let grey = GreyRecord {
            card_no: info.card_no,
            offline_counter: init.offline_counter,
            // Set by MAC1 (or written ahead from the PSAM's last one in a burst).
            terminal_seq: 0,
            fare_fen,
            balance_after_fen: balance_fen,
            category,
            route,
            at_unix_s: now.unix_s,
            utc_offset_min: (now.utc_offset_s / 60) as i16,
            terminal_no,
            rule,
        };
        Ok(Prepared {
            grey,
            mac_in,
            boarding,
            mac1: None,
            known_balance,
            fare_note,
        })
    }

    /// MAC1 from the PSAM, then the boarding written to the card: returns the terminal
    /// transaction sequence MAC1 took. `p.mac1` is set only once both succeeded.
    fn sign_purchase<C: CardChannel + ?Sized>(
        &mut self,
        s: &mut CardSession<'_, C>,
        p: &mut Prepared,
    ) -> Result<u32, Refusal> {
        let (terminal_seq, mac1) = self.psam.mac1(&p.mac_in).map_err(|e| {
            tracing::error!(error = %e, "PSAM refused MAC1");
            Refusal {
                reason: Reason::Unreadable,
                balance_fen: p.known_balance,
            }
        })?;
        s.update_boarding(&p.boarding).map_err(|e| Refusal {
            reason: card_reason(e),
            balance_fen: p.known_balance,
        })?;
        p.mac1 = Some(mac1);
        Ok(terminal_seq)
    }

    /// DEBIT FOR CAPP PURCHASE once the intent is durable, MAC2, and the record.
    fn finish_purchase<C: CardChannel + ?Sized>(
        &mut self,
        s: &mut CardSession<'_, C>,
        p: &Prepared,
        now: Timestamp,
    ) -> Result<Decision, Refusal> {
        let Prepared {
            grey,
            mac_in,
            known_balance,
            ..
        } = *p;
        let durable = self.core.with(|c| c.journal.grey_durable());
        let (Some(mac1), true) = (p.mac1, durable) else {
            // Never debit unsigned or ahead of the intent (its sync did not succeed): nothing
            // was sent to the card, so there is nothing in doubt.
            self.core.with(|c| c.journal.grey_void(grey.card_no));
            return Err(Refusal {
                reason: Reason::StorageUnavailable,
                balance_fen: known_balance,
            });
        };
        let card_no = grey.card_no;
        let proof = match s.debit(grey.terminal_seq, mac_in.datetime, mac1) {
            Ok(p) => p,
            Err(e @ CardError::Channel(_)) => {
                // The debit may or may not have happened: the grey record settles it later.
                return Err(Refusal {
                    reason: card_reason(e),
                    balance_fen: known_balance,
                });
            }
            Err(e) => {
                self.core.with(|c| c.journal.grey_void(card_no));
                tracing::warn!(error = %e, card = %card_no, "debit refused by card");
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
                tracing::error!(error = %e, card = %card_no, "PSAM unreachable at MAC2");
                return Err(Refusal {
                    reason: Reason::Unreadable,
                    balance_fen: known_balance,
                });
            }
            self.core.with(|c| c.journal.grey_void(card_no));
            tracing::error!(error = %e, card = %card_no, "MAC2 did not verify: card not genuine");
            return Err(Refusal {
                reason: Reason::Unreadable,
                balance_fen: known_balance,
            });
        }
        let card_tx = CardTx {
            offline_counter: grey.offline_counter,
            terminal_seq: grey.terminal_seq,
            tac: proof.tac,
        };
        // What the grey record promised: route and terminal as they were when it was made.
        let rec = Record {
            seq: 0,
            kind: RecordKind::CardPurchase,
            at_unix_s: now.unix_s,
            utc_offset_min: (now.utc_offset_s / 60) as i16,
            route: grey.route,
            category: grey.category,
            fare_fen: grey.fare_fen,
            balance_fen: Some(grey.balance_after_fen),
            card_no,
            card_tx,
            qr: None,
            quickpass: None,
            terminal_no: grey.terminal_no,
            rule: grey.rule,
        };
        let fare_note = p.fare_note;
        self.core
            .with(|c| c.record_and_accept(rec, now))
            .map(|d| Decision { fare_note, ..d })
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
            self.core.with(|c| c.journal.grey_void(g.card_no));
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
            quickpass: None,
            terminal_no: g.terminal_no,
            rule: g.rule,
        };
        self.core.with(|c| c.record_and_accept(rec, now)).map(Some)
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
