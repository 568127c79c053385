//! The validator's uplink to the depot upload station, and the wire protocol both share.
//!
//! - [`frame`]: the wire format (every byte table of the protocol);
//! - [`auth`]: challenge-response and the session MAC;
//! - [`conn`]: frames over a socket;
//! - [`client`]: the validator's upload session;
//! - [`downlink`]: signed downlink files and the validator's downlink folder;
//! - [`source`]: the journal as a session reads it (whole, or from a running validator).

pub mod auth;
pub mod client;
pub mod conn;
pub mod downlink;
pub mod frame;
pub mod source;

pub use client::{upload, UploadError, UploadReport};
