//! Real readers through PC/SC (pcsc-lite's `pcscd` on Linux), with the `pcsc` crate: wait for
//! a card, connect, transmit APDUs as a [`CardChannel`].
//!
//! Link failures become [`ChannelError`]s the engine understands: a card that left the field
//! (`RemovedCard`, `ResetCard`, `NoSmartcard`, an answer without even a status word, or any
//! transmit failure after which the reader no longer shows the card) is
//! [`ChannelError::Removed`], so a torn tap becomes
//! `card_removed` and is recovered on the next tap; anything else is
//! [`ChannelError::Reader`]. A reader that disappears (unplugged, driver gone) is
//! [`PcscError::ReaderGone`] from the waits.

use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

use pcsc::{Context, Disposition, Error, Protocols, ReaderState, Scope, ShareMode, State};

use super::apdu::{CardChannel, ChannelError, Response};

/// Longest response a reader hands back: a short APDU's 256 data bytes and SW, with headroom
/// (pcsc-lite's MAX_BUFFER_SIZE).
pub const RESPONSE_BUFFER_BYTES: usize = pcsc::MAX_BUFFER_SIZE;
/// A wait for a card is cut into slices this long, so that a vanished reader or daemon is
/// noticed even while nothing happens, milliseconds.
pub const STATUS_WAIT_SLICE_MS: u64 = 1_000;
/// Longest reader list accepted.
pub const READERS_MAX: usize = 16;

/// Errors of the reader layer (outside a card dialogue).
#[derive(Debug, thiserror::Error)]
pub enum PcscError {
    #[error("pcscd is not running or not reachable: {0}")]
    NoService(Error),
    #[error("no reader named {name:?} (readers: {known})")]
    NoSuchReader { name: String, known: String },
    #[error("reader {0:?} disappeared")]
    ReaderGone(String),
    #[error("reader name {0:?} contains a NUL byte")]
    BadName(String),
    #[error("too many readers ({0}, at most {max})", max = READERS_MAX)]
    TooManyReaders(usize),
    #[error("PC/SC: {0}")]
    Pcsc(#[from] Error),
}

/// What the reader layer reported for a PC/SC error.
fn service_error(e: Error) -> PcscError {
    match e {
        Error::NoService | Error::ServiceStopped | Error::NoReadersAvailable => {
            PcscError::NoService(e)
        }
        e => PcscError::Pcsc(e),
    }
}

/// Map a PC/SC error inside a dialogue to what the engine understands.
pub fn channel_error(e: Error) -> ChannelError {
    match e {
        Error::RemovedCard | Error::ResetCard | Error::NoSmartcard | Error::UnpoweredCard => {
            ChannelError::Removed
        }
        Error::ReaderUnavailable | Error::UnknownReader | Error::NoReadersAvailable => {
            ChannelError::Reader("reader unavailable")
        }
        Error::NoService | Error::ServiceStopped => ChannelError::Reader("pcscd stopped"),
        Error::CommError | Error::NotTransacted => ChannelError::Reader("reader communication"),
        Error::UnresponsiveCard | Error::UnsupportedCard => {
            ChannelError::Reader("card does not respond")
        }
        Error::Timeout => ChannelError::Reader("reader timeout"),
        Error::InsufficientBuffer => ChannelError::MalformedResponse,
        _ => ChannelError::Reader("PC/SC error"),
    }
}

/// One reader as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderInfo {
    pub name: String,
    pub card_present: bool,
    pub atr: Vec<u8>,
}

/// What to wait for in a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Card,
    Empty,
}

/// A PC/SC context: the connection to pcscd.
#[derive(Clone)]
pub struct Readers {
    ctx: Context,
}

fn cname(name: &str) -> Result<CString, PcscError> {
    CString::new(name).map_err(|_| PcscError::BadName(name.to_string()))
}

