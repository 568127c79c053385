//! An exact bit-packed sorted table of one key space: the overflow of [`super::lines`] (the
//! entries past a full line, a few percent), and the key mix both share.
//!
//! A key (a 20-digit card number below 10^20 < 2^67, or an account `channel << 64 | account`
//! of 80 bits) is put through a *bijective* mix of its key space. The top `bucket_bits` of the
//! mixed key pick a bucket; only the remaining `key_bits - bucket_bits` bits are stored, with
//! the code of the entry's reasons in `r` more ([`ReasonCodes`]: its line table's). Because the mix is a bijection, (bucket, remainder) names exactly
//! one key: no false positives, no false negatives, and clustered real card numbers (`3714…`)
//! spread as evenly as random ones. Entries are sorted by mixed key, so a bucket's entries are
//! contiguous and an index of `2^bucket_bits + 1` u32 offsets finds them.
//!
//! At 20 million cards with 2^17 buckets of about 150 entries: 50 + r bits an entry and a 512
//! KiB index that stays in cache, about 6.5 bytes an entry with 2 code bits; a lookup
//! interpolates its position inside the bucket, so it usually touches one cache line of
//! entries. Accounts: 63 + r bits, about 7.9 bytes with none. (Here the table only holds the
//! few entries of full lines.)
//!
//! # Table byte layout (little-endian), as it sits in a snapshot payload
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | key_bits: 67 (cards) or 80 (accounts) |
//! | 1 | 1 | bucket_bits, [`BUCKET_BITS_MIN`]..=[`BUCKET_BITS_MAX`] |
//! | 2 | 1 | entry_bits = key_bits - bucket_bits + r (the code bits, 0..=4) |
//! | 3 | 5 | reserved, 0 |
//! | 8 | 8 | count: entries in the table, at most [`TABLE_ENTRIES_MAX`] |
//! | 16 | 4·(2^bucket_bits + 1) | index: u32 offset of each bucket's first entry, then count |
//! | … | ⌈count·entry_bits/8⌉ + 16 | entries: bit-packed, LSB first; entry = remainder << r ‖ code (a code naming no set is malformed); 16 zero bytes of padding |
//!
//! The table is read in place from the file's bytes: opening a snapshot rebuilds nothing.
//! Format 1 files (before reason sets, see [`Coding`]) stored one reason as a 2-bit code
//! `reason − 1` where the code is now; they are read only to be converted.

use thiserror::Error;

use crate::card::quickpass::PanToken;
use crate::types::{AccountId, CardNo, ListId, ListReason, ReasonSet};

/// Bits of a card key: 20 decimal digits are below 10^20 < 2^67.
pub const CARD_KEY_BITS: u32 = 67;
/// Bits of an account key: u16 channel and u64 account.
pub const ACCOUNT_KEY_BITS: u32 = 80;
pub const BUCKET_BITS_MIN: u32 = 4;
pub const BUCKET_BITS_MAX: u32 = 28;
/// Average entries a bucket aims for: 128..256 keeps the index (4 bytes a bucket) small
/// enough to stay in cache, so a lookup's one likely cache miss is the entry itself, found
/// by interpolation inside the bucket.
pub const ENTRIES_PER_BUCKET_TARGET: u64 = 128;
/// At most this many entries in one table (the index holds u32 offsets).
pub const TABLE_ENTRIES_MAX: u64 = 1 << 30;
pub const TABLE_HEADER_LEN: usize = 16;
/// Zero bytes after the packed entries so every entry reads as one 16-byte load.
pub const PACK_PAD_BYTES: usize = 16;
/// Bits of an entry's reason set ([`ReasonSet::bits`]): one a reason.
pub(crate) const REASON_BITS: u32 = 4;
pub(crate) const REASON_MASK: u128 = (1 << REASON_BITS) - 1;
/// Bits of a format 1 entry's one reason (code `reason − 1`).
const LEGACY_REASON_BITS: u32 = 2;

