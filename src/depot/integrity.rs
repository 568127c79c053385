//! What the station checks in each record beyond its CRC: the journal's chain MAC
//! ([`crate::journal::chain`]) and the PSAM's transaction numbers, and what it reports.
//!
//! The chain is checked in two places. The session's reader checks each record against the
//! record before it in the same session ([`SessionChain`], no database, overlapping the
//! store's fsync); the first record of a session, or one after a seq the session did not
//! carry, is checked by the store against the record it holds at `seq − 1`
//! ([`super::store::Store::store_batch`]). Every finding is logged at the default level and
//! stored (`findings`), visible in `depot report`, `depot findings` and the manager's page.
//!
//! | finding | what was seen | the record |
//! | --- | --- | --- |
//! | `altered` | the MAC matches neither the record before nor a chain start: a field changed and its CRC fixed, or an unauthenticated record from a terminal that chains with its own key | refused, kept in `refused` with the reason, its seq accounted for so later records go on |
//! | `cut` | the journal wrote another record at a seq the depot holds (seq reused: its last records were cut, or its storage rolled back) or goes on from such a record | a reused seq is refused (kept in `conflicts`); the records after it are stored |
//! | `chain_restarted` | a record in the middle of an epoch chains from the chain start: the bus no longer held the record before it (cut, or pruned) | stored |
//! | `chain_unverified` | the record before is not at the depot (declared lost), and the record does not chain from a start | stored, not proven |
//! | `test_key` / `unsealed` | records chained with the public test key, or of a format before the chain | stored, not authenticated |
//! | `psam_gap` | the PSAM's transaction numbers skip: numbers with no record (a tap abandoned after MAC1, or records cut) | stored |
//! | `psam_duplicate` | a PSAM transaction number already used by another record (a cloned PSAM, a replayed record) | stored |
//! | `out_of_range` | a field no fare table or clock allows: a fare above every table's on the route, a time before 2020 or ahead of the station's clock ([`super::checks`]); the detail says which | refused, kept in `refused` with the reason, its seq accounted for |
//! | `journal_replaced` | a terminal's new journal (epoch) after others: new storage, a re-flash, or the old journal deleted with its identity | its records stored as that journal's |

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::store::{now_unix_s, Received, StoreError};
use crate::journal::chain::{JournalKey, RecordMac, SealKey};
use crate::journal::record::{SealRead, MAC_AT};
use crate::journal::{Record, RECORD_BYTES};

/// What the session's reader found of one record's chain MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Chained to the record before with the terminal's key.
    Verified,
    /// Chained with the public test key.
    TestKey,
    /// Format 1 or 2: no MAC.
    Unsealed,
    /// Chains from the chain start in the middle of the epoch.
    Restarted,
    /// The record before was not in this session: the store checks it.
    Unknown,
    /// Matches neither its predecessor nor a chain start: the store looks further.
    Mismatch,
}

/// The keys of one terminal's journal: the terminal's and the public test key, with the
/// chain start of each for the epoch.
#[derive(Clone, Debug)]
pub struct ChainKeys {
    terminal: JournalKey,
    test: JournalKey,
    epoch: u64,
    first_seq: u64,
    start_terminal: RecordMac,
    start_test: RecordMac,
}

