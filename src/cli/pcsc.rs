//! `fare-validator run` and `fare-validator readers`: the validator on PC/SC readers.

use std::io::Write;
use std::path::PathBuf;

use super::CmdError;
use crate::blacklist::Blacklist;
use crate::card::acquirer::AcquirerKey;
use crate::card::pcsc::Readers;
use crate::card::quickpass::{CaKeys, PanTokenKey};
use crate::engine::EngineConfig;
use crate::fare::FareTable;
use crate::journal::Journal;
use crate::reader::{system_now, Station, CHINA_STANDARD_TIME_OFFSET_S};
use crate::replay::{decision_line, load_blacklist};
use crate::upload::downlink::{DownlinkDir, BLACKLIST_AGE_S_MAX_DEFAULT};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The contactless reader passengers tap (a name from `fare-validator readers`).
    #[arg(long)]
    pub reader: String,
    /// The reader holding the PSAM.
    #[arg(long)]
    pub sam_reader: String,
    /// Journal folder, also the data folder whose downlink/ holds the files the bus runs
    /// with (installed by `upload`, verified against the pinned operator key); default: a new
    /// temporary folder (records lost at exit, empty blacklist, built-in fares).
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Route the vehicle runs.
    #[arg(long, default_value_t = 1)]
    pub route: u16,
    /// Take --blacklist and --fares as plain, unsigned files: for tests on a bench, never on a
    /// bus (where only files verified against the pinned operator key count).
    #[arg(long)]
    pub unsigned_files_for_tests: bool,
    /// BLACKLIST.csv (header kind,id,reason), unsigned: only with --unsigned-files-for-tests.
    #[arg(long, requires = "unsigned_files_for_tests")]
    pub blacklist: Option<PathBuf>,
    /// Fare table (TOML), unsigned: only with --unsigned-files-for-tests.
    #[arg(long, requires = "unsigned_files_for_tests")]
    pub fares: Option<PathBuf>,
    /// Stop after this many taps (default: run until stopped).
    #[arg(long)]
    pub max_taps: Option<u64>,
    /// Offset of local time from UTC, minutes (default: China Standard Time, +480).
    #[arg(long, default_value_t = CHINA_STANDARD_TIME_OFFSET_S / 60, allow_negative_numbers = true)]
    pub utc_offset_min: i32,
    /// Run the tap loop at real-time priority (SCHED_FIFO 1–99, e.g. 10; needs CAP_SYS_NICE
    /// or LimitRTPRIO): background work then never delays a tap.
    #[arg(long)]
    pub realtime_priority: Option<i32>,
    /// CA.json: the UnionPay CA public keys QuickPass taps are authenticated with
    /// (docs/quickpass.md). Without it every QuickPass tap is bad_certificate.
    #[arg(long)]
    pub emv_ca: Option<PathBuf>,
    /// The acquirer's public key (an X25519 key, 64 hex digits, in a file) QuickPass PANs are
    /// sealed to (docs/quickpass.md). Without it they are sealed to the test acquirer, whose
    /// private half is public (fixtures/acquirer-test.key): never so on a bus in service.
    #[arg(long, requires = "emv_ca")]
    pub acquirer_key: Option<PathBuf>,
    /// The key QuickPass PANs are tokenised with for the deny list and anti-passback (64 hex
    /// digits in a file, the depot's key: docs/quickpass.md). Without it, the test key, with
    /// a warning: the depot's PAN entries would not match.
    #[arg(long, requires = "emv_ca")]
    pub pan_token_key: Option<PathBuf>,
}

fn runtime(e: impl std::fmt::Display) -> CmdError {
    (1, e.to_string())
}

fn bad_input(e: impl std::fmt::Display) -> CmdError {
    (2, e.to_string())
}

/// The validator loop: wait for a card, tap, print the decision line (replay's format, after
/// the record is durable), wait for the card to leave, again.
pub fn run(args: &RunArgs) -> Result<(), CmdError> {
    if !(-14 * 60..=14 * 60).contains(&args.utc_offset_min) {
        return Err(bad_input("--utc-offset-min must be within -840..840"));
    }
    let _temp;
    let dir = match &args.journal {
        Some(d) => d.clone(),
        None => {
            let t = tempfile::tempdir().map_err(runtime)?;
            let d = t.path().to_path_buf();
            tracing::warn!(dir = %d.display(), "no --journal: records go to a temporary folder");
            _temp = t;
            d
        }
    };
    let (fares, blacklist) = bus_files(args, &dir)?;
    let (journal, problems) = Journal::open(&dir).map_err(runtime)?;
    for p in &problems {
        tracing::warn!(%p, "journal");
    }
    if let Some(priority) = args.realtime_priority {
        crate::sched::set_realtime_priority(priority)
            .map_err(|e| runtime(format!("--realtime-priority {priority}: {e}")))?;
    }
    // Read before the readers are taken, so a bad file is refused at once.
    let acquirer_key = match &args.acquirer_key {
        Some(path) => Some(
            AcquirerKey::load(path).map_err(|e| bad_input(format!("{}: {e}", path.display())))?,
        ),
        None => None,
    };
    let pan_token_key = match &args.pan_token_key {
        Some(path) => Some(
            PanTokenKey::load(path).map_err(|e| bad_input(format!("{}: {e}", path.display())))?,
        ),
        None => None,
    };
    let readers = Readers::establish().map_err(runtime)?;
    let cfg = EngineConfig {
        route: args.route,
        ..EngineConfig::default()
    };
    let mut station = Station::open(
        readers,
        &args.reader,
        &args.sam_reader,
        cfg,
        fares,
        blacklist,
        journal,
    )
    .map_err(runtime)?;
    if let Some(path) = &args.emv_ca {
        let ca = CaKeys::load(path).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
        // Unpredictable numbers (9F37) and the sealing's ephemeral keys from the system.
        let seed = rand::random::<u64>();
        station
            .validator_mut()
            .set_quickpass(ca, pan_token_key.unwrap_or(PanTokenKey::TEST), seed);
        if pan_token_key.is_none() {
            tracing::warn!(
                "QuickPass PANs tokenised with the TEST key (no --pan-token-key): the depot's \
                 PAN deny-list entries will not match; not for service"
            );
        }
        match acquirer_key {
            Some(key) => station.validator_mut().set_acquirer_key(key),
            None => tracing::warn!(
                "QuickPass PANs sealed to the test acquirer (no --acquirer-key): not for service"
            ),
        }
    }
    let offset_s = args.utc_offset_min * 60;
    let mut out = std::io::stdout().lock();
    let mut taps = 0u64;
    while args.max_taps.map_or(true, |m| taps < m) {
        let Some((now, d)) = station
            .tap(&mut || system_now(offset_s), None)
            .map_err(runtime)?
        else {
            continue;
        };
        taps += 1;
        let line = decision_line(&now.to_rfc3339(), &d, None);
        writeln!(out, "{line}").map_err(runtime)?;
        out.flush().map_err(runtime)?;
        station.wait_card_gone(None).map_err(runtime)?;
    }
    Ok(())
}