impl Readers {
    /// Connect to pcscd.
    pub fn establish() -> Result<Self, PcscError> {
        let ctx = Context::establish(Scope::User).map_err(service_error)?;
        Ok(Readers { ctx })
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Names of the readers pcscd knows now.
    pub fn names(&self) -> Result<Vec<String>, PcscError> {
        let names = match self.ctx.list_readers_owned() {
            Ok(n) => n,
            Err(Error::NoReadersAvailable) => Vec::new(),
            Err(e) => return Err(service_error(e)),
        };
        if names.len() > READERS_MAX {
            return Err(PcscError::TooManyReaders(names.len()));
        }
        Ok(names
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect())
    }

    /// Every reader, with whether a card is in it and its ATR.
    pub fn list(&self) -> Result<Vec<ReaderInfo>, PcscError> {
        let names = self.names()?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut states = names
            .iter()
            .map(|n| Ok(ReaderState::new(cname(n)?, State::UNAWARE)))
            .collect::<Result<Vec<_>, PcscError>>()?;
        self.ctx
            .get_status_change(Duration::ZERO, &mut states)
            .map_err(service_error)?;
        Ok(states
            .iter()
            .zip(names)
            .map(|(s, name)| {
                let present = s.event_state().contains(State::PRESENT);
                ReaderInfo {
                    name,
                    card_present: present,
                    atr: if present {
                        s.atr().to_vec()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect())
    }

    /// Check that `name` is a reader now; its name as PC/SC takes it.
    pub fn find(&self, name: &str) -> Result<CString, PcscError> {
        let names = self.names()?;
        if names.iter().any(|n| n == name) {
            cname(name)
        } else {
            Err(PcscError::NoSuchReader {
                name: name.to_string(),
                known: if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
            })
        }
    }

    /// Wait until `reader` holds a card (or is empty). `Ok(false)` when `timeout` passed
    /// first; `None` waits as long as it takes. A reader that vanishes is an error.
    pub fn wait_for(
        &self,
        reader: &CStr,
        want: Presence,
        timeout: Option<Duration>,
    ) -> Result<bool, PcscError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let gone = || PcscError::ReaderGone(reader.to_string_lossy().into_owned());
        let mut rs = [ReaderState::new(reader.to_owned(), State::UNAWARE)];
        loop {
            let slice = Duration::from_millis(STATUS_WAIT_SLICE_MS);
            let slice = match deadline {
                Some(d) => slice.min(d.saturating_duration_since(Instant::now())),
                None => slice,
            };
            match self.ctx.get_status_change(slice, &mut rs) {
                Ok(()) => {}
                Err(Error::Timeout) => {}
                Err(Error::UnknownReader | Error::ReaderUnavailable) => return Err(gone()),
                Err(e) => return Err(service_error(e)),
            }
            let st = rs[0].event_state();
            if st.intersects(State::UNKNOWN | State::UNAVAILABLE | State::IGNORE) {
                return Err(gone());
            }
            let reached = match want {
                Presence::Card => st.contains(State::PRESENT) && !st.contains(State::MUTE),
                Presence::Empty => st.contains(State::EMPTY),
            };
            if reached {
                return Ok(true);
            }
            rs[0].sync_current_state();
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Connect to the card in `reader` (T=0 or T=1, shared).
    pub fn connect(&self, reader: &CStr) -> Result<PcscChannel, Error> {
        let card = self
            .ctx
            .connect(reader, ShareMode::Shared, Protocols::ANY)?;
        Ok(PcscChannel {
            card: Some(card),
            reader: reader.to_owned(),
            buf: [0; RESPONSE_BUFFER_BYTES],
        })
    }
}

/// A connected card (or SAM) in one reader.
pub struct PcscChannel {
    card: Option<pcsc::Card>,
    reader: CString,
    buf: [u8; RESPONSE_BUFFER_BYTES],
}

impl PcscChannel {
    pub fn reader(&self) -> &CStr {
        &self.reader
    }

    /// Whether the reader still shows this card as present and powered.
    pub fn card_present(&self) -> bool {
        // Only on an error path: the allocation of status2_owned does not touch a good tap.
        match self.card.as_ref().map(|c| c.status2_owned()) {
            Some(Ok(s)) => s.status().contains(pcsc::Status::PRESENT),
            _ => false,
        }
    }

    /// Release the card, leaving it as it is.
    pub fn disconnect(mut self) {
        self.release(Disposition::LeaveCard);
    }

    fn release(&mut self, how: Disposition) {
        if let Some(card) = self.card.take() {
            if let Err((_, e)) = card.disconnect(how) {
                tracing::debug!(error = %e, "disconnect");
            }
        }
    }
}

impl Drop for PcscChannel {
    fn drop(&mut self) {
        self.release(Disposition::LeaveCard);
    }
}

impl CardChannel for PcscChannel {
    fn transmit(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        let Some(card) = self.card.as_ref() else {
            return Err(ChannelError::Removed);
        };
        match card.transmit(command, &mut self.buf) {
            // No answer at all, not even a status word: the card did not answer the command.
            // vpcd hands this back when the card leaves mid-command (its socket closes), and
            // pcscd learns of the removal only at its next poll; treat it as the removal it
            // is, so a torn debit is `card_removed` and recovered at the next tap.
            Ok([]) => {
                tracing::debug!(reader = ?self.reader, "empty answer: card left the field");
                Err(ChannelError::Removed)
            }
            Ok(raw) => response.set_raw(raw),
            Err(e) => {
                let mapped = channel_error(e);
                // A card pulled away mid-command shows up as a link error on some drivers
                // (vpcd, some contactless readers): if the card is gone, it is a removal.
                let mapped = if matches!(mapped, ChannelError::Reader(_)) && !self.card_present() {
                    ChannelError::Removed
                } else {
                    mapped
                };
                tracing::debug!(error = %e, ?mapped, reader = ?self.reader, "transmit failed");
                Err(mapped)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_errors_are_removals() {
        for e in [
            Error::RemovedCard,
            Error::ResetCard,
            Error::NoSmartcard,
            Error::UnpoweredCard,
        ] {
            assert_eq!(channel_error(e), ChannelError::Removed, "{e:?}");
        }
        for e in [
            Error::ReaderUnavailable,
            Error::UnknownReader,
            Error::ServiceStopped,
            Error::CommError,
            Error::Timeout,
        ] {
            assert!(matches!(channel_error(e), ChannelError::Reader(_)), "{e:?}");
        }
    }
}