impl ChainKeys {
    /// `station_key`: the key the station holds for the terminal.
    pub fn new(station_key: &crate::upload::auth::Secret, epoch: u64, first_seq: u64) -> Self {
        let terminal = JournalKey::from_station_key(station_key);
        let test = JournalKey::test();
        ChainKeys {
            start_terminal: terminal.chain_start(epoch),
            start_test: test.chain_start(epoch),
            terminal,
            test,
            epoch,
            first_seq,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Check `raw` (a record of seq `seq`) after a predecessor sealed `prev` (`None`: the
    /// record before is not known; [`SealRead::Unsealed`] also stands for "no record before"
    /// at the epoch's first seq).
    pub fn link(&self, seq: u64, raw: &[u8; RECORD_BYTES], prev: Option<SealRead>) -> Link {
        let SealRead::Sealed(kind, mac) = Record::seal_of(raw) else {
            return Link::Unsealed;
        };
        let (key, start, ok) = match kind {
            SealKey::Terminal => (&self.terminal, &self.start_terminal, Link::Verified),
            SealKey::Test => (&self.test, &self.start_test, Link::TestKey),
        };
        let body = &raw[..MAC_AT];
        let prev = match (prev, seq == self.first_seq) {
            (_, true) | (Some(SealRead::Unsealed), false) => *start,
            (Some(SealRead::Sealed(_, p)), false) => p,
            (None, false) => {
                return match key.verify(body, start, &mac) {
                    true => Link::Restarted,
                    false => Link::Unknown,
                }
            }
        };
        if key.verify(body, &prev, &mac) {
            ok
        } else if seq != self.first_seq && key.verify(body, start, &mac) {
            Link::Restarted
        } else {
            Link::Mismatch
        }
    }

    /// Whether `raw` chains after any of `candidates` (the bytes of records once sent at the
    /// seq before): a record going on from a cut branch.
    pub fn chains_after_any(
        &self,
        seq: u64,
        raw: &[u8; RECORD_BYTES],
        candidates: &[[u8; RECORD_BYTES]],
    ) -> bool {
        candidates.iter().any(|c| {
            matches!(
                self.link(seq, raw, Some(Record::seal_of(c))),
                Link::Verified | Link::TestKey
            )
        })
    }
}

/// The session reader's end: the keys and the seal of the last record it read.
#[derive(Clone, Debug)]
pub struct SessionChain {
    pub keys: ChainKeys,
    last: Option<(u64, SealRead)>,
}

impl SessionChain {
    pub fn new(keys: ChainKeys) -> Self {
        SessionChain { keys, last: None }
    }

    /// Check the next record of the session (records come in increasing seq order).
    pub fn next(&mut self, seq: u64, raw: &[u8; RECORD_BYTES]) -> Link {
        let prev = match self.last {
            Some((s, seal)) if s + 1 == seq => Some(seal),
            _ => None,
        };
        self.last = Some((seq, Record::seal_of(raw)));
        self.keys.link(seq, raw, prev)
    }
}

/// The kinds of findings, as stored and reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FindingKind {
    Altered,
    Cut,
    ChainRestarted,
    ChainUnverified,
    TestKey,
    Unsealed,
    PsamGap,
    PsamDuplicate,
    OutOfRange,
    JournalReplaced,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Altered => "altered",
            FindingKind::Cut => "cut",
            FindingKind::ChainRestarted => "chain_restarted",
            FindingKind::ChainUnverified => "chain_unverified",
            FindingKind::TestKey => "test_key",
            FindingKind::Unsealed => "unsealed",
            FindingKind::PsamGap => "psam_gap",
            FindingKind::PsamDuplicate => "psam_duplicate",
            FindingKind::OutOfRange => "out_of_range",
            FindingKind::JournalReplaced => "journal_replaced",
        }
    }

    /// Findings that mean money or records are wrong (logged at error, the rest at warn; a
    /// PSAM gap also has an innocent cause, a tap abandoned after MAC1).
    pub fn is_attack(self) -> bool {
        matches!(
            self,
            FindingKind::Altered
                | FindingKind::Cut
                | FindingKind::PsamDuplicate
                | FindingKind::OutOfRange
        )
    }
}

/// Findings of one batch: a row a run of like findings (kind, detail, contiguous seqs), with
/// the count and the first and last seq (journal seqs, or PSAM numbers for `psam_*`).
#[derive(Clone, Debug, Default)]
pub struct BatchFindings {
    pub items: Vec<Finding>,
}

