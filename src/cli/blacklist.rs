//! `fare-validator blacklist …`: the operator's and the depot's blacklist commands.
//!
//! ```text
//! fare-validator blacklist keygen --out operator.key         # also writes operator.key.pub
//! fare-validator blacklist build --csv list.csv --version 7 --key operator.key --out v7.snap
//! fare-validator blacklist delta --from v7.snap --to v8.snap --key operator.key --out 7-8.delta
//! fare-validator blacklist info v8.snap --public-key operator.key.pub
//! fare-validator blacklist check v8.snap 37140000000000000001
//! ```
//!
//! An id may be listed for several reasons (a CSV lists it on one line a reason): `check`
//! prints them joined by `+` (`lost+replaced`), `info` counts an entry under each of its
//! reasons (`by_reason`) and says how many have several (`several_reasons`).
//!
//! Exit codes: 0 when the command did its work (`check` prints the reasons, or `not listed`,
//! and exits 0 either way); non-zero (the binary uses 2) with one line on standard error when a
//! file, key or id is unreadable, malformed, forged, or not from the expected version.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::blacklist::file::{delta_file, snapshot_file};
use crate::blacklist::{load_blacklist_file, Blacklist, ChangeOp};
use crate::signed::{self, FileKind, OperatorPublicKey};
use crate::types::{ListId, ListReason, ReasonSet};

