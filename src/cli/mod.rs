//! Command-line front ends: each subcommand parses its arguments with clap and calls library
//! functions; errors are rendered once, here, as one line for humans.

pub mod ride_code;