/// One stored finding.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub terminal: String,
    /// The journal's epoch, 16 hex digits.
    pub epoch: String,
    pub kind: &'static str,
    /// First and last journal seq the finding covers (PSAM numbers for `psam_*` findings).
    pub from: u64,
    pub to: u64,
    pub count: u64,
    pub detail: String,
    pub at_unix_s: i64,
}

impl BatchFindings {
    /// Count `seq` under `kind` (and `detail`, which tells PSAMs apart).
    pub fn add(&mut self, kind: FindingKind, from: u64, to: u64, detail: &str) {
        self.add_counted(kind, from, to, detail, 1);
    }

    /// Count `count` records (or PSAM numbers) `from ..= to` under `kind` and `detail`: one
    /// row with the row it continues, a row of its own otherwise, until the batch holds
    /// [`FINDINGS_PER_BATCH_MAX`] rows; then it joins a row of its kind.
    pub fn add_counted(&mut self, kind: FindingKind, from: u64, to: u64, detail: &str, count: u64) {
        let full = self.items.len() >= FINDINGS_PER_BATCH_MAX;
        let same = |f: &&mut Finding| f.kind == kind.as_str() && f.detail == detail;
        let row = match self
            .items
            .iter_mut()
            .rev()
            .find(|f| same(f) && (full || f.to.saturating_add(1) >= from))
        {
            Some(f) => Some(f),
            None if full => self.items.iter_mut().find(|f| f.kind == kind.as_str()),
            None => None,
        };
        if let Some(f) = row {
            f.from = f.from.min(from);
            f.to = f.to.max(to);
            f.count += count;
            return;
        }
        self.items.push(Finding {
            terminal: String::new(),
            epoch: String::new(),
            kind: kind.as_str(),
            from,
            to,
            count,
            detail: detail.to_string(),
            at_unix_s: 0,
        });
    }
}

/// Finding rows one batch stores before like findings share a row (a record's worth of
/// rows at most per kind beyond it): a flood of findings makes a bounded number of rows.
pub const FINDINGS_PER_BATCH_MAX: usize = 32;

/// Most open PSAM gaps loaded for one PSAM in one batch (older ones stay reported, unfilled).
pub const PSAM_GAPS_LOADED_MAX: usize = 1_024;

/// What the store carries through one batch: the lazily read "this terminal chains with its
/// own key" flag, the PSAM being followed, and the findings so far.
#[derive(Default)]
pub(super) struct BatchState {
    keyed: Option<bool>,
    pub verified: bool,
    psam: Option<PsamState>,
    pub findings: BatchFindings,
}

/// One PSAM's numbering as the batch goes: the last number and the open gaps.
struct PsamState {
    psam: i64,
    last: Option<u64>,
    gaps: Vec<(u64, u64)>,
    dirty: bool,
}

fn psam_id(terminal_no: &[u8; 6]) -> i64 {
    terminal_no
        .iter()
        .fold(0i64, |acc, &b| (acc << 8) | i64::from(b))
}

/// The PSAM's terminal number as `journal show` prints it (hex of its BCD).
fn psam_hex(psam: i64) -> String {
    format!("{psam:012x}")
}

impl BatchState {
    fn keyed(&mut self, tx: &Transaction<'_>, terminal: &str) -> Result<bool, StoreError> {
        if let Some(k) = self.keyed {
            return Ok(k);
        }
        let k = tx
            .prepare_cached("SELECT 1 FROM keyed_terminals WHERE terminal=?1")?
            .query_row(params![terminal], |_| Ok(()))
            .optional()?
            .is_some();
        self.keyed = Some(k);
        Ok(k)
    }