/// How a table's entries carry their reasons.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Coding {
    /// Format 2 and later: reason sets, each table's entries coding theirs as the set's own
    /// [`REASON_BITS`] or by the palette its header names ([`ReasonCodes`]).
    Sets,
    /// Format 1, before reason sets: one reason as the 2-bit code `reason − 1`. Read only to
    /// convert; its tables are never looked up in place.
    OneReason,
}

impl Coding {
    /// The codes of a table of this coding whose header names no palette.
    pub(crate) fn codes(self) -> ReasonCodes {
        match self {
            Coding::Sets => ReasonCodes::SETS,
            Coding::OneReason => ReasonCodes::ONE_REASON,
        }
    }
}

/// Most reason sets a palette names (codes of 3 bits); a table holding more distinct sets
/// codes each entry's set as its own [`REASON_BITS`].
pub(crate) const PALETTE_SETS_MAX: u32 = 8;

/// How one table's entries name their reasons: a code of `bits` bits (0 to 4) in each entry,
/// and the reason set each code stands for. Three kinds:
///
/// - the set's own bits ([`ReasonCodes::SETS`], 4 bits: every set; snapshots of format 2, and
///   tables with more than [`PALETTE_SETS_MAX`] distinct sets);
/// - a **palette**: the distinct sets the table holds, in increasing order of their bits,
///   an entry's code its set's place among them, in the fewest bits that number them (one set:
///   0 bits; two: 1; three or four: 2; five to eight: 3). A line table's header names it
///   ([`super::lines`]); its overflow table uses the same;
/// - format 1's one reason ([`ReasonCodes::ONE_REASON`], the 2-bit code `reason − 1`), read
///   only to convert.
///
/// A list whose cards are listed for one reason each needs 2 bits, not 4, and its accounts
/// (arrears only) none: the reason sets cost no more than the one reason they replaced.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct ReasonCodes {
    bits: u32,
    /// The set each code stands for, as its bits; 0 for a code naming no set (an entry with
    /// it is malformed).
    sets: [u8; 16],
    /// The palette as a header carries it: bit `b` set for the set of bits `b`; 0 when the
    /// codes are not a palette.
    palette: u16,
}

impl ReasonCodes {
    /// Each set as its own 4 bits (code 0, the empty set, names nothing).
    pub(crate) const SETS: ReasonCodes = {
        let mut sets = [0u8; 16];
        let mut b = 0;
        while b < 16 {
            sets[b] = b as u8;
            b += 1;
        }
        ReasonCodes {
            bits: REASON_BITS,
            sets,
            palette: 0,
        }
    };

    /// Format 1: one reason, code `reason − 1` (`ListReason::ALL` is in bit order).
    pub(crate) const ONE_REASON: ReasonCodes = {
        let mut sets = [0u8; 16];
        let mut i = 0;
        while i < ListReason::ALL.len() {
            sets[i] = 1 << i;
            i += 1;
        }
        ReasonCodes {
            bits: LEGACY_REASON_BITS,
            sets,
            palette: 0,
        }
    };

    /// The palette of the sets whose bits are set in `palette` (bit `b`: the set of bits
    /// `b`), or `None` when that is no palette: the empty set (bit 0) named, no set, or more
    /// than [`PALETTE_SETS_MAX`].
    pub(crate) fn from_palette(palette: u16) -> Option<ReasonCodes> {
        let n = palette.count_ones();
        if palette & 1 != 0 || n == 0 || n > PALETTE_SETS_MAX {
            return None;
        }
        let mut sets = [0u8; 16];
        let mut code = 0;
        for b in 1..16u8 {
            if palette & (1 << b) != 0 {
                sets[code] = b;
                code += 1;
            }
        }
        Some(ReasonCodes {
            // The fewest bits numbering n codes: 1 → 0, 2 → 1, 3..=4 → 2, 5..=8 → 3.
            bits: u32::BITS - (n - 1).leading_zeros(),
            sets,
            palette,
        })
    }

