//! The offline blacklist: card numbers and ride-code accounts that every bus must refuse on
//! the first tap, with no network.
//!
//! # The card lifecycle, as the list sees it
//!
//! | counter action | change | effect on a bus |
//! | --- | --- | --- |
//! | 挂失 report lost | add card, `lost` | refused, not locked (the holder may find it) |
//! | 解挂 cancel the loss report | remove card, `lost` | rides again |
//! | 补领 / 换领 / 换发 reissue | add the *old* card, `replaced` | refused and locked on the spot |
//! | 注销 cancel | add card, `cancelled` | refused and locked on the spot |
//! | unpaid ride-code rides | add account, `arrears` | ride codes of the account refused |
//! | arrears settled | remove account, `arrears` | the account rides again |
//!
//! An id is listed for a *set* of reasons ([`ReasonSet`]): an add adds its reason to the set,
//! a remove lifts only the reason it names, and the id stays listed while any reason remains.
//! A card reported lost and later reissued is `lost` and `replaced`; a late 解挂 leaves it
//! `replaced`, so a dead card never comes back by accident, and it is locked while any
//! `replaced` or `cancelled` remains ([`ReasonSet::locks_card`]).
//!
//! # Structure
//!
//! A [`Blacklist`] is a compact immutable *base* ([`lines`]: one 64-byte cache line answers a
//! lookup, about 8.3 bytes a card entry at 20 million, its reasons a code of 0 to 4 bits inside
//! the entry (the set's place in the table's palette, or the set itself), exact, read in place
//! from the signed
//! snapshot file; [`packed`] holds the few entries of full lines) shared by `Arc`, under a
//! small hashed *overlay* of the adds and removes since that base. [`Blacklist::apply`] changes
//! only the overlay, so a single change costs a tree insert and a delta of 100,000 changes
//! costs 100,000 of them, never a copy of the base. [`Blacklist::compacted`] folds the overlay
//! into a new base (depot side, or a background thread past [`OVERLAY_COMPACT_ENTRIES`]).
//!
//! Memory at 20 million entries: the base is about 170 MB (the snapshot file, cache-aligned in
//! huge pages, [`aligned`]); a delta adds about [`OVERLAY_ENTRY_BYTES`] a change and never
//! copies the base. Installing a whole new snapshot, or compacting, holds two bases until the
//! swap (about 340 MB): on a
//! 256 MiB validator at that scale, buses should live on deltas and take a snapshot only at
//! first install.
//!
//! On a bus the list lives in a [`BlacklistHandle`]: taps read the current version without a
//! lock; a delta or snapshot is verified and built on another thread and swapped in at once.
//! Files: [`file`] (signed snapshots and deltas, CSV, the loader).

pub mod aligned;
pub mod bench;
pub mod file;
pub mod handle;
pub mod lines;
pub mod packed;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use crate::types::{ListId, ListIdError, ListReason, ReasonSet};
use aligned::AlignedBytes;
use lines::LineTable;
use packed::{Coding, Space};

pub use file::{load_blacklist_file, BlacklistFileError, Delta};
pub use handle::BlacklistHandle;

/// Past this many overlay entries a background compaction pays for itself (the overlay costs
/// about [`OVERLAY_ENTRY_BYTES`] an entry against the base's ~7).
pub const OVERLAY_COMPACT_ENTRIES: usize = 1_000_000;
/// Estimated heap bytes of one overlay entry (its hash-map slot: key, value and control byte,
/// at the map's load factor).
pub const OVERLAY_ENTRY_BYTES: usize = 48;
/// How many changes ahead [`Blacklist::apply_all`] prefetches the base line: a memory access
/// (~150 ns on the machines measured) is covered several times over by the work on the
/// changes in between, and eight prefetches in flight are well within what a core tracks.
const APPLY_PREFETCH_AHEAD: usize = 8;

/// Add or remove one reason of an entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChangeOp {
    /// List the id for this reason too (listing it if it was not).
    Add,
    /// Lift this reason only; the id stays listed while another remains.
    Remove,
}

