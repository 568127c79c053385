//! The base of the blacklist: one cache line answers almost every lookup.
//!
//! A key's mixed value `m` (see [`packed::mix`], a bijection of the key space, so clustered
//! card numbers spread evenly) is multiplied by the number of lines `L`: the product's high
//! bits name the line, `⌊m·L / 2^K⌋`, and its low `K` bits, shifted right by `t = ⌊log2 L⌋`,
//! are what the line stores. Both are monotone in `m`, so lines hold consecutive ranges of
//! mixed keys in order; two keys of one line differ in the product by at least `L ≥ 2^t`, so
//! the stored values are distinct: (line, stored value) names exactly one key. No false
//! positives, no false negatives, and no division on the lookup path.
//!
//! A line is 64 bytes at a 64-aligned address (the file places lines at a 64-aligned offset,
//! [`super::aligned`] loads files at a 64-aligned address): a 4-bit count, then up to `C`
//! entries of `K − t + r` bits (stored value, then the code of the entry's reason set in `r`
//! bits, see [`ReasonCodes`]) in increasing order. Lines are sized for
//! 80 % of `C` entries on average; a line keeps the `C` smallest keys of its range, and the
//! rest (about 3 % of entries) go to a small overflow table ([`packed::Table`]). A lookup reads
//! its line in place, finds the key in four branch-free steps of a binary search (each slot
//! read through a table of byte offsets and shifts made when the table is opened), and only
//! when the line is full and the key is above its last entry looks in the overflow table.
//! Whether the key is in the line is decided without a branch: lookups are independent, and
//! a mispredicted branch on the line's bytes would throw away the work the processor started
//! on the next ones while this one waited for its line.
//!
//! At 20 million cards: 2.5 million lines of 10 entries of 46 + r bits (48 for cards each
//! listed for one of three reasons), 160 MB and about 8.3
//! bytes an entry with the overflow; a lookup touches one cache line (the packed sorted table
//! it replaces touched an index line and one or two entry lines: ~2x slower on this project's
//! machine, where every access outside L2 costs ~150 ns).
//!
//! # Table byte layout (little-endian), as it sits in a snapshot payload
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | key_bits `K`: 67 (cards) or 80 (accounts) |
//! | 1 | 1 | shift `t` = ⌊log2 L⌋ |
//! | 2 | 1 | entry_bits = K − t + r: `r` the code bits, 0..=4 (bytes 24..32; 2 in format 1, see [`Coding`]) |
//! | 3 | 1 | slots a line `C` = min(15, ⌊508 / entry_bits⌋) |
//! | 4 | 4 | pad: bytes from offset 32 to the first line (0..=63) |
//! | 8 | 8 | lines `L`, 1..=[`LINES_MAX`] |
//! | 16 | 8 | entries in lines |
//! | 24 | 1 | reason coding: 0, each entry's reason set as its own 4 bits (`r` = 4; format 1's 2-bit code in format 1); 1, a palette (format 2 and later) |
//! | 25 | 2 | the palette: bit `b` set for the reason set of bits `b` (bit 0, the empty set, never), 1 to 8 sets; `r` the fewest bits numbering them; 0 with coding 0 |
//! | 27 | 5 | reserved, 0 |
//! | 32 | pad | zero, so that the lines start at a file offset that is a multiple of 64 |
//! | … | 64·L | lines: bits 0..4 count, then entry j at bit 4 + j·entry_bits: stored << r ‖ code (coding 0: the set, bit n − 1 for reason n, not 0; a palette: the set's place among the palette's, from 0); unused bits 0 |
//! | … | … | overflow: a [`packed`] table of the same key space and the same codes |
//!
//! The encoder writes a palette whenever the table holds at most [`packed::PALETTE_SETS_MAX`]
//! distinct sets (a list whose cards are each lost, replaced or cancelled: 2 bits; accounts
//! listed for arrears only: none), coding 0 otherwise. A reader from before palettes, which
//! took bytes 24..32 as reserved and every set as 4 bits, finds a palette table's geometry
//! wrong and refuses the file with a typed error, keeping the list it holds.

use super::packed::{self, mask, Coding, ReasonCodes, Space, Table, TableError, REASON_BITS};
use crate::types::{ListId, ReasonSet};

pub const LINE_BYTES: usize = 64;
const LINE_BITS: u32 = 512;
const COUNT_BITS: u32 = 4;
/// Most slots a line has (the count is 4 bits).
pub const SLOTS_MAX: u32 = 15;
/// Lines are sized for this many entries in ten slots on average: fuller lines overflow
/// more, emptier ones cost memory.
pub const LOAD_TENTHS: u64 = 8;
pub const LINES_MAX: u64 = 1 << 31;
pub const HEADER_LEN: usize = 32;
/// Header byte 24 of a table whose reasons are coded by a palette (bytes 25..27 name it).
const REASON_CODING_PALETTE: u8 = 1;
/// Entries up to this wide are read with one u64 load (57 bits plus a shift of up to 7).
const NARROW_ENTRY_BITS_MAX: u32 = 57;
/// Byte offset of a line's last 8 bytes.
const LAST_WORD_AT: u32 = LINE_BYTES as u32 - 8;

