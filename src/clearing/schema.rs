//! The clearing database's schema: migrations kept in the repository (`sql/clearing/`),
//! applied in order, each once, in one transaction under an advisory lock, so that several
//! forwarders starting at once migrate the database once. The applied versions are kept in
//! `clearing_migrations`.

use tokio_postgres::Client;

use super::ClearingError;

/// The migrations in order: (version, SQL). A new step is a new file, never an edit of an
/// applied one.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../sql/clearing/0001_records.sql")),
    (2, include_str!("../../sql/clearing/0002_clearing_run.sql")),
    (3, include_str!("../../sql/clearing/0003_speed.sql")),
];

/// Advisory lock key held while migrating (any constant both sides agree on).
const MIGRATE_LOCK_KEY: i64 = 0x4641_5245_434c_5231; // "FARECLR1"

/// Apply the migrations the database lacks. Returns the versions applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, ClearingError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS clearing_migrations(
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let mut applied = Vec::new();
    for &(version, sql) in MIGRATIONS {
        let done = tx
            .query_opt(
                "SELECT 1 FROM clearing_migrations WHERE version = $1",
                &[&version],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO clearing_migrations(version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "clearing: migration applied");
        applied.push(version);
    }
    tx.commit().await?;
    Ok(applied)
}
