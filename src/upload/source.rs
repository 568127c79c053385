//! Where an upload session takes its records from and where it moves the cursor: the
//! journal itself (the one-shot `upload` command), or a running validator's journal seen
//! from its uplink task ([`crate::validator::uplink`]), which reads the durable files and
//! hands the cursor back to the tap thread instead of writing under it.

use crate::journal::acquirer::AcquirerEntry;
use crate::journal::proofs::Proof;
use crate::journal::{Held, Journal, JournalError};

/// The journal as an upload session sees it.
pub trait RecordSource {
    /// Highest seq the depot is known to hold.
    fn acked_seq(&self) -> u64;
    /// Durable records with seq above `after`, at most `max`, in seq order, with their bytes
    /// as stored (sent as they are: the chain MAC is the journal's, never made again).
    fn read_after(&self, after: u64, max: usize) -> Result<Vec<Held>, JournalError>;
    /// The depot holds every record up to `seq` (authenticated): move the cursor forward.
    fn set_acked(&mut self, seq: u64) -> Result<(), JournalError>;
    /// The journal's identity: its epoch and the first seq of the epoch.
    fn identity(&self) -> Result<(u64, u64), JournalError>;
    /// Highest seq durable: the cursor never moves past it.
    fn durable_seq(&self) -> u64;
    /// The seq before the oldest record still held.
    fn held_from_seq(&self) -> Result<u64, JournalError>;
    /// The ride codes kept as proof of the durable records above `after`
    /// ([`crate::journal::proofs`]); none by default.
    fn proofs_after(&self, after: u64) -> Vec<Proof> {
        let _ = after;
        Vec::new()
    }
    /// The acquirer's data of the durable QuickPass records above `after`
    /// ([`crate::journal::acquirer`]); none by default.
    fn acquirer_after(&self, after: u64) -> Vec<AcquirerEntry> {
        let _ = after;
        Vec::new()
    }
}

impl RecordSource for Journal {
    fn acked_seq(&self) -> u64 {
        Journal::acked_seq(self)
    }

    fn read_after(&self, after: u64, max: usize) -> Result<Vec<Held>, JournalError> {
        Journal::read_after(self, after, max)
    }

    fn set_acked(&mut self, seq: u64) -> Result<(), JournalError> {
        Journal::set_acked(self, seq)
    }

    fn identity(&self) -> Result<(u64, u64), JournalError> {
        Ok((self.epoch(), self.epoch_first_seq()))
    }

    fn durable_seq(&self) -> u64 {
        Journal::durable_seq(self)
    }

    fn held_from_seq(&self) -> Result<u64, JournalError> {
        Journal::held_from_seq(self)
    }

    fn proofs_after(&self, after: u64) -> Vec<Proof> {
        durable_proofs(self.dir(), after, self.durable_seq())
    }

    fn acquirer_after(&self, after: u64) -> Vec<AcquirerEntry> {
        durable_acquirer(self.dir(), self.epoch(), after, self.durable_seq())
    }
}

/// The QuickPass acquirer entries in the journal folder `dir` of the records of `epoch` above
/// `after` and at most `durable`; an unreadable file is logged and sends none (the records
/// go up without them, and the entries stay on the bus for the next session).
pub fn durable_acquirer(
    dir: &std::path::Path,
    epoch: u64,
    after: u64,
    durable: u64,
) -> Vec<AcquirerEntry> {
    crate::journal::acquirer::read_range(dir, epoch, after, durable).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "upload: QuickPass acquirer data unreadable: records sent without it");
        Vec::new()
    })
}

/// The proofs in the journal folder `dir` of records above `after` and at most `durable`;
/// an unreadable proof file is logged and sends none (the records go up without them).
pub fn durable_proofs(dir: &std::path::Path, after: u64, durable: u64) -> Vec<Proof> {
    match crate::journal::proofs::read_after(dir, after) {
        Ok(mut p) => {
            p.retain(|(seq, _)| *seq <= durable);
            p
        }
        Err(e) => {
            tracing::warn!(error = %e, "upload: ride-code proofs unreadable: records sent without them");
            Vec::new()
        }
    }
}