/// Where one line table lies inside its owner's bytes (validated: every read is in bounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineTable {
    pub space: Space,
    coding: Coding,
    /// How entries name their reasons (the header's palette, or the coding's fixed codes).
    codes: ReasonCodes,
    /// The answer of a line search by (found << 4 | code): a load instead of a branch. A
    /// found entry whose code names no set (which [`LineTable::parse`] never lets in) reads
    /// as not listed.
    answers: [Option<ReasonSet>; 2 << REASON_BITS],
    shift: u32,
    entry_bits: u32,
    slots: u32,
    lines: u64,
    lines_at: usize,
    overflow: Table,
    /// Entries in lines and overflow.
    pub count: u64,
    pub end: usize,
    /// For narrow entries, where slot j's u64 read starts in a line and how far it shifts
    /// left to put the entry in the word's top bits, for every j the search can name (slots
    /// past the last repeat the last), so a search step reads its slot with no arithmetic.
    slot_reads: [[u8; 2]; SEARCH_SLOTS],
    /// For narrow entries, the constants of the comparison in the word's top bits (see
    /// [`Self::get_in`]), made once here instead of on every lookup.
    narrow: Narrow,
}

/// [`LineTable::get_in`]'s constants for narrow entries (all zero for wide ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Narrow {
    /// The stored value's bits: entry bits − r (r: the table's code bits).
    stored_mask: u64,
    /// Bits below the stored value once an entry fills a word's top bits: 64 − entry bits + r.
    below: u32,
    /// Ones in those bits.
    below_ones: u64,
    /// Where the entry's code starts in that word: 64 − entry bits.
    code_at: u32,
    /// Ones in the code's r bits.
    code_mask: u64,
}

impl Narrow {
    fn of(entry_bits: u32, code_bits: u32) -> Narrow {
        if entry_bits > NARROW_ENTRY_BITS_MAX {
            return Narrow::default();
        }
        let below = 64 - entry_bits + code_bits;
        Narrow {
            stored_mask: (1u64 << (entry_bits - code_bits)) - 1,
            below,
            below_ones: (1u64 << below) - 1,
            code_at: 64 - entry_bits,
            code_mask: (1u64 << code_bits) - 1,
        }
    }
}

/// [`LineTable::answers`] for `codes`.
fn answers(codes: ReasonCodes) -> [Option<ReasonSet>; 2 << REASON_BITS] {
    let mut t = [None; 2 << REASON_BITS];
    for (code, answer) in t[1 << REASON_BITS..].iter_mut().enumerate() {
        *answer = codes.set_of_code(code);
    }
    t
}

/// Slots the four-step line search can name (some past a line's last slot).
const SEARCH_SLOTS: usize = 16;

/// [`LineTable::slot_reads`]: the last 8 bytes of a line are read whole, with a shorter
/// shift, so no read leaves the line (slots · entry_bits + 4 ≤ 512). Made only for narrow
/// entries (at most [`NARROW_ENTRY_BITS_MAX`] bits).
fn slot_reads(entry_bits: u32, slots: u32) -> [[u8; 2]; SEARCH_SLOTS] {
    let mut out = [[0u8; 2]; SEARCH_SLOTS];
    for (j, read) in (0u32..).zip(out.iter_mut()) {
        let pos = COUNT_BITS + j.min(slots.max(1) - 1) * entry_bits;
        let start = (pos / 8).min(LAST_WORD_AT);
        // The entry's bits sit at pos − 8·start in the word (at most 7, or at most
        // 64 − entry_bits in the last word), so the left shift is 0..=63 and both fit a byte.
        let left = 64 - entry_bits - (pos - 8 * start);
        *read = [start as u8, left as u8];
    }
    out
}

/// (t, entry bits, slots) for `lines` lines of keys of `key_bits`, reasons in codes of
/// `code_bits`.
fn geometry(key_bits: u32, lines: u64, code_bits: u32) -> (u32, u32, u32) {
    let shift = 63 - lines.max(1).leading_zeros();
    let entry_bits = key_bits - shift + code_bits;
    let slots = ((LINE_BITS - COUNT_BITS) / entry_bits).min(SLOTS_MAX);
    (shift, entry_bits, slots)
}

