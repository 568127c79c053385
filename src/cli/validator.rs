//! `fare-validator validator`, `provision` and `repin-operator-key`: the program a bus runs
//! all day, and setting it up.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::CmdError;
use crate::upload::auth::{from_hex, Secret};
use crate::upload::downlink::DownlinkDir;
use crate::validator::config::{write_secret_file, ValidatorConfig};

fn runtime(e: impl std::fmt::Display) -> CmdError {
    (1, e.to_string())
}

fn bad_input(e: impl std::fmt::Display) -> CmdError {
    (2, e.to_string())
}

/// `fare-validator validator`.
#[derive(clap::Args, Debug, Clone)]
pub struct ValidatorArgs {
    /// The validator's configuration (docs/config.md; `provision` writes it).
    #[arg(long)]
    pub config: PathBuf,
}

/// `fare-validator provision`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProvisionArgs {
    /// The depot's `depot terminal add` answer (JSON with terminal, secret, operator_pub), or
    /// - for standard input. The secret goes to its own file, never on a command line.
    #[arg(long)]
    pub answer: PathBuf,
    /// The configuration file to write (refused if it exists).
    #[arg(long)]
    pub config: PathBuf,
    /// The depot's upload station, HOST:PORT.
    #[arg(long)]
    pub depot: String,
    /// Data folder (journal, downlink files); relative to the configuration's folder.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// PC/SC name of the card reader, or none (a scanner-only validator: then --sam-reader
    /// none and --terminal-no too).
    #[arg(long, default_value = "Virtual PCD 00 00")]
    pub card_reader: String,
    /// PC/SC name of the PSAM's reader, or none.
    #[arg(long, default_value = "Virtual PCD 00 01")]
    pub sam_reader: String,
    /// The terminal number written in every record (12 hex digits), only without a PSAM.
    #[arg(long)]
    pub terminal_no: Option<String>,
    /// The QR scanner: a serial device path, tcp:127.0.0.1:PORT, or none.
    #[arg(long, default_value = "none")]
    pub scanner: String,
    /// Serial speed of the scanner, bits per second.
    #[arg(long, default_value_t = 115_200)]
    pub scanner_baud: u32,
    /// The route the bus runs at start.
    #[arg(long, default_value_t = 1)]
    pub route: u16,
    /// Local time's offset from UTC, minutes.
    #[arg(long, default_value_t = 480, allow_negative_numbers = true)]
    pub utc_offset_min: i32,
    /// SCHED_FIFO priority of the tap thread (1–99), or 0 for normal.
    #[arg(long, default_value_t = 0)]
    pub tap_priority: i32,
    /// Seconds between upload sessions while the depot answers.
    #[arg(long, default_value_t = 30)]
    pub uplink_interval_s: u64,
    /// QuickPass: the file of the depot's PAN token key (64 hex digits, mode 0600), already on
    /// the bus; written as `pan_token_key_file`, relative to the configuration's folder. Not
    /// with the answer's `pan_token_key`.
    #[arg(long)]
    pub pan_token_key_file: Option<PathBuf>,
    /// QuickPass: CA.json, the UnionPay CA public keys, already on the bus; written as
    /// `emv_ca_file`. Not with the answer's `emv_ca`.
    #[arg(long)]
    pub emv_ca_file: Option<PathBuf>,
    /// QuickPass: the file of the acquirer's public key (64 hex digits), already on the bus;
    /// written as `acquirer_key_file`. Not with the answer's `acquirer_pub`.
    #[arg(long)]
    pub acquirer_key_file: Option<PathBuf>,
}

/// Files `provision` writes beside the configuration when the depot's answer carries the
/// QuickPass keys (`depot terminal add --pan-token-key --emv-ca --acquirer-key`).
pub const PAN_TOKEN_KEY_FILE_NAME: &str = "pan-token.key";
pub const EMV_CA_FILE_NAME: &str = "emv-ca.json";
pub const ACQUIRER_KEY_FILE_NAME: &str = "acquirer.pub";

