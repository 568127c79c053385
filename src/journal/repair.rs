//! Repairs of damaged side files: the files a validator reads when it starts (upload cursor,
//! journal identity, pending debits, downlink files, pinned operator key) each have a
//! fallback that keeps the bus running and loses nothing (the table is in
//! `docs/reliability.md`). Every time a fallback is taken it is reported here, loudly: an
//! `error` event on standard error, and a line in the data folder's repair log, which
//! `journal show` counts in its summary.
//!
//! ## `repairs.log`
//!
//! One JSON object a line, appended and synced:
//! `{"file": "acked", "problem": "...", "fallback": "..."}`. A line that does not parse (a
//! torn append) is counted under `"unreadable"`, never fatal. When the log passes
//! [`REPAIR_LOG_BYTES_MAX`] it is renamed `repairs.log.old` (replacing the older one) and a
//! new one started, so it stays bounded; both are counted.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

/// Name of the repair log in the data folder.
pub const REPAIR_LOG: &str = "repairs.log";
const REPAIR_LOG_OLD: &str = "repairs.log.old";
/// Size at which the repair log is rotated, bytes (about 5,000 repairs).
pub const REPAIR_LOG_BYTES_MAX: u64 = 1 << 20;

/// The side files that have a fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SideFile {
    /// `acked`: the journal's upload cursor.
    Cursor,
    /// `journal.id`: the journal's identity (epoch).
    JournalId,
    /// The grey records (灰记录): intents to debit not yet settled.
    PendingDebits,
    /// `downlink/operator.pub`: the pinned operator key.
    OperatorKey,
    /// `downlink/blacklist.bin`.
    Blacklist,
    /// `downlink/fares.signed`.
    FareTable,
    /// `downlink/keys.signed`.
    RideCodeKeys,
    /// `downlink/verified-certs.bin`: the fleet's verified ride-code certificates.
    VerifiedCerts,
}

impl SideFile {
    pub fn as_str(self) -> &'static str {
        match self {
            SideFile::Cursor => "acked",
            SideFile::JournalId => "journal.id",
            SideFile::PendingDebits => "pending_debits",
            SideFile::OperatorKey => "operator.pub",
            SideFile::Blacklist => "blacklist.bin",
            SideFile::FareTable => "fares.signed",
            SideFile::RideCodeKeys => "keys.signed",
            SideFile::VerifiedCerts => "verified-certs.bin",
        }
    }
}

/// Report a fallback taken for a damaged side file: an `error` event, and a line in the
/// repair log of `data_dir`. Writing the log may fail (the same storage is failing): that is
/// logged too, never fatal, since the bus must keep running.
pub fn report(data_dir: &Path, file: SideFile, problem: &str, fallback: &str) {
    tracing::error!(
        file = file.as_str(),
        problem,
        fallback,
        "side file damaged: repaired by its fallback"
    );
    let line = serde_json::json!({
        "file": file.as_str(),
        "problem": problem,
        "fallback": fallback,
    })
    .to_string();
    if let Err(e) = append(data_dir, &line) {
        tracing::error!(error = %e, dir = %data_dir.display(), "repair log not written");
    }
}

fn append(data_dir: &Path, line: &str) -> std::io::Result<()> {
    fs::create_dir_all(data_dir)?;
    let path = data_dir.join(REPAIR_LOG);
    if fs::metadata(&path).is_ok_and(|m| m.len() >= REPAIR_LOG_BYTES_MAX) {
        fs::rename(&path, data_dir.join(REPAIR_LOG_OLD))?;
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)?;
    // A torn last line is closed first, so it does not swallow this one.
    let torn = ends_without_newline(&mut f)?;
    let text = format!("{}{line}\n", if torn { "\n" } else { "" });
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

fn ends_without_newline(f: &mut fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// Repairs counted in a data folder's repair log, by file name (`"unreadable"` for lines
/// that do not parse).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepairCounts {
    pub total: u64,
    pub by_file: BTreeMap<String, u64>,
}

impl RepairCounts {
    pub fn of(&self, file: SideFile) -> u64 {
        self.by_file.get(file.as_str()).copied().unwrap_or(0)
    }
}

/// Count the repairs logged in `data_dir` (read-only; a missing log is no repair).
pub fn counts(data_dir: &Path) -> RepairCounts {
    let mut out = RepairCounts::default();
    for name in [REPAIR_LOG_OLD, REPAIR_LOG] {
        let Ok(bytes) = fs::read(data_dir.join(name)) else {
            continue;
        };
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let file = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["file"].as_str().map(str::to_string))
                .unwrap_or_else(|| "unreadable".to_string());
            *out.by_file.entry(file).or_default() += 1;
            out.total += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_are_counted_by_file_and_a_torn_line_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(counts(dir.path()).total, 0);
        report(dir.path(), SideFile::Cursor, "empty", "resend from seq 1");
        report(dir.path(), SideFile::Cursor, "empty", "resend from seq 1");
        report(dir.path(), SideFile::Blacklist, "crc", "previous version 3");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(REPAIR_LOG))
            .unwrap();
        f.write_all(b"{\"file\": \"ack").unwrap();
        report(dir.path(), SideFile::Cursor, "crc", "resend from seq 1");
        let c = counts(dir.path());
        assert_eq!(c.total, 5);
        assert_eq!(c.of(SideFile::Cursor), 3);
        assert_eq!(c.of(SideFile::Blacklist), 1);
        assert_eq!(c.by_file["unreadable"], 1);
    }
}
