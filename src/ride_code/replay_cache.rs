//! Check 12: remembers accepted codes, (channel_id, account_id, counter), so that a code shown
//! twice (a screenshot passed back along the bus) is refused as `replayed`.
//!
//! # How long an entry must live
//!
//! A code generated at `g` passes freshness only while `g - clock_skew_s ≤ now ≤ g +
//! code_validity_s`. After that no copy of it can pass check 10, so its entry may be
//! forgotten. We keep it until `g + code_validity_s + clock_skew_s < now` (one skew more than
//! needed, so a validator clock stepped back a little does not reopen the window).
//!
//! # Capacity
//!
//! From the moment it is accepted (at the earliest `g - clock_skew_s`) an entry lives at most
//! `code_validity_s + 2 × clock_skew_s` = 120 s with the defaults. A validator's scanner
//! decides at most about 2 scans a second (each passenger holds up a phone and waits for the
//! beep); with front and rear doors both scanning at that rate through a full two minutes of
//! boarding that is 4/s × 120 s = 480 live entries. [`REPLAY_ENTRIES_MAX`] = 2048 is four
//! times that, and the table is twice that again so probes stay short: two tables (one spare
//! for rebuilds) of 4096 slots × 32 bytes, 256 KiB.
//!
//! # When it is full anyway (longer configured windows, a flood)
//!
//! Expired entries are dropped first. If every entry is still live, the entries with the
//! oldest `generated_at` are dropped and a watermark `floor_generated_at` is raised to that
//! time: from then on every code with `generated_at ≤ floor_generated_at` counts as replayed.
//! No replay can slip through: every forgotten code is at or below the floor. And nobody is
//! refused for long: the floor is the generation time of the oldest code remembered, so only
//! codes at least that old are refused, and a phone makes a new code every few seconds; at
//! worst a passenger holding up a stale code is asked to refresh it.
//!
//! The table never allocates after [`ReplayCache::new`].

use super::verify::{RideCodeConfig, VerifiedCode};

/// Most accepted codes remembered at once (see the module docs for the arithmetic).
pub const REPLAY_ENTRIES_MAX: usize = 2048;
/// Hash table slots: twice the entries, so the load stays at or under one half.
const REPLAY_SLOTS: usize = 2 * REPLAY_ENTRIES_MAX;

const _: () = assert!(REPLAY_SLOTS.is_power_of_two());

/// What check 12 compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplayKey {
    pub channel_id: u16,
    pub account_id: u64,
    pub counter: u32,
}

impl From<&VerifiedCode> for ReplayKey {
    fn from(code: &VerifiedCode) -> Self {
        ReplayKey {
            channel_id: code.account.channel,
            account_id: code.account.account,
            counter: code.counter,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: ReplayKey,
    generated_at: i64,
}

/// What [`ReplayCache::remember`] had to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remembered {
    Stored,
    /// The table was full of live entries; the oldest were dropped and the floor raised.
    StoredAfterRaisingFloor {
        floor_generated_at: i64,
    },
}

/// Bounded memory of accepted ride codes.
pub struct ReplayCache {
    slots: Box<[Option<Entry>]>,
    /// Second table of the same size, used only to rebuild when full: no allocation then.
    spare: Box<[Option<Entry>]>,
    len: usize,
    /// How long an entry is kept after its generated_at: code_validity_s + clock_skew_s.
    keep_s: i64,
    /// Codes generated at or before this were forgotten while live: refuse them all.
    floor_generated_at: Option<i64>,
}

impl ReplayCache {
    pub fn new(config: &RideCodeConfig) -> Self {
        ReplayCache {
            slots: vec![None; REPLAY_SLOTS].into_boxed_slice(),
            spare: vec![None; REPLAY_SLOTS].into_boxed_slice(),
            len: 0,
            keep_s: i64::from(config.code_validity_s) + i64::from(config.clock_skew_s),
            floor_generated_at: None,
        }
    }

