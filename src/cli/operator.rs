//! `fare-validator operator sign`: the operator's side of the offline signing step, run on a
//! machine apart from the station (see [`crate::signing`]). It reads the station's signing
//! request, refuses any version below the last it signed of that content (the floor file
//! beside the key), signs every entry with the key file, writes the signed bundle for
//! `depot import-signed`, then raises the floor. Prints one JSON line per file signed.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::signed::Dates;
use crate::signing::{decode_request, encode_bundle, sign_request, Floor};

use super::CmdError;

/// Longest validity a signed file may be given, days (a bus refuses it after; a frozen
/// station is noticed within this).
pub const VALIDITY_DAYS_MAX: u32 = 90;

#[derive(Subcommand)]
pub enum OperatorCmd {
    /// Sign a station's signing request (`depot sign-request`) with the operator's key file.
    Sign {
        /// The operator's signing key file (as `blacklist keygen` writes it).
        #[arg(long)]
        key: PathBuf,
        /// The station's signing request.
        #[arg(long)]
        request: PathBuf,
        /// The signed bundle to write (never over an existing file).
        #[arg(long)]
        out: PathBuf,
        /// The operator's version floor (JSON, highest version signed per content); default
        /// KEY.floor. Made on first use.
        #[arg(long)]
        floor: Option<PathBuf>,
        /// Days the files stay valid (1..=90).
        #[arg(long, default_value_t = 30)]
        validity_days: u32,
    },
}

fn input(e: impl std::fmt::Display) -> CmdError {
    (2, e.to_string())
}

fn runtime(e: impl std::fmt::Display) -> CmdError {
    (1, e.to_string())
}

pub fn run(cmd: OperatorCmd) -> Result<(), CmdError> {
    let OperatorCmd::Sign {
        key,
        request,
        out,
        floor,
        validity_days,
    } = cmd;
    if !(1..=VALIDITY_DAYS_MAX).contains(&validity_days) {
        return Err(input(format!(
            "--validity-days must be 1..={VALIDITY_DAYS_MAX}"
        )));
    }
    let signer = crate::signed::read_signing_key(&key).map_err(input)?;
    let floor_path = floor.unwrap_or_else(|| {
        let mut p = key.as_os_str().to_owned();
        p.push(".floor");
        PathBuf::from(p)
    });
    let floor = read_floor(&floor_path)?;
    let bytes =
        std::fs::read(&request).map_err(|e| input(format!("{}: {e}", request.display())))?;
    let entries =
        decode_request(&bytes).map_err(|e| input(format!("{}: {e}", request.display())))?;
    let now = Dates::from_now().issued_unix_s;
    let dates = Dates::starting(now, validity_days * 86_400);
    let (files, raised) = sign_request(&entries, &floor, dates, &signer).map_err(input)?;
    write_new(&out, &encode_bundle(&files))?;
    // The floor is raised only once the bundle is written: a failed write signs nothing.
    let text = serde_json::to_string(&raised).map_err(runtime)?;
    std::fs::write(&floor_path, text)
        .map_err(|e| runtime(format!("{}: {e}", floor_path.display())))?;
    for e in &entries {
        println!("{}", serde_json::to_string(&e.summary()).map_err(runtime)?);
    }
    Ok(())
}

fn read_floor(path: &Path) -> Result<Floor, CmdError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| input(format!("{}: not a version floor: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Floor::new()),
        Err(e) => Err(runtime(format!("{}: {e}", path.display()))),
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), CmdError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| input(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| runtime(format!("{}: {e}", path.display())))
}