/// `fare-validator repin-operator-key`.
#[derive(clap::Args, Debug, Clone)]
pub struct RepinArgs {
    /// The validator's configuration.
    #[arg(long)]
    pub config: PathBuf,
    /// The new operator public key (hex), replacing the pinned one.
    #[arg(long)]
    pub operator_pub: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TerminalAnswer {
    terminal: String,
    secret: String,
    /// Null when the station has no operator key imported yet (it never makes one).
    operator_pub: Option<String>,
    /// QuickPass, when the station was given them: the PAN token key (64 hex digits), the
    /// CA.json object and the acquirer's public key (64 hex digits).
    #[serde(default)]
    pan_token_key: Option<String>,
    #[serde(default)]
    emv_ca: Option<serde_json::Value>,
    #[serde(default)]
    acquirer_pub: Option<String>,
}

/// The three QuickPass files of `validator.toml` (docs/quickpass.md).
#[derive(Clone, Copy, PartialEq, Eq)]
enum QuickPassKey {
    PanToken,
    EmvCa,
    Acquirer,
}

impl QuickPassKey {
    const ALL: [QuickPassKey; 3] = [
        QuickPassKey::PanToken,
        QuickPassKey::EmvCa,
        QuickPassKey::Acquirer,
    ];

    /// Its field in `validator.toml`.
    fn field(self) -> &'static str {
        match self {
            QuickPassKey::PanToken => "pan_token_key_file",
            QuickPassKey::EmvCa => "emv_ca_file",
            QuickPassKey::Acquirer => "acquirer_key_file",
        }
    }

    /// The file `provision` writes when the depot's answer carries it.
    fn file_name(self) -> &'static str {
        match self {
            QuickPassKey::PanToken => PAN_TOKEN_KEY_FILE_NAME,
            QuickPassKey::EmvCa => EMV_CA_FILE_NAME,
            QuickPassKey::Acquirer => ACQUIRER_KEY_FILE_NAME,
        }
    }

    /// The operator's option and the depot answer's field (as text).
    fn given<'a>(
        self,
        args: &'a ProvisionArgs,
        answer: &TerminalAnswer,
    ) -> (Option<&'a Path>, Option<String>) {
        match self {
            QuickPassKey::PanToken => (
                args.pan_token_key_file.as_deref(),
                answer.pan_token_key.clone(),
            ),
            QuickPassKey::EmvCa => (
                args.emv_ca_file.as_deref(),
                answer.emv_ca.as_ref().map(|v| v.to_string()),
            ),
            QuickPassKey::Acquirer => (
                args.acquirer_key_file.as_deref(),
                answer.acquirer_pub.clone(),
            ),
        }
    }

    /// The operator's file, read as the validator reads it.
    fn check_file(self, path: &Path) -> Result<(), String> {
        use crate::card::acquirer::AcquirerKey;
        use crate::card::quickpass::{CaKeys, PanTokenKey};
        match self {
            QuickPassKey::PanToken => PanTokenKey::load(path).map(drop).map_err(|e| e.to_string()),
            QuickPassKey::EmvCa => CaKeys::load(path).map(drop),
            QuickPassKey::Acquirer => AcquirerKey::load(path).map(drop),
        }
    }

    /// What the depot's answer carried, read as the validator would read its file.
    fn check_text(self, text: &str) -> Result<(), String> {
        use crate::card::acquirer::AcquirerKey;
        use crate::card::quickpass::{CaKeys, PanTokenKey};
        match self {
            QuickPassKey::PanToken => PanTokenKey::from_hex(text)
                .map(drop)
                .map_err(|e| e.to_string()),
            QuickPassKey::EmvCa => CaKeys::from_json(text).map(drop),
            QuickPassKey::Acquirer => AcquirerKey::from_hex(text)
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }
}

/// One QuickPass file of the configuration: given by the operator (a file already on the
/// bus), or carried by the depot's answer (written beside the configuration).
enum QuickPassFile<'a> {
    None,
    Operator(&'a Path),
    Depot { key: QuickPassKey, text: String },
}

impl QuickPassFile<'_> {
    /// The path as `validator.toml` names it.
    fn field(&self) -> Option<PathBuf> {
        match self {
            QuickPassFile::None => None,
            QuickPassFile::Operator(p) => Some(p.to_path_buf()),
            QuickPassFile::Depot { key, .. } => Some(PathBuf::from(key.file_name())),
        }
    }
}

