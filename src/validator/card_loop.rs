//! The card input of the validator program: wait for a card on the PC/SC reader, run the
//! tap with the PSAM this loop owns (the engine's core is locked for the tap's short steps
//! only), wait for the card to leave, again; between taps, the work
//! the other threads handed over ([`Shared::between_taps`]).

use std::ffi::CStr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{ReaderState, Shared};
use crate::card::pcsc::{PcscChannel, Presence, Readers};
use crate::card::psam::Psam;
use crate::reader::wait_and_connect;

/// How long one wait for a card (or for it to leave) lasts before the loop looks at the stop
/// flag and the work between taps, milliseconds.
pub const CARD_POLL_MS: u64 = super::IDLE_POLL_MS;
/// Pause after the reader failed (pcscd restarted, reader unplugged), milliseconds.
pub const READER_RETRY_MS: u64 = 1_000;

/// Run until `shared.stop`. A tap in progress when the stop comes is finished first.
pub fn run(shared: &Shared, psam: &mut Psam<PcscChannel>, readers: &Readers, card_reader: &CStr) {
    let poll = Some(Duration::from_millis(CARD_POLL_MS));
    while !shared.stopping() {
        shared
            .reader_state
            .store(ReaderState::Ready as u8, Ordering::Relaxed);
        match wait_and_connect(readers, card_reader, poll) {
            Ok(None) => shared.between_taps(),
            Ok(Some(mut channel)) => {
                shared.tap(psam, &mut channel);
                channel.disconnect();
                wait_gone(shared, readers, card_reader);
            }
            Err(e) => {
                shared
                    .reader_state
                    .store(ReaderState::Failed as u8, Ordering::Relaxed);
                tracing::warn!(error = %e, "card reader failed; trying again");
                std::thread::sleep(Duration::from_millis(READER_RETRY_MS));
            }
        }
    }
    shared.between_taps();
    shared
        .reader_state
        .store(ReaderState::Stopped as u8, Ordering::Relaxed);
}

/// Wait for the card to leave, so a card held on the reader is not charged twice.
fn wait_gone(shared: &Shared, readers: &Readers, card_reader: &CStr) {
    let poll = Some(Duration::from_millis(CARD_POLL_MS));
    while !shared.stopping() {
        match readers.wait_for(card_reader, Presence::Empty, poll) {
            Ok(true) => return,
            Ok(false) => shared.between_taps(),
            Err(e) => {
                tracing::warn!(error = %e, "card reader failed while the card was on it");
                return;
            }
        }
    }
}