/// Lines for `count` keys at [`LOAD_TENTHS`] of a line's slots. Slots depend on the line
/// count (through `t`) and the line count on slots: start from a guess of 8 slots and settle.
/// Any result is consistent, since a table's geometry is always derived from its line count.
fn lines_for(key_bits: u32, count: u64, code_bits: u32) -> u64 {
    let mut lines = (count * 10).div_ceil(8 * LOAD_TENTHS).max(1);
    for _ in 0..3 {
        let (_, _, slots) = geometry(key_bits, lines, code_bits);
        lines = (count * 10).div_ceil(u64::from(slots) * LOAD_TENTHS).max(1);
    }
    lines.min(LINES_MAX)
}

/// (line, stored value) of a mixed key.
#[inline(always)]
fn place(mixed: u128, key_bits: u32, lines: u64, shift: u32) -> (u64, u128) {
    let p = mixed * u128::from(lines);
    ((p >> key_bits) as u64, (p & mask(key_bits)) >> shift)
}

/// The mixed key at (line, stored), if one maps there.
fn unplace(line: u64, stored: u128, key_bits: u32, lines: u64, shift: u32) -> Option<u128> {
    let low = (u128::from(line) << key_bits) | (stored << shift);
    let m = low.div_ceil(u128::from(lines));
    (place(m, key_bits, lines, shift) == (line, stored)).then_some(m)
}

/// A line as 8 words plus 2 zero words, so a field read never leaves the array.
#[inline]
fn load_line(bytes: &[u8], at: usize) -> [u64; 10] {
    let mut w = [0u64; 10];
    for (i, word) in w.iter_mut().take(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at + 8 * i..at + 8 * i + 8]);
        *word = u64::from_le_bytes(b);
    }
    w
}

#[inline]
fn field(w: &[u64; 10], pos: u32, width: u32) -> u128 {
    let k = (pos / 64) as usize;
    let sh = pos % 64;
    let mut v = (u128::from(w[k]) | (u128::from(w[k + 1]) << 64)) >> sh;
    if sh > 0 {
        v |= u128::from(w[k + 2]) << (128 - sh);
    }
    v & mask(width)
}

/// OR `value` (at most `width` bits) into the line words at bit `pos`.
fn put_field(w: &mut [u64; 10], pos: u32, width: u32, value: u128) {
    let value = value & mask(width);
    let k = (pos / 64) as usize;
    let sh = pos % 64;
    w[k] |= (value << sh) as u64;
    w[k + 1] |= (value << sh >> 64) as u64;
    if sh > 0 {
        w[k + 2] |= (value >> (128 - sh)) as u64;
    }
}

/// Append a line table built from `words` (sorted, strictly increasing mixed keys, reasons
/// not empty; see [`packed::sort_word`]) to `out`, whose offset 0 is the start of the file.
/// Its reasons are coded in the fewest bits for the sets `words` hold
/// ([`ReasonCodes::for_words`]).
pub fn encode(out: &mut Vec<u8>, space: Space, words: &[u128]) {
    let key_bits = space.key_bits();
    let codes = ReasonCodes::for_words(words);
    let lines = lines_for(key_bits, words.len() as u64, codes.bits());
    let (shift, entry_bits, slots) = geometry(key_bits, lines, codes.bits());
    let pad = (out.len() + HEADER_LEN).next_multiple_of(LINE_BYTES) - (out.len() + HEADER_LEN);
    out.extend_from_slice(&[key_bits as u8, shift as u8, entry_bits as u8, slots as u8]);
    out.extend_from_slice(&(pad as u32).to_le_bytes());
    out.extend_from_slice(&lines.to_le_bytes());
    let count_at = out.len();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&reason_coding_bytes(codes));
    out.resize(out.len() + pad, 0);
    let lines_at = out.len();
    out.resize(lines_at + LINE_BYTES * lines as usize, 0);
    let mut overflow = Vec::new();
    let mut in_lines = 0u64;
    let mut i = 0;
    while i < words.len() {
        let (line, _) = place(packed::mixed_of(words[i]), key_bits, lines, shift);
        let mut w = [0u64; 10];
        let mut n = 0;
        while let Some(word) = words.get(i) {
            let (this, stored) = place(packed::mixed_of(*word), key_bits, lines, shift);
            if this != line {
                break;
            }
            if n < slots {
                let entry = (stored << codes.bits()) | codes.code_of(packed::reasons_of(*word));
                put_field(&mut w, COUNT_BITS + n * entry_bits, entry_bits, entry);
                n += 1;
            } else {
                overflow.push(*word);
            }
            i += 1;
        }
        w[0] |= u64::from(n);
        let at = lines_at + LINE_BYTES * line as usize;
        for (k, word) in w.iter().take(8).enumerate() {
            out[at + 8 * k..at + 8 * k + 8].copy_from_slice(&word.to_le_bytes());
        }
        in_lines += u64::from(n);
    }
    out[count_at..count_at + 8].copy_from_slice(&in_lines.to_le_bytes());
    packed::encode(out, space, &overflow, codes);
}

