//! The uplink task: while the validator runs, whenever the depot answers, upload every record
//! it has not acknowledged, take home the downlink files, and apply them to the running
//! engine. No network state ever reaches the tap path: records are read from the journal's
//! durable files, the cursor is handed to the tap thread ([`Shared::ack_from_depot`]), the
//! blacklist is swapped through its handle without the engine's lock, and fares and
//! ride-code keys are parsed here and swapped in under the lock between two decisions.
//!
//! What is installed lives in the data folder's `downlink/` ([`DownlinkDir`]), so a restart
//! starts from it ([`apply_downlink`] runs at start too).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::status::{status_line, write_status_file};
use super::Shared;
use crate::journal::{Held, JournalError};
use crate::ride_code::{ChannelKeys, RideCodeConfig};
use crate::upload::client::{upload_journal, UploadConfig};
use crate::upload::downlink::DownlinkDir;
use crate::upload::source::RecordSource;

/// First pause after a failed attempt, milliseconds; doubled each time.
pub const UPLINK_BACKOFF_MS_MIN: u64 = 1_000;
/// Longest pause between attempts while the depot is away, milliseconds.
pub const UPLINK_BACKOFF_MS_MAX: u64 = 60_000;

/// A running validator's journal as the upload session sees it: durable records read from
/// the files (never past what the tap thread published as durable), the cursor handed back.
pub struct LiveJournal<'a> {
    shared: &'a Shared,
    dir: PathBuf,
    acked: u64,
}

impl<'a> LiveJournal<'a> {
    pub fn new(shared: &'a Shared, dir: &Path) -> Self {
        LiveJournal {
            acked: shared.acked_seq.load(Ordering::Relaxed),
            shared,
            dir: dir.to_path_buf(),
        }
    }
}

impl RecordSource for LiveJournal<'_> {
    fn acked_seq(&self) -> u64 {
        self.acked
    }

    fn read_after(&self, after: u64, max: usize) -> Result<Vec<Held>, JournalError> {
        // A record written but not yet synced is not durable: it might vanish in a power cut
        // and its seq be reused, so it is not sent before the tap thread says it is durable.
        let durable = self.shared.durable_seq.load(Ordering::Acquire);
        let mut recs = crate::journal::read_after(&self.dir, after, max)?;
        recs.retain(|r| r.record.seq <= durable);
        Ok(recs)
    }

    fn identity(&self) -> Result<(u64, u64), JournalError> {
        // The tap thread's journal wrote it when it opened (repairing it if it had to).
        crate::journal::read_identity_file(&self.dir).ok_or_else(|| {
            JournalError::Io(std::io::Error::other(
                "journal identity unreadable: the uplink waits for the next start",
            ))
        })
    }

    fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    fn held_from_seq(&self) -> Result<u64, JournalError> {
        let (_, first) = self.identity()?;
        crate::journal::held_from_seq(&self.dir, first, self.durable_seq())
    }

    fn proofs_after(&self, after: u64) -> Vec<crate::journal::proofs::Proof> {
        crate::upload::source::durable_proofs(&self.dir, after, self.durable_seq())
    }

    fn acquirer_after(&self, after: u64) -> Vec<crate::journal::acquirer::AcquirerEntry> {
        let Ok((epoch, _)) = self.identity() else {
            return Vec::new();
        };
        crate::upload::source::durable_acquirer(&self.dir, epoch, after, self.durable_seq())
    }

    fn set_acked(&mut self, seq: u64) -> Result<(), JournalError> {
        let seq = seq.min(self.shared.durable_seq.load(Ordering::Acquire));
        if seq > self.acked {
            self.acked = seq;
            self.shared.ack_from_depot(seq);
        }
        Ok(())
    }
}

/// Versions the running engine holds after [`apply_downlink`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub blacklist: u64,
    pub fares: u64,
    pub keys: u64,
    pub cert_set: u64,
}

