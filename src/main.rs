//! `fare-validator`: the command line over the library. Errors are rendered here, once, as
//! one line on standard error; exit codes: 0 success, 1 runtime failure, 2 bad input or usage.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use fare_validator::{bench, cli, demo, journal, replay};

#[derive(Parser)]
#[command(
    name = "fare-validator",
    version,
    about = "Offline fare validator engine for Dezhou social security cards and e-SSC ride codes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a simulated service day on a fleet of buses and a depot, and print the report (no
    /// set-up needed).
    Demo(demo::DemoArgs),
    /// Run recorded taps and scans through the engine (docs/replay.md).
    Replay {
        /// CARDS.json: the simulated physical cards.
        #[arg(long)]
        cards: PathBuf,
        /// Ride-code key file (JSON). Without it every ride code is unsupported_channel.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// BLACKLIST.csv (header kind,id,reason).
        #[arg(long)]
        blacklist: Option<PathBuf>,
        /// Fare table (TOML); default: the embedded fixtures/fares.toml.
        #[arg(long)]
        fares: Option<PathBuf>,
        /// Journal folder; default: a new temporary folder.
        #[arg(long)]
        journal: Option<PathBuf>,
        /// Route the vehicle starts on.
        #[arg(long, default_value_t = 1)]
        route: u16,
        /// How the simulated PSAM answers: t1, or t0 as a T=0 contact card does (61xx: fetch
        /// with GET RESPONSE; 6Cxx: send again with that Le). Decisions do not change.
        #[arg(long, value_enum, default_value = "t1")]
        psam_protocol: fare_validator::card::sim::PsamProtocol,
        /// CA.json: the UnionPay CA public keys QuickPass taps are authenticated with
        /// (docs/quickpass.md). Without it every QuickPass tap is bad_certificate.
        #[arg(long)]
        emv_ca: Option<PathBuf>,
        /// EVENTS.jsonl, or - for standard input.
        events: PathBuf,
    },
    /// Measure the engine against a naive validator (SQLite per tap) in one run; `bench
    /// blacklist` measures the blacklist alone at scale.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        what: Option<BenchWhat>,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
    /// Build, diff, inspect and query signed blacklist files.
    Blacklist {
        #[command(subcommand)]
        cmd: cli::blacklist::BlacklistCmd,
    },
    /// The depot upload station: serve, provision terminals, counter actions, clearing views.
    Depot {
        #[command(subcommand)]
        cmd: cli::depot::DepotCmd,
    },
    /// The city clearing database on PostgreSQL: forward a depot's records, clear a service
    /// day (feature `clearing`; docs/clearing.md).
    #[cfg(feature = "clearing")]
    Clearing {
        #[command(subcommand)]
        cmd: cli::clearing::ClearingCmd,
    },
    /// Fare tables: import a GTFS-Fares v2 feed (docs/fares.md).
    Fares {
        #[command(subcommand)]
        cmd: FaresCmd,
    },
    /// The operator's offline step, on a machine apart from the station: sign what the
    /// station asked for (`depot sign-request`) with the operator's key file.
    Operator {
        #[command(subcommand)]
        cmd: cli::operator::OperatorCmd,
    },
    /// Upload a journal to the depot once; prints {"uploaded": N, "acked_seq": S, ...}. Exits 1
    /// when the depot refused records, records are declared gone or could not go up, or a
    /// downlink file failed its checks (the report is printed first; the message says what).
    Upload(cli::depot::UploadArgs),
    /// Run the validator on PC/SC readers: the card reader and the PSAM's reader.
    #[cfg(feature = "pcsc")]
    Run(cli::pcsc::RunArgs),
    /// The bus validator as one program: card reader and QR scanner into one engine, the
    /// uplink to the depot while it runs, a decision line per tap or scan on standard output
    /// (docs/config.md). Without the `pcsc` feature it runs on the QR scanner alone
    /// (card_reader = "none"). Stops on SIGTERM; SIGUSR1 writes the status line.
    Validator(cli::validator::ValidatorArgs),
    /// Write a validator's configuration from the depot's `terminal add` answer: the
    /// secret to a 0600 file, the operator key pinned once.
    Provision(cli::validator::ProvisionArgs),
    /// Replace the operator key a validator pinned (the only way it ever changes).
    RepinOperatorKey(cli::validator::RepinArgs),
    /// List the PC/SC readers (names for --reader and --sam-reader).
    #[cfg(feature = "pcsc")]
    Readers,
    /// Present a simulated card or PSAM in a vsmartcard virtual reader (vpcd, 127.0.0.1).
    SimCard(cli::sim_card::SimCardArgs),
    /// The issuer's side of ride codes, for tests and demos: keys, codes, QR symbols.
    RideCode {
        #[command(subcommand)]
        cmd: cli::ride_code::RideCodeCmd,
    },
    /// Inspect a journal.
    Journal {
        #[command(subcommand)]
        cmd: JournalCmd,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// The blacklist at provincial scale against SQLite and HashSet<String>.
    Blacklist(fare_validator::blacklist::bench::BenchBlacklistArgs),
    /// The validator program: a scanner line to its decision line with a card tap in
    /// progress, and taps while a blacklist delta is applied, beside the engine alone.
    Validator(fare_validator::validator::bench::ValidatorBenchArgs),
    /// The clearing service on PostgreSQL: a day of N records forwarded and cleared, beside
    /// row-by-row INSERTs and a per-record client-side TAC and counter loop (feature
    /// `clearing`; docs/clearing.md).
    #[cfg(feature = "clearing")]
    Clearing(fare_validator::clearing::bench::ClearingBenchArgs),
}

