//! The depot's side of the fleet's verified-certificate set ([`crate::ride_code::cert_set`]).
//!
//! - `ride_code_certs`: every holder certificate the buses sent (from the codes kept as
//!   proof, [`Store::store_proofs`]), once, by its SHA-256; `verified` is NULL until checked,
//!   then 1 (check 6 passed with the published keys) or 0; `listed` says whether the current
//!   version of the set lists it.
//! - `cert_set_changes`: each version's adds and removes, from which the deltas are made.
//! - `meta`: `cert_set_version`, `cert_set_keys` (the key material digest the entries were
//!   checked with) and `cert_set_keys_since` (the first version made with that material: a
//!   delta from an earlier version would be refused by a bus, so none is made).
//!
//! [`Store::update_cert_set`] checks what is new, applies the membership rule at `now` and,
//! when anything changed, makes the next version; [`Store::signing_request`] then asks the
//! operator for its snapshot and deltas.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};
use crate::ride_code::cert_set::{check_certificate, CertSetDelta};
use crate::ride_code::format::{CertDigest, CERT_BYTES};
use crate::ride_code::{Alg, CertSet, ChannelKeys};
use crate::signed::FileKind;
use crate::signing::RequestEntry;
use crate::upload::downlink::DELTA_CHANGES_SENT_MAX;

/// What one [`Store::update_cert_set`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CertSetUpdate {
    /// Certificates checked now for the first time (under these keys).
    pub checked: u64,
    /// Of those, the ones whose channel signature verified.
    pub verified: u64,
    pub added: u64,
    pub removed: u64,
    /// The set's version after the update.
    pub version: u64,
    pub entries: u64,
}

/// digest, certificate bytes, verified (NULL: not checked yet), listed.
type CertRow = (Vec<u8>, Vec<u8>, Option<i64>, bool);

/// Whether the certificate (129 bytes) is listed at `now`: it verified, its key is in the
/// key file, not revoked and within its window, and the certificate is not past its
/// `cert_not_after`. (A certificate not yet valid is listed: the bus checks its dates.)
fn listed_at(keys: &ChannelKeys, cert: &[u8; CERT_BYTES], now_unix_s: i64) -> bool {
    let not_after = u32::from_be_bytes([cert[28], cert[29], cert[30], cert[31]]);
    let channel_id = u16::from_be_bytes([cert[2], cert[3]]);
    now_unix_s <= i64::from(not_after)
        && Alg::from_u8(cert[1])
            .and_then(|alg| keys.find(channel_id, cert[4], alg))
            .is_some_and(|k| k.is_valid_at(now_unix_s))
}

/// A number kept in `meta` (0 when absent), through the store's connection or a transaction
/// on it.
fn meta_u64(conn: &rusqlite::Connection, key: &str) -> Result<u64, StoreError> {
    let v: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key=?1", params![key], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.map_or(0, |v| v as u64))
}

impl Store {
    /// The verified-certificate set's current version (0: none made yet).
    pub fn cert_set_version(&self) -> Result<u64, StoreError> {
        meta_u64(&self.conn, "cert_set_version")
    }