/// The QuickPass files from the operator's options and the depot's answer, each checked as
/// the validator reads it; a file given both ways is refused (which one is meant is not
/// known), and so is a file the answer carries where one exists already.
fn quickpass_files<'a>(
    args: &'a ProvisionArgs,
    answer: &TerminalAnswer,
    base: &Path,
) -> Result<[QuickPassFile<'a>; 3], CmdError> {
    let pick = |key: QuickPassKey| -> Result<QuickPassFile<'a>, CmdError> {
        let bad = |e: String| bad_input(format!("{}: {e}", key.field()));
        match key.given(args, answer) {
            (Some(_), Some(_)) => Err(bad(
                "given by the operator and by the depot's answer: give it once".into(),
            )),
            (Some(p), None) => {
                key.check_file(&base.join(p)).map_err(bad)?;
                Ok(QuickPassFile::Operator(p))
            }
            (None, Some(text)) => {
                key.check_text(&text).map_err(bad)?;
                let path = base.join(key.file_name());
                if path.exists() {
                    return Err(bad(format!(
                        "{}: exists; provision never replaces it",
                        path.display()
                    )));
                }
                Ok(QuickPassFile::Depot { key, text })
            }
            (None, None) => Ok(QuickPassFile::None),
        }
    };
    let [a, b, c] = QuickPassKey::ALL;
    Ok([pick(a)?, pick(b)?, pick(c)?])
}

/// Write the files the depot's answer carried beside the configuration (never over one): the
/// PAN token key with mode 0600, like the terminal's secret.
fn write_quickpass_files(files: &[QuickPassFile<'_>; 3], base: &Path) -> Result<(), CmdError> {
    for f in files {
        let QuickPassFile::Depot { key, text } = f else {
            continue;
        };
        let path = base.join(key.file_name());
        let at = |e: std::io::Error| runtime(format!("{}: {e}", path.display()));
        if *key == QuickPassKey::PanToken {
            let key = crate::card::quickpass::PanTokenKey::from_hex(text).map_err(bad_input)?;
            write_secret_file(&path, &key.0).map_err(at)?;
        } else {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(at)?;
            file.write_all(text.trim().as_bytes()).map_err(at)?;
            file.write_all(b"\n").map_err(at)?;
            file.sync_all().map_err(at)?;
        }
    }
    Ok(())
}

fn parse_key(hex: &str) -> Result<ed25519_dalek::VerifyingKey, CmdError> {
    from_hex::<32>(hex.trim())
        .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| bad_input("operator_pub must be an Ed25519 public key in hex"))
}

/// Pin the operator key in `data_dir` once: the same key again is fine, another one is
/// refused (re-pinning is `repin-operator-key`, never a side effect).
pub fn pin_once(data_dir: &Path, key: &ed25519_dalek::VerifyingKey) -> Result<(), CmdError> {
    let dl = DownlinkDir::new(data_dir);
    match dl.operator_key() {
        Some(k) if k == *key => Ok(()),
        Some(_) => Err(bad_input(format!(
            "{}: another operator key is pinned; replacing it is `fare-validator repin-operator-key`",
            dl.path().display()
        ))),
        None => dl.pin_operator_key(key).map_err(runtime),
    }
}