/// The fare table and blacklist `run` uses: those the downlink folder holds, verified against
/// the pinned operator key; plain files only behind `--unsigned-files-for-tests` (clap refuses
/// `--blacklist` or `--fares` without it).
fn bus_files(
    args: &RunArgs,
    data_dir: &std::path::Path,
) -> Result<(FareTable, Blacklist), CmdError> {
    if !args.unsigned_files_for_tests {
        let held = DownlinkDir::new(data_dir);
        let status = held.status(system_now(0).unix_s, BLACKLIST_AGE_S_MAX_DEFAULT);
        if status.blacklist_stale {
            tracing::warn!(version = status.blacklist_version, age_s = ?status.blacklist_age_s,
                "run: the blacklist held is stale (older than its age limit, expired, or none)");
        }
        return Ok(held.bus_files());
    }
    tracing::warn!("run: unsigned files for tests: the blacklist and fares are not verified");
    let fares = match &args.fares {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| FareTable::from_toml(&t).map_err(|e| e.to_string()))
            .map_err(|e| bad_input(format!("{}: {e}", p.display())))?,
        None => FareTable::default_policy(),
    };
    let blacklist = match &args.blacklist {
        Some(p) => load_blacklist(p).map_err(bad_input)?,
        None => Blacklist::empty(),
    };
    Ok((fares, blacklist))
}

/// List the readers pcscd knows, one a line: the name (as `--reader` takes it), a tab, and
/// the card in it.
pub fn readers() -> Result<(), CmdError> {
    let readers = Readers::establish().map_err(runtime)?;
    let list = readers.list().map_err(runtime)?;
    let mut out = std::io::stdout().lock();
    if list.is_empty() {
        eprintln!("fare-validator: pcscd runs but sees no reader");
    }
    for r in list {
        let card = if r.card_present {
            let atr: String = r.atr.iter().map(|b| format!("{b:02X}")).collect();
            format!("card present, ATR {atr}")
        } else {
            "empty".to_string()
        };
        writeln!(out, "{}\t{card}", r.name).map_err(runtime)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut args = vec!["run", "--reader", "r", "--sam-reader", "s"];
        args.extend_from_slice(extra);
        Cmd::try_parse_from(args).map(|c| c.run)
    }

    #[test]
    fn plain_blacklist_or_fares_need_the_option_named_for_tests() {
        for extra in [
            &["--blacklist", "blacklist.csv"][..],
            &["--fares", "fares.toml"],
        ] {
            let e = parse(extra).expect_err("refused without the test option");
            assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        }
        let ok = parse(&["--unsigned-files-for-tests", "--blacklist", "b.csv"]).unwrap();
        assert!(ok.unsigned_files_for_tests && ok.blacklist.is_some());
    }

    #[test]
    fn a_bus_runs_only_with_files_verified_against_the_pinned_key() {
        let dir = tempfile::tempdir().unwrap();
        let held = DownlinkDir::new(dir.path());
        let operator = crate::signed::signing_key_from_seed([5; 32]);
        let forger = crate::signed::signing_key_from_seed([6; 32]);
        held.pin_operator_key(&operator.verifying_key()).unwrap();
        // Free rides in a fare table signed by another key, and a plain file dropped in place.
        let free = crate::fare::DEFAULT_FARES_TOML.replace("200", "0");
        let forged = crate::signed::seal(
            crate::signed::FileKind::FareTable,
            9,
            0,
            free.as_bytes(),
            &forger,
        );
        assert!(held.install(&forged, system_now(0).unix_s).is_err());
        std::fs::write(held.path().join("fares.signed"), free.as_bytes()).unwrap();
        let args = parse(&[]).unwrap();
        let (fares, blacklist) = bus_files(&args, dir.path()).unwrap();
        assert_eq!(
            fares.base_fare_fen,
            FareTable::default_policy().base_fare_fen
        );
        assert_eq!(blacklist.version(), 0);
        // The operator's own signed table is taken.
        let dearer = crate::fare::DEFAULT_FARES_TOML.replace("200", "250");
        let good = crate::signed::seal(
            crate::signed::FileKind::FareTable,
            2,
            0,
            dearer.as_bytes(),
            &operator,
        );
        held.install(&good, system_now(0).unix_s).unwrap();
        assert_eq!(bus_files(&args, dir.path()).unwrap().0.base_fare_fen, 250);
    }
}