/// Header bytes 24..32 for `codes`: see the module's table.
fn reason_coding_bytes(codes: ReasonCodes) -> [u8; 8] {
    let mut b = [0u8; 8];
    if let Some(palette) = codes.palette() {
        b[0] = REASON_CODING_PALETTE;
        b[1..3].copy_from_slice(&palette.to_le_bytes());
    }
    b
}

/// The codes header bytes 24..32 name, in a table of `coding`: none (all zero) is the
/// coding's own; a palette only in tables of reason sets (format 2 and later).
fn reason_coding_of(head: &[u8; 8], coding: Coding) -> Result<ReasonCodes, TableError> {
    match (head[0], coding) {
        (0, _) if head.iter().all(|b| *b == 0) => Ok(coding.codes()),
        (REASON_CODING_PALETTE, Coding::Sets) if head[3..].iter().all(|b| *b == 0) => {
            ReasonCodes::from_palette(u16::from_le_bytes([head[1], head[2]]))
                .ok_or(TableError::Palette)
        }
        _ => Err(TableError::Reserved),
    }
}

impl LineTable {
    /// Validate a line table of `coding` starting at `at` in `bytes` (fuzz-safe: every
    /// malformation is an error, never a panic).
    pub fn parse(
        bytes: &[u8],
        at: usize,
        space: Space,
        coding: Coding,
    ) -> Result<LineTable, TableError> {
        let head = bytes
            .get(at..at + HEADER_LEN)
            .ok_or(TableError::Truncated)?;
        packed::check_key_bits(head[0], space)?;
        let key_bits = space.key_bits();
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let lines = u64_at(8);
        if !(1..=LINES_MAX).contains(&lines) {
            return Err(TableError::Lines("line count out of range"));
        }
        let mut coding_bytes = [0u8; 8];
        coding_bytes.copy_from_slice(&head[24..32]);
        let codes = reason_coding_of(&coding_bytes, coding)?;
        let (shift, entry_bits, slots) = geometry(key_bits, lines, codes.bits());
        if (u32::from(head[1]), u32::from(head[2]), u32::from(head[3]))
            != (shift, entry_bits, slots)
        {
            return Err(TableError::Lines("geometry does not match the line count"));
        }
        let pad = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if pad >= LINE_BYTES {
            return Err(TableError::Reserved);
        }
        let in_lines = u64_at(16);
        let lines_at = at + HEADER_LEN + pad;
        let lines_end = usize::try_from(lines)
            .ok()
            .and_then(|l| l.checked_mul(LINE_BYTES))
            .and_then(|n| n.checked_add(lines_at))
            .filter(|end| *end <= bytes.len())
            .ok_or(TableError::Truncated)?;
        if bytes[at + HEADER_LEN..lines_at].iter().any(|b| *b != 0) {
            return Err(TableError::Padding);
        }
        let overflow = Table::parse(bytes, lines_end, space, codes)?;
        // Only tables of reason sets are looked up in place (format 1 is converted).
        let narrow = coding == Coding::Sets && entry_bits <= NARROW_ENTRY_BITS_MAX;
        let table = LineTable {
            space,
            coding,
            codes,
            answers: answers(codes),
            shift,
            entry_bits,
            slots,
            lines,
            lines_at,
            overflow,
            count: in_lines + overflow.count,
            end: overflow.end,
            slot_reads: if narrow {
                slot_reads(entry_bits, slots)
            } else {
                [[0; 2]; SEARCH_SLOTS]
            },
            narrow: if narrow {
                Narrow::of(entry_bits, codes.bits())
            } else {
                Narrow::default()
            },
        };
        table.check(bytes, in_lines)?;
        Ok(table)
    }