/// Write the configuration, the secret file (0600) and pin the operator key.
pub fn provision(args: &ProvisionArgs) -> Result<(), CmdError> {
    let mut text = String::new();
    if args.answer.as_os_str() == "-" {
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(runtime)?;
    } else {
        text = std::fs::read_to_string(&args.answer)
            .map_err(|e| bad_input(format!("{}: {e}", args.answer.display())))?;
    }
    let answer: TerminalAnswer = serde_json::from_str(text.trim())
        .map_err(|e| bad_input(format!("terminal add answer: {e}")))?;
    let secret: Secret = from_hex::<32>(&answer.secret)
        .ok_or_else(|| bad_input("terminal add answer: secret must be 64 hex digits"))?;
    let operator_pub = answer.operator_pub.as_deref().ok_or_else(|| {
        bad_input(
            "terminal add answer: operator_pub is null: import the operator key at the station \
             (depot operator-key --import) before provisioning",
        )
    })?;
    let key = parse_key(operator_pub)?;
    if args.config.exists() {
        return Err(bad_input(format!(
            "{}: exists; provision never replaces a configuration",
            args.config.display()
        )));
    }
    let base = args
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let secret_name = PathBuf::from(format!("{}.secret", answer.terminal));
    let [pan_token_key, emv_ca, acquirer_key] = quickpass_files(args, &answer, base)?;
    let cfg = ValidatorConfig {
        terminal_id: answer.terminal.clone(),
        route: args.route,
        data_dir: args.data_dir.clone(),
        card_reader: args.card_reader.clone(),
        sam_reader: args.sam_reader.clone(),
        terminal_no: args.terminal_no.clone(),
        scanner: args.scanner.clone(),
        scanner_baud: args.scanner_baud,
        depot: args.depot.clone(),
        secret_file: secret_name.clone(),
        utc_offset_min: args.utc_offset_min,
        tap_priority: args.tap_priority,
        uplink_interval_s: args.uplink_interval_s,
        pan_token_key_file: pan_token_key.field(),
        emv_ca_file: emv_ca.field(),
        acquirer_key_file: acquirer_key.field(),
    };
    cfg.check().map_err(bad_input)?;
    let data_dir = base.join(&args.data_dir);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| runtime(format!("{}: {e}", data_dir.display())))?;
    pin_once(&data_dir, &key)?;
    let secret_path = base.join(&secret_name);
    write_secret_file(&secret_path, &secret)
        .map_err(|e| runtime(format!("{}: {e}", secret_path.display())))?;
    let quickpass = [pan_token_key, emv_ca, acquirer_key];
    write_quickpass_files(&quickpass, base)?;
    std::fs::write(&args.config, cfg.to_commented_toml())
        .map_err(|e| runtime(format!("{}: {e}", args.config.display())))?;
    println!(
        "{}",
        serde_json::json!({
            "config": args.config,
            "secret_file": secret_path,
            "terminal": answer.terminal,
            "operator_pub_pinned": operator_pub.trim(),
            "pan_token_key_file": quickpass[0].field(),
            "emv_ca_file": quickpass[1].field(),
            "acquirer_key_file": quickpass[2].field(),
        })
    );
    Ok(())
}

/// Replace the pinned operator key (the operator's key changed): its own command.
pub fn repin(args: &RepinArgs) -> Result<(), CmdError> {
    let cfg = ValidatorConfig::load(&args.config).map_err(bad_input)?;
    let key = parse_key(&args.operator_pub)?;
    let dl = DownlinkDir::new(&cfg.data_dir);
    let old = dl.operator_key();
    dl.pin_operator_key(&key).map_err(runtime)?;
    tracing::warn!(old = ?old.map(|k| crate::upload::auth::to_hex(k.as_bytes())), new = %args.operator_pub, "operator key re-pinned");
    println!(
        "{}",
        serde_json::json!({"operator_pub_pinned": args.operator_pub.trim(), "replaced": old.is_some()})
    );
    Ok(())
}

pub use program::run;

mod program {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::blacklist::Blacklist;
    use crate::card::quickpass::PanTokenKey;
    use crate::clock::system_now;
    use crate::engine::{Core, EngineConfig};
    use crate::fare::FareTable;
    use crate::journal::{Journal, JournalKey, OsFiles};
    use crate::upload::client::UploadConfig;
    use crate::validator::config::ScannerSource;
    use crate::validator::status::{status_line, write_status_file};
    use crate::validator::{idle_loop, scanner, uplink, ReaderState, Shared};

