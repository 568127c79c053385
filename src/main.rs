//! Minimal wiring for manual testing of the blacklist commands; the lead's main.rs replaces it.

use clap::{Parser, Subcommand};
use fare_validator::blacklist::bench::{run_bench, BenchBlacklistArgs};
use fare_validator::cli::blacklist::{run, BlacklistCmd};

#[derive(Parser)]
#[command(name = "fare-validator", about = "Offline fare validator engine")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Blacklist files: build, delta, info, check, keygen.
    #[command(subcommand)]
    Blacklist(BlacklistCmd),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// The packed blacklist against SQLite and HashSet<String>.
    Blacklist(BenchBlacklistArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let result = match Cli::parse().cmd {
        Cmd::Blacklist(cmd) => run(cmd),
        Cmd::Bench(BenchCmd::Blacklist(args)) => run_bench(&args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