#[derive(Subcommand)]
enum JournalCmd {
    /// Print every durable record as a JSON line, in sequence order; a torn or corrupt tail is
    /// reported on standard error, then a summary line (records, cursor, problems, and the
    /// repairs of damaged side files counted from the repair log).
    Show {
        /// The validator's journal folder.
        dir: PathBuf,
        /// Then print the grey records (intents to debit, 灰记录) as they stand in grey.dat,
        /// one JSON line each: {"grey": "intent" | "settled" | "voided" | "abandoned", ...}.
        #[arg(long)]
        grey: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = match &cli.cmd {
        Cmd::Depot { .. } | Cmd::Upload(_) | Cmd::SimCard(_) => true,
        #[cfg(feature = "pcsc")]
        Cmd::Run(_) | Cmd::Readers => true,
        _ => false,
    };
    let level = if service {
        cli::DEFAULT_LOG_LEVEL
    } else {
        cli::TOOL_LOG_LEVEL
    };
    // Colour escapes only on a terminal: logs sent to a file or a pipe stay plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(cli::log_filter(level))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            // One line, whatever the error's own formatting (TOML errors span several).
            let one_line: Vec<&str> = msg
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("fare-validator: {}", one_line.join(" "));
            ExitCode::from(code)
        }
    }
}

#[derive(Subcommand, Debug)]
enum FaresCmd {
    /// Read a GTFS-Fares v2 feed's fare files in DIR into a fare table: the table (TOML) on
    /// standard output, one line per thing it cannot express on standard error. Exit 2 with
    /// the file and line on a malformed feed, and with those lines and no table when no leg
    /// rule of the feed can be expressed.
    ImportGtfs {
        /// The feed's folder: fare_products.txt, fare_leg_rules.txt and the optional fare
        /// files beside them.
        dir: PathBuf,
    },
}

fn import_gtfs(dir: &std::path::Path) -> CmdResult {
    use fare_validator::fare::gtfs::{import_dir, GtfsError};
    let import = match import_dir(dir) {
        Ok(import) => import,
        Err(GtfsError::NothingExpressed { not_expressed }) => {
            for note in &not_expressed {
                eprintln!("not expressed: {note}");
            }
            return Err(bad_input(
                "no fare leg rule of the feed can be expressed on a bus validator: no table made",
            ));
        }
        Err(e) => return Err(bad_input(e)),
    };
    for note in &import.not_expressed {
        eprintln!("not expressed: {note}");
    }
    let text = toml::to_string(&import.table).map_err(|e| (1, e.to_string()))?;
    print!("{text}");
    Ok(())
}

type CmdResult = Result<(), (u8, String)>;

fn bad_input(e: impl std::fmt::Display) -> (u8, String) {
    (2, e.to_string())
}

fn run(cmd: Cmd) -> CmdResult {
    match cmd {
        Cmd::Demo(args) => demo::run(&args).map_err(|e| (1, e)),
        Cmd::Bench { what: None, args } => bench::run(&args).map_err(|e| (1, e)),
        Cmd::Bench {
            what: Some(BenchWhat::Blacklist(args)),
            ..
        } => fare_validator::blacklist::bench::run_bench(&args).map_err(|e| (1, e)),
        Cmd::Bench {
            what: Some(BenchWhat::Validator(args)),
            ..
        } => {
            let r = fare_validator::validator::bench::run(&args).map_err(|e| (1, e))?;
            println!(
                "{}",
                serde_json::to_string(&r).map_err(|e| (1, e.to_string()))?
            );
            Ok(())
        }
        #[cfg(feature = "clearing")]
        Cmd::Bench {
            what: Some(BenchWhat::Clearing(args)),
            ..
        } => fare_validator::clearing::bench::run(&args).map_err(|e| (1, e)),
        Cmd::Blacklist { cmd } => cli::blacklist::run(cmd).map_err(bad_input),
        Cmd::Depot { cmd } => cli::depot::run_depot(cmd),
        Cmd::Upload(args) => cli::depot::run_upload(&args),
        #[cfg(feature = "clearing")]
        Cmd::Clearing { cmd } => cli::clearing::run(cmd),
        Cmd::Operator { cmd } => cli::operator::run(cmd),
        Cmd::Fares {
            cmd: FaresCmd::ImportGtfs { dir },
        } => import_gtfs(&dir),
        Cmd::Replay {
            cards,
            keys,
            blacklist,
            fares,
            journal,
            route,
            psam_protocol,
            emv_ca,
            events,
        } => {
            let opts = replay::ReplayOptions {
                cards,
                keys,
                blacklist,
                fares,
                journal,
                route,
                psam_protocol,
                emv_ca,
            };
            let stdout = std::io::stdout().lock();
            let input: Box<dyn BufRead> = if events.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                let f = std::fs::File::open(&events)
                    .map_err(|e| bad_input(format!("{}: {e}", events.display())))?;
                Box::new(BufReader::new(f))
            };
            match replay::run(&opts, input, stdout) {
                Ok(_) => Ok(()),
                Err(e @ replay::ReplayError::Journal(_)) => Err((1, e.to_string())),
                Err(e) => Err(bad_input(e)),
            }
        }
        #[cfg(feature = "pcsc")]
        Cmd::Run(args) => cli::pcsc::run(&args),
        #[cfg(feature = "pcsc")]
        Cmd::Readers => cli::pcsc::readers(),
        Cmd::Validator(args) => cli::validator::run(&args),
        Cmd::Provision(args) => cli::validator::provision(&args),
        Cmd::RepinOperatorKey(args) => cli::validator::repin(&args),
        Cmd::SimCard(args) => cli::sim_card::run(&args),
        Cmd::RideCode { cmd } => cli::ride_code::run(cmd).map_err(bad_input),
        Cmd::Journal {
            cmd: JournalCmd::Show { dir, grey },
        } => journal_show(&dir, grey),
    }
}