/// One blacklist change, as a service counter makes it (挂失 adds `lost`, 解挂 removes it,
/// 补领 adds `replaced` to the old card...).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Change {
    pub op: ChangeOp,
    pub id: ListId,
    pub reason: ListReason,
}

impl Change {
    /// The entry for `current` (what the list says now) after this change: None when no
    /// reason is left.
    pub fn result(&self, current: Option<ReasonSet>) -> Option<ReasonSet> {
        let current = current.unwrap_or(ReasonSet::EMPTY);
        let after = match self.op {
            ChangeOp::Add => current.with(self.reason),
            ChangeOp::Remove => current.without(self.reason),
        };
        (!after.is_empty()).then_some(after)
    }
}

/// Why a line of BLACKLIST.csv was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("blacklist CSV must start with the header kind,id,reason")]
    Header,
    #[error("blacklist CSV line {line}: expected three fields kind,id,reason")]
    Fields { line: usize },
    #[error("blacklist CSV line {line}: {source}")]
    Id { line: usize, source: ListIdError },
    #[error("blacklist CSV line {line}: reason must be lost, replaced, cancelled or arrears, not {found:?}")]
    Reason { line: usize, found: String },
}

/// The immutable line tables and the bytes they live in (a whole snapshot file, or one built
/// in memory with the payload at the same offset, so lines are cache-aligned in both).
pub(crate) struct Base {
    bytes: AlignedBytes,
    payload_at: usize,
    cards: LineTable,
    accounts: LineTable,
}

impl Base {
    /// Tables for cards then accounts, starting at `at` and ending exactly at the end, their
    /// entries' reasons in `coding`. Tables of reason sets are used in place; format 1 tables
    /// (one reason an entry) are converted into a new base, once, when opened.
    pub(crate) fn parse(
        bytes: AlignedBytes,
        at: usize,
        coding: Coding,
    ) -> Result<Base, BlacklistFileError> {
        let cards = LineTable::parse(&bytes, at, Space::Cards, coding)?;
        let accounts = LineTable::parse(&bytes, cards.end, Space::Accounts, coding)?;
        if accounts.end != bytes.len() {
            return Err(BlacklistFileError::Payload("bytes after the account table"));
        }
        if coding == Coding::OneReason {
            let cards: Vec<u128> = cards.words(&bytes).collect();
            let accounts: Vec<u128> = accounts.words(&bytes).collect();
            return Ok(Base::from_words(&cards, &accounts));
        }
        Ok(Base {
            bytes,
            payload_at: at,
            cards,
            accounts,
        })
    }

    /// Build from sort words (see [`packed::sort_word`]), each space sorted and unique.
    fn from_words(cards: &[u128], accounts: &[u128]) -> Base {
        // The payload goes where a snapshot file puts it, after the signed header.
        let mut bytes = vec![0u8; crate::signed::HEADER_LEN];
        lines::encode(&mut bytes, Space::Cards, cards);
        lines::encode(&mut bytes, Space::Accounts, accounts);
        // Our own encoding always parses; failing here is a bug.
        match Base::parse(
            AlignedBytes::from(bytes),
            crate::signed::HEADER_LEN,
            Coding::Sets,
        ) {
            Ok(base) => base,
            Err(e) => panic!("freshly encoded blacklist does not parse: {e}"),
        }
    }

    fn empty() -> Base {
        Base::from_words(&[], &[])
    }

    fn table(&self, space: Space) -> &LineTable {
        match space {
            Space::Cards => &self.cards,
            Space::Accounts => &self.accounts,
        }
    }

    #[inline]
    fn get(&self, id: &ListId) -> Option<ReasonSet> {
        // One dispatch on the id's kind, with the key width a constant in each arm.
        match packed::key_of(id) {
            (Space::Cards, key) => self
                .cards
                .get_in::<{ packed::CARD_KEY_BITS }>(&self.bytes, key),
            (Space::Accounts, key) => self
                .accounts
                .get_in::<{ packed::ACCOUNT_KEY_BITS }>(&self.bytes, key),
        }
    }

    #[inline]
    fn prefetch(&self, id: &ListId) {
        let (space, key) = packed::key_of(id);
        self.table(space).prefetch(&self.bytes, key);
    }