    /// The codes for a table of these sort words: a palette of the sets they hold when there
    /// are at most [`PALETTE_SETS_MAX`], else [`ReasonCodes::SETS`] (also for no words).
    pub(crate) fn for_words(words: &[u128]) -> ReasonCodes {
        let present = words
            .iter()
            .fold(0u16, |p, w| p | 1 << (w & REASON_MASK) as u32);
        ReasonCodes::from_palette(present).unwrap_or(ReasonCodes::SETS)
    }

    /// Bits of an entry's code.
    #[inline]
    pub(crate) fn bits(self) -> u32 {
        self.bits
    }

    /// Ones in an entry's code bits.
    #[inline]
    pub(crate) fn code_mask(self) -> u128 {
        mask(self.bits)
    }

    /// The palette a header names, if these codes are one.
    pub(crate) fn palette(self) -> Option<u16> {
        (self.palette != 0).then_some(self.palette)
    }

    /// The set of the code `code` (below 16), or `None` for a code that names no set.
    #[inline]
    pub(crate) fn set_of_code(self, code: usize) -> Option<ReasonSet> {
        let set = ReasonSet::from_bits(self.sets[code & 0xF])?;
        (!set.is_empty()).then_some(set)
    }

    /// The reason set of an entry whose code is its low bits, or `None` for a code that names
    /// no set (malformed).
    #[inline]
    pub(crate) fn set_of(self, entry: u128) -> Option<ReasonSet> {
        self.set_of_code((entry & self.code_mask()) as usize)
    }

    /// The code of `set`, which these codes must name (the table's codes were made from its
    /// own sets): building a table with a set its codes lack would list an id for another
    /// reason, so it stops the build (never on a lookup, never on outside bytes).
    pub(crate) fn code_of(self, set: ReasonSet) -> u128 {
        let code = self
            .sets
            .iter()
            .position(|s| *s == set.bits() && !set.is_empty());
        match code {
            Some(code) => code as u128,
            None => panic!("reason set {set:?} has no code in this table"),
        }
    }

    /// An entry's code, moved into a sort word (mixed key << 4 | the set's bits).
    pub(crate) fn to_sort_word(self, mixed: u128, entry: u128) -> u128 {
        let bits = self.set_of(entry).map_or(0, |s| s.bits());
        (mixed << REASON_BITS) | u128::from(bits)
    }
}

/// Why a packed table in a file is malformed (the file's signature was good, or unchecked).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TableError {
    #[error("table truncated")]
    Truncated,
    #[error("table key bits {found}, expected {expected}")]
    KeyBits { found: u8, expected: u32 },
    #[error("table bucket bits {0} out of range")]
    BucketBits(u8),
    #[error("table entry bits {0} inconsistent")]
    EntryBits(u8),
    #[error("table reserved bytes not zero")]
    Reserved,
    #[error("table has {0} entries, over the limit")]
    TooMany(u64),
    #[error("table index is not monotonic or does not end at the entry count")]
    Index,
    #[error("table entries in a bucket are not strictly increasing")]
    Order,
    #[error("table padding is not zero")]
    Padding,
    #[error("table entry lists no reason")]
    NoReason,
    #[error("table reason palette names the empty set, no set, or too many sets")]
    Palette,
    #[error("line table: {0}")]
    Lines(&'static str),
}

// Mixing constants: odd 128-bit multipliers (any odd number is invertible modulo 2^k).
const MUL_1: u128 = 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835;
const MUL_2: u128 = 0xD6E8_FEB8_6659_FD93_C2B2_AE3D_27D4_EB4F;
const MUL_1_INV: u128 = mul_inverse(MUL_1);
const MUL_2_INV: u128 = mul_inverse(MUL_2);

const fn mul_inverse(m: u128) -> u128 {
    // Newton's iteration doubles the correct low bits each step: 1 → 128 in 7 steps.
    let mut inv = m;
    let mut i = 0;
    while i < 7 {
        inv = inv.wrapping_mul(2u128.wrapping_sub(m.wrapping_mul(inv)));
        i += 1;
    }
    inv
}

#[inline(always)]
pub(crate) fn mask(bits: u32) -> u128 {
    (1u128 << bits) - 1
}