    /// Follow the PSAM transaction number of a card record newly stored.
    pub fn psam(&mut self, tx: &Transaction<'_>, rec: &Record) -> Result<(), StoreError> {
        // Ride codes and QuickPass taps take no PSAM transaction number.
        if rec.qr.is_some() || rec.quickpass.is_some() {
            return Ok(());
        }
        let psam = psam_id(&rec.terminal_no);
        if !self.psam.as_ref().is_some_and(|p| p.psam == psam) {
            self.flush_psam(tx)?;
            self.psam = Some(load_psam(tx, psam)?);
        }
        let Some(p) = self.psam.as_mut() else {
            return Ok(());
        };
        let n = u64::from(rec.card_tx.terminal_seq);
        // Made only for a finding: the common case allocates nothing.
        let detail = || format!("PSAM {}", psam_hex(psam));
        p.dirty = true;
        match p.last {
            None => p.last = Some(n),
            Some(last) if n == last + 1 => p.last = Some(n),
            Some(last) if n > last + 1 => {
                p.gaps.push((last + 1, n - 1));
                self.findings.add_counted(
                    FindingKind::PsamGap,
                    last + 1,
                    n - 1,
                    &detail(),
                    n - 1 - last,
                );
                p.last = Some(n);
            }
            Some(_) => match p.gaps.iter().position(|&(a, b)| a <= n && n <= b) {
                Some(i) => {
                    // A debit recovered later (a grey record settled on the card's next tap)
                    // fills the number it was given.
                    let (a, b) = p.gaps.remove(i);
                    if a < n {
                        p.gaps.push((a, n - 1));
                    }
                    if n < b {
                        p.gaps.push((n + 1, b));
                    }
                }
                None => self
                    .findings
                    .add(FindingKind::PsamDuplicate, n, n, &detail()),
            },
        }
        Ok(())
    }

    pub fn flush_psam(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let Some(p) = self.psam.take() else {
            return Ok(());
        };
        let (true, Some(last)) = (p.dirty, p.last) else {
            return Ok(());
        };
        tx.prepare_cached("INSERT OR REPLACE INTO psam_counters(psam, last_seq) VALUES(?1, ?2)")?
            .execute(params![p.psam, last as i64])?;
        tx.prepare_cached("DELETE FROM psam_gaps WHERE psam=?1")?
            .execute(params![p.psam])?;
        let mut ins = tx.prepare_cached(
            "INSERT OR REPLACE INTO psam_gaps(psam, from_seq, to_seq) VALUES(?1, ?2, ?3)",
        )?;
        for (a, b) in p.gaps {
            ins.execute(params![p.psam, a as i64, b as i64])?;
        }
        Ok(())
    }
}

