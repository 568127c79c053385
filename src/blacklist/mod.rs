//! The offline blacklist: card numbers and ride-code accounts that must be refused.
//!
//! This first version is an exact in-memory map; the provincial-scale structure, signed
//! snapshot and delta files, and the lock-free swap replace its insides behind the same
//! `get` / `apply` calls.

use std::collections::BTreeMap;

use crate::types::{ListId, ListReason};

/// Add or remove one entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChangeOp {
    Add,
    Remove,
}

/// One blacklist change, as a service counter makes it (挂失 adds `lost`, 解挂 removes it...).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Change {
    pub op: ChangeOp,
    pub id: ListId,
    pub reason: ListReason,
}

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("blacklist CSV must start with the header kind,id,reason")]
    Header,
    #[error("blacklist CSV line {line}: {what}")]
    Line { line: usize, what: String },
}

/// An exact blacklist at one version.
#[derive(Clone, Debug, Default)]
pub struct Blacklist {
    version: u64,
    entries: BTreeMap<ListId, ListReason>,
}

impl Blacklist {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn from_entries(
        version: u64,
        entries: impl IntoIterator<Item = (ListId, ListReason)>,
    ) -> Self {
        Blacklist {
            version,
            entries: entries.into_iter().collect(),
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The reason `id` is listed, or None for a card or account in good standing.
    pub fn get(&self, id: &ListId) -> Option<ListReason> {
        self.entries.get(id).copied()
    }

    /// Apply one change in place (a replay event, a counter action on the depot's copy).
    pub fn apply(&mut self, change: &Change) {
        match change.op {
            ChangeOp::Add => {
                self.entries.insert(change.id, change.reason);
            }
            ChangeOp::Remove => {
                self.entries.remove(&change.id);
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (ListId, ListReason)> + '_ {
        self.entries.iter().map(|(k, v)| (*k, *v))
    }
}

/// Parse replay.md's BLACKLIST.csv: header `kind,id,reason`, then one entry a line.
pub fn parse_csv(text: &str) -> Result<Vec<(ListId, ListReason)>, CsvError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim() == "kind,id,reason" => {}
        _ => return Err(CsvError::Header),
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |what: String| CsvError::Line { line: i + 1, what };
        let mut f = line.split(',');
        let (Some(kind), Some(id), Some(reason), None) = (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(bad("expected three fields kind,id,reason".into()));
        };
        let id = ListId::parse(kind.trim(), id.trim()).map_err(|e| bad(e.to_string()))?;
        let reason: ListReason = reason.trim().parse().map_err(bad)?;
        out.push((id, reason));
    }
    Ok(out)
}
