//! Command-line glue for the reader commands: `sim-card` (a simulated card or PSAM in vpcd's
//! virtual reader) and, with the `pcsc` feature, `run` and `readers` on PC/SC readers.

#[cfg(feature = "pcsc")]
pub mod pcsc;
pub mod sim_card;

/// A command's failure: exit code (1 runtime, 2 bad input) and one line for standard error.
pub type CmdError = (u8, String);
