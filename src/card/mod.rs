//! The card side: ISO 7816-4 APDUs ([`apdu`]), the T-Union transport application
//! ([`tunion`]), the validator's PSAM ([`psam`]), PBOC e-purse cryptography ([`crypto`]), and
//! a simulated card and PSAM ([`sim`]) that answer the same APDUs; the UnionPay QuickPass
//! application ([`quickpass`]), its simulation ([`sim_quickpass`]), the test CA and issuer
//! that personalise simulated QuickPass cards ([`quickpass_issuer`]) and the acquirer's
//! sealing ([`acquirer`]).
//!
//! The engine speaks to every card and SAM through [`apdu::CardChannel`], so the same
//! dialogue runs against a simulation, a virtual reader or a USB reader.

pub mod acquirer;
pub mod apdu;
pub mod crypto;
#[cfg(feature = "pcsc")]
pub mod pcsc;
pub mod psam;
pub mod quickpass;
pub mod quickpass_issuer;
pub mod sim;
pub mod sim_quickpass;
pub mod tunion;
pub mod vpcd;

pub use apdu::{CardChannel, ChannelError, Response};