    /// Check 12 for a verified code: true means `replayed`.
    pub fn is_replay(&self, code: &VerifiedCode, now_unix_s: i64) -> bool {
        self.contains(&ReplayKey::from(code), code.generated_at, now_unix_s)
    }

    /// Call once the code is accepted (after check 13 and the journal).
    pub fn remember_code(&mut self, code: &VerifiedCode, now_unix_s: i64) -> Remembered {
        self.remember(ReplayKey::from(code), code.generated_at, now_unix_s)
    }

    /// Whether a code with this key and generation time must be refused as replayed.
    pub fn contains(&self, key: &ReplayKey, generated_at: i64, now_unix_s: i64) -> bool {
        if self
            .floor_generated_at
            .is_some_and(|floor| generated_at <= floor)
        {
            return true;
        }
        match self.find(key) {
            Some(i) => self.slots[i].is_some_and(|e| self.is_live(&e, now_unix_s)),
            None => false,
        }
    }

    /// Remembers an accepted code. Never fails: when full, see the module docs.
    pub fn remember(&mut self, key: ReplayKey, generated_at: i64, now_unix_s: i64) -> Remembered {
        if let Some(i) = self.find(&key) {
            self.slots[i] = Some(Entry { key, generated_at });
            return Remembered::Stored;
        }
        let mut outcome = Remembered::Stored;
        if self.len == REPLAY_ENTRIES_MAX {
            self.rebuild(now_unix_s);
        }
        if self.len == REPLAY_ENTRIES_MAX {
            let oldest = self.oldest_generated_at().unwrap_or(generated_at);
            let floor = self.floor_generated_at.map_or(oldest, |f| f.max(oldest));
            self.floor_generated_at = Some(floor);
            self.rebuild(now_unix_s);
            outcome = Remembered::StoredAfterRaisingFloor {
                floor_generated_at: floor,
            };
        }
        // The floor covers this code already: storing it is unnecessary.
        if self.floor_generated_at.is_some_and(|f| generated_at <= f) {
            return outcome;
        }
        self.insert_new(Entry { key, generated_at });
        outcome
    }

    /// Entries currently held (live or not yet dropped).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The watermark, if the table ever overflowed.
    pub fn floor_generated_at(&self) -> Option<i64> {
        self.floor_generated_at
    }

    fn is_live(&self, e: &Entry, now_unix_s: i64) -> bool {
        e.generated_at.saturating_add(self.keep_s) >= now_unix_s
    }

    /// Slot holding `key`, by linear probing; the load of at most one half guarantees an
    /// empty slot ends every probe.
    fn find(&self, key: &ReplayKey) -> Option<usize> {
        let mut i = home_slot(key);
        loop {
            match &self.slots[i] {
                None => return None,
                Some(e) if e.key == *key => return Some(i),
                Some(_) => i = (i + 1) & (REPLAY_SLOTS - 1),
            }
        }
    }

    fn insert_new(&mut self, entry: Entry) {
        debug_assert!(self.len < REPLAY_ENTRIES_MAX);
        let mut i = home_slot(&entry.key);
        while self.slots[i].is_some() {
            i = (i + 1) & (REPLAY_SLOTS - 1);
        }
        self.slots[i] = Some(entry);
        self.len += 1;
    }

    fn oldest_generated_at(&self) -> Option<i64> {
        self.slots.iter().flatten().map(|e| e.generated_at).min()
    }