fn load_psam(tx: &Transaction<'_>, psam: i64) -> Result<PsamState, StoreError> {
    let last: Option<i64> = tx
        .prepare_cached("SELECT last_seq FROM psam_counters WHERE psam=?1")?
        .query_row(params![psam], |r| r.get(0))
        .optional()?;
    let gaps = tx
        .prepare_cached(
            "SELECT from_seq, to_seq FROM psam_gaps WHERE psam=?1 ORDER BY from_seq DESC LIMIT ?2",
        )?
        .query_map(params![psam, PSAM_GAPS_LOADED_MAX as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<Result<_, _>>()?;
    Ok(PsamState {
        psam,
        last: last.map(|l| l as u64),
        gaps,
        dirty: false,
    })
}

fn raws_at(
    tx: &Transaction<'_>,
    table: &str,
    terminal: &str,
    epoch: u64,
    seq: u64,
) -> Result<Vec<[u8; RECORD_BYTES]>, StoreError> {
    // `records` is keyed by the journal's number (`journals.no`), the others by
    // (terminal, epoch).
    let sql = if table == "records" {
        "SELECT raw FROM records
         WHERE journal=(SELECT no FROM journals WHERE terminal=?1 AND epoch=?2) AND seq=?3"
            .to_string()
    } else {
        format!("SELECT raw FROM {table} WHERE terminal=?1 AND epoch=?2 AND seq=?3")
    };
    let raws: Vec<Vec<u8>> = tx
        .prepare_cached(&sql)?
        .query_map(params![terminal, epoch as i64, seq as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(raws
        .iter()
        .filter_map(|r| <[u8; RECORD_BYTES]>::try_from(r.as_slice()).ok())
        .collect())
}

/// Refuse an altered record: kept in `refused` with why (its seq accounted for, so the
/// journal's later records go on), and a finding.
fn refuse(
    tx: &Transaction<'_>,
    terminal: &str,
    epoch: u64,
    r: &Received,
    why: &'static str,
    st: &mut BatchState,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO refused(terminal, epoch, seq, raw, reason, at_unix_s)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        terminal,
        epoch as i64,
        r.record.seq as i64,
        &r.raw[..],
        why,
        now_unix_s()
    ])?;
    st.findings
        .add(FindingKind::Altered, r.record.seq, r.record.seq, why);
    Ok(())
}

/// The reason an altered record is refused with (in `refused`, beside the field checks').
pub const ALTERED: &str = "altered: the chain MAC does not match";
/// The reason a record with no MAC, or the public test key's, is refused with from a
/// terminal that has sent records chained with its own key.
pub const DOWNGRADED: &str =
    "altered: unauthenticated record from a terminal whose records carry its key";

/// Settle a record's chain check in the store: `Some(link)` to store it (the link as
/// resolved), `None` when it was refused as altered.
pub(super) fn resolve(
    tx: &Transaction<'_>,
    terminal: &str,
    keys: &ChainKeys,
    r: &Received,
    link: Link,
    st: &mut BatchState,
) -> Result<Option<Link>, StoreError> {
    let (epoch, seq) = (keys.epoch(), r.record.seq);
    let mut link = link;
    if link == Link::Unknown {
        // The record before, stored, or refused (an altered record keeps the MAC it was
        // written with).
        let mut prev = raws_at(tx, "records", terminal, epoch, seq - 1)?;
        if prev.is_empty() {
            prev = raws_at(tx, "refused", terminal, epoch, seq - 1)?;
        }
        match prev.first() {
            Some(p) => link = keys.link(seq, &r.raw, Some(Record::seal_of(p))),
            None => {
                st.findings.add(
                    FindingKind::ChainUnverified,
                    seq,
                    seq,
                    "the record before is not at the depot: this one cannot be proven",
                );
                return Ok(Some(link));
            }
        }
    }
    if link == Link::Mismatch {
        let branch = raws_at(tx, "conflicts", terminal, epoch, seq - 1)?;
        if keys.chains_after_any(seq, &r.raw, &branch) {
            st.findings.add(
                FindingKind::Cut,
                seq,
                seq,
                "goes on from a record refused at a reused seq: the journal was cut or rolled back",
            );
            return Ok(Some(Link::Verified));
        }
    }
    match link {
        Link::Verified => st.verified = true,
        Link::TestKey | Link::Unsealed if st.keyed(tx, terminal)? => {
            refuse(tx, terminal, epoch, r, DOWNGRADED, st)?;
            return Ok(None);
        }
        Link::TestKey => st.findings.add(
            FindingKind::TestKey,
            seq,
            seq,
            "chained with the public test key: not authenticated",
        ),
        Link::Unsealed => st.findings.add(
            FindingKind::Unsealed,
            seq,
            seq,
            "a record format before the chain MAC: not authenticated",
        ),
        Link::Restarted => st.findings.add(
            FindingKind::ChainRestarted,
            seq,
            seq,
            "the chain starts again in the middle of the epoch: the records before were not on the bus (cut, or pruned)",
        ),
        Link::Mismatch | Link::Unknown => {
            refuse(tx, terminal, epoch, r, ALTERED, st)?;
            return Ok(None);
        }
    }
    Ok(Some(link))
}

/// Store the batch's findings (one row a kind); the caller logs them ([`log_finding`]).
pub(super) fn write_findings(
    tx: &Transaction<'_>,
    terminal: &str,
    epoch: u64,
    st: &mut BatchState,
) -> Result<Vec<Finding>, StoreError> {
    if st.verified {
        tx.prepare_cached("INSERT OR IGNORE INTO keyed_terminals(terminal) VALUES(?1)")?
            .execute(params![terminal])?;
    }
    let now = now_unix_s();
    let mut out = std::mem::take(&mut st.findings.items);
    for f in &mut out {
        f.terminal = terminal.to_string();
        f.epoch = format!("{epoch:016x}");
        f.at_unix_s = now;
        store_finding(tx, epoch, f)?;
    }
    Ok(out)
}

/// Store one finding (its `epoch` given as the number, the finding's text being hex).
pub(super) fn store_finding(conn: &Connection, epoch: u64, f: &Finding) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO findings(terminal, epoch, kind, from_seq, to_seq, count, detail, at_unix_s)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        f.terminal,
        epoch as i64,
        f.kind,
        f.from as i64,
        f.to as i64,
        f.count as i64,
        f.detail,
        f.at_unix_s
    ])?;
    Ok(())
}

