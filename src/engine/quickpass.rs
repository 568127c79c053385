//! The QuickPass (闪付) tap (quickpass.md, docs/quickpass.md): a card whose transport
//! application is absent or was never activated is read as a UnionPay contactless transit
//! terminal reads it ([`crate::card::quickpass`]), authenticated offline by fDDA, checked
//! against the deny list (blacklist kind `pan`, by keyed token) and anti-passback, and
//! recorded for the acquirer to charge after the ride.
//!
//! Checks, in order: `unreadable`, `card_expired`, `bad_certificate`, `bad_signature`,
//! `blacklisted`, `repeat_tap`; `card_removed` when the card leaves before the dialogue ends
//! (nothing is recorded). The fare is the fare table's adult fare on the vehicle's route:
//! bank cards carry no rider category.

use rand::{RngCore, SeedableRng};
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};

use crate::card::acquirer::{acquirer_data, AcquirerKey};
use crate::card::apdu::CardChannel;
use crate::card::quickpass::{
    authenticate_cached, read_card, AuthError, CaKeys, CardData, IssuerKeyCache, Pan, PanTokenKey,
    ReadError, TerminalData,
};
use crate::clock::Timestamp;
use crate::journal::{CardTx, QpTx, Record, RecordKind};
use crate::types::{CardNo, ListId, Media, Reason, RiderCategory};

use super::card::CardTap;
use super::{Core, CoreAccess, Decision, Refusal, Subject};

/// Seed of the unpredictable numbers (`9F37`) of a validator whose owner gave none: replay
/// and tests stay repeatable. A bus seeds from the operating system
/// ([`Core::set_quickpass`]).
pub const UNPREDICTABLE_SEED_DEFAULT: u64 = 0x9F37;

/// The QuickPass side of a validator: the CA keys and the issuer keys recovered under them,
/// the PAN token key, the acquirer's public key, the source of unpredictable numbers, and
/// the source of the sealing's ephemeral keys.
pub(super) struct QuickPass {
    ca: CaKeys,
    /// Made anew whenever `ca` is.
    issuer_keys: IssuerKeyCache,
    token_key: PanTokenKey,
    acquirer: AcquirerKey,
    rng: ChaCha8Rng,
    /// Seeded with 256 bits from the operating system when the core is made, never from the
    /// 64-bit seed of the unpredictable numbers: whoever knows the ephemeral keys reads the
    /// sealed PANs. Sealed bytes differ from run to run; decisions do not depend on them.
    seal_rng: ChaCha20Rng,
}

impl QuickPass {
    /// No CA keys: every QuickPass tap is `bad_certificate` (quickpass.md).
    pub(super) fn without_keys() -> Self {
        QuickPass {
            ca: CaKeys::empty(),
            issuer_keys: IssuerKeyCache::new(),
            token_key: PanTokenKey::TEST,
            acquirer: AcquirerKey::test(),
            rng: ChaCha8Rng::seed_from_u64(UNPREDICTABLE_SEED_DEFAULT),
            seal_rng: ChaCha20Rng::from_entropy(),
        }
    }
}

impl Core {
    /// Trust these UnionPay CA keys, tokenise PANs with `token_key`, and draw unpredictable
    /// numbers from `seed` from now on.
    pub fn set_quickpass(&mut self, ca: CaKeys, token_key: PanTokenKey, seed: u64) {
        let qp = &mut self.quickpass;
        qp.ca = ca;
        qp.issuer_keys = IssuerKeyCache::new();
        qp.token_key = token_key;
        qp.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// Tokenise PANs (deny list, anti-passback, records) with `key` from now on
    /// ([`PanTokenKey::TEST`] until this or [`Core::set_quickpass`] is called).
    pub fn set_pan_token_key(&mut self, key: PanTokenKey) {
        self.quickpass.token_key = key;
    }

    /// Seal the PANs of QuickPass rides to this acquirer's public key from now on (the test
    /// acquirer's, `fixtures/acquirer-test.pub`, until this is called).
    pub fn set_acquirer_key(&mut self, key: AcquirerKey) {
        self.quickpass.acquirer = key;
    }
}

impl<P: CardChannel, A: CoreAccess> CardTap<'_, P, A> {
    /// The card has no usable transport application (`transport_reason` says why): its
    /// QuickPass application decides, or, when it has none, `transport_reason` does.
    pub(super) fn quickpass_instead<C: CardChannel + ?Sized>(
        &mut self,
        card: &mut C,
        now: Timestamp,
        transport_reason: Reason,
    ) -> Result<Decision, Refusal> {
        let mut subject = Subject::Unknown;
        match self.quickpass_dialogue(card, now, &mut subject) {
            Ok(d) => Ok(d),
            Err(None) => Err(transport_reason.into()),
            Err(Some(reason)) => Ok(Decision::refused(Media::Quickpass, subject, reason, None)),
        }
    }