fn unxorshift(y: u128, s: u32, bits: u32) -> u128 {
    let mut x = y;
    for _ in 0..bits.div_ceil(s) {
        x = y ^ (x >> s);
    }
    x
}

/// A bijection of `[0, 2^bits)`: xorshift and odd multiplication, each invertible. Always
/// inlined, so that a constant `bits` folds its masks and shifts on the lookup path.
#[inline(always)]
pub fn mix(key: u128, bits: u32) -> u128 {
    let m = mask(bits);
    let (s1, s2) = (bits / 2, bits / 3 + 1);
    let mut x = key & m;
    x ^= x >> s1;
    x = x.wrapping_mul(MUL_1) & m;
    x ^= x >> s2;
    x = x.wrapping_mul(MUL_2) & m;
    x ^= x >> s1;
    x
}

/// The inverse of [`mix`].
pub fn unmix(mixed: u128, bits: u32) -> u128 {
    let m = mask(bits);
    let (s1, s2) = (bits / 2, bits / 3 + 1);
    let mut x = unxorshift(mixed & m, s1, bits);
    x = x.wrapping_mul(MUL_2_INV) & m;
    x = unxorshift(x, s2, bits);
    x = x.wrapping_mul(MUL_1_INV) & m;
    unxorshift(x, s1, bits)
}

/// QuickPass PAN tokens share the card table: a token t is the key 10^20 + t, above every
/// 20-digit card number and below 2^[`CARD_KEY_BITS`] (10^20 + 2^64 < 1.19·10^20 < 2^67).
pub const PAN_TOKEN_KEY_BASE: u128 = 100_000_000_000_000_000_000;
const _: () = assert!(PAN_TOKEN_KEY_BASE + (u64::MAX as u128) < (1u128 << CARD_KEY_BITS));

/// Which key space a table holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Space {
    Cards,
    Accounts,
}

impl Space {
    pub fn key_bits(self) -> u32 {
        match self {
            Space::Cards => CARD_KEY_BITS,
            Space::Accounts => ACCOUNT_KEY_BITS,
        }
    }

    pub(crate) fn id_from_key(self, key: u128) -> Option<ListId> {
        match self {
            Space::Cards if key >= PAN_TOKEN_KEY_BASE => u64::try_from(key - PAN_TOKEN_KEY_BASE)
                .ok()
                .map(|t| ListId::Pan(PanToken(t))),
            Space::Cards => CardNo::from_u128(key).ok().map(ListId::Card),
            Space::Accounts => Some(ListId::Account(AccountId {
                channel: u16::try_from(key >> 64).ok()?,
                account: key as u64,
            })),
        }
    }
}

/// The key space and integer key of an id.
#[inline]
pub fn key_of(id: &ListId) -> (Space, u128) {
    match id {
        ListId::Card(c) => (Space::Cards, card_key(c)),
        ListId::Pan(t) => (Space::Cards, PAN_TOKEN_KEY_BASE + u128::from(t.0)),
        ListId::Account(a) => (
            Space::Accounts,
            (u128::from(a.channel) << 64) | u128::from(a.account),
        ),
    }
}

/// `CardNo::as_u128` on the tap path, digits combined in parallel inside a u64 (SWAR): the
/// first 16 digits in four steps (pairs, fours, eights, sixteen), then the last four.
#[inline]
fn card_key(c: &CardNo) -> u128 {
    // Packed BCD, most significant digit first; every nibble is 0..=9 (CardNo guarantees it).
    let mut head = [0u8; 8];
    head.copy_from_slice(&c.0[..8]);
    let mut x = u64::from_be_bytes(head);
    // Each byte hi·16 + lo becomes hi·10 + lo.
    x -= 6 * ((x >> 4) & 0x0F0F_0F0F_0F0F_0F0F);
    // Each 16-bit lane of two bytes (0..=99 each) becomes hi·100 + lo, then each 32-bit lane
    // hi·10^4 + lo, then the whole hi·10^8 + lo.
    x = ((x >> 8) & 0x00FF_00FF_00FF_00FF) * 100 + (x & 0x00FF_00FF_00FF_00FF);
    x = ((x >> 16) & 0x0000_FFFF_0000_FFFF) * 10_000 + (x & 0x0000_FFFF_0000_FFFF);
    x = (x >> 32) * 100_000_000 + (x & 0xFFFF_FFFF);
    // The last four digits the same way, in a u32.
    let mut t = u32::from(u16::from_be_bytes([c.0[8], c.0[9]]));
    t -= 6 * ((t >> 4) & 0x0F0F);
    let tail = (t >> 8) * 100 + (t & 0xFF);
    u128::from(x) * 10_000 + u128::from(tail)
}