    /// Counts within the slots, entries strictly increasing and each with a reason, unused
    /// bits zero, the count total; every overflow entry belongs after a full line's last entry.
    fn check(&self, bytes: &[u8], in_lines: u64) -> Result<(), TableError> {
        let used_bits = |n: u32| COUNT_BITS + n * self.entry_bits;
        let reason_bits = self.codes.bits();
        let mut total = 0u64;
        for line in 0..self.lines {
            let w = load_line(bytes, self.lines_at + LINE_BYTES * line as usize);
            let n = (w[0] & 0xF) as u32;
            if n > self.slots {
                return Err(TableError::Lines("line count over its slots"));
            }
            let mut prev: Option<u128> = None;
            for j in 0..n {
                let entry = field(&w, used_bits(j), self.entry_bits);
                if self.codes.set_of(entry).is_none() {
                    return Err(TableError::NoReason);
                }
                let stored = entry >> reason_bits;
                if prev.is_some_and(|p| p >= stored) {
                    return Err(TableError::Order);
                }
                prev = Some(stored);
            }
            let mut pos = used_bits(n);
            while pos < LINE_BITS {
                let width = (LINE_BITS - pos).min(64);
                if field(&w, pos, width) != 0 {
                    return Err(TableError::Padding);
                }
                pos += width;
            }
            total += u64::from(n);
        }
        if total != in_lines {
            return Err(TableError::Lines("entry count does not match the lines"));
        }
        for word in self.overflow.words(bytes) {
            let (line, stored) = self.place(packed::mixed_of(word));
            match self.last_of_full_line(bytes, line) {
                Some(last) if stored > last => {}
                _ => return Err(TableError::Lines("overflow entry of a line that has room")),
            }
        }
        Ok(())
    }

    #[inline]
    fn place(&self, mixed: u128) -> (u64, u128) {
        place(mixed, self.space.key_bits(), self.lines, self.shift)
    }

    fn last_of_full_line(&self, bytes: &[u8], line: u64) -> Option<u128> {
        let w = load_line(bytes, self.lines_at + LINE_BYTES * line as usize);
        let n = (w[0] & 0xF) as u32;
        (n == self.slots && n > 0).then(|| {
            field(&w, COUNT_BITS + (n - 1) * self.entry_bits, self.entry_bits) >> self.codes.bits()
        })
    }

    /// The reasons `key` is listed for in this table (the tests' entry; the blacklist calls
    /// [`Self::get_in`] with the width it already knows from the id's kind).
    #[cfg(test)]
    fn get(&self, bytes: &[u8], key: u128) -> Option<ReasonSet> {
        match self.space {
            Space::Cards => self.get_in::<{ packed::CARD_KEY_BITS }>(bytes, key),
            Space::Accounts => self.get_in::<{ packed::ACCOUNT_KEY_BITS }>(bytes, key),
        }
    }

    /// Ask the memory system for the line `key` would be read from, without waiting for it
    /// (see [`Blacklist::apply_all`](super::Blacklist::apply_all)): a loop over many keys
    /// prefetches a few keys ahead, so their cache misses overlap.
    #[inline]
    pub fn prefetch(&self, bytes: &[u8], key: u128) {
        let mixed = packed::mix(key, self.space.key_bits());
        let (line, _) = self.place(mixed);
        let at = self.lines_at + LINE_BYTES * line as usize;
        if let Some(line) = bytes.get(at..at + LINE_BYTES) {
            super::aligned::prefetch(line.as_ptr());
        }
    }

    /// [`Self::get`] with the key width a constant (its masks and shifts fold); `K` must be
    /// this table's key width, and the table one of reason sets.
    #[inline(always)]
    pub(super) fn get_in<const K: u32>(&self, bytes: &[u8], key: u128) -> Option<ReasonSet> {
        debug_assert_eq!(K, self.space.key_bits());
        debug_assert_eq!(self.coding, Coding::Sets);
        let mixed = packed::mix(key, K);
        let product = mixed * u128::from(self.lines);
        let line = (product >> K) as u64;
        let at = self.lines_at + LINE_BYTES * line as usize;
        let line: &[u8; LINE_BYTES] = bytes[at..at + LINE_BYTES]
            .try_into()
            .expect("a slice of LINE_BYTES");
        let n = u32::from(line[0] & 0xF);
        let eb = self.entry_bits;
        if eb <= NARROW_ENTRY_BITS_MAX {
            // One u64 load a slot, read in place (see `slot_reads`): a lookup touches one
            // cache line and no copy of it has to be forwarded. The load is shifted left so
            // the entry fills the word's top `eb` bits, above whatever follows it; the key's
            // stored value is put in the same place before the line arrives, with all ones
            // below (`ceiling`), so that one comparison orders them, with no mask or shift
            // after the miss: word ≤ ceiling exactly when the entry's stored value ≤ the key's.
            // The stored value (see `place`) has K − t = eb − r bits here, under 64: one
            // 128-bit shift by t (below 32) and a 64-bit mask.
            let Narrow {
                stored_mask,
                below,
                below_ones,
                code_at,
                code_mask,
            } = self.narrow;
            let stored = (product >> (self.shift & 63)) as u64 & stored_mask;
            debug_assert_eq!(
                u128::from(stored),
                place(mixed, K, self.lines, self.shift).1
            );
            let ceiling = (stored << below) | below_ones;
            let read = |j: u32| {
                let [at, left] = self.slot_reads[j as usize % SEARCH_SLOTS];
                let at = usize::from(at);
                let mut word = [0u8; 8];
                word.copy_from_slice(&line[at..at + 8]);
                u64::from_le_bytes(word) << left
            };
            self.find(
                bytes,
                key,
                n,
                read,
                |w| w <= ceiling,
                |w| {
                    // Equal stored values: the words agree above `below`.
                    (
                        (w ^ ceiling) >> below == 0,
                        ((w >> code_at) & code_mask) as usize,
                    )
                },
            )
        } else {
            self.get_wide((product & mask(K)) >> self.shift, bytes, key, line, n)
        }
    }