    /// Run the validator until SIGTERM or SIGINT (docs/config.md). Without a card reader
    /// (`card_reader = "none"`) it runs on the scanner alone, and needs no PC/SC.
    pub fn run(args: &ValidatorArgs) -> Result<(), CmdError> {
        let cfg = ValidatorConfig::load(&args.config).map_err(bad_input)?;
        let secret = cfg.read_secret().map_err(bad_input)?;
        let depot = cfg.depot_addr().map_err(bad_input)?;
        let scanner_src = cfg.scanner_source().map_err(bad_input)?;
        let pan_token_key = cfg.pan_token_key().map_err(bad_input)?;
        let emv_ca = cfg.emv_ca().map_err(bad_input)?;
        let acquirer_key = cfg.acquirer_key().map_err(bad_input)?;
        if DownlinkDir::new(&cfg.data_dir).operator_key().is_none() {
            return Err(bad_input(format!(
                "{}: no operator key pinned; run `fare-validator provision` first",
                cfg.data_dir.display()
            )));
        }
        // The records are chained with a key derived from the secret, which lives apart
        // from the journal: a copy of the journal cannot alter or cut them unnoticed.
        let key = JournalKey::for_terminal(&secret, &cfg.terminal_id);
        let (journal, problems) =
            Journal::open_keyed(&cfg.data_dir, Box::new(OsFiles), key).map_err(runtime)?;
        let repairs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let card_side = match cfg.readers() {
            None => None,
            Some((card_reader, sam_reader)) => Some(card_side::open(card_reader, sam_reader)?),
        };
        let terminal_no = match (&card_side, cfg.terminal_no_bytes().map_err(bad_input)?) {
            (Some(side), _) => side.terminal_no(),
            (None, Some(t)) => t,
            (None, None) => return Err(bad_input("terminal_no: needed without a PSAM")),
        };
        let scanner_listener = match &scanner_src {
            ScannerSource::Tcp(a) => {
                Some(scanner::bind_tcp(*a).map_err(|e| runtime(format!("scanner {a}: {e}")))?)
            }
            _ => None,
        };
        let core = Core::new(
            EngineConfig {
                route: cfg.route,
                ..EngineConfig::default()
            },
            terminal_no,
            FareTable::default_policy(),
            Blacklist::empty(),
            journal,
        );
        let mut core = core;
        if let Some(ca) = emv_ca {
            // Unpredictable numbers (9F37) from the system.
            core.set_quickpass(ca, PanTokenKey::TEST, rand::random::<u64>());
            match acquirer_key {
                Some(key) => core.set_acquirer_key(key),
                None => tracing::warn!(
                    "QuickPass PANs sealed to the test acquirer (no acquirer_key_file in the \
                     configuration): not for service"
                ),
            }
        }
        match pan_token_key {
            Some(key) => core.set_pan_token_key(key),
            None => tracing::warn!(
                "QuickPass PANs tokenised with the TEST key (no pan_token_key_file in the \
                 configuration): its deny list and anti-passback do not match the depot's; \
                 not for service"
            ),
        }
        let offset_s = cfg.utc_offset_min * 60;
        let shared = Arc::new(Shared::new(
            core,
            Box::new(std::io::stdout()),
            Box::new(move || system_now(offset_s)),
            repairs,
        ));
        if card_side.is_none() {
            shared
                .reader_state
                .store(ReaderState::Absent as u8, Ordering::Relaxed);
        }
        let applied = uplink::apply_downlink(&shared, &cfg.data_dir);
        tracing::info!(?applied, terminal = %cfg.terminal_id, card_reader = card_side.is_some(), "validator starting");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(runtime)?;
        let scanner_thread = spawn_scanner(&shared, scanner_src, scanner_listener);
        let card_thread = {
            let shared = Arc::clone(&shared);
            let priority = cfg.tap_priority;
            std::thread::Builder::new()
                .name("tap".into())
                .spawn(move || match card_side {
                    Some(side) => {
                        if priority > 0 {
                            if let Err(e) = crate::sched::set_realtime_priority(priority) {
                                tracing::warn!(priority, error = %e, "tap thread priority not set");
                            }
                        }
                        side.run(&shared);
                    }
                    None => idle_loop(&shared),
                })
                .map_err(runtime)?
        };
        let upload_cfg = UploadConfig {
            depot,
            terminal_id: cfg.terminal_id.clone(),
            secret,
            data_dir: cfg.data_dir.clone(),
            blacklist_age_s_max: crate::upload::downlink::BLACKLIST_AGE_S_MAX_DEFAULT,
        };
        write_status(&shared, &cfg);
        // This thread is the uplink from here on (the tap and scanner threads are already
        // started and keep their priority): installing what the depot sent never holds a
        // core a tap or a scan wants.
        crate::sched::set_uplink_priority();
        rt.block_on(async {
            watch_signals(Arc::clone(&shared), cfg.clone())?;
            uplink::run(
                Arc::clone(&shared),
                upload_cfg,
                cfg.terminal_id.clone(),
                Duration::from_secs(cfg.uplink_interval_s),
            )
            .await;
            Ok::<(), CmdError>(())
        })?;
        let _ = card_thread.join();
        if let Some(t) = scanner_thread {
            let _ = t.join();
        }
        write_status(&shared, &cfg);
        tracing::info!("validator stopped");
        Ok(())
    }

