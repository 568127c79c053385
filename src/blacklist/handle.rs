//! The bus's live blacklist: taps read it without a lock while a new version is verified and
//! built on another thread and swapped in with one atomic pointer store.
//!
//! A tap sees the old version or the new one, whole, never a mix: a version is immutable once
//! published. Readers never wait: [`BlacklistHandle::get`] is an `arc-swap` load (no lock, no
//! syscall) and a lookup. The writer also frees the old version itself, after the last tap
//! that held it lets go, so a tap never pays for freeing a 150 MB base or a large overlay.
//!
//! ```
//! use fare_validator::blacklist::{Blacklist, BlacklistHandle};
//! let handle = BlacklistHandle::new(Blacklist::empty());
//! let id = fare_validator::types::ListId::Card("37140000000000000001".parse().unwrap());
//! assert_eq!(handle.get(&id), None);
//! ```

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use ed25519_dalek::VerifyingKey;

use super::file::{open_delta, open_snapshot, BlacklistFileError, Delta};
use super::Blacklist;
use crate::types::{ListId, ReasonSet};

/// How long the writer waits for the last tap holding a retired version before it frees the
/// version anyway (taps hold a version for one lookup, well under a microsecond).
pub const RETIRE_WAIT_MS_MAX: u64 = 1_000;
const RETIRE_POLL_US: u64 = 100;

/// The current blacklist of a validator.
pub struct BlacklistHandle {
    current: ArcSwap<Blacklist>,
    /// Serialises writers only (a delta must start from the version it is applied to).
    writer: Mutex<()>,
}

impl BlacklistHandle {
    pub fn new(list: Blacklist) -> Self {
        BlacklistHandle {
            current: ArcSwap::from_pointee(list),
            writer: Mutex::new(()),
        }
    }

    /// The tap path: the reasons `id` is listed for in the current version.
    #[inline]
    pub fn get(&self, id: &ListId) -> Option<ReasonSet> {
        self.current.load().get(id)
    }

    /// The current version, for several lookups against one version. Hold it briefly.
    pub fn load(&self) -> Guard<Arc<Blacklist>> {
        self.current.load()
    }

    pub fn version(&self) -> u64 {
        self.current.load().version()
    }

    /// Verify a delta file and swap in the list it produces. Call off the tap path. On any
    /// error the current list stays and the reason is logged and returned.
    pub fn install_delta_file(
        &self,
        bytes: &[u8],
        key: &VerifyingKey,
    ) -> Result<u64, BlacklistFileError> {
        let result = open_delta(bytes, key).and_then(|delta| self.install_delta(&delta));
        if let Err(e) = &result {
            tracing::warn!(error = %e, version = self.version(), "blacklist delta refused; keeping the current list");
        }
        result
    }

    /// Apply `delta` to the current version on this thread and swap the result in.
    pub fn install_delta(&self, delta: &Delta) -> Result<u64, BlacklistFileError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let next = self.current.load().with_delta(delta)?;
        let version = next.version();
        self.publish(next);
        Ok(version)
    }

    /// Verify a snapshot file and swap it in; a snapshot older than the current list is refused.
    pub fn install_snapshot_file(
        &self,
        bytes: impl Into<super::aligned::AlignedBytes>,
        key: &VerifyingKey,
    ) -> Result<u64, BlacklistFileError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current.load().version();
        let result = open_snapshot(bytes, Some(key)).and_then(|list| {
            if list.version() < current {
                Err(BlacklistFileError::Stale {
                    current,
                    file: list.version(),
                })
            } else {
                Ok(list)
            }
        });
        match result {
            Ok(list) => {
                let version = list.version();
                self.publish(list);
                Ok(version)
            }
            Err(e) => {
                tracing::warn!(error = %e, version = current, "blacklist snapshot refused; keeping the current list");
                Err(e)
            }
        }
    }

    /// Fold the overlay into a new base when it has grown past `overlay_max` (background).
    pub fn compact_if_over(&self, overlay_max: usize) -> bool {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current.load_full();
        if current.overlay_len() <= overlay_max {
            return false;
        }
        let next = current.compacted();
        drop(current);
        self.publish(next);
        true
    }

    /// Apply one change (a replay event, a counter action seen on the bus) and swap it in.
    /// It lands in the overlay, so the base is shared, not copied.
    pub fn apply_change(&self, change: &super::Change) {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Blacklist::clone(&self.current.load());
        next.apply(change);
        self.publish(next);
    }

    /// Swap in a whole list (verified by the caller). Versions only go up: a list older than
    /// the current one is refused ([`BlacklistFileError::Stale`]) and the current one kept.
    pub fn replace(&self, list: Blacklist) -> Result<u64, BlacklistFileError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current.load().version();
        if list.version() < current {
            tracing::warn!(
                current,
                file = list.version(),
                "blacklist older than the list in use refused"
            );
            return Err(BlacklistFileError::Stale {
                current,
                file: list.version(),
            });
        }
        let version = list.version();
        self.publish(list);
        Ok(version)
    }

    /// Install a delta file on a new thread at background priority
    /// ([`crate::sched::set_background_priority`]); taps go on meanwhile.
    pub fn spawn_install_delta(
        self: &Arc<Self>,
        bytes: Vec<u8>,
        key: VerifyingKey,
    ) -> thread::JoinHandle<Result<u64, BlacklistFileError>> {
        let handle = Arc::clone(self);
        thread::spawn(move || {
            crate::sched::set_background_priority();
            handle.install_delta_file(&bytes, &key)
        })
    }

    fn publish(&self, next: Blacklist) {
        let old = self.current.swap(Arc::new(next));
        retire(old);
    }
}

/// Free a replaced version on the writer's thread once no tap holds it. `swap` has already
/// turned every reader's borrowed reference into a counted one, so the count is exact.
fn retire(old: Arc<Blacklist>) {
    let started = Instant::now();
    while Arc::strong_count(&old) > 1 {
        if started.elapsed() > Duration::from_millis(RETIRE_WAIT_MS_MAX) {
            tracing::warn!("a reader still holds a retired blacklist version; it will free it");
            return;
        }
        thread::sleep(Duration::from_micros(RETIRE_POLL_US));
    }
    drop(old);
}