    fn len(&self) -> usize {
        (self.cards.count + self.accounts.count) as usize
    }

    /// The payload bytes of the tables (what a snapshot file carries after its header).
    fn payload(&self) -> &[u8] {
        &self.bytes[self.payload_at..]
    }
}

/// Apply `change` to `overlay` over a base that lists its id as `in_base`, keeping `len` (the
/// list's entry count) in step. An overlay entry always differs from the base's: one that
/// would equal it is removed.
fn apply_to(overlay: &mut Overlay, len: &mut usize, change: &Change, in_base: Option<ReasonSet>) {
    use std::collections::hash_map::Entry;
    let (before, after) = match overlay.entry(change.id) {
        Entry::Occupied(mut overlaid) => {
            let before = *overlaid.get();
            let after = change.result(before);
            if after == in_base {
                overlaid.remove();
            } else {
                overlaid.insert(after);
            }
            (before, after)
        }
        Entry::Vacant(vacant) => {
            let after = change.result(in_base);
            if after != in_base {
                vacant.insert(after);
            }
            (in_base, after)
        }
    };
    if change.op == ChangeOp::Remove && before.is_some() && before == after {
        tracing::debug!(id = %change.id, listed = ?before, lifts = ?change.reason,
            "remove names a reason the entry is not listed for; entry kept");
    }
    *len = *len + usize::from(after.is_some()) - usize::from(before.is_some());
}

/// The overlay's map. Its keys come only from operator-signed files and the validator's own
/// counter actions, never from a passenger, so a fast hash without flooding resistance will do.
type Overlay = HashMap<ListId, Option<ReasonSet>, foldhash::fast::RandomState>;

/// An exact blacklist at one version: an immutable packed base under a small overlay.
#[derive(Clone)]
pub struct Blacklist {
    version: u64,
    base: Arc<Base>,
    /// Changes since the base: `Some(reasons)` listed, `None` removed from the base. A hash
    /// map: most taps miss it, and a miss costs one probe.
    overlay: Arc<Overlay>,
    len: usize,
}

impl Default for Blacklist {
    fn default() -> Self {
        Blacklist::empty()
    }
}

impl fmt::Debug for Blacklist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blacklist")
            .field("version", &self.version)
            .field("len", &self.len)
            .field("base_len", &self.base.len())
            .field("overlay_len", &self.overlay.len())
            .finish()
    }
}

impl Blacklist {
    pub fn empty() -> Self {
        Blacklist::with_base(0, Base::empty())
    }

    fn with_base(version: u64, base: Base) -> Self {
        let len = base.len();
        Blacklist {
            version,
            base: Arc::new(base),
            overlay: Arc::default(),
            len,
        }
    }

    pub(crate) fn from_base(version: u64, base: Base) -> Self {
        Blacklist::with_base(version, base)
    }