fn journal_show(dir: &std::path::Path, grey: bool) -> CmdResult {
    if !dir.is_dir() {
        return Err(bad_input(format!(
            "{}: not a journal folder",
            dir.display()
        )));
    }
    if !holds_journal_files(dir).map_err(|e| (1, format!("{}: {e}", dir.display())))? {
        return Err(bad_input(format!(
            "{}: not a journal folder (no seg-*.jnl segment and no acked cursor)",
            dir.display()
        )));
    }
    let scan = journal::scan(dir).map_err(|e| (1, format!("{}: {e}", dir.display())))?;
    let mut out = std::io::stdout().lock();
    for r in &scan.records {
        use std::io::Write;
        writeln!(out, "{}", r.to_json()).map_err(|e| (1, e.to_string()))?;
    }
    for p in &scan.problems {
        eprintln!("fare-validator: journal {p}");
    }
    // Grey records are bookkeeping, not records: printed only when asked for, after them.
    let greys = journal::grey::scan_grey(dir);
    for (op, g) in greys.entries.iter().filter(|_| grey) {
        use std::io::Write;
        writeln!(out, "{}", g.to_json(*op)).map_err(|e| (1, e.to_string()))?;
    }
    for p in &greys.problems {
        eprintln!("fare-validator: journal {p}");
    }
    // One line a person or a script reads: what is held, and how often a damaged side
    // file had to be repaired (each repair was also logged when it was made).
    let repairs = journal::repair::counts(dir);
    let summary = serde_json::json!({"summary": {
        "records": scan.records.len(),
        "first_seq": scan.records.first().map(|r| r.seq),
        "last_seq": scan.last_seq,
        "acked_seq": scan.acked_seq,
        "epoch": match scan.identity {
            journal::IdentityRead::Good(epoch, _) => Some(format!("{epoch:016x}")),
            _ => None,
        },
        "problems": scan.problems.len() + greys.problems.len(),
        "repairs": repairs.total,
        "repairs_by_file": repairs.by_file,
    }});
    eprintln!("fare-validator: journal {summary}");
    Ok(())
}

/// Whether `dir` holds a journal's files: a segment or the upload cursor. A journal, once
/// opened, always has its active segment, so a folder with neither is a mistyped path.
fn holds_journal_files(dir: &std::path::Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name == "acked" || (name.starts_with("seg-") && name.ends_with(".jnl")) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `run` seals QuickPass PANs to the acquirer's key it is given, never only to the test
    /// acquirer's (whose private half is public); the key goes with --emv-ca.
    #[test]
    #[cfg(feature = "pcsc")]
    fn run_takes_the_acquirer_key_with_the_ca_keys() {
        let run = |extra: &[&str]| {
            let mut argv = vec![
                "fare-validator",
                "run",
                "--reader",
                "r",
                "--sam-reader",
                "s",
            ];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        let parsed = run(&["--emv-ca", "ca.json", "--acquirer-key", "acquirer.pub"]);
        let Ok(Cli {
            cmd: Cmd::Run(args),
        }) = parsed
        else {
            panic!("run --emv-ca --acquirer-key not taken");
        };
        assert_eq!(
            args.acquirer_key.as_deref(),
            Some(std::path::Path::new("acquirer.pub"))
        );
        assert!(run(&["--acquirer-key", "acquirer.pub"]).is_err());
    }

    /// Every command and every argument of every command says what it is in `--help`.
    #[test]
    fn every_command_and_argument_has_a_help_line() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && path.contains(' ') && cmd.get_name() != "help" {
                missing.push(format!("{path}: no about"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:#?}");
    }
}
