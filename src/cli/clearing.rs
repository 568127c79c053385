//! `fare-validator clearing ...` (feature `clearing`): the city clearing database on
//! PostgreSQL (docs/clearing.md). Exit codes as in `main.rs`: 1 runtime failure, 2 bad input.

use std::path::PathBuf;

use clap::Subcommand;

use super::CmdError;
use crate::clearing::{self, forward, schema};
use crate::depot::Store;

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
        }
    })
}