    /// A list of these entries (a reason or a set of them each); an id that appears several
    /// times is listed for all the reasons it appears with (BLACKLIST.csv lists one id on one
    /// line a reason). An entry of no reason lists nothing.
    pub fn from_entries<R: Into<ReasonSet>>(
        version: u64,
        entries: impl IntoIterator<Item = (ListId, R)>,
    ) -> Self {
        let (mut cards, mut accounts) = (Vec::new(), Vec::new());
        for (id, reasons) in entries {
            let reasons = reasons.into();
            if reasons.is_empty() {
                continue;
            }
            let (space, key) = packed::key_of(&id);
            let word = packed::sort_word(packed::mix(key, space.key_bits()), reasons);
            match space {
                Space::Cards => cards.push(word),
                Space::Accounts => accounts.push(word),
            }
        }
        sort_unique_union(&mut cards);
        sort_unique_union(&mut accounts);
        Blacklist::with_base(version, Base::from_words(&cards, &accounts))
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Stamp the list with a version (the depot, before it writes a snapshot).
    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The reasons `id` is listed for (never an empty set), or None for a card or account in
    /// good standing.
    #[inline]
    pub fn get(&self, id: &ListId) -> Option<ReasonSet> {
        if !self.overlay.is_empty() {
            if let Some(entry) = self.overlay.get(id) {
                return *entry;
            }
        }
        self.base.get(id)
    }

    /// Apply one change in place (a replay event, a counter action on the depot's copy).
    /// Only the overlay changes; the base is shared with other versions, never copied (an
    /// overlay shared with another version is copied first, as for any write).
    pub fn apply(&mut self, change: &Change) {
        let in_base = self.base.get(&change.id);
        apply_to(
            Arc::make_mut(&mut self.overlay),
            &mut self.len,
            change,
            in_base,
        );
    }

    /// Apply `changes` in order, as [`Self::apply`] one by one would. The base's answers
    /// are looked up first, in one loop that prefetches the base line of the change
    /// [`APPLY_PREFETCH_AHEAD`] ahead, so their cache misses overlap instead of each
    /// waiting for the one before; then each change updates the overlay with one hash.
    pub fn apply_all(&mut self, changes: &[Change]) {
        let mut in_base: Vec<Option<ReasonSet>> = Vec::with_capacity(changes.len());
        for (i, change) in changes.iter().enumerate() {
            if let Some(ahead) = changes.get(i + APPLY_PREFETCH_AHEAD) {
                self.base.prefetch(&ahead.id);
            }
            in_base.push(self.base.get(&change.id));
        }
        let overlay = Arc::make_mut(&mut self.overlay);
        overlay.reserve(changes.len());
        for (change, in_base) in changes.iter().zip(in_base) {
            apply_to(overlay, &mut self.len, change, in_base);
        }
    }

    /// Every listed entry and its reasons (base entries in mixed-key order, then overlay
    /// additions).
    pub fn iter(&self) -> impl Iterator<Item = (ListId, ReasonSet)> + '_ {
        let base = &self.base;
        let overlay = &self.overlay;
        let from_base = base
            .cards
            .entries(&base.bytes)
            .chain(base.accounts.entries(&base.bytes))
            .filter(move |(id, _)| !overlay.contains_key(id));
        let from_overlay = overlay.iter().filter_map(|(id, r)| r.map(|r| (*id, r)));
        from_base.chain(from_overlay)
    }

    /// Entries in the overlay (changes not yet folded into the base).
    pub fn overlay_len(&self) -> usize {
        self.overlay.len()
    }

    /// Heap bytes held: the base's bytes (a whole snapshot file when opened from one) and an
    /// estimate for the overlay.
    pub fn memory_bytes(&self) -> usize {
        self.base.bytes.capacity() + self.overlay.len() * OVERLAY_ENTRY_BYTES
    }

    /// The same list with the overlay folded into a new packed base: a streaming merge in
    /// mixed-key order, no per-entry decoding of the base.
    pub fn compacted(&self) -> Blacklist {
        let merge = |space: Space| {
            let table = self.base.table(space);
            let mut changes: Vec<(u128, Option<ReasonSet>)> = self
                .overlay
                .iter()
                .filter_map(|(id, r)| {
                    let (s, key) = packed::key_of(id);
                    (s == space).then(|| (packed::mix(key, s.key_bits()), *r))
                })
                .collect();
            changes.sort_unstable_by_key(|c| c.0);
            merge_words(table.words(&self.base.bytes), &changes)
        };
        let (cards, accounts) = (merge(Space::Cards), merge(Space::Accounts));
        let out = Blacklist::with_base(self.version, Base::from_words(&cards, &accounts));
        debug_assert_eq!(out.len, self.len);
        out
    }

    /// The snapshot payload of this list (compacting first if it has an overlay).
    pub(crate) fn snapshot_payload(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.overlay.is_empty() {
            std::borrow::Cow::Borrowed(self.base.payload())
        } else {
            std::borrow::Cow::Owned(self.compacted().base.payload().to_vec())
        }
    }