    /// Check every certificate not checked before with the published channel keys (check 6,
    /// once each), then list those the membership rule admits at `now_unix_s` and unlist the
    /// others (expired, key revoked or out of its window); a new version when anything
    /// changed. Without published keys nothing is done. New key material re-checks every
    /// certificate and starts a new version that only a snapshot reaches.
    pub fn update_cert_set(&mut self, now_unix_s: i64) -> Result<CertSetUpdate, StoreError> {
        let Some(keys) = self.published_keys()? else {
            return Ok(CertSetUpdate {
                version: self.cert_set_version()?,
                ..CertSetUpdate::default()
            });
        };
        let material = keys.material_digest();
        let tx = self.conn.transaction()?;
        let held: Option<Vec<u8>> = tx
            .query_row(
                "SELECT value FROM meta WHERE key='cert_set_keys'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let new_keys = held.as_deref() != Some(&material[..]);
        if new_keys {
            tx.execute("UPDATE ride_code_certs SET verified = NULL", [])?;
        }
        let mut out = CertSetUpdate::default();
        let rows: Vec<CertRow> = tx
            .prepare("SELECT digest, cert, verified, listed FROM ride_code_certs")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let mut changes: Vec<(Vec<u8>, bool)> = Vec::new();
        {
            let mut set_verified =
                tx.prepare("UPDATE ride_code_certs SET verified=?2 WHERE digest=?1")?;
            for (digest, cert, verified, listed) in rows {
                let Ok(cert) = <[u8; CERT_BYTES]>::try_from(cert.as_slice()) else {
                    return Err(StoreError::Corrupt("ride-code certificate"));
                };
                let verified = match verified {
                    Some(v) => v == 1,
                    None => {
                        let ok = check_certificate(&keys, &cert);
                        set_verified.execute(params![digest, i64::from(ok)])?;
                        out.checked += 1;
                        out.verified += u64::from(ok);
                        ok
                    }
                };
                let listed_now = verified && listed_at(&keys, &cert, now_unix_s);
                if listed_now != listed || (new_keys && listed_now) {
                    changes.push((digest, listed_now));
                }
            }
        }
        let mut version = meta_u64(&tx, "cert_set_version")?;
        if !changes.is_empty() || new_keys {
            version += 1;
            let mut set_listed =
                tx.prepare("UPDATE ride_code_certs SET listed=?2 WHERE digest=?1")?;
            let mut log = tx.prepare(
                "INSERT INTO cert_set_changes(version, digest, added) VALUES(?1, ?2, ?3)",
            )?;
            for (digest, listed) in &changes {
                set_listed.execute(params![digest, listed])?;
                log.execute(params![version as i64, digest, listed])?;
                match listed {
                    true => out.added += 1,
                    false => out.removed += 1,
                }
            }
            let put = "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)";
            tx.execute(put, params!["cert_set_version", version as i64])?;
            if new_keys {
                tx.execute(put, params!["cert_set_keys", &material[..]])?;
                tx.execute(put, params!["cert_set_keys_since", version as i64])?;
            }
        }
        out.version = version;
        out.entries = tx.query_row(
            "SELECT COUNT(*) FROM ride_code_certs WHERE listed=1",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64;
        tx.commit()?;
        if out != CertSetUpdate::default() {
            tracing::info!(?out, "depot: verified-certificate set updated");
        }
        Ok(out)
    }

    /// The published ride-code key file, decoded (None: none published, or it no longer
    /// loads).
    fn published_keys(&self) -> Result<Option<ChannelKeys>, StoreError> {
        Ok(self.downlink("keys")?.and_then(|(_, body)| {
            std::str::from_utf8(&body)
                .ok()
                .and_then(|t| ChannelKeys::from_json(t).ok())
        }))
    }

    /// The set at its current version.
    pub fn cert_set(&self) -> Result<CertSet, StoreError> {
        let version = self.cert_set_version()?;
        let digests = self.digests("SELECT digest FROM ride_code_certs WHERE listed=1", [])?;
        let material: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key='cert_set_keys'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let keys_digest = material
            .and_then(|m| <[u8; 32]>::try_from(m.as_slice()).ok())
            .unwrap_or([0; 32]);
        Ok(CertSet::from_digests_checked_with(
            version,
            keys_digest,
            digests,
        ))
    }

    fn digests<P: rusqlite::Params>(&self, sql: &str, p: P) -> Result<Vec<CertDigest>, StoreError> {
        let mut st = self.conn.prepare(sql)?;
        let rows = st.query_map(p, |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for d in rows {
            let d = d?;
            out.push(
                <CertDigest>::try_from(d.as_slice())
                    .map_err(|_| StoreError::Corrupt("certificate digest"))?,
            );
        }
        Ok(out)
    }

    /// The delta from `from` to the current version: each digest's last change after `from`
    /// that differs from its state at `from`. None when `from` is before the current key
    /// material (buses need the snapshot) or the delta would carry more than
    /// [`DELTA_CHANGES_SENT_MAX`] changes.
    pub fn cert_set_delta_from(&self, from: u64) -> Result<Option<CertSetDelta>, StoreError> {
        let to = self.cert_set_version()?;
        if from >= to || from < meta_u64(&self.conn, "cert_set_keys_since")? {
            return Ok(None);
        }
        // The last change of each digest in (from, to], and whether it was listed at `from`
        // (its last change at or before `from`, if any, was an add).
        let sql = "SELECT c.digest, c.added,
                (SELECT p.added FROM cert_set_changes p WHERE p.digest = c.digest AND p.version <= ?1
                 ORDER BY p.version DESC LIMIT 1)
             FROM cert_set_changes c
             WHERE c.version > ?1 AND c.version <= ?2 AND c.version = (
                SELECT MAX(version) FROM cert_set_changes WHERE digest = c.digest AND version <= ?2)
             ORDER BY c.digest";
        let mut st = self.conn.prepare(sql)?;
        let rows = st.query_map(params![from as i64, to as i64], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, bool>(1)?,
                r.get::<_, Option<bool>>(2)?,
            ))
        })?;
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for row in rows {
            let (d, now_listed, before) = row?;
            let d = <CertDigest>::try_from(d.as_slice())
                .map_err(|_| StoreError::Corrupt("certificate digest"))?;
            match (before.unwrap_or(false), now_listed) {
                (false, true) => added.push(d),
                (true, false) => removed.push(d),
                _ => {}
            }
        }
        if added.len() + removed.len() > DELTA_CHANGES_SENT_MAX {
            return Ok(None);
        }
        Ok(Some(CertSetDelta {
            from_version: from,
            to_version: to,
            keys_digest: *self.cert_set()?.keys_digest(),
            added,
            removed,
        }))
    }

    /// The set's part of the signing request: its snapshot at the current version, and deltas
    /// to it from the versions signed before, whatever is not signed yet.
    pub(super) fn cert_set_request(&self) -> Result<Vec<RequestEntry>, StoreError> {
        let current = self.cert_set_version()?;
        let mut out = Vec::new();
        if current == 0 {
            return Ok(out);
        }
        if !self.is_signed(FileKind::VerifiedCertSnapshot, current, 0)? {
            out.push(RequestEntry {
                kind: FileKind::VerifiedCertSnapshot,
                version: current,
                base_version: 0,
                payload: self.cert_set()?.snapshot_payload(),
            });
        }
        let held = self.signed_versions_below(
            FileKind::VerifiedCertSnapshot,
            FileKind::VerifiedCertDelta,
            current,
        )?;
        for from in held {
            if self.is_signed(FileKind::VerifiedCertDelta, current, from)? {
                continue;
            }
            if let Some(delta) = self.cert_set_delta_from(from)? {
                out.push(RequestEntry {
                    kind: FileKind::VerifiedCertDelta,
                    version: current,
                    base_version: from,
                    payload: delta.payload(),
                });
            }
        }
        Ok(out)
    }
}