/// An entry ready for a table: mixed key shifted left [`REASON_BITS`], the reason set's bits
/// below (`reasons` is not empty).
pub fn sort_word(mixed: u128, reasons: ReasonSet) -> u128 {
    debug_assert!(!reasons.is_empty());
    (mixed << REASON_BITS) | u128::from(reasons.bits())
}

/// The mixed key of a sort word.
#[inline]
pub(crate) fn mixed_of(word: u128) -> u128 {
    word >> REASON_BITS
}

/// The reason set of a sort word or entry (its low [`REASON_BITS`]).
#[inline]
pub(crate) fn reasons_of(word: u128) -> ReasonSet {
    ReasonSet::from_bits((word & REASON_MASK) as u8).unwrap_or(ReasonSet::EMPTY)
}

/// `ListReason::ALL` is in bit order (bit = reason − 1), as [`Coding::OneReason`] codes are.
const _: () = {
    let mut i = 0;
    while i < ListReason::ALL.len() {
        assert!(ListReason::ALL[i] as usize == i + 1);
        i += 1;
    }
};

/// Where one table lies inside its owner's bytes (validated: every read below is in bounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    pub space: Space,
    codes: ReasonCodes,
    pub bucket_bits: u32,
    pub entry_bits: u32,
    pub count: u64,
    index_at: usize,
    entries_at: usize,
    pub end: usize,
}

fn bucket_bits_for(count: u64) -> u32 {
    let target = (count / ENTRIES_PER_BUCKET_TARGET).max(1);
    (63 - target.leading_zeros()).clamp(BUCKET_BITS_MIN, BUCKET_BITS_MAX)
}

fn packed_len(count: u64, entry_bits: u32) -> usize {
    (count * u64::from(entry_bits)).div_ceil(8) as usize + PACK_PAD_BYTES
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(a)
}

fn read_bits(bytes: &[u8], bit: u64, width: u32) -> u128 {
    let at = (bit / 8) as usize;
    let mut a = [0u8; 16];
    a.copy_from_slice(&bytes[at..at + 16]);
    (u128::from_le_bytes(a) >> (bit % 8)) & mask(width)
}

/// Append a table built from `words` (sorted, strictly increasing mixed keys) to `out`, each
/// entry's reasons in `codes` (which code every set of `words`).
pub(crate) fn encode(out: &mut Vec<u8>, space: Space, words: &[u128], codes: ReasonCodes) {
    let count = words.len() as u64;
    assert!(count <= TABLE_ENTRIES_MAX, "table over TABLE_ENTRIES_MAX");
    let key_bits = space.key_bits();
    let bucket_bits = bucket_bits_for(count);
    let rem_bits = key_bits - bucket_bits;
    let entry_bits = rem_bits + codes.bits();
    debug_assert!(words.iter().all(|w| w & REASON_MASK != 0));
    out.extend_from_slice(&[
        key_bits as u8,
        bucket_bits as u8,
        entry_bits as u8,
        0,
        0,
        0,
        0,
        0,
    ]);
    out.extend_from_slice(&count.to_le_bytes());
    // Index: the first entry of every bucket, then the count.
    let mut next = 0usize;
    for bucket in 0..(1u128 << bucket_bits) {
        while next < words.len() && (words[next] >> (REASON_BITS + rem_bits)) < bucket {
            next += 1;
        }
        out.extend_from_slice(&(next as u32).to_le_bytes());
    }
    out.extend_from_slice(&(count as u32).to_le_bytes());
    // Entries: the remainder, then the code of the reason set.
    let start = out.len();
    out.resize(start + packed_len(count, entry_bits), 0);
    let packed = &mut out[start..];
    for (i, w) in words.iter().enumerate() {
        let bit = i as u64 * u64::from(entry_bits);
        let at = (bit / 8) as usize;
        let entry =
            ((mixed_of(*w) & mask(rem_bits)) << codes.bits()) | codes.code_of(reasons_of(*w));
        let value = entry << (bit % 8);
        let mut a = [0u8; 16];
        a.copy_from_slice(&packed[at..at + 16]);
        let merged = u128::from_le_bytes(a) | value;
        packed[at..at + 16].copy_from_slice(&merged.to_le_bytes());
    }
}

