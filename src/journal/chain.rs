//! The record chain: every record of format 3 carries a MAC over its own bytes and the MAC of
//! the record before it, keyed by a key the journal's files do not give away.
//!
//! ```text
//! journal key   = HMAC-SHA256(station key, "fare-validator journal v1 chain key\0")
//! station key   = HMAC-SHA256(master secret, "fare-validator depot v1 station key\0" ‖ terminal id)
//! chain start   = HMAC-SHA256(journal key, "fare-validator journal v1 chain start\0" ‖ epoch (8, BE))[0..7]
//! MAC of seq s  = HMAC-SHA256(journal key, record bytes 0..85 ‖ MAC of seq s−1)[0..7]
//! ```
//!
//! The bus holds the master secret apart from the journal (its secret file, or
//! `FARE_VALIDATOR_SECRET`); the station holds only the station key
//! ([`crate::upload::auth::station_key`]), from which it derives the same journal key to
//! check the chain at ingest. A journal's files alone (a copy of the bus's storage) give
//! neither, so a record cannot be altered (a fare set to 0, its CRC fixed) without its MAC
//! going wrong.
//!
//! The record before seq `s` is the journal's record at `s − 1`. The chain starts (the "chain
//! start" value above stands for the MAC before) at the epoch's first record, after a record of
//! format 1 or 2 (no MAC), and when the journal is opened with no record at `s − 1` on its disk
//! (all pruned, or cut): the depot checks such a record against the chain start and reports a
//! restart in the middle of an epoch.
//!
//! MACs are truncated to [`RECORD_MAC_BYTES`] (56 bits), the record's reserved bytes: they
//! are checked online at the depot only, where every failure is refused and reported, so a
//! forger gets one blind guess per record uploaded (2^-56); the card's own TAC and MAC2
//! (JT/T 978) are 32 bits.
//!
//! Commands with no terminal secret (replay, the demo, `run`, tests, benchmarks) chain their records
//! with [`JournalKey::test`], a public key named as such: the records say so in their flags
//! (bit 1), and the depot reports them as unauthenticated. There is no record without a
//! MAC in format 3, and no MAC value means "none".

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::upload::auth::{station_key, Secret};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a record's chain MAC (a truncated HMAC-SHA256).
pub const RECORD_MAC_BYTES: usize = 7;

/// A record's chain MAC.
pub type RecordMac = [u8; RECORD_MAC_BYTES];

const JOURNAL_KEY_LABEL: &[u8] = b"fare-validator journal v1 chain key\0";
const CHAIN_START_LABEL: &[u8] = b"fare-validator journal v1 chain start\0";
/// The public test key of replay, the demo, tests and benchmarks: NOT a secret.
const TEST_KEY_BYTES: &[u8; 32] = b"fare-validator PUBLIC test key!!";

/// Which key a record's MAC was made with (flags bit 1 of format 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SealKey {
    /// The terminal's journal key, derived from its secret.
    Terminal,
    /// The public test key ([`JournalKey::test`]).
    Test,
}

/// The key a journal's records are chained with. Holds the HMAC state after the key, so a
/// MAC costs two SHA-256 blocks and no allocation.
#[derive(Clone)]
pub struct JournalKey {
    mac: HmacSha256,
    kind: SealKey,
}

impl std::fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JournalKey({:?})", self.kind)
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length: this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

impl JournalKey {
    /// The journal key derived from the station's key for the terminal (what the depot holds).
    pub fn from_station_key(station_key: &Secret) -> JournalKey {
        let mut m = keyed(station_key);
        m.update(JOURNAL_KEY_LABEL);
        let key: [u8; 32] = m.finalize().into_bytes().into();
        JournalKey {
            mac: keyed(&key),
            kind: SealKey::Terminal,
        }
    }

    /// The journal key of terminal `terminal_id` whose master secret is `master` (what the
    /// bus derives at start).
    pub fn for_terminal(master: &Secret, terminal_id: &str) -> JournalKey {
        Self::from_station_key(&station_key(master, terminal_id))
    }

    /// The public test key: for commands and tests with no terminal secret. Anyone can make
    /// records under it; they are marked so (flags bit 1) and the depot reports them.
    pub fn test() -> JournalKey {
        JournalKey {
            mac: keyed(TEST_KEY_BYTES),
            kind: SealKey::Test,
        }
    }

    pub fn kind(&self) -> SealKey {
        self.kind
    }

    /// The value standing for the MAC before the first record of a chain in `epoch`.
    pub fn chain_start(&self, epoch: u64) -> RecordMac {
        let mut m = self.mac.clone();
        m.update(CHAIN_START_LABEL);
        m.update(&epoch.to_be_bytes());
        truncate(m)
    }

    /// The MAC of a record whose bytes before the MAC are `body`, after `prev`.
    pub fn mac(&self, body: &[u8], prev: &RecordMac) -> RecordMac {
        let mut m = self.mac.clone();
        m.update(body);
        m.update(prev);
        truncate(m)
    }

    /// Whether `mac` is the MAC of `body` after `prev`, compared in constant time.
    pub fn verify(&self, body: &[u8], prev: &RecordMac, mac: &RecordMac) -> bool {
        let mut m = self.mac.clone();
        m.update(body);
        m.update(prev);
        m.verify_truncated_left(mac).is_ok()
    }
}

fn truncate(m: HmacSha256) -> RecordMac {
    let full = m.finalize().into_bytes();
    std::array::from_fn(|i| full[i])
}

/// The writer's end of a chain: the key and the MAC of the last record appended.
#[derive(Clone, Debug)]
pub struct Chain {
    pub key: JournalKey,
    pub prev: RecordMac,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_terminal_and_from_the_test_key_and_macs_bind_their_predecessor() {
        let master = [5u8; 32];
        let a = JournalKey::for_terminal(&master, "bus-0001");
        let b = JournalKey::for_terminal(&master, "bus-0002");
        let station = JournalKey::from_station_key(&station_key(&master, "bus-0001"));
        let t = JournalKey::test();
        let start = a.chain_start(7);
        let m = a.mac(b"record", &start);
        assert!(
            station.verify(b"record", &start, &m),
            "the depot's key is the bus's"
        );
        assert!(!b.verify(b"record", &start, &m));
        assert!(!t.verify(b"record", &start, &m));
        assert!(!a.verify(b"record", &a.chain_start(8), &m), "another epoch");
        assert!(!a.verify(b"recorD", &start, &m));
        assert_ne!(a.chain_start(7), t.chain_start(7));
        assert_eq!((a.kind(), t.kind()), (SealKey::Terminal, SealKey::Test));
    }
}
