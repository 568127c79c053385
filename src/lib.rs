//! fare-validator: the engine inside Dezhou's bus fare validators.
//!
//! A tap of a social security card (its T-Union transport purse) or a scan of an e-SSC ride
//! code becomes a [`engine::Decision`] offline, and every accepted tap becomes a checksummed,
//! durable journal record queued for the depot upload station.
//!
//! Where things live:
//! - [`card`]: APDU dialogue with the card and the PSAM, and their simulations;
//! - [`ride_code`]: ride code parsing and verification;
//! - [`blacklist`]: the offline blacklist;
//! - [`signed`]: signed, versioned files from the depot (blacklist, fares, keys);
//! - [`signing`]: the offline signing step (the station's request, the operator's signature);
//! - [`cli`]: the command-line subcommands as library functions;
//! - [`fare`]: the fare table;
//! - [`engine`]: where a tap becomes a decision;
//! - [`journal`]: durable records;
//! - [`replay`]: the replay contract (docs/replay.md);
//! - `reader` (feature `pcsc`): the validator on PC/SC readers; [`card::vpcd`]: simulated
//!   cards in vsmartcard's virtual reader.
//! - [`cli`]: command-line front ends over the library.
//! - `clearing` (feature `clearing`): the city clearing service on PostgreSQL.

pub mod bench;
pub mod blacklist;
pub mod card;
#[cfg(feature = "clearing")]
pub mod clearing;
pub mod cli;
pub mod clock;
pub mod demo;
pub mod depot;
pub mod engine;
pub mod fare;
pub mod journal;
#[cfg(feature = "pcsc")]
pub mod reader;
pub mod replay;
pub mod ride_code;
pub mod sched;
pub mod signed;
pub mod signing;
pub mod types;
pub mod upload;
pub mod validator;
