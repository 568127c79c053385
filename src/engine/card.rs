//! The T-Union purse tap (JT/T 978 through the PSAM): the card checks in the order of
//! docs/replay.md, the debit behind its grey record, and the recovery of a torn debit.

use crate::card::apdu::CardChannel;
use crate::card::psam::{issuer8_for_mac, Mac1Input};
use crate::card::tunion::{
    balance_after, covers, Boarding, CardError, CardSession, PublicInfo, Selected, BLOCK_HEADER,
    TX_TYPE_CAPP,
};
use crate::card::ChannelError;
use crate::clock::Timestamp;
use crate::fare::PreviousBoarding;
use crate::journal::{CardTx, GreyRecord, Record, RecordKind};
use crate::types::{BalanceFen, CardNo, Fen, ListId, Media, Reason, RiderCategory};

use super::{Decision, Refusal, Subject, Validator, PURCHASE_KEY_INDEX};

/// Map a card error to the reason a passenger sees.
fn card_reason(e: CardError) -> Reason {
    match e {
        CardError::Channel(ChannelError::Removed) => Reason::CardRemoved,
        _ => Reason::Unreadable,
    }
}
impl<P: CardChannel> Validator<P> {
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
