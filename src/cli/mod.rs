//! Command-line front ends: each subcommand parses its arguments with clap and calls library
//! functions; errors are rendered once, as one line for humans.

#[cfg(feature = "clearing")]
pub mod clearing;
pub mod depot;
pub mod operator;
#[cfg(feature = "pcsc")]
pub mod pcsc;
pub mod ride_code;
pub mod sim_card;
pub mod validator;

/// A command's failure: exit code (1 runtime, 2 bad input) and one line for standard error.
pub type CmdError = (u8, String);
pub mod blacklist;

/// The level logged when `RUST_LOG` says nothing, for the station and the bus (`depot`,
/// `upload`, `run`, `sim-card`): warn. Security events (failed logins, handshake places or
/// session slots exhausted, gaps and declared losses, protocol errors, refused or stale
/// downlink files) are logged at warn, so they reach the log by default.
pub const DEFAULT_LOG_LEVEL: tracing::Level = tracing::Level::WARN;

/// The same for the one-shot tools (`replay`, `demo`, `bench`, `journal`, `blacklist`,
/// `ride-code`), whose findings are their output and whose standard error carries one line
/// on failure: error.
pub const TOOL_LOG_LEVEL: tracing::Level = tracing::Level::ERROR;

/// The command line's log filter: `RUST_LOG` when set, else `default`.
pub fn log_filter(default: tracing::Level) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::from_level(default).into())
        .from_env_lossy()
}