    fn write_status(shared: &Shared, cfg: &ValidatorConfig) {
        let line = status_line(shared, &cfg.terminal_id);
        if let Err(e) = write_status_file(&cfg.data_dir, &line) {
            tracing::warn!(error = %e, "status file not written");
        }
    }

    /// The card input: the PSAM and the card reader, on PC/SC.
    #[cfg(feature = "pcsc")]
    mod card_side {
        use std::ffi::CString;

        use super::{runtime, CmdError};
        use crate::card::pcsc::{PcscChannel, Readers};
        use crate::card::psam::Psam;
        use crate::reader::open_psam;
        use crate::validator::{card_loop, Shared};

        pub struct CardSide {
            psam: Psam<PcscChannel>,
            readers: Readers,
            card_reader: CString,
            /// Kept open for the PSAM's exchanges.
            _psam_readers: Readers,
        }

        pub fn open(card_reader: &str, sam_reader: &str) -> Result<CardSide, CmdError> {
            let psam_readers = Readers::establish().map_err(runtime)?;
            let psam = open_psam(&psam_readers, sam_reader).map_err(runtime)?;
            // The card loop waits on its own PC/SC context, so its blocking status calls
            // never hold up the PSAM's exchanges.
            let readers = Readers::establish().map_err(runtime)?;
            let card_reader = readers.find(card_reader).map_err(runtime)?;
            Ok(CardSide {
                psam,
                readers,
                card_reader,
                _psam_readers: psam_readers,
            })
        }

        impl CardSide {
            pub fn terminal_no(&self) -> [u8; 6] {
                self.psam.terminal_no()
            }

            pub fn run(mut self, shared: &Shared) {
                card_loop::run(shared, &mut self.psam, &self.readers, &self.card_reader);
            }
        }
    }

    /// Built without PC/SC: there is no card input, only the scanner-only validator.
    #[cfg(not(feature = "pcsc"))]
    mod card_side {
        use super::{bad_input, CmdError};
        use crate::validator::Shared;

        pub enum CardSide {}

        pub fn open(_card_reader: &str, _sam_reader: &str) -> Result<CardSide, CmdError> {
            Err(bad_input(
                "card_reader: this build has no PC/SC (cargo feature pcsc); a scanner-only \
                 validator has card_reader = \"none\" and sam_reader = \"none\"",
            ))
        }

        impl CardSide {
            pub fn terminal_no(&self) -> [u8; 6] {
                match *self {}
            }

            pub fn run(self, _shared: &Shared) {
                match self {}
            }
        }
    }

    fn spawn_scanner(
        shared: &Arc<Shared>,
        src: ScannerSource,
        listener: Option<std::net::TcpListener>,
    ) -> Option<std::thread::JoinHandle<()>> {
        let shared = Arc::clone(shared);
        let body: Box<dyn FnOnce() + Send> = match (src, listener) {
            (ScannerSource::Tcp(_), Some(l)) => Box::new(move || {
                scanner::serve_tcp(l, &shared.scanner_state, &shared.stop, &mut |line| {
                    shared.scan(line);
                })
            }),
            (ScannerSource::Serial { path, baud }, _) => Box::new(move || {
                scanner::serve_serial(
                    &path,
                    baud,
                    &shared.scanner_state,
                    &shared.stop,
                    &mut |line| {
                        shared.scan(line);
                    },
                )
            }),
            _ => return None,
        };
        std::thread::Builder::new()
            .name("scanner".into())
            .spawn(body)
            .ok()
    }

    /// SIGTERM and SIGINT stop the program (the tap in progress is finished); SIGUSR1 prints
    /// the status line on standard error and writes the status file.
    fn watch_signals(shared: Arc<Shared>, cfg: ValidatorConfig) -> Result<(), CmdError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(runtime)?;
        let mut int = signal(SignalKind::interrupt()).map_err(runtime)?;
        let mut usr1 = signal(SignalKind::user_defined1()).map_err(runtime)?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = usr1.recv() => {
                        let line = status_line(&shared, &cfg.terminal_id);
                        eprintln!("{line}");
                        if let Err(e) = write_status_file(&cfg.data_dir, &line) {
                            tracing::warn!(error = %e, "status file not written");
                        }
                    }
                }
            }
            tracing::info!("stopping: finishing the tap in progress");
            shared.stop.store(true, Ordering::Relaxed);
        });
        Ok(())
    }
}