/// A terminal's journal replaced (a new epoch after others): new storage, a re-flash, or
/// the old journal deleted with its identity. Records the old one held that never reached
/// the depot are gone (the PSAM numbers show how many card taps).
pub(super) fn journal_replaced(
    conn: &Connection,
    terminal: &str,
    epoch: u64,
    first_seq: u64,
) -> Result<(), StoreError> {
    let f = Finding {
        terminal: terminal.to_string(),
        epoch: format!("{epoch:016x}"),
        kind: FindingKind::JournalReplaced.as_str(),
        from: first_seq,
        to: first_seq,
        count: 1,
        detail: "a new journal: new storage, a re-flash, or the old journal deleted; what the old one did not upload is gone".to_string(),
        at_unix_s: now_unix_s(),
    };
    store_finding(conn, epoch, &f)
}

/// Log a finding at the default level: error for those that mean money or records may be
/// wrong, warn for the rest. The session logs what its batch found.
pub fn log_finding(f: &Finding) {
    let attack = FINDING_KINDS
        .iter()
        .any(|k| k.as_str() == f.kind && k.is_attack());
    if attack {
        tracing::error!(terminal = %f.terminal, epoch = %f.epoch, kind = f.kind, from = f.from, to = f.to, count = f.count, detail = %f.detail,
            "depot: security finding");
    } else {
        tracing::warn!(terminal = %f.terminal, epoch = %f.epoch, kind = f.kind, from = f.from, to = f.to, count = f.count, detail = %f.detail,
            "depot: security finding");
    }
}

const FINDING_KINDS: [FindingKind; 10] = [
    FindingKind::Altered,
    FindingKind::Cut,
    FindingKind::ChainRestarted,
    FindingKind::ChainUnverified,
    FindingKind::TestKey,
    FindingKind::Unsealed,
    FindingKind::PsamGap,
    FindingKind::PsamDuplicate,
    FindingKind::OutOfRange,
    FindingKind::JournalReplaced,
];

