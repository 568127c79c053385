//! The station's SQLite store: terminals and their secrets, every uploaded record keyed by
//! (terminal, seq), declared losses, the blacklist change log, and the downlink files.
//!
//! The blacklist is one row per (kind, id, reason) in `blacklist_reasons`: a card reported
//! lost and later reissued has two rows, a remove deletes only its reason's row, and the id is
//! listed while any row remains. A database from before reason sets (a `blacklist` table of
//! one reason an id) is moved into it when opened.
//!
//! One batch is one transaction: its records, the losses it declares and the terminal's new
//! contiguous seq commit together or not at all, so an acknowledgement always describes what
//! is on disk. Records are inserted with `INSERT OR IGNORE`: a batch sent twice (after a
//! disconnect, or a station restart before the ack reached the bus) stores nothing twice.

use std::collections::HashSet;
use std::path::Path;

use ed25519_dalek::SigningKey;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};

use crate::blacklist::{Blacklist, Change, ChangeOp};
use crate::journal::{Record, RecordKind, RECORD_BYTES};
use crate::types::{ListId, ListReason, ReasonSet};
use crate::upload::auth::{station_key, Secret, SECRET_BYTES};
use crate::upload::frame::{valid_terminal_id, Ack};

/// How long a writer waits for another connection's lock before failing (ms).
pub const BUSY_TIMEOUT_MS: u64 = 5_000;

