//! QuickPass rides for the acquirer (先乘车后付费): what `depot export --acquirer` writes,
//! and the charges the acquirer declined (`depot declines`), which become `arrears` entries
//! of the deny list (blacklist kind `pan`, by PAN token) in the next downlink.
//!
//! The acquirer's data of a ride (sealed PAN, issuer application data, field 55;
//! [`crate::card::acquirer`]) arrives in AcquirerData frames beside the records and is kept
//! in `quickpass_acquirer`, keyed by (terminal, epoch, seq), stored once. It is exported only
//! when it agrees with its record (kind 4, the same cryptogram and ATC in field 55, the same
//! amount): a ride without it, or with data that disagrees, is exported with `problem` set
//! and no data, so the acquirer knows it cannot charge it.
//!
//! ## Export line (JSON, one per QuickPass ride, in terminal, epoch, seq order)
//!
//! `{"terminal", "epoch" (16 hex digits), "seq", "at" (RFC 3339, the bus's local offset),
//! "route", "terminal_no" (hex), "amount_fen", "currency": "156", "masked_pan", "pan_seq",
//! "atc", "cryptogram" (hex 9F26), "cid" (hex 9F27), "pan_token" (`t:` and 16 hex digits),
//! "sealed_pan" (hex, 58 bytes), "iad" (hex 9F10), "field55" (hex), "problem" (null, or why
//! the data is missing)}`. The clear PAN is never in it: only the acquirer's private key opens
//! `sealed_pan`.
//!
//! ## Declines file (JSON lines, from the acquirer)
//!
//! `{"terminal", "epoch", "seq", "outcome": "declined" | "paid"}`: a ride as the export named
//! it. A declined ride lists its PAN token for `arrears` (once, however many rides it owes
//! for); a paid one settles that ride, and `arrears` is lifted when no declined ride of that
//! token is left unpaid, and only when the declines listed it (`acquirer_arrears`): an
//! `arrears` entered at the counter stays. The whole file is checked before anything
//! changes, and applied in one transaction.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::store::{blacklist_change_in, blacklist_reasons_in, ExportError, Store, StoreError};
use crate::blacklist::{Change, ChangeOp};
use crate::card::acquirer::{AcquirerData, ACQUIRER_DATA_BYTES};
use crate::journal::acquirer::AcquirerEntry;
use crate::journal::{Record, RecordKind, RECORD_BYTES};
use crate::types::{ListId, ListReason};

/// Longest declines file read, bytes (a million rides).
pub const DECLINES_FILE_BYTES_MAX: usize = 128 << 20;

/// One line of `depot export --acquirer`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AcquirerRide {
    pub terminal: String,
    pub epoch: String,
    pub seq: u64,
    pub at: String,
    pub route: u16,
    pub terminal_no: String,
    pub amount_fen: u32,
    pub currency: &'static str,
    pub masked_pan: String,
    pub pan_seq: u8,
    pub atc: u16,
    pub cryptogram: String,
    pub cid: String,
    pub pan_token: String,
    pub sealed_pan: Option<String>,
    pub iad: Option<String>,
    pub field55: Option<String>,
    pub problem: Option<&'static str>,
}

/// A ride as the export names it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeclineLine {
    pub terminal: String,
    /// 16 hex digits, as exported.
    pub epoch: String,
    pub seq: u64,
    pub outcome: DeclineOutcome,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeclineOutcome {
    Declined,
    Paid,
}

/// What a declines file changed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeclinesReport {
    /// Rides recorded as declined, and as paid.
    pub declined: u64,
    pub paid: u64,
    /// PAN tokens newly listed for `arrears`, and lifted.
    pub listed: Vec<String>,
    pub lifted: Vec<String>,
    /// Lines naming no QuickPass ride this station holds (`terminal/epoch/seq`).
    pub unknown: Vec<String>,
}

/// A declines file that cannot be taken: nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum DeclinesError {
    #[error("declines file line {line}: {what}")]
    Line { line: usize, what: String },
    #[error("declines file longer than {DECLINES_FILE_BYTES_MAX} bytes")]
    TooLong,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for DeclinesError {
    fn from(e: rusqlite::Error) -> Self {
        DeclinesError::Store(e.into())
    }
}