    /// `Err(None)`: the card has no UnionPay application.
    fn quickpass_dialogue<C: CardChannel + ?Sized>(
        &mut self,
        card: &mut C,
        now: Timestamp,
        subject: &mut Subject,
    ) -> Result<Decision, Option<Reason>> {
        let (fare, un) = self.core.with(|c| {
            let fare = c.fares.category_priced_at(
                RiderCategory::Adult,
                c.cfg.route,
                crate::fare::LocalTime::of(&now),
            );
            let mut un = [0u8; 4];
            c.quickpass.rng.fill_bytes(&mut un);
            (fare, un)
        });
        let terminal = TerminalData {
            amount_fen: fare.fare_fen,
            datetime_bcd: now.local_bcd(),
            unpredictable_number: un,
        };
        let data = read_card(card, &terminal).map_err(|e| match e {
            ReadError::NoApplication => None,
            ReadError::Removed => Some(Reason::CardRemoved),
            ReadError::Unreadable(what) => {
                tracing::info!(what, "QuickPass card unreadable");
                Some(Reason::Unreadable)
            }
        })?;
        let pan = data.pan().map_err(|_| Some(Reason::Unreadable))?;
        *subject = Subject::Quickpass(pan.masked());
        let today = now.local_ymd();
        if today > data.expiry_ymd {
            return Err(Some(Reason::CardExpired));
        }
        let authenticated = self.core.with(|c| {
            let qp = &mut c.quickpass;
            authenticate_cached(&data, &qp.ca, &mut qp.issuer_keys, today)
        });
        authenticated.map_err(|e| {
            tracing::info!(pan = %pan, error = %e, "QuickPass offline data authentication failed");
            Some(match e {
                AuthError::Certificate(_) => Reason::BadCertificate,
                AuthError::Signature(_) => Reason::BadSignature,
            })
        })?;
        // One step: the list and anti-passback looked at, and the record made, together.
        self.core.with(|c| {
            let listed_as = ListId::Pan(c.quickpass.token_key.token(&pan));
            if c.blacklist.get(&listed_as).is_some() {
                return Err(Some(Reason::Blacklisted));
            }
            if c.recent
                .is_repeat(&listed_as, now.unix_s, c.cfg.anti_passback_s)
            {
                return Err(Some(Reason::RepeatTap));
            }
            let rec = c.quickpass_record(&data, &listed_as, fare, now);
            c.keep_acquirer_data(&data, &pan)?;
            c.record_and_accept(rec, now).map_err(|r| Some(r.reason))
        })
    }
}

impl Core {
    /// Seal the PAN and write the acquirer's data of the record appended next; it becomes
    /// durable in that record's commit. A ride the acquirer could not charge is not accepted:
    /// any failure is `storage_unavailable`.
    fn keep_acquirer_data(&mut self, data: &CardData, pan: &Pan) -> Result<(), Option<Reason>> {
        if self.defer_commit && self.deferred.is_full() {
            // The commit record_and_accept would make first, made before the entry is
            // written for the seq that follows it.
            self.commit()
                .map_err(|_| Some(Reason::StorageUnavailable))?;
        }
        let qp = &mut self.quickpass;
        let sealed = acquirer_data(data, pan, &qp.acquirer, &mut qp.seal_rng).map_err(|e| {
            tracing::error!(error = %e, "QuickPass acquirer data not made: no record, no ride");
            Some(Reason::StorageUnavailable)
        })?;
        self.journal.keep_acquirer_data(&sealed).map_err(|e| {
            tracing::error!(error = %e, "QuickPass acquirer data not written: no record, no ride");
            Some(Reason::StorageUnavailable)
        })
    }

    fn quickpass_record(
        &self,
        data: &CardData,
        listed_as: &ListId,
        fare: crate::fare::Priced,
        now: Timestamp,
    ) -> Record {
        let ListId::Pan(pan_token) = *listed_as else {
            unreachable!("a QuickPass passenger is listed by PAN token")
        };
        let masked_pan = data.pan.map(|p| p.masked()).unwrap_or(
            // read_card returned, so the PAN is there; the record check would refuse this.
            crate::card::quickpass::MaskedPan {
                first6: [0; 6],
                last4: [0; 4],
                len: 0,
            },
        );
        Record {
            seq: 0,
            kind: RecordKind::Quickpass,
            at_unix_s: now.unix_s,
            utc_offset_min: (now.utc_offset_s / 60) as i16,
            route: self.cfg.route,
            category: RiderCategory::Adult,
            fare_fen: fare.fare_fen,
            balance_fen: None,
            card_no: CardNo([0; 10]),
            card_tx: CardTx::default(),
            qr: None,
            quickpass: Some(QpTx {
                pan_token,
                masked_pan,
                pan_seq: data.pan_seq,
                cid: data.cid,
                atc: data.atc,
                unpredictable_number: data.terminal.map_or([0; 4], |t| t.unpredictable_number),
                cryptogram: data.cryptogram,
            }),
            terminal_no: self.terminal_no,
            rule: fare.rule,
        }
    }
}
