//! `fare-validator clearing ...` (feature `clearing`): the city clearing database on
//! PostgreSQL (docs/clearing.md). Exit codes as in `main.rs`: 1 runtime failure, 2 bad input.

use std::path::PathBuf;

use clap::Subcommand;

use super::CmdError;
use crate::clearing::{self, forward, run, schema};
use crate::depot::Store;
use crate::fare::FareTable;

#[derive(Subcommand)]
pub enum ClearingCmd {
    /// Apply the schema's migrations the clearing database lacks (forward and run do it too).
    Migrate {
        /// The clearing database, postgres://USER@HOST:PORT/DB.
        #[arg(long)]
        to: String,
    },
    /// Forward a depot's stored records to the clearing database: COPY in batches, each
    /// committed with the depot's marks, so it resumes where it stopped and stores each
    /// record once. Prints {"batches", "records_sent", "records_new"}.
    Forward {
        /// The depot station's SQLite database file.
        #[arg(long)]
        db: PathBuf,
        /// The clearing database, postgres://USER@HOST:PORT/DB.
        #[arg(long)]
        to: String,
        /// This depot's name in the clearing database (its forwarding marks are its own).
        #[arg(long, default_value = "depot")]
        depot: String,
        /// Records in one transaction.
        #[arg(long, default_value_t = forward::BATCH_RECORDS_MAX_DEFAULT)]
        batch: usize,
        /// Send every record again, ignoring the marks (each is still stored once): after a
        /// gap below a mark was filled at the depot.
        #[arg(long)]
        from_start: bool,
    },
    /// Clear one service day: TACs, counters, grey records, one charge per claim, caps,
    /// settlement; prints the summary (JSON) and writes one CSV per counterparty and
    /// summary.csv into --out. Same day again: same result, replacing the one before.
    Run {
        /// The service day, YYYY-MM-DD (04:00 to 04:00 local time).
        #[arg(long)]
        day: String,
        /// The clearing database, postgres://USER@HOST:PORT/DB.
        #[arg(long)]
        to: String,
        /// The issuers' TAC master keys (JSON; fixtures/issuer-tac-keys.json has the
        /// simulated issuer's test key).
        #[arg(long)]
        keys: PathBuf,
        /// The fare table whose [capping] applies (default: the embedded fixtures/fares.toml).
        #[arg(long)]
        fares: Option<PathBuf>,
        /// The bank QuickPass rides are charged through.
        #[arg(long, default_value = "quickpass-acquirer")]
        acquirer: String,
        /// Folder for the settlement files (made if missing).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Card-number prefix of the local issuer's cards (repeat for several); other cards
        /// are settled as interop cards with their city, the number's first four digits.
        #[arg(long = "local-prefix", default_value = run::LOCAL_CARD_PREFIX)]
        local_prefixes: Vec<String>,
    },
}

fn runtime(e: impl std::fmt::Display) -> CmdError {
    (1, e.to_string())
}

pub fn run(cmd: ClearingCmd) -> Result<(), CmdError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(runtime)?;
    rt.block_on(async move {
        match cmd {
            ClearingCmd::Migrate { to } => {
                let mut client = clearing::connect(&to).await.map_err(runtime)?;
                let applied = schema::migrate(&mut client).await.map_err(runtime)?;
                println!("{}", serde_json::json!({ "applied": applied }));
                Ok(())
            }
            ClearingCmd::Forward {
                db,
                to,
                depot,
                batch,
                from_start,
            } => {
                if batch == 0 {
                    return Err((2, "--batch must be at least 1".to_string()));
                }
                let store =
                    Store::open_read(&db).map_err(|e| (2, format!("{}: {e}", db.display())))?;
                let mut client = clearing::connect(&to).await.map_err(runtime)?;
                schema::migrate(&mut client).await.map_err(runtime)?;
                let opts = forward::ForwardOptions {
                    depot,
                    batch_records_max: batch,
                    from_start,
                };
                let r = forward::forward(&store, &mut client, &opts)
                    .await
                    .map_err(runtime)?;
                println!("{}", serde_json::to_string(&r).map_err(runtime)?);
                Ok(())
            }
            ClearingCmd::Run {
                day,
                to,
                keys,
                fares,
                acquirer,
                out,
                local_prefixes,
            } => {
                let mut opts = run_options(&day, &keys, fares.as_deref(), acquirer)?;
                if let Some(p) = local_prefixes
                    .iter()
                    .find(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
                {
                    return Err(input(format!("--local-prefix {p:?}: digits")));
                }
                opts.local_card_prefixes = local_prefixes;
                let mut client = clearing::connect(&to).await.map_err(runtime)?;
                schema::migrate(&mut client).await.map_err(runtime)?;
                let s = run::run_day(&mut client, &opts).await.map_err(runtime)?;
                if let Some(dir) = out {
                    run::write_files(&client, opts.day, &dir)
                        .await
                        .map_err(runtime)?;
                }
                println!("{}", serde_json::to_string(&s).map_err(runtime)?);
                Ok(())
            }
        }
    })
}

fn input(e: impl std::fmt::Display) -> CmdError {
    (2, e.to_string())
}

/// A run's options from the command line: the day, the key file, the fare table's caps.
pub fn run_options(
    day: &str,
    keys: &std::path::Path,
    fares: Option<&std::path::Path>,
    acquirer: String,
) -> Result<run::RunOptions, CmdError> {
    let day = time::Date::parse(
        day,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|e| input(format!("--day {day}: {e}")))?;
    let text =
        std::fs::read_to_string(keys).map_err(|e| input(format!("{}: {e}", keys.display())))?;
    let issuer_keys =
        run::IssuerKeys::from_json(&text).map_err(|e| input(format!("{}: {e}", keys.display())))?;
    let table = match fares {
        Some(p) => {
            let t =
                std::fs::read_to_string(p).map_err(|e| input(format!("{}: {e}", p.display())))?;
            FareTable::from_toml(&t).map_err(|e| input(format!("{}: {e}", p.display())))?
        }
        None => FareTable::default_policy(),
    };
    Ok(run::RunOptions {
        day,
        issuer_keys,
        daily_cap_fen: table.capping.daily_cap_fen.map(i64::from),
        weekly_cap_fen: table.capping.weekly_cap_fen.map(i64::from),
        acquirer,
        local_card_prefixes: vec![run::LOCAL_CARD_PREFIX.to_string()],
    })
}