    /// The line search for entries too wide for one u64 read (accounts, and small card
    /// tables): the line is copied into words. Kept out of line so that the narrow path
    /// above needs fewer registers and less stack.
    #[inline(never)]
    fn get_wide(
        &self,
        stored: u128,
        bytes: &[u8],
        key: u128,
        line: &[u8; LINE_BYTES],
        n: u32,
    ) -> Option<ReasonSet> {
        let eb = self.entry_bits;
        let w = load_line(line, 0);
        let last_slot = self.slots - 1;
        let read = |j: u32| field(&w, COUNT_BITS + j.min(last_slot) * eb, eb);
        let (code_bits, code_mask) = (self.codes.bits(), self.codes.code_mask());
        self.find(
            bytes,
            key,
            n,
            read,
            |e| e >> code_bits <= stored,
            |e| (e >> code_bits == stored, (e & code_mask) as usize),
        )
    }

    /// The line search for the key's stored value, given the line's `n` used slots, slot
    /// `j` as `read(j)`, whether a slot's stored value is at most the key's (`at_most`), and
    /// whether it is equal, with the slot's code (`equal_code`): a branch-free binary
    /// search over 16 virtual slots in four fixed steps (entries increase; a slot at or past
    /// `n` counts as above everything). Not in the line: in the overflow table only when the
    /// line is full and the key is above its last entry.
    #[inline(always)]
    fn find<T: Copy>(
        &self,
        bytes: &[u8],
        key: u128,
        n: u32,
        read: impl Fn(u32) -> T,
        at_most: impl Fn(T) -> bool,
        equal_code: impl Fn(T) -> (bool, usize),
    ) -> Option<ReasonSet> {
        let last_slot = self.slots - 1;
        // `read` takes any j below SEARCH_SLOTS; past the last slot it repeats the last.
        let mut base = 0u32;
        for half in [8u32, 4, 2, 1] {
            let j = base + half;
            let le = (j < n) & at_most(read(j));
            base = if le { j } else { base };
        }
        // `base` is now the last slot at most the key (or slot 0). Past the line only when
        // the line is full and the key is above its last entry (a few percent of lookups):
        // the one branch that depends on the line's bytes, and a rarely taken one. Hit or
        // miss is decided without a branch, so a mispredicted guess cannot throw away the
        // next lookups' work started while this one waited for its line. (`a & b & c` on
        // bools, or a select, compiles to a branch on the first, which mispredicts on the
        // quarter of lines that are full; as a byte through `black_box` it is one branch.)
        let entry = read(base);
        let (equal, code) = equal_code(entry);
        let above_last = (base == last_slot) & at_most(entry) & !equal;
        let full = n == self.slots;
        if std::hint::black_box(u8::from(full) & u8::from(above_last)) != 0 {
            return self.overflow.get(bytes, key);
        }
        let hit = (base < n) & equal;
        // `code` is below 16 (a masked code of at most 4 bits): the index is below 32.
        self.answers[(usize::from(hit) << REASON_BITS) | (code & 0xF)]
    }

    /// Every entry as its sort word (mixed key << 4 | reason set, whatever the table's
    /// coding), in increasing order.
    pub fn words<'a>(&'a self, bytes: &'a [u8]) -> impl Iterator<Item = u128> + 'a {
        let key_bits = self.space.key_bits();
        let reason_bits = self.codes.bits();
        let mut overflow = self.overflow.words(bytes).peekable();
        (0..self.lines).flat_map(move |line| {
            let w = load_line(bytes, self.lines_at + LINE_BYTES * line as usize);
            let n = (w[0] & 0xF) as u32;
            let mut out: Vec<u128> = (0..n)
                .filter_map(|j| {
                    let e = field(&w, COUNT_BITS + j * self.entry_bits, self.entry_bits);
                    let m = unplace(line, e >> reason_bits, key_bits, self.lines, self.shift)?;
                    Some(self.codes.to_sort_word(m, e))
                })
                .collect();
            while let Some(word) = overflow.next_if(|w| self.place(packed::mixed_of(*w)).0 == line)
            {
                out.push(word);
            }
            out
        })
    }

