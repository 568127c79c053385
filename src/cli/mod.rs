//! Command-line front ends: each subcommand parses its arguments with clap and calls library
//! functions; errors are rendered once, as one line for humans.

pub mod depot;
#[cfg(feature = "pcsc")]
pub mod pcsc;
pub mod ride_code;
pub mod sim_card;

/// A command's failure: exit code (1 runtime, 2 bad input) and one line for standard error.
pub type CmdError = (u8, String);
pub mod blacklist;