/// WAL pages (4 KiB) before SQLite checkpoints into the database file.
pub const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;
/// SQLite page cache, KiB.
pub const CACHE_KIB: i64 = 32_768;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS terminals(
    id TEXT PRIMARY KEY,
    secret BLOB NOT NULL,
    contiguous_seq INTEGER NOT NULL DEFAULT 0,
    added_unix_s INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records(
    terminal TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    at_unix_s INTEGER NOT NULL,
    fare_fen INTEGER NOT NULL,
    channel INTEGER,
    account INTEGER,
    qr_counter INTEGER,
    raw BLOB NOT NULL,
    PRIMARY KEY(terminal, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lost(
    terminal TEXT NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL,
    PRIMARY KEY(terminal, from_seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blacklist_changes(
    version INTEGER PRIMARY KEY,
    op TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_unix_s INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blacklist_reasons(
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY(kind, id, reason)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS downlink(
    kind TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body BLOB NOT NULL);
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("depot database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("terminal id must be 1..=32 characters of A-Z a-z 0-9 _ -")]
    BadTerminalId,
    #[error("terminal {0} is already provisioned")]
    TerminalExists(String),
    #[error("{id} is not on the blacklist for reason {reason}")]
    NotListed { id: String, reason: &'static str },
    #[error("depot database: corrupt {0}")]
    Corrupt(&'static str),
}

/// A record checked by the receiver, with the bytes it arrived as.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub record: Record,
    pub raw: [u8; RECORD_BYTES],
}

/// What storing a batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub ack: Ack,
    /// Seq ranges this batch declared lost by the validator's journal.
    pub declared_lost: Vec<(u64, u64)>,
}

/// Per-terminal clearing view.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TerminalReport {
    pub records: u64,
    pub max_seq: u64,
    /// Seq ranges `[from, to]` below `max_seq` with no record stored.
    pub gaps: Vec<[u64; 2]>,
    /// The part of `gaps` the validator declared lost (corrupt journal slots).
    pub declared_lost: Vec<[u64; 2]>,
    /// Fares charged: a duplicated ride code counts once.
    pub fare_fen: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub terminals: std::collections::BTreeMap<String, TerminalReport>,
    /// Ride-code records that repeat a (channel, account, counter) already counted.
    pub qr_duplicates: u64,
}

/// The station's database.
pub struct Store {
    conn: Connection,
}

/// A new database file is made readable by the station's user only (SQLite gives its WAL and
/// shared-memory files the database file's mode): it holds the terminals' keys.
fn create_owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Fails harmlessly when the file exists; SQLite then reports any real problem.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
}

/// An existing database and its WAL files narrowed to the station's user (made before this
/// rule, or copied with another mode).
fn owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
    }
}

fn now_unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        create_owner_only(path);
        let conn = Connection::open(path)?;
        // synchronous=FULL, not NORMAL: in WAL mode NORMAL syncs the WAL only at checkpoints,
        // so a transaction survives a crash of the station process but not a power cut. An
        // acknowledged batch lets the validator delete its records, so the commit behind an
        // ack must be on the disk itself: FULL syncs the WAL on every commit. The cost is one
        // fsync per batch, which the batch size pays for (see `BATCH_RECORDS_MAX`).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Checkpoint every 64 MiB of WAL rather than 4 MiB: fewer database-file syncs.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        conn.execute_batch(SCHEMA)?;
        move_one_reason_table(&conn)?;
        owner_only(path);
        Ok(Store { conn })
    }

    /// Open an existing database for reading only (the manager's page, reports): nothing is
    /// created, no schema is written and no key is made. A missing file is an error.
    pub fn open_read(path: &Path) -> Result<Store, StoreError> {
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        Ok(Store { conn })
    }

    /// The operator's Ed25519 key that signs downlink files, if one was imported
    /// (`depot operator-key --import`). None is ever made here: without one the station
    /// signs nothing and sends no downlink file (see docs/depot.md, key custody).
    pub fn operator_key(&self) -> Result<Option<SigningKey>, StoreError> {
        let seed: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key='operator_key'", [], |r| {
                r.get(0)
            })
            .optional()?;
        seed.map(|s| {
            <[u8; 32]>::try_from(s.as_slice())
                .map(|s| SigningKey::from_bytes(&s))
                .map_err(|_| StoreError::Corrupt("operator key"))
        })
        .transpose()
    }

    /// Use a given operator key (tests, or a key imported from the operator).
    pub fn set_operator_key(&self, key: &SigningKey) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES('operator_key', ?1)",
            params![&key.to_bytes()[..]],
        )?;
        Ok(())
    }

    /// Provision a terminal with a fresh random master secret, returned once (to be given to
    /// the bus); the store keeps only the key derived from it ([`station_key`]).
    pub fn add_terminal(&self, id: &str) -> Result<Secret, StoreError> {
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        self.add_terminal_with_secret(id, &secret)?;
        Ok(secret)
    }

    /// Provision a terminal whose bus holds `master`; the store keeps the derived key only.
    pub fn add_terminal_with_secret(&self, id: &str, master: &Secret) -> Result<(), StoreError> {
        if !valid_terminal_id(id) {
            return Err(StoreError::BadTerminalId);
        }
        let key = station_key(master, id);
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO terminals(id, secret, added_unix_s) VALUES(?1, ?2, ?3)",
            params![id, &key[..], now_unix_s()],
        )?;
        if n == 0 {
            return Err(StoreError::TerminalExists(id.to_string()));
        }
        Ok(())
    }

    /// The key the station authenticates `id` with (derived from the bus's master secret).
    pub fn terminal_key(&self, id: &str) -> Result<Option<Secret>, StoreError> {
        let s: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT secret FROM terminals WHERE id=?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        s.map(|s| <Secret>::try_from(s.as_slice()).map_err(|_| StoreError::Corrupt("secret")))
            .transpose()
    }

    /// Highest seq up to which every record of the terminal is stored or declared lost.
    pub fn contiguous_seq(&self, id: &str) -> Result<u64, StoreError> {
        let s: Option<i64> = self
            .conn
            .prepare_cached("SELECT contiguous_seq FROM terminals WHERE id=?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        Ok(s.unwrap_or(0) as u64)
    }

    /// Store one checked batch in one transaction and say what to acknowledge.
    /// `records` must be in strictly increasing seq order, all at or after `from_seq`.
    pub fn store_batch(
        &mut self,
        terminal: &str,
        from_seq: u64,
        records: &[Received],
    ) -> Result<Stored, StoreError> {
        let tx = self.conn.transaction()?;
        let mut stored = 0u32;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO records
                 (terminal, seq, kind, at_unix_s, fare_fen, channel, account, qr_counter, raw)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for r in records {
                let rec = &r.record;
                let qr = rec.qr.as_ref();
                stored += insert.execute(params![
                    terminal,
                    rec.seq as i64,
                    rec.kind as u8,
                    rec.at_unix_s,
                    rec.fare_fen,
                    qr.map(|q| q.account.channel),
                    qr.map(|q| q.account.account as i64),
                    qr.map(|q| q.counter),
                    &r.raw[..],
                ])? as u32;
            }
        }
        let declared_lost = lost_ranges(from_seq, records);
        {
            let mut lost = tx.prepare_cached(
                "INSERT OR REPLACE INTO lost(terminal, from_seq, to_seq) VALUES(?1, ?2, ?3)",
            )?;
            for (a, b) in &declared_lost {
                lost.execute(params![terminal, *a as i64, *b as i64])?;
            }
        }
        let contiguous_seq = advance_contiguous(&tx, terminal)?;
        let max_seq: i64 = tx
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM records WHERE terminal=?1")?
            .query_row(params![terminal], |r| r.get(0))?;
        tx.commit()?;
        Ok(Stored {
            ack: Ack {
                contiguous_seq,
                max_seq: max_seq as u64,
                stored,
            },
            declared_lost,
        })
    }

    /// Record a service counter's action and return the new blacklist version: an add adds
    /// its reason to the id's (an add of a reason already there changes nothing but is logged),
    /// a remove lifts its reason only, [`StoreError::NotListed`] if the id is not listed for it.
    pub fn blacklist_change(&mut self, change: &Change) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let kind = change.id.kind();
        let id = change.id.to_string();
        let reason = change.reason.as_str();
        match change.op {
            ChangeOp::Add => {
                tx.execute(
                    "INSERT OR IGNORE INTO blacklist_reasons(kind, id, reason)
                     VALUES(?1, ?2, ?3)",
                    params![kind, id, reason],
                )?;
            }
            ChangeOp::Remove => {
                // 解挂 lifts a lost report; it must not revive a cancelled or replaced card,
                // whose own rows stay.
                let n = tx.execute(
                    "DELETE FROM blacklist_reasons WHERE kind=?1 AND id=?2 AND reason=?3",
                    params![kind, id, reason],
                )?;
                if n == 0 {
                    return Err(StoreError::NotListed { id, reason });
                }
            }
        }
        let op = match change.op {
            ChangeOp::Add => "add",
            ChangeOp::Remove => "remove",
        };
        tx.execute(
            "INSERT INTO blacklist_changes(op, kind, id, reason, at_unix_s)
             VALUES(?1, ?2, ?3, ?4, ?5)",
            params![op, kind, id, reason, now_unix_s()],
        )?;
        let version = tx.last_insert_rowid() as u64;
        tx.commit()?;
        Ok(version)
    }

    pub fn blacklist_version(&self) -> Result<u64, StoreError> {
        let v: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM blacklist_changes",
            [],
            |r| r.get(0),
        )?;
        Ok(v as u64)
    }

    /// The changes that take version `after` to the current one, at most `max` of them
    /// (None when there are more: send a snapshot instead).
    pub fn blacklist_changes_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<Option<Vec<Change>>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT op, kind, id, reason FROM blacklist_changes WHERE version > ?1
             ORDER BY version LIMIT ?2",
        )?;
        let rows = st.query_map(params![after as i64, max as i64 + 1], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (op, kind, id, reason) = row?;
            let op = if op == "add" {
                ChangeOp::Add
            } else {
                ChangeOp::Remove
            };
            out.push(Change {
                op,
                id: parse_list_id(&kind, &id)?,
                reason: parse_reason(&reason)?,
            });
        }
        Ok((out.len() <= max).then_some(out))
    }

    /// The reasons `id` is listed for now (empty when it is not listed).
    pub fn blacklist_reasons(&self, id: &ListId) -> Result<ReasonSet, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT reason FROM blacklist_reasons WHERE kind=?1 AND id=?2")?;
        let rows = st.query_map(params![id.kind(), id.to_string()], |r| {
            r.get::<_, String>(0)
        })?;
        let mut reasons = ReasonSet::EMPTY;
        for row in rows {
            reasons = reasons.with(parse_reason(&row?)?);
        }
        Ok(reasons)
    }

    /// The whole blacklist at its current version.
    pub fn blacklist(&self) -> Result<Blacklist, StoreError> {
        let version = self.blacklist_version()?;
        let mut st = self
            .conn
            .prepare_cached("SELECT kind, id, reason FROM blacklist_reasons")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut entries = Vec::new();
        for row in rows {
            let (kind, id, reason) = row?;
            entries.push((parse_list_id(&kind, &id)?, parse_reason(&reason)?));
        }
        Ok(Blacklist::from_entries(version, entries))
    }

    /// Publish a new fare table or key file (`kind` "fares" or "keys"); returns its version.
    pub fn publish(&self, kind: &str, body: &[u8]) -> Result<u64, StoreError> {
        let version = self.downlink(kind)?.map_or(0, |(v, _)| v) + 1;
        self.conn.execute(
            "INSERT OR REPLACE INTO downlink(kind, version, body) VALUES(?1, ?2, ?3)",
            params![kind, version as i64, body],
        )?;
        Ok(version)
    }

    pub fn downlink(&self, kind: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT version, body FROM downlink WHERE kind=?1",
                params![kind],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?)
    }

    /// (terminal, seq) of every ride-code record that repeats one counted earlier (same
    /// channel, account and counter; the earliest by time, then terminal and seq, counts).
    pub fn qr_duplicates(&self) -> Result<HashSet<(String, u64)>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT terminal, seq FROM (
               SELECT terminal, seq, ROW_NUMBER() OVER (
                 PARTITION BY channel, account, qr_counter ORDER BY at_unix_s, terminal, seq) AS n
               FROM records WHERE kind = ?1)
             WHERE n > 1",
        )?;
        let rows = st.query_map(params![RecordKind::QrRide as u8], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The clearing view of every terminal.
    pub fn report(&self) -> Result<Report, StoreError> {
        let dups = self.qr_duplicates()?;
        let mut report = Report {
            qr_duplicates: dups.len() as u64,
            ..Report::default()
        };
        let ids: Vec<String> = self
            .conn
            .prepare("SELECT id FROM terminals UNION SELECT DISTINCT terminal FROM records")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in ids {
            let t = self.terminal_report(&id, &dups)?;
            for g in &t.gaps {
                tracing::warn!(terminal = %id, from = g[0], to = g[1], "depot: gap in records");
            }
            report.terminals.insert(id, t);
        }
        Ok(report)
    }

    fn terminal_report(
        &self,
        id: &str,
        dups: &HashSet<(String, u64)>,
    ) -> Result<TerminalReport, StoreError> {
        let mut t = TerminalReport::default();
        let mut st = self
            .conn
            .prepare_cached("SELECT seq, fare_fen FROM records WHERE terminal=?1 ORDER BY seq")?;
        let mut rows = st.query(params![id])?;
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)? as u64;
            let fare = row.get::<_, i64>(1)? as u64;
            if seq > t.max_seq + 1 {
                t.gaps.push([t.max_seq + 1, seq - 1]);
            }
            t.max_seq = seq;
            t.records += 1;
            if !dups.contains(&(id.to_string(), seq)) {
                t.fare_fen += fare;
            }
        }
        let mut st = self.conn.prepare_cached(
            "SELECT from_seq, to_seq FROM lost WHERE terminal=?1 ORDER BY from_seq",
        )?;
        t.declared_lost = st
            .query_map(params![id], |r| {
                Ok([r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64])
            })?
            .collect::<Result<_, _>>()?;
        Ok(t)
    }

    /// Every record in (terminal, seq) order, with its duplicate flag, to `f`.
    pub fn for_each_record(
        &self,
        mut f: impl FnMut(&str, &Record, bool) -> std::io::Result<()>,
    ) -> Result<(), ExportError> {
        let dups = self.qr_duplicates()?;
        let mut st = self
            .conn
            .prepare("SELECT terminal, raw FROM records ORDER BY terminal, seq")?;
        let mut rows = st.query([])?;
        while let Some(row) = rows.next()? {
            let terminal: String = row.get(0)?;
            let raw: Vec<u8> = row.get(1)?;
            let rec = <&[u8; RECORD_BYTES]>::try_from(raw.as_slice())
                .ok()
                .and_then(|b| Record::decode(b).ok())
                .ok_or(StoreError::Corrupt("record"))?;
            let dup = dups.contains(&(terminal.clone(), rec.seq));
            f(&terminal, &rec, dup)?;
        }
        Ok(())
    }

    /// Records stored in total.
    pub fn record_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("export: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for ExportError {
    fn from(e: rusqlite::Error) -> Self {
        ExportError::Store(e.into())
    }
}