/// Bring the running engine up to the files held in `data_dir/downlink/`: the blacklist is
/// swapped through its handle (taps go on), fares, keys and the verified-certificate set are
/// swapped under the lock.
/// Files are read and checked here, off the tap path. A file that no longer checks is kept
/// out and reported.
pub fn apply_downlink(shared: &Shared, data_dir: &Path) -> Applied {
    let dir = DownlinkDir::new(data_dir);
    let (had_fares, had_keys) = {
        let up = shared.uplink.lock().unwrap_or_else(|p| p.into_inner());
        (up.fares_version, up.keys_version)
    };
    let list = dir.blacklist();
    if list.version() > shared.blacklist.version() {
        let v = list.version();
        match shared.blacklist.replace(list) {
            Ok(_) => tracing::info!(version = v, "blacklist swapped in"),
            Err(e) => tracing::warn!(version = v, error = %e, "blacklist kept out"),
        }
    }
    let mut applied = Applied {
        blacklist: shared.blacklist.version(),
        fares: had_fares,
        keys: had_keys,
        cert_set: 0,
    };
    if let Some((v, table)) = dir.fare_table() {
        if v != had_fares {
            shared.engine().set_fares(table);
            applied.fares = v;
            tracing::info!(version = v, "fare table swapped in");
        }
    }
    if let Some((v, text)) = dir.ride_code_keys() {
        if v != had_keys {
            match ChannelKeys::from_json(&text) {
                Ok(keys) => {
                    shared
                        .engine()
                        .set_ride_code_keys(keys, RideCodeConfig::default());
                    applied.keys = v;
                    tracing::info!(version = v, "ride-code keys swapped in");
                }
                Err(e) => tracing::warn!(version = v, error = %e, "ride-code key file refused"),
            }
        }
    }
    // Read and checked before the engine's lock is taken; swapped in between two scans.
    let certs = dir.cert_set();
    applied.cert_set = certs.version();
    if certs.version() != shared.engine().verified_certs().version() {
        let (v, n) = (certs.version(), certs.len());
        shared
            .engine()
            .set_verified_certs(std::sync::Arc::new(certs));
        tracing::info!(
            version = v,
            entries = n,
            "verified-certificate set swapped in"
        );
    }
    let mut up = shared.uplink.lock().unwrap_or_else(|p| p.into_inner());
    up.blacklist_version = applied.blacklist;
    up.fares_version = applied.fares;
    up.keys_version = applied.keys;
    up.cert_set_version = applied.cert_set;
    applied
}

/// One upload session and what it brought, applied; the status updated either way.
/// Returns whether the depot answered.
pub async fn attempt(shared: &Shared, cfg: &UploadConfig, terminal_id: &str) -> bool {
    let mut src = LiveJournal::new(shared, &cfg.data_dir);
    let result = upload_journal(&mut src, cfg).await;
    let at = shared.now().to_rfc3339();
    let ok = match result {
        Ok(report) => {
            for r in &report.refused {
                tracing::warn!(file = %r, "downlink file refused");
            }
            {
                let mut up = shared.uplink.lock().unwrap_or_else(|p| p.into_inner());
                up.last_at = Some(at);
                up.last_ok = true;
                up.last_error = None;
                up.last_uploaded = report.uploaded;
                up.last_installed = report.installed.clone();
                up.last_refused = report.refused.clone();
                up.sessions_ok += 1;
            }
            apply_downlink(shared, &cfg.data_dir);
            true
        }
        Err(e) => {
            tracing::info!(error = %e, "depot not reached; trying again later");
            let mut up = shared.uplink.lock().unwrap_or_else(|p| p.into_inner());
            up.last_at = Some(at);
            up.last_ok = false;
            up.last_error = Some(e.to_string());
            false
        }
    };
    if let Err(e) = write_status_file(&cfg.data_dir, &status_line(shared, terminal_id)) {
        tracing::warn!(error = %e, "status file not written");
    }
    ok
}

/// Try the depot every `interval` while it answers, backing off from
/// [`UPLINK_BACKOFF_MS_MIN`] to [`UPLINK_BACKOFF_MS_MAX`] while it does not, until `stop`.
pub async fn run(shared: Arc<Shared>, cfg: UploadConfig, terminal_id: String, interval: Duration) {
    let mut backoff = Duration::from_millis(UPLINK_BACKOFF_MS_MIN);
    while !shared.stopping() {
        let pause = if attempt(&shared, &cfg, &terminal_id).await {
            backoff = Duration::from_millis(UPLINK_BACKOFF_MS_MIN);
            interval
        } else {
            let p = backoff;
            backoff = (backoff * 2).min(Duration::from_millis(UPLINK_BACKOFF_MS_MAX));
            p
        };
        let step = Duration::from_millis(100);
        let mut left = pause;
        while !left.is_zero() && !shared.stopping() {
            let s = left.min(step);
            tokio::time::sleep(s).await;
            left -= s;
        }
    }
}
