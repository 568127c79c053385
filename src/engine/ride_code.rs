//! The e-SSC ride code scan (ride-code-v1.md): checks 1–13 in order, then the
//! pay-after-ride record.

use crate::clock::Timestamp;
use crate::journal::{CardTx, QrTx, Record, RecordKind};
use std::sync::Arc;

use crate::ride_code::{CertSet, ChannelKeys, ReplayCache, RideCode, RideCodeConfig, Verifier};
use crate::types::{ListId, Media, Reason};

use super::{Core, Decision, Subject};

/// The ride-code side of a validator: the channel keys and verifier, and the memory of codes
/// already accepted.
pub(super) struct RideCodes {
    pub(super) verifier: Verifier,
    pub(super) replay: ReplayCache,
}

impl RideCodes {
    /// No channel keys yet: every code stops at check 3, so no certificate is ever checked
    /// and no worker thread is started.
    pub(super) fn without_keys() -> Self {
        let config = RideCodeConfig::default();
        RideCodes {
            verifier: Verifier::new(ChannelKeys::empty(), config),
            replay: ReplayCache::new(&config),
        }
    }
}

impl Core {
    /// Trust these channel keys from now on (a verified key file from the depot). Codes
    /// accepted before stay remembered.
    pub fn set_ride_code_keys(&mut self, keys: ChannelKeys, config: RideCodeConfig) {
        let replay = std::mem::replace(&mut self.ride.replay, ReplayCache::new(&config));
        let cert_set = Arc::clone(self.ride.verifier.cert_set());
        let mut verifier = Verifier::with_cert_worker(keys, config);
        // Kept across key files; used only while it names the same key material.
        verifier.set_cert_set(cert_set);
        self.ride = RideCodes { verifier, replay };
    }

    /// Use the fleet's verified-certificate set (a checked downlink file, see
    /// [`crate::ride_code::cert_set`]) from the next scan on.
    pub fn set_verified_certs(&mut self, set: Arc<CertSet>) {
        self.ride.verifier.set_cert_set(set);
    }

    /// The verified-certificate set in use.
    pub fn verified_certs(&self) -> &Arc<CertSet> {
        self.ride.verifier.cert_set()
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
                cert_ref: Some(QrTx::cert_ref_of(&code.cert_digest)),
            }),
            quickpass: None,
            terminal_no: self.terminal_no,
        };
        let d = self
            .record_and_accept(rec, now)
            .map_err(|r| (subject, r.reason))?;
        // The rider's signed code, kept beside its record as proof for clearing (the record
        // has no room for it); the text verified above parses again without allocating.
        if let (Some(seq), Ok(signed)) = (d.seq, RideCode::parse(text)) {
            self.journal.keep_proof(seq, &signed.bytes);
        }
        self.ride.replay.remember_code(&code, now.unix_s);
        Ok(d)
    }
}
