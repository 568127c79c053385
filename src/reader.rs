//! The validator on real readers (PC/SC): the card in one reader, the PSAM in another.
//!
//! [`Station`] is the loop body of `fare-validator run`: wait for a card, connect, run
//! [`Validator::tap_card`] on it, hand back the decision; then wait for the card to leave
//! before the next tap, so a card held on the reader is not charged twice.

use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

use crate::blacklist::Blacklist;
use crate::card::pcsc::{PcscChannel, PcscError, Presence, Readers};
use crate::card::psam::Psam;
use crate::card::tunion::CardError;
use crate::clock::Timestamp;
use crate::engine::{Decision, EngineConfig, Validator};
use crate::fare::FareTable;
use crate::journal::Journal;

/// Local time of Dezhou (China Standard Time, UTC+8), seconds east of UTC.
pub const CHINA_STANDARD_TIME_OFFSET_S: i32 = 8 * 3600;
/// How long the PSAM may take to show up in its reader at start, milliseconds.
pub const SAM_WAIT_MS: u64 = 5_000;
/// Pause before connecting again when a card vanished between arrival and connect,
/// milliseconds.
pub const CONNECT_RETRY_MS: u64 = 50;

/// Why the station cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum StationError {
    #[error(transparent)]
    Reader(#[from] PcscError),
    #[error("no PSAM in reader {0:?}")]
    NoSam(String),
    #[error("PSAM in reader {reader:?}: {error}")]
    Psam { reader: String, error: CardError },
    #[error("connect to the card: {0}")]
    Connect(pcsc::Error),
}

pub use crate::clock::system_now;

/// A validator wired to a card reader and a PSAM reader.
pub struct Station {
    readers: Readers,
    card_reader: CString,
    validator: Validator<PcscChannel>,
}

impl Station {
    /// Find both readers, open the PSAM (select, read the terminal number), build the
    /// validator.
    pub fn open(
        readers: Readers,
        card_reader: &str,
        sam_reader: &str,
        cfg: EngineConfig,
        fares: FareTable,
        blacklist: Blacklist,
        journal: Journal,
    ) -> Result<Self, StationError> {
        let card = readers.find(card_reader)?;
        let psam = open_psam(&readers, sam_reader)?;
        tracing::info!(card_reader, sam_reader, terminal_no = ?psam.terminal_no(), "station open");
        Ok(Station {
            validator: Validator::new(cfg, psam, fares, blacklist, journal),
            readers,
            card_reader: card,
        })
    }

    pub fn validator(&self) -> &Validator<PcscChannel> {
        &self.validator
    }

    pub fn validator_mut(&mut self) -> &mut Validator<PcscChannel> {
        &mut self.validator
    }

    /// Wait for a card and run one tap on it; the clock is read when the card is connected.
    /// `Ok(None)` when `timeout` passed with no card.
    pub fn tap(
        &mut self,
        clock: &mut dyn FnMut() -> Timestamp,
        timeout: Option<Duration>,
    ) -> Result<Option<(Timestamp, Decision)>, StationError> {
        let Some(mut channel) = wait_and_connect(&self.readers, &self.card_reader, timeout)? else {
            return Ok(None);
        };
        let now = clock();
        let decision = self.validator.tap_card(&mut channel, now);
        channel.disconnect();
        Ok(Some((now, decision)))
    }

    /// Wait until the card reader is empty. `Ok(false)` when `timeout` passed first.
    pub fn wait_card_gone(&self, timeout: Option<Duration>) -> Result<bool, StationError> {
        Ok(self
            .readers
            .wait_for(&self.card_reader, Presence::Empty, timeout)?)
    }
}

/// Wait for the PSAM in `sam_reader` (at most [`SAM_WAIT_MS`]) and open it: select, read
/// the terminal number.
pub fn open_psam(readers: &Readers, sam_reader: &str) -> Result<Psam<PcscChannel>, StationError> {
    let sam = readers.find(sam_reader)?;
    if !readers.wait_for(
        &sam,
        Presence::Card,
        Some(Duration::from_millis(SAM_WAIT_MS)),
    )? {
        return Err(StationError::NoSam(sam_reader.to_string()));
    }
    let channel = readers.connect(&sam).map_err(|e| StationError::Psam {
        reader: sam_reader.to_string(),
        error: CardError::Channel(crate::card::pcsc::channel_error(e)),
    })?;
    Psam::open(channel).map_err(|error| StationError::Psam {
        reader: sam_reader.to_string(),
        error,
    })
}

/// Wait for a card in `card_reader` and connect to it. `Ok(None)` when `timeout` passed
/// with no card; a card that vanished (or is mute) between arrival and connect is waited
/// out.
pub fn wait_and_connect(
    readers: &Readers,
    card_reader: &CStr,
    timeout: Option<Duration>,
) -> Result<Option<PcscChannel>, StationError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let left = |d: Option<Instant>| d.map(|d| d.saturating_duration_since(Instant::now()));
    loop {
        if !readers.wait_for(card_reader, Presence::Card, left(deadline))? {
            return Ok(None);
        }
        match readers.connect(card_reader) {
            Ok(c) => return Ok(Some(c)),
            Err(
                e @ (pcsc::Error::NoSmartcard
                | pcsc::Error::RemovedCard
                | pcsc::Error::ResetCard
                | pcsc::Error::UnresponsiveCard
                | pcsc::Error::UnpoweredCard),
            ) => {
                // Gone (or mute) between arrival and connect: wait for the next one.
                tracing::debug!(error = %e, "card not connectable");
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(CONNECT_RETRY_MS));
            }
            Err(pcsc::Error::UnknownReader | pcsc::Error::ReaderUnavailable) => {
                return Err(
                    PcscError::ReaderGone(card_reader.to_string_lossy().into_owned()).into(),
                )
            }
            Err(e) => return Err(StationError::Connect(e)),
        }
    }
}