fn parse_list_id(kind: &str, id: &str) -> Result<ListId, StoreError> {
    ListId::parse(kind, id).map_err(|_| StoreError::Corrupt("blacklist id"))
}

/// Move a blacklist table of one reason an id (before reason sets) into `blacklist_reasons`,
/// in one transaction, once.
fn move_one_reason_table(conn: &Connection) -> Result<(), StoreError> {
    let old: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type='table' AND name='blacklist')",
        [],
        |r| r.get(0),
    )?;
    if old {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT OR IGNORE INTO blacklist_reasons(kind, id, reason)
                 SELECT kind, id, reason FROM blacklist;
             DROP TABLE blacklist;
             COMMIT;",
        )?;
        tracing::info!("depot: blacklist table moved to one row a reason");
    }
    Ok(())
}

fn parse_reason(s: &str) -> Result<ListReason, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt("blacklist reason"))
}

/// Seq ranges of `from ..= last record` with no record: what the validator declares lost.
fn lost_ranges(from_seq: u64, records: &[Received]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut next = from_seq;
    for r in records {
        if r.record.seq > next {
            out.push((next, r.record.seq - 1));
        }
        next = r.record.seq + 1;
    }
    out
}

/// Move the terminal's contiguous seq over every stored or declared-lost seq after it.
fn advance_contiguous(tx: &rusqlite::Transaction<'_>, terminal: &str) -> Result<u64, StoreError> {
    let start: i64 = tx
        .prepare_cached("SELECT contiguous_seq FROM terminals WHERE id=?1")?
        .query_row(params![terminal], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let mut c = start as u64;
    let lost: Vec<(u64, u64)> = tx
        .prepare_cached(
            "SELECT from_seq, to_seq FROM lost WHERE terminal=?1 AND to_seq > ?2 ORDER BY from_seq",
        )?
        .query_map(params![terminal, c as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<Result<_, _>>()?;
    let mut lost = lost.into_iter().peekable();
    let mut st =
        tx.prepare_cached("SELECT seq FROM records WHERE terminal=?1 AND seq > ?2 ORDER BY seq")?;
    let mut rows = st.query(params![terminal, c as i64])?;
    let mut row = rows.next()?.map(|r| r.get::<_, i64>(0)).transpose()?;
    loop {
        if let Some(&(a, b)) = lost.peek() {
            if a <= c + 1 {
                c = c.max(b);
                lost.next();
                continue;
            }
        }
        match row {
            Some(s) if (s as u64) <= c => {}
            Some(s) if s as u64 == c + 1 => c += 1,
            _ => break,
        }
        row = rows.next()?.map(|r| r.get::<_, i64>(0)).transpose()?;
    }
    if c as i64 != start {
        tx.prepare_cached("UPDATE terminals SET contiguous_seq=?2 WHERE id=?1")?
            .execute(params![terminal, c as i64])?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reason_blacklist_table_is_moved_to_a_row_a_reason_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("depot.db");
        // The table as a station before reason sets made it.
        let old = Connection::open(&db).unwrap();
        old.execute_batch(
            "CREATE TABLE blacklist(kind TEXT NOT NULL, id TEXT NOT NULL, reason TEXT NOT NULL,
                 PRIMARY KEY(kind, id)) WITHOUT ROWID;
             INSERT INTO blacklist VALUES('card', '37140000000000000009', 'replaced');
             INSERT INTO blacklist VALUES('account', '2:1001', 'arrears');",
        )
        .unwrap();
        drop(old);
        let mut store = Store::open(&db).unwrap();
        let card = ListId::Card("37140000000000000009".parse().unwrap());
        assert_eq!(
            store.blacklist_reasons(&card).unwrap(),
            ReasonSet::of(ListReason::Replaced)
        );
        // Now the card can carry a second reason.
        store
            .blacklist_change(&Change {
                op: ChangeOp::Add,
                id: card,
                reason: ListReason::Lost,
            })
            .unwrap();
        drop(store);
        let store = Store::open(&db).unwrap();
        let list = store.blacklist().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list.get(&card),
            Some(
                [ListReason::Lost, ListReason::Replaced]
                    .into_iter()
                    .collect()
            )
        );
    }
}