    /// Entries listed for each reason, for `info` and the depot's page: an entry of several
    /// reasons counts under each (so the counts may add up to more than [`Self::len`]).
    pub fn counts_by_reason(&self) -> BTreeMap<&'static str, usize> {
        let mut counts: BTreeMap<&'static str, usize> =
            ListReason::ALL.iter().map(|r| (r.as_str(), 0)).collect();
        for (_, reasons) in self.iter() {
            for r in reasons.iter() {
                *counts.entry(r.as_str()).or_default() += 1;
            }
        }
        counts
    }

    /// Entries listed for more than one reason (a lost card since reissued...).
    pub fn several_reasons_len(&self) -> usize {
        self.iter().filter(|(_, reasons)| reasons.len() > 1).count()
    }
}

/// Merge base words (sorted) with overlay changes (sorted by mixed key): a change replaces
/// the base entry of the same key (`None` deletes it).
fn merge_words(
    base: impl Iterator<Item = u128>,
    changes: &[(u128, Option<ReasonSet>)],
) -> Vec<u128> {
    let mut out = Vec::new();
    let emit = |out: &mut Vec<u128>, (m, r): (u128, Option<ReasonSet>)| {
        if let Some(r) = r {
            out.push(packed::sort_word(m, r));
        }
    };
    let mut i = 0;
    for word in base {
        let mixed = packed::mixed_of(word);
        while i < changes.len() && changes[i].0 < mixed {
            emit(&mut out, changes[i]);
            i += 1;
        }
        if i < changes.len() && changes[i].0 == mixed {
            emit(&mut out, changes[i]);
            i += 1;
        } else {
            out.push(word);
        }
    }
    for c in &changes[i..] {
        emit(&mut out, *c);
    }
    out
}

/// Sort words by mixed key; words of equal keys become one word with the union of their
/// reasons.
fn sort_unique_union(words: &mut Vec<u128>) {
    words.sort_unstable_by_key(|w| packed::mixed_of(*w));
    let mut keep = 0usize;
    for i in 0..words.len() {
        if keep > 0 && packed::mixed_of(words[keep - 1]) == packed::mixed_of(words[i]) {
            words[keep - 1] |= words[i];
        } else {
            words[keep] = words[i];
            keep += 1;
        }
    }
    words.truncate(keep);
}

