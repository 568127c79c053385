//! The e-SSC ride code scan (ride-code-v1.md): checks 1–13 in order, then the
//! pay-after-ride record.
//!
//! Checks 1–10 (layout, channel key, certificate, signatures, freshness) read nothing but the
//! code, the key file and the clock passed in, so they need no part of the core but the
//! verifier. [`RideCodeChecks`] reaches that verifier without the core: the validator program
//! makes them before it takes the core's lock ([`RideCodeChecks::check`]), and holds the lock
//! only for checks 11–13 and the record ([`Core::scan_checked`]). [`Core::scan_code`] is the
//! two in a row, with the same decisions.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::Timestamp;
use crate::journal::{CardTx, QrTx, Record, RecordKind};
use crate::ride_code::{
    CertSet, ChannelKeys, ReplayCache, RideCode, RideCodeConfig, VerifiedCode, Verifier,
};
use crate::types::{ListId, Media, Reason};

use super::{Core, Decision, Subject};

/// The ride-code side of a validator: the channel keys and verifier, and the memory of codes
/// already accepted.
pub(super) struct RideCodes {
    pub(super) checks: RideCodeChecks,
    pub(super) replay: ReplayCache,
}

impl RideCodes {
    /// No channel keys yet: every code stops at check 3, so no certificate is ever checked
    /// and no worker thread is started.
    pub(super) fn without_keys() -> Self {
        let config = RideCodeConfig::default();
        RideCodes {
            checks: RideCodeChecks(Arc::new(Mutex::new(Verifier::new(
                ChannelKeys::empty(),
                config,
            )))),
            replay: ReplayCache::new(&config),
        }
    }
}

/// A core's ride-code verifier (checks 1–10 of ride-code-v1.md), shared with whoever scans
/// outside the core's lock ([`Core::ride_code_checks`]). Clones are the same verifier: keys
/// set on the core ([`Core::set_ride_code_keys`]) are the keys every clone checks with from
/// the next scan on. Its own lock is held for one verification (one or two signature checks,
/// at most a few hundred microseconds) and taken by scans and key swaps only, never by a tap.
#[derive(Clone)]
pub struct RideCodeChecks(Arc<Mutex<Verifier>>);

/// A scanned text, the clock of its scan and the result of its checks 1–10 at that clock,
/// for [`Core::scan_checked`]; made only by [`RideCodeChecks::check`], so the result is always
/// that of this text at this time.
#[derive(Debug)]
pub struct CheckedCode<'t> {
    text: &'t str,
    now: Timestamp,
    verified: Result<VerifiedCode, Reason>,
}

impl RideCodeChecks {
    /// Checks 1–10 of `text` at `now`: pure but for the certificate cache, nothing
    /// allocated (the scan path's `tests/ride_code_no_alloc.rs`).
    pub fn check<'t>(&self, text: &'t str, now: Timestamp) -> CheckedCode<'t> {
        CheckedCode {
            text,
            now,
            verified: self.verifier().verify(text, now.unix_s),
        }
    }

    /// Holder certificates the verifier holds as checked (for tests and metrics).
    pub fn cached_certificates(&self) -> usize {
        self.verifier().cached_certificates()
    }

    /// A verification that panicked (a bug) left at worst a certificate cache without the
    /// holder it was checking, so a poisoned lock is taken over.
    fn verifier(&self) -> MutexGuard<'_, Verifier> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Core {
    /// Trust these channel keys from now on (a verified key file from the depot). Codes
    /// accepted before stay remembered.
    ///
    /// The verifier is replaced in place, so every [`RideCodeChecks`] taken from this core
    /// checks with these keys from its next scan on. The new verifier (and its worker
    /// thread) is made, and the old one stopped, outside the verifier's lock: a scan waits
    /// for the swap alone.
    pub fn set_ride_code_keys(&mut self, keys: ChannelKeys, config: RideCodeConfig) {
        let cert_set = Arc::clone(self.ride.checks.verifier().cert_set());
        let mut next = Verifier::with_cert_worker(keys, config);
        // Kept across key files; used only while it names the same key material.
        next.set_cert_set(cert_set);
        let old = std::mem::replace(&mut *self.ride.checks.verifier(), next);
        drop(old);
    }

    /// Use the fleet's verified-certificate set (a checked downlink file, see
    /// [`crate::ride_code::cert_set`]) from the next scan on.
    pub fn set_verified_certs(&mut self, set: Arc<CertSet>) {
        self.ride.checks.verifier().set_cert_set(set);
    }

    /// First-seen certificates whose channel signature the set spared, since the keys were
    /// set.
    pub fn verified_certs_spared(&self) -> u64 {
        self.ride.checks.verifier().certs_from_set()
    }

    /// The verified-certificate set in use.
    pub fn verified_certs(&self) -> Arc<CertSet> {
        Arc::clone(self.ride.checks.verifier().cert_set())
    }

    /// This core's ride-code verifier, for checks 1–10 made without the core (one shared
    /// handle; taken once, at start-up).
    pub fn ride_code_checks(&self) -> RideCodeChecks {
        self.ride.checks.clone()
    }

    /// A ride code is scanned: checks 1–13 of ride-code-v1.md in order, then the
    /// pay-after-ride record is made durable.
    pub fn scan_code(&mut self, text: &str, now: Timestamp) -> Decision {
        let checked = self.ride.checks.check(text, now);
        self.scan_checked(checked)
    }

    /// The rest of a scan whose checks 1–10 were made ([`RideCodeChecks::check`]): checks
    /// 11–13 (blacklist, replay, anti-passback) against this core's state at the scan's
    /// clock, then the record made durable; [`Core::scan_code`]'s decision for the same text
    /// and clock.
    pub fn scan_checked(&mut self, checked: CheckedCode<'_>) -> Decision {
        let now = checked.now;
        self.observe_clock(now);
        let decision = match self.decide_code(checked, now) {
            Ok(d) => d,
            Err((subject, reason)) => Decision::refused(Media::Qr, subject, reason, None),
        };
        tracing::debug!(?decision, "ride code scan");
        decision
    }

    fn decide_code(
        &mut self,
        checked: CheckedCode<'_>,
        now: Timestamp,
    ) -> Result<Decision, (Subject, Reason)> {
        let text = checked.text;
        let code = checked.verified.map_err(|r| {
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
            // The certificate's category prices a ride code, timeframes included; interop never
            // applies (docs/fares.md).
            rule: crate::fare::FareRule::RideCodeCategory,
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