    /// Every entry as an id and its reasons, in mixed-key order.
    pub fn entries<'a>(
        &'a self,
        bytes: &'a [u8],
    ) -> impl Iterator<Item = (ListId, ReasonSet)> + 'a {
        packed::ids_of(self.space, self.words(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `n` random keys of `space`.
    fn random_keys(rng: &mut impl Rng, space: Space, n: usize) -> Vec<u128> {
        let bound = if space == Space::Cards {
            10u128.pow(20)
        } else {
            1 << 80
        };
        (0..n).map(|_| rng.gen_range(0..bound)).collect()
    }

    /// What `words` (sorted sort words of `space`) list `key` for.
    fn listed(words: &[u128], space: Space, key: u128) -> Option<ReasonSet> {
        let m = packed::mix(key, space.key_bits());
        words
            .binary_search_by_key(&m, |w| packed::mixed_of(*w))
            .ok()
            .map(|i| packed::reasons_of(words[i]))
    }

    /// A table of `keys` whose entries take every set of one or more reasons, in turn.
    fn table_of(space: Space, keys: &[u128]) -> (Vec<u8>, Vec<u128>, LineTable) {
        table_of_sets(space, keys, 15)
    }

    #[test]
    fn finds_exactly_what_was_put_in_overflow_included() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for (space, n) in [
            (Space::Cards, 20_000),
            (Space::Cards, 60_000),
            (Space::Accounts, 5_000),
            (Space::Cards, 3),
        ] {
            let keys = random_keys(&mut rng, space, n);
            let (bytes, words, t) = table_of(space, &keys);
            assert_eq!(t.end, bytes.len());
            assert_eq!(t.count, words.len() as u64);
            assert_eq!((t.lines_at) % LINE_BYTES, 0);
            if n > 1000 {
                assert!(
                    t.overflow.count > 0,
                    "the test should reach the overflow table"
                );
            }
            let reason = |k: &u128| listed(&words, space, *k);
            for k in keys.iter().take(3000) {
                assert_eq!(
                    t.get(&bytes, *k),
                    reason(k),
                    "{space:?} {n} eb {}",
                    t.entry_bits
                );
                assert_eq!(t.get(&bytes, k + 1), reason(&(k + 1)));
            }
            assert_eq!(t.words(&bytes).collect::<Vec<_>>(), words);
        }
    }

    /// A table of `keys` whose entries take, in turn, the first `n` sets of one or more
    /// reasons (so it holds `n` distinct sets).
    fn table_of_sets(space: Space, keys: &[u128], n: u8) -> (Vec<u8>, Vec<u128>, LineTable) {
        let mut words: Vec<u128> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let set = ReasonSet::from_bits((i % usize::from(n)) as u8 + 1).unwrap();
                packed::sort_word(packed::mix(*k, space.key_bits()), set)
            })
            .collect();
        words.sort_unstable();
        words.dedup_by_key(|w| packed::mixed_of(*w));
        let mut bytes = vec![0u8; 48];
        encode(&mut bytes, space, &words);
        let t = LineTable::parse(&bytes, 48, space, Coding::Sets).unwrap();
        (bytes, words, t)
    }

    #[test]
    fn each_table_codes_its_reasons_in_the_fewest_bits_for_the_sets_it_holds() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        // Distinct sets → code bits: a palette up to eight sets, each set's own 4 bits past.
        for (n, bits) in [
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (15, 4),
        ] {
            // 60,000 cards: entries narrow enough for one u64 read with 3 code bits (and
            // 150,000 with 4), so both lookup paths meet every code width.
            let sizes: &[(Space, usize)] = if bits == 4 {
                &[
                    (Space::Cards, 30_000),
                    (Space::Accounts, 8_000),
                    (Space::Cards, 150_000),
                ]
            } else {
                &[
                    (Space::Cards, 30_000),
                    (Space::Accounts, 8_000),
                    (Space::Cards, 60_000),
                ]
            };
            for &(space, count) in sizes {
                let keys = random_keys(&mut rng, space, count);
                let (bytes, words, t) = table_of_sets(space, &keys, n);
                if count >= 60_000 {
                    assert!(t.entry_bits <= NARROW_ENTRY_BITS_MAX, "{n} sets, {count}");
                }
                assert_eq!(t.codes.bits(), bits, "{n} sets");
                assert_eq!(t.entry_bits, space.key_bits() - t.shift + bits);
                // Header byte 24: a palette (1) up to eight sets, the sets' own bits (0) past.
                assert_eq!(bytes[48 + 24], u8::from(n <= 8), "{n} sets");
                assert!(
                    t.overflow.count > 0,
                    "the test should reach the overflow table"
                );
                let reason = |k: &u128| listed(&words, space, *k);
                for k in keys.iter().take(4_000) {
                    assert_eq!(t.get(&bytes, *k), reason(k), "{space:?} {n} sets");
                    assert_eq!(t.get(&bytes, k + 1), reason(&(k + 1)));
                }
                assert_eq!(t.words(&bytes).collect::<Vec<_>>(), words);
            }
        }
    }

    #[test]
    fn a_palette_that_names_no_set_an_unknown_coding_or_a_code_past_the_palette_is_an_error() {
        let keys: Vec<u128> = (0..3_000u128).map(|k| k * 7919).collect();
        let (bytes, _, t) = table_of_sets(Space::Cards, &keys, 4);
        let palette_at = 48 + 24;
        assert_eq!(bytes[palette_at..palette_at + 3], [1, 0b1_1110, 0]);
        let with = |patch: &[(usize, u8)]| {
            let mut b = bytes.clone();
            for (i, v) in patch {
                b[palette_at + i] = *v;
            }
            LineTable::parse(&b, 48, Space::Cards, Coding::Sets)
        };
        // The empty set named, no set, nine sets: not a palette.
        assert_eq!(with(&[(1, 0b1_1111)]), Err(TableError::Palette));
        assert_eq!(with(&[(1, 0), (2, 0)]), Err(TableError::Palette));
        assert_eq!(with(&[(1, 0xFE), (2, 0x03)]), Err(TableError::Palette));
        // An unknown coding, a byte after the palette, a palette in a format 1 table.
        assert_eq!(with(&[(0, 2)]), Err(TableError::Reserved));
        assert_eq!(with(&[(5, 1)]), Err(TableError::Reserved));
        assert_eq!(
            LineTable::parse(&bytes, 48, Space::Cards, Coding::OneReason),
            Err(TableError::Reserved)
        );
        // Three sets in two bits: the entries coded 3 name no set.
        assert_eq!(with(&[(1, 0b1110)]), Err(TableError::NoReason));
        // A reader from before palettes (bytes 24..32 reserved, every set in 4 bits) finds the
        // geometry wrong and refuses the table: it keeps the list it holds.
        let old_reader = with(&[(0, 0), (1, 0), (2, 0)]);
        assert_eq!(
            old_reader,
            Err(TableError::Lines("geometry does not match the line count"))
        );
        assert!(t.count > 0);
    }

    #[test]
    fn place_and_unplace_are_inverse_and_ordered() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for lines in [1u64, 7, 1000, 2_500_000, LINES_MAX] {
            let (shift, _, _) = geometry(67, lines, REASON_BITS);
            let mut prev = (0u64, 0u128);
            let mut ms: Vec<u128> = (0..2000).map(|_| rng.gen::<u128>() & mask(67)).collect();
            ms.sort_unstable();
            for m in ms {
                let p = place(m, 67, lines, shift);
                assert!(p.0 < lines && p >= prev);
                assert_eq!(unplace(p.0, p.1, 67, lines, shift), Some(m));
                prev = p;
            }
        }
    }

    #[test]
    fn corrupt_tables_are_errors_not_panics() {
        let keys: Vec<u128> = (0..400u128).map(|k| k * 7919).collect();
        let (bytes, _, _) = table_of(Space::Accounts, &keys);
        assert!(LineTable::parse(&bytes, 48, Space::Cards, Coding::Sets).is_err());
        // A bit set in the unused tail of an empty line (found by fuzzing: the padding check
        // once read the whole tail as one field wider than 128 bits).
        let (mut empty, _, t) = table_of(Space::Cards, &[]);
        empty[t.lines_at + LINE_BYTES - 1] |= 0x80;
        assert_eq!(
            LineTable::parse(&empty, 48, Space::Cards, Coding::Sets),
            Err(TableError::Padding)
        );
        for n in 48..bytes.len() {
            assert!(LineTable::parse(&bytes[..n], 48, Space::Accounts, Coding::Sets).is_err());
        }
        packed::flipped_bits_never_panic(&bytes, 48, 4, 3000, |b| {
            if let Ok(t) = LineTable::parse(b, 48, Space::Accounts, Coding::Sets) {
                let _ = t.get(b, 5);
                let _ = t.entries(b).count();
            }
        });
        // Palette tables (one set: no code bits; three; five), their headers flipped too, read
        // as formats 2 and 1.
        for (seed, n) in [(6, 1), (7, 3), (8, 5)] {
            for space in [Space::Cards, Space::Accounts] {
                let (bytes, _, _) = table_of_sets(space, &keys, n);
                packed::flipped_bits_never_panic(&bytes, 48, seed, 1500, |b| {
                    for coding in [Coding::Sets, Coding::OneReason] {
                        if let Ok(t) = LineTable::parse(b, 48, space, coding) {
                            let _ = t.entries(b).count();
                            if coding == Coding::Sets {
                                let _ = t.get(b, 5);
                            }
                        }
                    }
                });
            }
        }
    }
}