/// Stored findings, newest first, at most `max`.
pub fn read_findings(conn: &Connection, max: usize) -> Result<Vec<Finding>, StoreError> {
    // A database opened read-only that a station of this version never opened has none.
    let table: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type='table' AND name='findings')",
        [],
        |r| r.get(0),
    )?;
    if !table {
        return Ok(Vec::new());
    }
    let mut st = conn.prepare_cached(
        "SELECT terminal, epoch, kind, from_seq, to_seq, count, detail, at_unix_s
         FROM findings ORDER BY rowid DESC LIMIT ?1",
    )?;
    let rows = st.query_map(params![max as i64], |r| {
        let kind: String = r.get(2)?;
        Ok(Finding {
            terminal: r.get(0)?,
            epoch: format!("{:016x}", r.get::<_, i64>(1)? as u64),
            kind: FINDING_KINDS
                .iter()
                .map(|k| k.as_str())
                .find(|k| *k == kind)
                .unwrap_or("unknown"),
            from: r.get::<_, i64>(3)? as u64,
            to: r.get::<_, i64>(4)? as u64,
            count: r.get::<_, i64>(5)? as u64,
            detail: r.get(6)?,
            at_unix_s: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::chain::Chain;
    use crate::journal::{CardTx, RecordKind};
    use crate::types::RiderCategory;

    fn rec(seq: u64) -> Record {
        Record {
            seq,
            kind: RecordKind::CardPurchase,
            at_unix_s: 1_795_824_000,
            utc_offset_min: 480,
            route: 7,
            category: RiderCategory::Adult,
            fare_fen: 200,
            balance_fen: Some(4_800),
            card_no: "37140000000000000001".parse().unwrap(),
            card_tx: CardTx::default(),
            qr: None,
            quickpass: None,
            terminal_no: [0, 0, 0, 0, 1, 0x23],
            rule: crate::fare::FareRule::Unknown,
        }
    }

    #[test]
    fn like_findings_share_a_row_when_they_run_on_and_a_flood_stays_bounded() {
        let mut f = BatchFindings::default();
        f.add(FindingKind::Altered, 3, 3, "x");
        f.add(FindingKind::Altered, 4, 4, "x");
        f.add(FindingKind::Altered, 9, 9, "x");
        f.add_counted(FindingKind::PsamGap, 6, 8, "PSAM 1", 3);
        let rows: Vec<_> = f
            .items
            .iter()
            .map(|r| (r.kind, r.from, r.to, r.count))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("altered", 3, 4, 2),
                ("altered", 9, 9, 1),
                ("psam_gap", 6, 8, 3)
            ]
        );
        for seq in (20..10_000).step_by(2) {
            f.add(FindingKind::Altered, seq, seq, "x");
        }
        assert_eq!(f.items.len(), FINDINGS_PER_BATCH_MAX);
        let total: u64 = f
            .items
            .iter()
            .filter(|r| r.kind == "altered")
            .map(|r| r.count)
            .sum();
        assert_eq!(total, 3 + 4_990, "every record counted");
    }

    #[test]
    fn a_session_verifies_its_chain_and_tells_an_altered_record_from_a_restart() {
        let station = crate::upload::auth::station_key(&[4u8; 32], "bus-0001");
        let key = JournalKey::from_station_key(&station);
        let mut w = Chain {
            prev: key.chain_start(5),
            key: key.clone(),
        };
        let b: Vec<_> = (1..=4).map(|s| rec(s).encode_chained(5, &mut w)).collect();
        let mut s = SessionChain::new(ChainKeys::new(&station, 5, 1));
        assert_eq!(s.next(1, &b[0]), Link::Verified, "the epoch's first record");
        let mut altered = b[1];
        altered[24] ^= 1;
        assert_eq!(s.next(2, &altered), Link::Mismatch);
        assert_eq!(
            s.next(3, &b[2]),
            Link::Verified,
            "the next goes on from the MAC carried"
        );
        // A session starting at seq 4: the store knows the record before.
        let mut s = SessionChain::new(ChainKeys::new(&station, 5, 1));
        assert_eq!(s.next(4, &b[3]), Link::Unknown);
        // The bus reopened with no record before: its chain starts again.
        let mut again = Chain {
            prev: key.chain_start(5),
            key: key.clone(),
        };
        let r9 = rec(9).encode_chained(5, &mut again);
        assert_eq!(s.next(9, &r9), Link::Restarted);
        // Another terminal's key, or another epoch, never verifies.
        let other = crate::upload::auth::station_key(&[4u8; 32], "bus-0002");
        let mut s = SessionChain::new(ChainKeys::new(&other, 5, 1));
        assert_eq!(s.next(1, &b[0]), Link::Mismatch);
        let mut s = SessionChain::new(ChainKeys::new(&station, 6, 1));
        assert_eq!(s.next(1, &b[0]), Link::Mismatch);
    }
}
