//! The depot upload station: a tokio server that takes every validator's unacknowledged
//! records into SQLite, exactly once, and sends back what the validator lacks (blacklist
//! delta or snapshot, fare table, ride-code keys), signed by the operator: offline, on a
//! machine apart, the station holding only the signed files and the public key
//! ([`crate::signing`]), or, for tests and demos, online with a key imported into its database.
//!
//! - [`store`]: the SQLite store (records keyed by terminal and seq, blacklist change log);
//! - [`checks`]: the range checks a record passes before it is stored;
//! - [`server`]: the accept loop, one task per session, shutdown and limits;
//! - [`page`]: the depot manager's read-only web page;
//! - [`acquirer`]: QuickPass rides for the acquirer, and the charges it declined.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use fare_validator::depot::{self, store::Store};
//! let store = Store::open(std::path::Path::new("depot.db"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let station = depot::start(listener, store)?;
//! println!("listening on {}", station.addr());
//! station.shutdown().await;
//! # Ok(()) }
//! ```

pub mod acquirer;
pub mod checks;
pub mod integrity;
pub mod page;
pub mod server;
pub mod store;

pub use server::{serve, start, StationHandle};
pub use store::{Store, StoreError};

use ed25519_dalek::SigningKey;

use crate::blacklist::file::{delta_file, snapshot_file, Delta};
use crate::ride_code::cert_set;
use crate::signed::{self, FileKind};
use crate::upload::downlink::DELTA_CHANGES_SENT_MAX;
use crate::upload::frame::HeldVersions;

/// The signed files a validator holding `held` lacks: the blacklist delta from its version
/// (a snapshot when it is too far behind), then the fare table and the ride-code key file
/// when the station has a newer version, then the verified-certificate set's delta from its
/// version (a snapshot when it holds none, or the set was made with other channel keys since,
/// or the delta would be too long). Versions only go up: a validator holding a newer
/// version than the station (a station restored from an old backup) is sent nothing older,
/// and the station says so at warn.
pub fn downlink_for(
    store: &Store,
    terminal: &str,
    held: &HeldVersions,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let Some(key): Option<SigningKey> = store.operator_key()? else {
        return offline_downlink_for(store, terminal, held);
    };
    let mut files = Vec::new();
    let current = store.blacklist_version()?;
    if held.blacklist > current {
        newer_on_the_bus(terminal, "blacklist", held.blacklist, current);
    }
    if held.blacklist < current {
        let changes = store.blacklist_changes_after(held.blacklist, DELTA_CHANGES_SENT_MAX)?;
        files.push(match changes {
            Some(changes) => delta_file(
                &Delta {
                    from_version: held.blacklist,
                    to_version: current,
                    changes,
                },
                &key,
            ),
            None => snapshot_file(&store.blacklist()?, &key),
        });
    }
    for (name, kind, held) in [
        ("fares", FileKind::FareTable, held.fares),
        ("keys", FileKind::RideCodeKeys, held.keys),
    ] {
        if let Some((version, body)) = store.downlink(name)? {
            if version > held {
                files.push(signed::seal(kind, version, 0, &body, &key));
            } else if version < held {
                newer_on_the_bus(terminal, name, held, version);
            }
        }
    }
    files.extend(online_cert_set_for(store, terminal, held.cert_set, &key)?);
    Ok(files)
}

/// The verified-certificate set's file for a bus holding version `held`, signed now with the
/// station's key (online signing): the delta when the store can make one, else the snapshot.
fn online_cert_set_for(
    store: &Store,
    terminal: &str,
    held: u64,
    key: &SigningKey,
) -> Result<Option<Vec<u8>>, StoreError> {
    let current = store.cert_set_version()?;
    if held > current {
        newer_on_the_bus(terminal, "verified-certificate set", held, current);
    }
    if held >= current {
        return Ok(None);
    }
    let dates = crate::signed::Dates::from_now();
    Ok(Some(match store.cert_set_delta_from(held)? {
        Some(delta) => cert_set::delta_file(&delta, dates, key),
        None => cert_set::snapshot_file(&store.cert_set()?, dates, key),
    }))
}

/// The downlink of a station that holds no signing key (offline signing, the production
/// mode: [`crate::signing`]): the files the operator signed and the station imported, as they
/// are. A bus gets the delta from its version to the newest signed blacklist when the
/// operator signed one, else the snapshot; a newer fare table or key file when one is signed.
fn offline_downlink_for(
    store: &Store,
    terminal: &str,
    held: &HeldVersions,
) -> Result<Vec<Vec<u8>>, StoreError> {
    if store.operator_pub()?.is_none() {
        tracing::warn!(%terminal, "depot: no operator key pinned or imported: no downlink file sent");
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    let current = store.blacklist_version()?;
    if held.blacklist > current {
        newer_on_the_bus(terminal, "blacklist", held.blacklist, current);
    }
    files.extend(store.signed_blacklist_after(held.blacklist)?);
    for (kind, held) in [
        (FileKind::FareTable, held.fares),
        (FileKind::RideCodeKeys, held.keys),
    ] {
        files.extend(store.signed_file_after(kind, held)?);
    }
    let certs = store.cert_set_version()?;
    if held.cert_set > certs {
        newer_on_the_bus(terminal, "verified-certificate set", held.cert_set, certs);
    }
    files.extend(store.signed_cert_set_after(held.cert_set)?);
    if current > held.blacklist && store.signed_blacklist_after(current - 1)?.is_none() {
        tracing::warn!(%terminal, version = current,
            "depot: blacklist changes not signed yet: `depot sign-request`, `operator sign`, `depot import-signed`");
    }
    Ok(files)
}

fn newer_on_the_bus(terminal: &str, kind: &str, held: u64, station: u64) {
    tracing::warn!(
        %terminal, kind, held, station,
        "depot: the validator holds a newer version than the station (restored from an old backup?): nothing older sent"
    );
}
