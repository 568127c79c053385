//! The city clearing service on PostgreSQL (feature `clearing`; docs/clearing.md).
//!
//! Depots forward the records they stored ([`forward`]) into one clearing database, where
//! the back office checks and settles the day. The SQLite depot stays the default with no
//! set-up; this is what a city runs on its database server.
//!
//! - [`schema`]: the schema and its migrations (`sql/clearing/*.sql`, applied in order);
//! - [`forward`]: depot → clearing database with COPY, idempotent by (terminal, epoch, seq),
//!   resumable, exactly once across crashes of either side.
//!
//! ```no_run
//! # async fn run() -> Result<(), fare_validator::clearing::ClearingError> {
//! use fare_validator::clearing::{self, forward};
//! use fare_validator::depot::Store;
//! let store = Store::open_read(std::path::Path::new("depot.db"))?;
//! let mut client = clearing::connect("postgres://clearing@127.0.0.1/clearing").await?;
//! clearing::schema::migrate(&mut client).await?;
//! let report = forward::forward(&store, &mut client, &forward::ForwardOptions::new("depot-1")).await?;
//! println!("{} records forwarded, {} new", report.records_sent, report.records_new);
//! # Ok(()) }
//! ```

pub mod bench;
pub mod forward;
pub mod run;
pub mod schema;

use crate::depot::StoreError;

/// The variable that gives tests (and `.ci/run`) the clearing database's URL.
pub const PG_URL_VAR: &str = "FARE_VALIDATOR_PG_URL";
/// Set to 1 by a developer with no PostgreSQL at hand: the clearing tests then skip (CI never
/// sets it).
pub const SKIP_PG_VAR: &str = "FARE_VALIDATOR_SKIP_PG";

/// What goes wrong between a depot and the clearing database.
#[derive(Debug, thiserror::Error)]
pub enum ClearingError {
    #[error("clearing database: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("depot store: {0}")]
    Store(#[from] StoreError),
    #[error("depot record {terminal} epoch {epoch:016x} seq {seq}: {why}")]
    Record {
        terminal: String,
        epoch: u64,
        seq: u64,
        why: String,
    },
    #[error("clearing: {0}")]
    Io(#[from] std::io::Error),
}

/// One connection to the clearing database at `url` (`postgres://user@host:port/db`), its
/// connection task spawned on the current tokio runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, ClearingError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "clearing: database connection ended");
        }
    });
    Ok(client)
}

/// Forward the depot at `db` to the clearing database at `url` as depot `depot`, then clear
/// every service day its records fall on, with the simulated issuer's test keys
/// (`fixtures/issuer-tac-keys.json`) and the default fare table: what `demo --clearing` does.
pub fn clear_depot(
    db: &std::path::Path,
    url: &str,
    depot: &str,
) -> Result<Vec<run::RunSummary>, ClearingError> {
    let store = crate::depot::Store::open_read(db)?;
    let keys = run::IssuerKeys::from_json(include_str!("../../fixtures/issuer-tac-keys.json"))
        .map_err(|e| std::io::Error::other(format!("issuer-tac-keys.json: {e}")))?;
    let capping = crate::fare::FareTable::default_policy().capping;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut client = connect(url).await?;
        schema::migrate(&mut client).await?;
        forward::forward(&store, &mut client, &forward::ForwardOptions::new(depot)).await?;
        let days = client
            .query(
                "SELECT DISTINCT service_day FROM records WHERE depot = $1 ORDER BY 1",
                &[&depot],
            )
            .await?;
        let mut out = Vec::new();
        for row in days {
            let opts = run::RunOptions {
                day: row.get(0),
                issuer_keys: keys.clone(),
                daily_cap_fen: capping.daily_cap_fen.map(i64::from),
                weekly_cap_fen: capping.weekly_cap_fen.map(i64::from),
                acquirer: "quickpass-acquirer".to_string(),
                local_card_prefixes: vec![run::LOCAL_CARD_PREFIX.to_string()],
            };
            out.push(run::run_day(&mut client, &opts).await?);
        }
        Ok(out)
    })
}