/// Sort words of `space` (mixed key << 4 | reason set) as ids and reasons; a word naming no
/// id (a card slot of 10^20 or more, possible only in a malformed file) is skipped.
pub(crate) fn ids_of(
    space: Space,
    words: impl Iterator<Item = u128>,
) -> impl Iterator<Item = (ListId, ReasonSet)> {
    let bits = space.key_bits();
    words.filter_map(move |w| {
        let id = space.id_from_key(unmix(mixed_of(w), bits))?;
        Some((id, reasons_of(w)))
    })
}

/// A table header's first byte: the key width of `space`.
pub(crate) fn check_key_bits(found: u8, space: Space) -> Result<(), TableError> {
    let expected = space.key_bits();
    if u32::from(found) == expected {
        Ok(())
    } else {
        Err(TableError::KeyBits { found, expected })
    }
}

impl Table {
    /// Validate a table whose entries' reasons are in `codes` (its line table's), starting at
    /// `at` in `bytes` (fuzz-safe: every malformation is an error).
    pub(crate) fn parse(
        bytes: &[u8],
        at: usize,
        space: Space,
        codes: ReasonCodes,
    ) -> Result<Table, TableError> {
        let head = bytes
            .get(at..at + TABLE_HEADER_LEN)
            .ok_or(TableError::Truncated)?;
        check_key_bits(head[0], space)?;
        let expected = space.key_bits();
        let bucket_bits = u32::from(head[1]);
        if !(BUCKET_BITS_MIN..=BUCKET_BITS_MAX).contains(&bucket_bits) {
            return Err(TableError::BucketBits(head[1]));
        }
        let entry_bits = u32::from(head[2]);
        if entry_bits != expected - bucket_bits + codes.bits() {
            return Err(TableError::EntryBits(head[2]));
        }
        if head[3..8].iter().any(|b| *b != 0) {
            return Err(TableError::Reserved);
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(&head[8..16]);
        let count = u64::from_le_bytes(c);
        if count > TABLE_ENTRIES_MAX {
            return Err(TableError::TooMany(count));
        }
        let index_at = at + TABLE_HEADER_LEN;
        let entries_at = index_at + 4 * ((1usize << bucket_bits) + 1);
        let pad_at = entries_at + packed_len(count, entry_bits) - PACK_PAD_BYTES;
        let end = pad_at + PACK_PAD_BYTES;
        if bytes.len() < end {
            return Err(TableError::Truncated);
        }
        if bytes[pad_at..end].iter().any(|b| *b != 0) {
            return Err(TableError::Padding);
        }
        let table = Table {
            space,
            codes,
            bucket_bits,
            entry_bits,
            count,
            index_at,
            entries_at,
            end,
        };
        table.check_index(bytes)?;
        table.check_entries(bytes)?;
        Ok(table)
    }

    fn check_index(&self, bytes: &[u8]) -> Result<(), TableError> {
        let mut prev = 0u32;
        if read_u32(bytes, self.index_at) != 0 {
            return Err(TableError::Index);
        }
        for b in 1..=(1usize << self.bucket_bits) {
            let v = read_u32(bytes, self.index_at + 4 * b);
            if v < prev {
                return Err(TableError::Index);
            }
            prev = v;
        }
        if u64::from(prev) != self.count {
            return Err(TableError::Index);
        }
        Ok(())
    }

    /// Remainders strictly increase inside a bucket (so no key is listed twice), and every
    /// entry has a reason.
    fn check_entries(&self, bytes: &[u8]) -> Result<(), TableError> {
        let reason_bits = self.codes.bits();
        for bucket in 0..(1usize << self.bucket_bits) {
            let (lo, hi) = self.bucket_range(bytes, bucket);
            let mut prev: Option<u128> = None;
            for i in lo..hi {
                let entry = self.entry(bytes, i);
                if self.codes.set_of(entry).is_none() {
                    return Err(TableError::NoReason);
                }
                let rem = entry >> reason_bits;
                if prev.is_some_and(|p| p >= rem) {
                    return Err(TableError::Order);
                }
                prev = Some(rem);
            }
        }
        // A card slot holding a key of 10^20 or more is not looked for here (it would cost an
        // unmix per entry at open): no lookup key can equal it, and `ids_of` skips it.
        Ok(())
    }

    fn bucket_range(&self, bytes: &[u8], bucket: usize) -> (u64, u64) {
        let lo = read_u32(bytes, self.index_at + 4 * bucket);
        let hi = read_u32(bytes, self.index_at + 4 * (bucket + 1));
        (u64::from(lo), u64::from(hi))
    }

    fn entry(&self, bytes: &[u8], i: u64) -> u128 {
        read_bits(
            &bytes[self.entries_at..],
            i * u64::from(self.entry_bits),
            self.entry_bits,
        )
    }

    /// The reasons `key` is listed for in this table.
    #[inline]
    pub fn get(&self, bytes: &[u8], key: u128) -> Option<ReasonSet> {
        let key_bits = self.space.key_bits();
        let (code_bits, codes) = (self.codes.bits(), self.codes);
        let mixed = mix(key, key_bits);
        let rem_bits = key_bits - self.bucket_bits;
        let bucket = (mixed >> rem_bits) as usize;
        let rem = mixed & mask(rem_bits);
        let (lo, hi) = self.bucket_range(bytes, bucket);
        if lo == hi {
            return None;
        }
        // Mixed keys are uniform inside a bucket, so interpolation lands within a few
        // entries (one cache line) of the key; scan from there towards it.
        let guess = lo + ((rem * u128::from(hi - lo)) >> rem_bits) as u64;
        let e = self.entry(bytes, guess);
        let r = e >> code_bits;
        if r == rem {
            return codes.set_of(e);
        }
        if r < rem {
            for i in guess + 1..hi {
                let e = self.entry(bytes, i);
                let r = e >> code_bits;
                if r >= rem {
                    return if r == rem { codes.set_of(e) } else { None };
                }
            }
        } else {
            for i in (lo..guess).rev() {
                let e = self.entry(bytes, i);
                let r = e >> code_bits;
                if r <= rem {
                    return if r == rem { codes.set_of(e) } else { None };
                }
            }
        }
        None
    }

    /// Every entry as its sort word (mixed key << 4 | reason set, whatever the table's
    /// coding), in increasing order.
    pub fn words<'a>(&'a self, bytes: &'a [u8]) -> impl Iterator<Item = u128> + 'a {
        let rem_bits = self.space.key_bits() - self.bucket_bits;
        let reason_bits = self.codes.bits();
        (0..1usize << self.bucket_bits).flat_map(move |bucket| {
            let (lo, hi) = self.bucket_range(bytes, bucket);
            (lo..hi).map(move |i| {
                let e = self.entry(bytes, i);
                let mixed = ((bucket as u128) << rem_bits) | (e >> reason_bits);
                self.codes.to_sort_word(mixed, e)
            })
        })
    }
}

/// Runs `check` on `rounds` copies of `bytes`, each with one random bit flipped at or after
/// `from`: a parser under test must return, whatever the bit, never panic.
#[cfg(test)]
pub(crate) fn flipped_bits_never_panic(
    bytes: &[u8],
    from: usize,
    seed: u64,
    rounds: usize,
    check: impl Fn(&[u8]),
) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..rounds {
        let mut b = bytes.to_vec();
        let i = rng.gen_range(from..b.len());
        b[i] ^= 1 << rng.gen_range(0..8);
        check(&b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn mix_is_a_bijection_of_the_key_space() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for bits in [CARD_KEY_BITS, ACCOUNT_KEY_BITS] {
            for _ in 0..10_000 {
                let k: u128 = rng.gen::<u128>() & mask(bits);
                let m = mix(k, bits);
                assert!(m <= mask(bits));
                assert_eq!(unmix(m, bits), k);
            }
            for k in 0..1000u128 {
                assert_eq!(unmix(mix(k, bits), bits), k);
            }
        }
        for _ in 0..1000 {
            let c = CardNo::from_u128(rng.gen_range(0..10u128.pow(20))).unwrap();
            assert_eq!(card_key(&c), c.as_u128());
        }
        for n in [
            0,
            9,
            10,
            99_999_999_999_999_999_999u128,
            37_140_000_000_000_000_001,
        ] {
            assert_eq!(card_key(&CardNo::from_u128(n).unwrap()), n);
        }
    }

    #[test]
    fn clustered_card_numbers_spread_over_buckets() {
        let base: CardNo = "37140000000000000000".parse().unwrap();
        let n = 1u128 << 16;
        let mut counts = vec![0u32; 1 << 12];
        for i in 0..n {
            let m = mix(base.as_u128() + i, CARD_KEY_BITS);
            counts[(m >> (CARD_KEY_BITS - 12)) as usize] += 1;
        }
        // 16 a bucket on average; a poor mix of sequential numbers would leave most empty.
        let max = *counts.iter().max().unwrap();
        let empty = counts.iter().filter(|c| **c == 0).count();
        assert!(max < 48 && empty < 8, "max {max}, empty {empty}");
    }

    #[test]
    fn table_finds_exactly_what_was_put_in() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let keys: Vec<u128> = (0..5000)
            .map(|_| rng.gen_range(0..10u128.pow(20)))
            .collect();
        let mut words: Vec<u128> = keys
            .iter()
            .map(|k| sort_word(mix(*k, CARD_KEY_BITS), ReasonSet::of(ListReason::Lost)))
            .collect();
        words.sort_unstable();
        words.dedup_by_key(|w| mixed_of(*w));
        let mut bytes = Vec::new();
        encode(&mut bytes, Space::Cards, &words, ReasonCodes::SETS);
        let t = Table::parse(&bytes, 0, Space::Cards, ReasonCodes::SETS).unwrap();
        assert_eq!(t.end, bytes.len());
        for k in &keys {
            assert_eq!(t.get(&bytes, *k), Some(ReasonSet::of(ListReason::Lost)));
            assert_eq!(t.get(&bytes, k + 1).is_some(), keys.contains(&(k + 1)));
        }
        assert_eq!(t.words(&bytes).collect::<Vec<_>>(), words);
    }

    #[test]
    fn corrupt_tables_are_errors_not_panics() {
        let mut words: Vec<u128> = (0..300u128)
            .map(|k| sort_word(mix(k, ACCOUNT_KEY_BITS), ReasonSet::of(ListReason::Arrears)))
            .collect();
        words.sort_unstable();
        let mut bytes = Vec::new();
        encode(&mut bytes, Space::Accounts, &words, ReasonCodes::SETS);
        assert!(Table::parse(&bytes, 0, Space::Cards, ReasonCodes::SETS).is_err());
        for n in 0..bytes.len() {
            assert!(Table::parse(&bytes[..n], 0, Space::Accounts, ReasonCodes::SETS).is_err());
        }
        flipped_bits_never_panic(&bytes, 0, 3, 2000, |b| {
            if let Ok(t) = Table::parse(b, 0, Space::Accounts, ReasonCodes::SETS) {
                let _ = t.get(b, 5);
                let _ = ids_of(Space::Accounts, t.words(b)).count();
            }
        });
    }
}