    /// Keeps only live entries above the floor, re-inserted into the spare table.
    fn rebuild(&mut self, now_unix_s: i64) {
        std::mem::swap(&mut self.slots, &mut self.spare);
        self.slots.fill(None);
        self.len = 0;
        let floor = self.floor_generated_at;
        for i in 0..REPLAY_SLOTS {
            let Some(entry) = self.spare[i].take() else {
                continue;
            };
            let above_floor = floor.map_or(true, |f| entry.generated_at > f);
            if above_floor && self.is_live(&entry, now_unix_s) {
                self.insert_new(entry);
            }
        }
    }
}

/// Home slot of a key: a fixed 64-bit mix (splitmix64 finaliser) of all its fields.
fn home_slot(key: &ReplayKey) -> usize {
    let mut x =
        key.account_id ^ (u64::from(key.channel_id) << 48) ^ u64::from(key.counter).rotate_left(21);
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    // Truncation is the point: the low bits pick the slot.
    x as usize & (REPLAY_SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_824_000;

    fn key(account_id: u64, counter: u32) -> ReplayKey {
        ReplayKey {
            channel_id: 2,
            account_id,
            counter,
        }
    }

    fn cache() -> ReplayCache {
        ReplayCache::new(&RideCodeConfig::default())
    }

    #[test]
    fn accepted_code_is_a_replay_while_it_could_still_pass() {
        let mut c = cache();
        assert!(!c.contains(&key(1, 7), NOW, NOW));
        assert_eq!(c.remember(key(1, 7), NOW, NOW), Remembered::Stored);
        assert!(c.contains(&key(1, 7), NOW, NOW + 1));
        assert!(c.contains(&key(1, 7), NOW, NOW + 90));
        assert!(!c.contains(&key(1, 8), NOW, NOW + 1));
        assert!(!c.contains(&key(2, 7), NOW, NOW + 1));
        assert!(!c.contains(
            &ReplayKey {
                channel_id: 3,
                ..key(1, 7)
            },
            NOW,
            NOW + 1
        ));
        // Past validity + skew the entry is dead: the code fails check 10 anyway.
        assert!(!c.contains(&key(1, 7), NOW, NOW + 91));
    }

    #[test]
    fn expired_entries_make_room_without_raising_the_floor() {
        let mut c = cache();
        for n in 0..REPLAY_ENTRIES_MAX as u64 {
            c.remember(key(n, 1), NOW, NOW);
        }
        assert_eq!(c.len(), REPLAY_ENTRIES_MAX);
        let later = NOW + 200;
        assert_eq!(c.remember(key(9_999, 1), later, later), Remembered::Stored);
        assert_eq!(c.len(), 1);
        assert_eq!(c.floor_generated_at(), None);
    }

    #[test]
    fn full_of_live_entries_never_lets_a_replay_through() {
        let mut c = cache();
        // Full, every code live, generated over 16 seconds.
        for n in 0..REPLAY_ENTRIES_MAX as u64 {
            c.remember(key(n, 1), NOW + (n as i64 % 16), NOW + 16);
        }
        let now = NOW + 20;
        let outcome = c.remember(key(50_000, 1), now, now);
        assert_eq!(
            outcome,
            Remembered::StoredAfterRaisingFloor {
                floor_generated_at: NOW
            }
        );
        // Every code ever accepted is still refused: dropped ones by the floor.
        for n in 0..REPLAY_ENTRIES_MAX as u64 {
            assert!(c.contains(&key(n, 1), NOW + (n as i64 % 16), now), "{n}");
        }
        assert!(c.contains(&key(50_000, 1), now, now));
        // Honest riders with newer codes still pass.
        assert!(!c.contains(&key(60_000, 1), NOW + 1, now));
        assert!(!c.contains(&key(60_001, 1), now, now));
        assert!(c.len() < REPLAY_ENTRIES_MAX);
    }

    #[test]
    fn sustained_overflow_stays_bounded_and_sound() {
        let mut c = cache();
        let mut accepted = Vec::new();
        // 40 scans a second for 3 minutes: ten times the design peak.
        for t in 0..180i64 {
            for j in 0..40u64 {
                let k = key(t as u64 * 100 + j, t as u32);
                let (g, now) = (NOW + t, NOW + t);
                assert!(!c.contains(&k, g, now));
                c.remember(k, g, now);
                accepted.push((k, g));
                assert!(c.len() <= REPLAY_ENTRIES_MAX);
            }
            let now = NOW + t;
            for (k, g) in &accepted {
                let fresh = *g + 60 >= now;
                if fresh {
                    assert!(c.contains(k, *g, now), "replay of {k:?} at {now}");
                }
            }
        }
    }
}