/// The `blacklist` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum BlacklistCmd {
    /// Build a signed snapshot from a BLACKLIST.csv (header kind,id,reason).
    Build {
        /// The CSV of entries.
        #[arg(long)]
        csv: PathBuf,
        /// The snapshot's version (deltas go from one version to a later one).
        #[arg(long)]
        version: u64,
        /// The operator's secret key file (from `keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the snapshot.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make the signed delta that turns snapshot OLD into snapshot NEW.
    Delta {
        /// The snapshot buses have now.
        #[arg(long)]
        from: PathBuf,
        /// The snapshot buses should have.
        #[arg(long)]
        to: PathBuf,
        /// The operator's secret key file; both snapshots must carry its signature.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the delta.
        #[arg(long)]
        out: PathBuf,
    },
    /// Describe a snapshot, delta or CSV as one JSON object.
    Info {
        /// The file.
        file: PathBuf,
        /// Operator public key (64 hex digits, or a file holding them) to check the signature.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Print why ID is listed (lost, replaced, cancelled, arrears, joined by +) or `not listed`.
    Check {
        /// A snapshot or CSV.
        file: PathBuf,
        /// A 20-digit card number, or CHANNEL:ACCOUNT.
        id: String,
        /// Operator public key (64 hex digits, or a file holding them) to check the signature.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Make a new operator key: the secret to OUT, the public key to OUT.pub and stdout.
    Keygen {
        /// Where to write the secret key (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Run one subcommand, printing to standard output.
pub fn run(cmd: BlacklistCmd) -> Result<(), String> {
    let stdout = std::io::stdout();
    execute(cmd, &mut stdout.lock())
}

/// Run one subcommand, printing to `out`.
pub fn execute(cmd: BlacklistCmd, out: &mut dyn Write) -> Result<(), String> {
    let text = match cmd {
        BlacklistCmd::Build {
            csv,
            version,
            key,
            out,
        } => build(&csv, version, &key, &out)?,
        BlacklistCmd::Delta { from, to, key, out } => delta(&from, &to, &key, &out)?,
        BlacklistCmd::Info { file, public_key } => {
            info(&file, public_key_arg(public_key.as_deref())?.as_ref())?.to_string()
        }
        BlacklistCmd::Check {
            file,
            id,
            public_key,
        } => match check(&file, &id, public_key_arg(public_key.as_deref())?.as_ref())? {
            Some(reasons) => reasons.to_string(),
            None => "not listed".to_string(),
        },
        BlacklistCmd::Keygen { out } => keygen(&out)?,
    };
    writeln!(out, "{text}").map_err(|e| e.to_string())
}

fn public_key_arg(arg: Option<&str>) -> Result<Option<OperatorPublicKey>, String> {
    arg.map(|a| signed::read_public_key(a).map_err(|e| format!("public key {a}: {e}")))
        .transpose()
}

/// An error about a file, naming the file.
fn at(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `build`: CSV to signed snapshot. Returns a one-line JSON summary.
pub fn build(csv: &Path, version: u64, key: &Path, out: &Path) -> Result<String, String> {
    if version == 0 {
        // Version 0 is the empty list every bus starts from: a snapshot numbered 0 would never
        // be taken as newer.
        return Err("--version must be 1 or more (0 is the empty list a bus starts with)".into());
    }
    let key = signed::read_signing_key(key).map_err(|e| at(key, e))?;
    let mut list = load_blacklist_file(csv, None).map_err(|e| at(csv, e))?;
    list.set_version(version);
    write_file(out, &snapshot_file(&list, &key))?;
    Ok(
        json!({"wrote": out.display().to_string(), "version": version, "entries": list.len()})
            .to_string(),
    )
}

/// `delta`: the signed delta between two snapshots signed by the same key.
pub fn delta(from: &Path, to: &Path, key: &Path, out: &Path) -> Result<String, String> {
    let key = signed::read_signing_key(key).map_err(|e| at(key, e))?;
    let public = key.verifying_key();
    let old =
        load_blacklist_file(from, Some(&public)).map_err(|e| format!("{}: {e}", from.display()))?;
    let new =
        load_blacklist_file(to, Some(&public)).map_err(|e| format!("{}: {e}", to.display()))?;
    if new.version() <= old.version() {
        return Err(format!(
            "--to is version {}, not after --from version {}",
            new.version(),
            old.version()
        ));
    }
    let d = old.diff(&new);
    write_file(out, &delta_file(&d, &key))?;
    Ok(
        json!({"wrote": out.display().to_string(), "from_version": d.from_version,
              "version": d.to_version, "changes": d.changes.len()})
        .to_string(),
    )
}

/// `info`: what a file is, as JSON. `signature_ok` is null when no key was given.
pub fn info(path: &Path, key: Option<&OperatorPublicKey>) -> Result<serde_json::Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !signed::has_magic(&bytes) {
        let list = load_blacklist_file(path, None).map_err(|e| at(path, e))?;
        return Ok(
            json!({"kind": "csv", "version": list.version(), "entries": list.len(),
                         "by_reason": list.counts_by_reason(),
                         "several_reasons": list.several_reasons_len(), "signature_ok": null}),
        );
    }
    let file = signed::parse(&bytes).map_err(|e| at(path, e))?;
    let signature_ok = key.map(|k| file.verify(k).is_ok());
    let h = file.header;
    match h.kind {
        FileKind::BlacklistSnapshot => {
            let list = crate::blacklist::file::parse_snapshot_unverified(&bytes)
                .map_err(|e| at(path, e))?;
            Ok(
                json!({"kind": h.kind.as_str(), "format": h.format, "version": h.version,
                      "entries": list.len(), "by_reason": list.counts_by_reason(),
                      "several_reasons": list.several_reasons_len(), "bytes": bytes.len(),
                      "crc_ok": true, "signature_ok": signature_ok}),
            )
        }
        FileKind::BlacklistDelta => {
            let d = crate::blacklist::file::parse_delta_payload_of_format(
                file.payload,
                h.base_version,
                h.version,
                h.format,
            )
            .map_err(|e| at(path, e))?;
            let adds = d.changes.iter().filter(|c| c.op == ChangeOp::Add).count();
            let mut by_reason: std::collections::BTreeMap<&str, usize> =
                ListReason::ALL.iter().map(|r| (r.as_str(), 0)).collect();
            for c in &d.changes {
                *by_reason.entry(c.reason.as_str()).or_default() += 1;
            }
            Ok(json!({"kind": h.kind.as_str(), "format": h.format,
                      "from_version": h.base_version, "version": h.version,
                      "changes": d.changes.len(), "adds": adds, "removes": d.changes.len() - adds,
                      "by_reason": by_reason, "crc_ok": true, "signature_ok": signature_ok}))
        }
        other => Ok(
            json!({"kind": other.as_str(), "version": h.version, "bytes": bytes.len(),
                           "crc_ok": true, "signature_ok": signature_ok}),
        ),
    }
}

/// `check`: the reasons ID is listed for in a snapshot or CSV.
pub fn check(
    path: &Path,
    id: &str,
    key: Option<&OperatorPublicKey>,
) -> Result<Option<ReasonSet>, String> {
    let kind = if id.contains(':') { "account" } else { "card" };
    let id = ListId::parse(kind, id.trim()).map_err(|e| format!("bad id {id:?}: {e}"))?;
    let list: Blacklist = load_blacklist_file(path, key).map_err(|e| at(path, e))?;
    Ok(list.get(&id))
}

/// `keygen`: a new operator key pair. Returns the public key in hex.
pub fn keygen(out: &Path) -> Result<String, String> {
    if out.exists() {
        return Err(format!("{} exists; not overwriting a key", out.display()));
    }
    let key = signed::generate_signing_key();
    let public = signed::public_key_hex(&key.verifying_key());
    signed::write_signing_key(out, &key)
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut pub_path = out.as_os_str().to_owned();
    pub_path.push(".pub");
    write_file(Path::new(&pub_path), format!("{public}\n").as_bytes())?;
    Ok(public)
}