/// Parse replay.md's BLACKLIST.csv: header `kind,id,reason`, then one entry a line, an id
/// listed for several reasons on several lines (each line one reason, as given; see
/// [`Blacklist::from_entries`], which joins them).
pub fn parse_csv(text: &str) -> Result<Vec<(ListId, ListReason)>, CsvError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim().trim_start_matches('\u{feff}') == "kind,id,reason" => {}
        _ => return Err(CsvError::Header),
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let line_no = i + 1;
        let mut f = line.split(',');
        let (Some(kind), Some(id), Some(reason), None) = (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(CsvError::Fields { line: line_no });
        };
        let id = ListId::parse(kind.trim(), id.trim()).map_err(|source| CsvError::Id {
            line: line_no,
            source,
        })?;
        let reason: ListReason = reason.trim().parse().map_err(|_| CsvError::Reason {
            line: line_no,
            found: reason.trim().to_string(),
        })?;
        out.push((id, reason));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{AccountId, CardNo};

    fn card(s: &str) -> ListId {
        ListId::Card(s.parse::<CardNo>().unwrap())
    }

    fn change(op: ChangeOp, id: ListId, reason: ListReason) -> Change {
        Change { op, id, reason }
    }

    #[test]
    fn overlay_changes_hide_and_extend_the_base() {
        let a = card("37140000000000000001");
        let b = card("37140000000000000002");
        let acct = ListId::Account(AccountId {
            channel: 2,
            account: 9,
        });
        let mut list =
            Blacklist::from_entries(1, [(a, ListReason::Lost), (acct, ListReason::Arrears)]);
        assert_eq!(list.len(), 2);
        list.apply(&change(ChangeOp::Remove, a, ListReason::Lost));
        list.apply(&change(ChangeOp::Add, b, ListReason::Cancelled));
        assert_eq!(
            (list.get(&a), list.get(&b), list.len()),
            (None, Some(ReasonSet::of(ListReason::Cancelled)), 2)
        );
        let c = list.compacted();
        assert_eq!(c.overlay_len(), 0);
        assert_eq!(
            c.iter().collect::<BTreeMap<_, _>>(),
            list.iter().collect::<BTreeMap<_, _>>()
        );
        // Putting back what the base had leaves no overlay entry.
        list.apply(&change(ChangeOp::Add, a, ListReason::Lost));
        list.apply(&change(ChangeOp::Remove, b, ListReason::Cancelled));
        assert_eq!(list.overlay_len(), 0);
    }

    #[test]
    fn remove_lifts_only_the_reason_it_names() {
        let a = card("37140000000000000001");
        let mut list = Blacklist::from_entries(1, [(a, ListReason::Replaced)]);
        list.apply(&change(ChangeOp::Remove, a, ListReason::Lost));
        assert_eq!(list.get(&a), Some(ReasonSet::of(ListReason::Replaced)));
    }

    #[test]
    fn lost_then_replaced_card_stays_locked_after_late_unreport() {
        let a = card("37140000000000000001");
        let lost_replaced: ReasonSet = [ListReason::Lost, ListReason::Replaced]
            .into_iter()
            .collect();
        // In the overlay, and folded into a base.
        let mut list = Blacklist::empty();
        list.apply(&change(ChangeOp::Add, a, ListReason::Lost));
        list.apply(&change(ChangeOp::Add, a, ListReason::Replaced));
        assert_eq!((list.get(&a), list.len()), (Some(lost_replaced), 1));
        for mut l in [list.clone(), list.compacted()] {
            l.apply(&change(ChangeOp::Remove, a, ListReason::Lost));
            let left = l.get(&a);
            assert_eq!(left, Some(ReasonSet::of(ListReason::Replaced)));
            assert!(left.is_some_and(ReasonSet::locks_card));
            l.apply(&change(ChangeOp::Remove, a, ListReason::Replaced));
            assert_eq!((l.get(&a), l.len()), (None, 0));
        }
    }

    #[test]
    fn duplicate_entries_join_their_reasons() {
        let a = card("37140000000000000001");
        let list = Blacklist::from_entries(1, [(a, ListReason::Lost), (a, ListReason::Cancelled)]);
        let both: ReasonSet = [ListReason::Lost, ListReason::Cancelled]
            .into_iter()
            .collect();
        assert_eq!((list.len(), list.get(&a)), (1, Some(both)));
        assert_eq!(list.counts_by_reason()["lost"], 1);
        assert_eq!(list.counts_by_reason()["cancelled"], 1);
        assert_eq!(list.several_reasons_len(), 1);
    }

    #[test]
    fn every_reason_set_round_trips_through_lines_and_overflow() {
        // 15 sets over enough ids that some sit in the overflow table.
        let ids: Vec<ListId> = (0..40_000u64)
            .map(|i| {
                if i % 7 == 0 {
                    ListId::Account(AccountId {
                        channel: (i % 5) as u16,
                        account: i * 31,
                    })
                } else {
                    ListId::Card(
                        CardNo::from_u128(37_140_000_000_000_000_000 + u128::from(i)).unwrap(),
                    )
                }
            })
            .collect();
        let set = |i: usize| ReasonSet::from_bits((i % 15 + 1) as u8).unwrap();
        let list = Blacklist::from_entries(3, ids.iter().enumerate().map(|(i, id)| (*id, set(i))));
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(list.get(id), Some(set(i)), "{id}");
        }
        assert_eq!(list.iter().count(), ids.len());
    }

    #[test]
    fn csv_errors_are_typed_with_line_numbers() {
        assert_eq!(parse_csv("id,kind\n"), Err(CsvError::Header));
        assert_eq!(
            parse_csv("kind,id,reason\ncard,1\n"),
            Err(CsvError::Fields { line: 2 })
        );
        assert!(matches!(
            parse_csv("kind,id,reason\n\ncard,12,lost\n"),
            Err(CsvError::Id { line: 3, .. })
        ));
        assert!(matches!(
            parse_csv("kind,id,reason\ncard,37140000000000000001,stolen\n"),
            Err(CsvError::Reason { line: 2, .. })
        ));
        let ok =
            parse_csv("kind,id,reason\ncard,37140000000000000001,lost\naccount,2:77,arrears\n")
                .unwrap();
        assert_eq!(ok.len(), 2);
    }
}