/// Parse a declines file (JSON lines; blank lines skipped), every line or none.
pub fn parse_declines(text: &str) -> Result<Vec<DeclineLine>, DeclinesError> {
    if text.len() > DECLINES_FILE_BYTES_MAX {
        return Err(DeclinesError::TooLong);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| DeclinesError::Line { line: i + 1, what };
        let d: DeclineLine = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        parse_epoch(&d.epoch)
            .ok_or_else(|| bad(format!("epoch {:?} is not 16 hex digits", d.epoch)))?;
        out.push(d);
    }
    Ok(out)
}

fn parse_epoch(s: &str) -> Option<u64> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// Why a ride's acquirer data cannot be exported with it, if it cannot.
fn check_against(rec: &Record, data: Option<&AcquirerData>) -> Option<&'static str> {
    let (Some(d), Some(qp)) = (data, rec.quickpass) else {
        return Some("no acquirer data from the bus");
    };
    if d.cryptogram_and_atc() != Some((qp.cryptogram, qp.atc))
        || d.amount_fen() != Some(u64::from(rec.fare_fen))
    {
        return Some("acquirer data does not match the record");
    }
    None
}

impl Store {
    /// Keep the acquirer's data a validator sent for its QuickPass records; an entry sent
    /// again is stored once.
    pub fn store_acquirer_data(
        &mut self,
        terminal: &str,
        epoch: u64,
        entries: &[AcquirerEntry],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO quickpass_acquirer(terminal, epoch, seq, data)
                 VALUES(?1, ?2, ?3, ?4)",
            )?;
            for (seq, data) in entries {
                st.execute(params![terminal, epoch as i64, *seq as i64, &data[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every QuickPass ride stored, with its acquirer's data when it agrees with the record.
    pub fn for_each_acquirer_ride(
        &self,
        mut f: impl FnMut(&AcquirerRide) -> std::io::Result<()>,
    ) -> Result<(), ExportError> {
        let mut st = self.conn.prepare(
            "SELECT j.terminal, j.epoch, r.raw, a.data FROM records r
                 JOIN journals j ON j.no = r.journal
                 LEFT JOIN quickpass_acquirer a
                   ON a.terminal = j.terminal AND a.epoch = j.epoch AND a.seq = r.seq
                 WHERE r.kind = ?1
                 ORDER BY j.terminal, j.epoch, r.seq",
        )?;
        let mut rows = st.query(params![RecordKind::Quickpass as u8 as i64])?;
        while let Some(row) = rows.next()? {
            let terminal: String = row.get(0)?;
            let epoch: i64 = row.get(1)?;
            let raw: Vec<u8> = row.get(2)?;
            let data: Option<Vec<u8>> = row.get(3)?;
            let rec = <&[u8; RECORD_BYTES]>::try_from(raw.as_slice())
                .ok()
                .and_then(|b| Record::decode(b).ok())
                .ok_or(StoreError::Corrupt("record"))?;
            let Some(qp) = rec.quickpass else {
                return Err(StoreError::Corrupt("QuickPass record").into());
            };
            let data = data
                .as_deref()
                .and_then(|d| <&[u8; ACQUIRER_DATA_BYTES]>::try_from(d).ok())
                .and_then(AcquirerData::decode);
            let problem = check_against(&rec, data.as_ref());
            let data = data.filter(|_| problem.is_none());
            f(&AcquirerRide {
                terminal,
                epoch: format!("{:016x}", epoch as u64),
                seq: rec.seq,
                at: rec.at_rfc3339(),
                route: rec.route,
                terminal_no: hex::encode(rec.terminal_no),
                amount_fen: rec.fare_fen,
                currency: "156",
                masked_pan: qp.masked_pan.to_string(),
                pan_seq: qp.pan_seq,
                atc: qp.atc,
                cryptogram: hex::encode(qp.cryptogram),
                cid: format!("{:02x}", qp.cid),
                pan_token: ListId::Pan(qp.pan_token).to_string(),
                sealed_pan: data.as_ref().map(|d| hex::encode(d.sealed_pan.0)),
                iad: data.as_ref().map(|d| hex::encode(&d.iad)),
                field55: data.as_ref().map(|d| hex::encode(&d.field55)),
                problem,
            })?;
        }
        Ok(())
    }

    /// Apply the acquirer's declines and payments ([`parse_declines`]'s lines) in one
    /// transaction (a crash leaves the whole file applied or none of it): `arrears` on the
    /// deny list for each card that owes, lifted once it owes nothing. Only a listing the
    /// declines made is lifted: an `arrears` entered at the counter stays until the counter
    /// lifts it, whatever the acquirer reports.
    pub fn apply_declines(
        &mut self,
        lines: &[DeclineLine],
    ) -> Result<DeclinesReport, DeclinesError> {
        let mut report = DeclinesReport::default();
        let tx = self.conn.transaction()?;
        for d in lines {
            let epoch = parse_epoch(&d.epoch).ok_or(StoreError::Corrupt("epoch"))?;
            let Some(id) = ride_token(&tx, &d.terminal, epoch, d.seq)? else {
                report
                    .unknown
                    .push(format!("{}/{}/{}", d.terminal, d.epoch, d.seq));
                continue;
            };
            let token = id.to_string();
            let paid = d.outcome == DeclineOutcome::Paid;
            tx.execute(
                "INSERT INTO acquirer_declines(terminal, epoch, seq, pan_token, paid)
                 VALUES(?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(terminal, epoch, seq) DO UPDATE SET paid = excluded.paid",
                params![d.terminal, epoch as i64, d.seq as i64, token, paid],
            )?;
            let owing: i64 = tx.query_row(
                "SELECT COUNT(*) FROM acquirer_declines WHERE pan_token = ?1 AND paid = 0",
                params![token],
                |r| r.get(0),
            )?;
            let listed = blacklist_reasons_in(&tx, &id)?.contains(ListReason::Arrears);
            let ours: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM acquirer_arrears WHERE pan_token = ?1)",
                params![token],
                |r| r.get(0),
            )?;
            let op = match (owing > 0, listed, ours) {
                (true, false, _) => Some(ChangeOp::Add),
                (false, true, true) => Some(ChangeOp::Remove),
                _ => None,
            };
            if owing == 0 && ours && !listed {
                // Lifted at the counter meanwhile: the mark is stale.
                tx.execute(
                    "DELETE FROM acquirer_arrears WHERE pan_token = ?1",
                    params![token],
                )?;
            }
            if let Some(op) = op {
                blacklist_change_in(
                    &tx,
                    &Change {
                        op,
                        id,
                        reason: ListReason::Arrears,
                    },
                )?;
                match op {
                    ChangeOp::Add => {
                        tx.execute(
                            "INSERT OR IGNORE INTO acquirer_arrears(pan_token) VALUES(?1)",
                            params![token],
                        )?;
                        report.listed.push(token);
                    }
                    ChangeOp::Remove => {
                        tx.execute(
                            "DELETE FROM acquirer_arrears WHERE pan_token = ?1",
                            params![token],
                        )?;
                        report.lifted.push(token);
                    }
                }
            }
            if paid {
                report.paid += 1;
            } else {
                report.declined += 1;
            }
        }
        tx.commit()?;
        Ok(report)
    }
}

/// The PAN token of the QuickPass ride `terminal`/`epoch`/`seq`, if this station holds it.
fn ride_token(
    conn: &Connection,
    terminal: &str,
    epoch: u64,
    seq: u64,
) -> Result<Option<ListId>, StoreError> {
    let raw: Option<Vec<u8>> = conn
        .query_row(
            "SELECT r.raw FROM records r JOIN journals j ON j.no = r.journal
             WHERE j.terminal = ?1 AND j.epoch = ?2 AND r.seq = ?3 AND r.kind = ?4",
            params![
                terminal,
                epoch as i64,
                seq as i64,
                RecordKind::Quickpass as u8 as i64
            ],
            |r| r.get(0),
        )
        .optional()?;
    let Some(raw) = raw else { return Ok(None) };
    let rec = <&[u8; RECORD_BYTES]>::try_from(raw.as_slice())
        .ok()
        .and_then(|b| Record::decode(b).ok())
        .ok_or(StoreError::Corrupt("record"))?;
    Ok(rec.quickpass.map(|q| ListId::Pan(q.pan_token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declines_files_are_strict() {
        let ok = r#"{"terminal":"bus-1","epoch":"00000000000000ab","seq":3,"outcome":"declined"}"#;
        assert_eq!(parse_declines(&format!("{ok}\n\n")).unwrap().len(), 1);
        for bad in [
            r#"{"terminal":"bus-1","epoch":"ab","seq":3,"outcome":"declined"}"#,
            r#"{"terminal":"bus-1","epoch":"00000000000000ab","seq":3,"outcome":"maybe"}"#,
            r#"{"terminal":"bus-1","epoch":"00000000000000ab","seq":3,"outcome":"paid","pan":"6214830000000001"}"#,
            "not json",
        ] {
            assert!(
                matches!(
                    parse_declines(&format!("{ok}\n{bad}")),
                    Err(DeclinesError::Line { line: 2, .. })
                ),
                "{bad}"
            );
        }
    }
}
