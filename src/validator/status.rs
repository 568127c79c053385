//! The validator's status line: one JSON object, written to `DATA/status.json` (replaced
//! atomically) at start, after every uplink attempt, on SIGUSR1 and at stop, and printed on
//! standard error on SIGUSR1 (standard output carries only decision lines).
//!
//! ```json
//! {"status": {"terminal_id": "bus-0001", "at": "2026-11-28T08:00:05+08:00",
//!   "records_waiting": 3, "durable_seq": 120, "acked_seq": 117,
//!   "last_upload": {"at": "...", "ok": true, "uploaded": 17, "error": null,
//!                   "installed": ["BlacklistDelta@12"], "refused": []},
//!   "installed": {"blacklist": 12, "fares": 2, "keys": 1},
//!   "reader": "ready", "scanner": "connected",
//!   "taps": 40, "scans": 12, "scans_malformed": 1,
//!   "repairs_at_start": ["..."], "stopping": false}}
//! ```
//!
//! Fields are described in docs/config.md.

use std::path::Path;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::scanner::ScannerState;
use super::{ReaderState, Shared};

/// The status file's name in the data folder.
pub const STATUS_FILE: &str = "status.json";

/// What the uplink last did, and what is installed in the running engine.
#[derive(Clone, Debug, Default)]
pub struct UplinkStatus {
    /// When the last session ended (RFC 3339), if any.
    pub last_at: Option<String>,
    pub last_ok: bool,
    pub last_error: Option<String>,
    /// Records the last successful session uploaded.
    pub last_uploaded: u64,
    pub last_installed: Vec<String>,
    pub last_refused: Vec<String>,
    /// Sessions that succeeded since start.
    pub sessions_ok: u64,
    /// Versions running in the engine (0: none installed).
    pub blacklist_version: u64,
    pub fares_version: u64,
    pub keys_version: u64,
    /// The fleet's verified-certificate set.
    pub cert_set_version: u64,
}

/// The status line of `shared` now.
pub fn status_line(shared: &Shared, terminal_id: &str) -> Value {
    let durable = shared.durable_seq.load(Ordering::Relaxed);
    let acked = shared.acked_seq.load(Ordering::Relaxed);
    let up = shared
        .uplink
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    json!({"status": {
        "terminal_id": terminal_id,
        "at": shared.now().to_rfc3339(),
        "records_waiting": durable.saturating_sub(acked),
        "durable_seq": durable,
        "acked_seq": acked,
        "last_upload": up.last_at.as_ref().map(|at| json!({
            "at": at,
            "ok": up.last_ok,
            "uploaded": up.last_uploaded,
            "error": up.last_error,
            "installed": up.last_installed,
            "refused": up.last_refused,
        })),
        "sessions_ok": up.sessions_ok,
        "installed": {
            "blacklist": shared.blacklist.version(),
            "fares": up.fares_version,
            "keys": up.keys_version,
            "verified_certs": up.cert_set_version,
        },
        "reader": ReaderState::from_u8(shared.reader_state.load(Ordering::Relaxed)).as_str(),
        "scanner": ScannerState::from_u8(shared.scanner_state.load(Ordering::Relaxed)).as_str(),
        "taps": shared.counters.taps.load(Ordering::Relaxed),
        "scans": shared.counters.scans.load(Ordering::Relaxed),
        "scans_malformed": shared.counters.scans_malformed.load(Ordering::Relaxed),
        "repairs_at_start": shared.repairs_at_start,
        "stopping": shared.stopping(),
    }})
}

/// Replace `data_dir/status.json` with `line` (written to a temporary file, then renamed:
/// a reader never sees half a line). Not synced: the status is for now, not for after a
/// power cut.
pub fn write_status_file(data_dir: &Path, line: &Value) -> std::io::Result<()> {
    let tmp = data_dir.join("status.json.tmp");
    std::fs::write(&tmp, format!("{line}\n"))?;
    std::fs::rename(&tmp, data_dir.join(STATUS_FILE))
}
