//! `fare-validator depot ...` and `fare-validator upload`: the station's commands and the
//! validator's one-shot upload. Exit codes as in `main.rs`: 1 runtime failure, 2 bad input.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::blacklist::{Change, ChangeOp};
use crate::card::quickpass::PanTokenKey;
use crate::depot::{self, Store};
use crate::journal::record::hex;
use crate::journal::Record;
use crate::types::{AccountId, CardNo, ListId, ListReason, PAN_TOKEN_PREFIX};
use crate::upload::auth::{from_hex, to_hex, Secret};

pub type CmdResult = Result<(), (u8, String)>;

fn runtime_err(e: impl std::fmt::Display) -> (u8, String) {
    (1, e.to_string())
}

fn input_err(e: impl std::fmt::Display) -> (u8, String) {
    (2, e.to_string())
}

#[derive(Subcommand)]
pub enum DepotCmd {
    /// Run the upload station until interrupted (prints {"listening": ADDR} once bound).
    Serve {
        /// The station's SQLite database file.
        #[arg(long)]
        db: PathBuf,
        /// Address to listen on, e.g. 0.0.0.0:7700.
        #[arg(long)]
        listen: String,
        /// Also serve the depot manager's read-only web page (off unless asked) on ADDR;
        /// `--http` alone binds 127.0.0.1:7780, this machine only.
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = PAGE_ADDR_DEFAULT)]
        http: Option<String>,
    },
    /// Provision validators.
    Terminal {
        #[command(subcommand)]
        cmd: TerminalCmd,
    },
    /// Record a service counter's blacklist action (挂失, 解挂, 补换, 注销, arrears).
    Blacklist {
        #[command(subcommand)]
        cmd: BlacklistCmd,
    },
    /// Publish a fare table (TOML) or ride-code key file (JSON) for the next sessions.
    Publish {
        /// fares (a fare table, TOML) or keys (a ride-code key file, JSON).
        #[arg(value_enum)]
        kind: PublishKind,
        /// The file to publish; checked before it is stored.
        file: PathBuf,
        /// The station's SQLite database file.
        #[arg(long)]
        db: PathBuf,
    },
    /// Print the operator public key validators pin (hex). With --pub, first pin the
    /// operator's public key (production: the signing key stays on the operator's machine,
    /// files are signed offline: sign-request, `operator sign`, import-signed). With
    /// --import, install the signing key itself into the station's database (online
    /// signing, for tests and demos: a copy of the database then forges files for every bus).
    /// A station never makes a key: without one it sends no downlink file.
    OperatorKey {
        /// The station's SQLite database file.
        #[arg(long)]
        db: PathBuf,
        /// The operator's public key (64 hex digits, or a file holding them) to pin.
        #[arg(long, conflicts_with = "import")]
        r#pub: Option<String>,
        /// The operator's signing key file (as `blacklist keygen` writes it) to install:
        /// online signing, not for production.
        #[arg(long)]
        import: Option<PathBuf>,
    },
    /// Write what the operator must sign (blacklist snapshot and deltas, fare table, key
    /// file, verified ride-code certificate set and its deltas, not signed yet) to FILE, for
    /// `fare-validator operator sign` on the operator's machine; first checks the ride-code
    /// certificates met since the last request (once each) and updates the set; prints
    /// {"entries": [...], "verified_certs": {...}} (no entries: nothing written).
    SignRequest {
        /// The station's SQLite database file.
        #[arg(long)]
        db: PathBuf,
        /// The signing request file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Import the operator's signed bundle (from `operator sign`): every file is checked
    /// against the pinned operator public key before any is kept; prints {"imported": [...]}.
    ImportSigned {
        /// The signed bundle.
        file: PathBuf,
        /// The station's SQLite database file.
        #[arg(long)]
        db: PathBuf,
    },
    /// Clearing view per terminal: records, max seq, gaps, refused records, fares, fares by
    /// the rule that priced them (`fare_fen_by_rule`); ride codes claimed more than once
    /// listed with every claim (`qr_conflicts`), charged to no one.
    Report {
        /// The station's SQLite database file.
        #[arg(long)]
        db: PathBuf,
        /// JSON output, one object (the default).
        #[arg(long, conflicts_with = "text")]
        json: bool,
        /// A table for a person instead: each terminal's records and fares, then the fares
        /// by rule.
        #[arg(long)]
        text: bool,
    },
    /// Security findings, newest first, one JSON line each: altered records refused, journals
    /// cut, chains restarted, unauthenticated records, PSAM numbers that skip or repeat
    /// (docs/depot.md).
    Findings {
        /// The station's SQLite database file.
        #[arg(long)]
        db: PathBuf,
        /// At most this many lines.
        #[arg(long, default_value_t = 1_000)]
        max: usize,
    },
    /// Every record as CSV for the clearing house, claims to a ride code in conflict flagged.
    /// With --acquirer: the acquirer's file instead, one JSON line per QuickPass ride (sealed
    /// PAN, field 55, amount, ATC, time, terminal, route; docs/quickpass.md).
    Export {
        /// The station's SQLite database file.
        #[arg(long)]
        db: PathBuf,
        /// Output file; default standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the acquirer's file of QuickPass rides instead of the clearing CSV.
        #[arg(long)]
        acquirer: bool,
    },
    /// Take the acquirer's declines file (JSON lines {"terminal", "epoch", "seq",
    /// "outcome": "declined" | "paid"}): a declined ride lists its card's PAN token for
    /// `arrears` in the next downlink, paying every declined ride lifts it. Prints what
    /// changed as one JSON line; a malformed file changes nothing (exit 2).
    Declines {
        /// The acquirer's declines file.
        file: PathBuf,
        /// The station's SQLite database file.
        #[arg(long)]
        db: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum TerminalCmd {
    /// Add a terminal with a fresh 32-byte secret, printed once as hex. The answer is what
    /// `fare-validator provision --answer` takes; with the QuickPass options it carries those
    /// keys too, and `provision` writes them beside the bus's configuration.
    Add {
        /// Terminal id: 1 to 32 of A-Z a-z 0-9 _ - (e.g. bus-0001).
        id: String,
        /// The station's SQLite database file.
        #[arg(long)]
        db: PathBuf,
        /// QuickPass: the depot's PAN token key file (64 hex digits), carried to the bus as
        /// the answer's `pan_token_key`.
        #[arg(long)]
        pan_token_key: Option<PathBuf>,
        /// QuickPass: CA.json, the UnionPay CA public keys, carried as `emv_ca`.
        #[arg(long)]
        emv_ca: Option<PathBuf>,
        /// QuickPass: the acquirer's public key file (64 hex digits), carried as
        /// `acquirer_pub`.
        #[arg(long)]
        acquirer_key: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum BlacklistCmd {
    /// List a card or account for one more reason (lost 挂失, replaced 补换, cancelled 注销,
    /// arrears); its other reasons stay. Prints the version and every reason it has now.
    Add(ListArgs),
    /// Lift the given reason only (解挂: --reason lost; arrears settled); the id stays listed
    /// while another reason remains.
    Remove(ListArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// The station's SQLite database file.
    #[arg(long)]
    pub db: PathBuf,
    /// Card number, 20 digits.
    #[arg(long, conflicts_with_all = ["account", "pan"], required_unless_present_any = ["account", "pan"])]
    pub card: Option<String>,
    /// Ride-code account, CHANNEL:ACCOUNT.
    #[arg(long, conflicts_with = "pan")]
    pub account: Option<String>,
    /// A QuickPass card: its PAN's digits (tokenised with --pan-token-key at once; the
    /// digits are not kept) or a token, t: and 16 hex digits (docs/quickpass.md).
    #[arg(long)]
    pub pan: Option<String>,
    /// The file of the key PANs are tokenised with (64 hex digits; the buses' key). Without
    /// it, a PAN in digits is tokenised with the test key, with a warning.
    #[arg(long, requires = "pan")]
    pub pan_token_key: Option<PathBuf>,
    /// lost, replaced, cancelled or arrears.
    #[arg(long)]
    pub reason: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PublishKind {
    Fares,
    Keys,
}

#[derive(Args)]
pub struct UploadArgs {
    /// The validator's journal folder (downlink files go to DIR/downlink/).
    #[arg(long)]
    pub journal: PathBuf,
    /// Station address, e.g. 10.0.0.5:7700.
    #[arg(long)]
    pub depot: String,
    /// The terminal id the station provisioned (`depot terminal add`).
    #[arg(long)]
    pub terminal: String,
    /// File holding the terminal's master secret, 64 hex digits (as `depot terminal add`
    /// printed it), readable by the validator's user only. Without it, the environment
    /// variable FARE_VALIDATOR_SECRET. Never on the command line: argv is public
    /// (/proc/PID/cmdline).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Pin this operator public key (hex) before the session, if none is pinned yet (a
    /// different pinned key is refused: `repin-operator-key` replaces it).
    #[arg(long)]
    pub operator_pub: Option<String>,
}

/// Opens (or, on first use, creates) the station's database: only `serve` and `terminal add`,
/// the commands that set a station up, may create one.
fn open_store(db: &Path) -> Result<Store, (u8, String)> {
    Store::open(db).map_err(|e| runtime_err(format!("{}: {e}", db.display())))
}

/// Opens an existing database: every other command works on a station already set up, so a
/// mistyped `--db` is an error rather than a new, empty station.
fn open_existing_store(db: &Path) -> Result<Store, (u8, String)> {
    if !db.is_file() {
        return Err(input_err(format!(
            "{}: no depot database here (it is created by `depot serve` or `depot terminal add`)",
            db.display()
        )));
    }
    open_store(db)
}

pub fn run_depot(cmd: DepotCmd) -> CmdResult {
    match cmd {
        DepotCmd::Serve { db, listen, http } => serve(&db, &listen, http.as_deref()),
        DepotCmd::Terminal {
            cmd:
                TerminalCmd::Add {
                    id,
                    db,
                    pan_token_key,
                    emv_ca,
                    acquirer_key,
                },
        } => {
            // The QuickPass files are read and checked before the terminal is added.
            let quickpass = terminal_quickpass(
                pan_token_key.as_deref(),
                emv_ca.as_deref(),
                acquirer_key.as_deref(),
            )?;
            let store = open_store(&db)?;
            let secret = store.add_terminal(&id).map_err(input_err)?;
            let key = store.operator_pub().map_err(runtime_err)?;
            let mut answer = serde_json::json!({
                "terminal": id,
                "secret": to_hex(&secret),
                "operator_pub": key.map(|k| to_hex(k.as_bytes())),
            });
            answer.as_object_mut().expect("an object").extend(quickpass);
            println!("{answer}");
            Ok(())
        }
        DepotCmd::Blacklist { cmd } => blacklist(cmd),
        DepotCmd::Publish { kind, file, db } => {
            let body =
                std::fs::read(&file).map_err(|e| input_err(format!("{}: {e}", file.display())))?;
            let name = match kind {
                PublishKind::Fares => {
                    let at =
                        |e: &dyn std::fmt::Display| input_err(format!("{}: {e}", file.display()));
                    let text = std::str::from_utf8(&body).map_err(|e| at(&e))?;
                    crate::fare::FareTable::from_toml(text).map_err(|e| at(&e))?;
                    "fares"
                }
                PublishKind::Keys => {
                    serde_json::from_slice::<serde_json::Value>(&body)
                        .map_err(|e| input_err(format!("{}: {e}", file.display())))?;
                    "keys"
                }
            };
            let v = open_existing_store(&db)?
                .publish(name, &body)
                .map_err(runtime_err)?;
            println!("{}", serde_json::json!({ "kind": name, "version": v }));
            Ok(())
        }
        DepotCmd::OperatorKey { db, r#pub, import } => {
            let store = open_existing_store(&db)?;
            if let Some(arg) = r#pub {
                let key = crate::signed::read_public_key(&arg).map_err(input_err)?;
                store.set_operator_pub(&key).map_err(runtime_err)?;
            }
            if let Some(path) = import {
                let key = crate::signed::read_signing_key(&path).map_err(input_err)?;
                store.set_operator_key(&key).map_err(runtime_err)?;
                tracing::warn!(
                    "depot: the operator signing key is now in the station's database (online signing, for tests and demos); production pins the public key (--pub) and signs offline"
                );
            }
            let key = store.operator_pub().map_err(runtime_err)?.ok_or_else(|| {
                input_err(
                    "no operator key: pin the public key with --pub (a station never makes one)",
                )
            })?;
            println!("{}", to_hex(key.as_bytes()));
            Ok(())
        }
        DepotCmd::SignRequest { db, out } => {
            let mut store = open_existing_store(&db)?;
            // The certificates met since the last request are checked once, and the
            // verified-certificate set moves to its next version when its members changed.
            let certs = store
                .update_cert_set(crate::depot::store::now_unix_s())
                .map_err(runtime_err)?;
            let entries = store.signing_request().map_err(runtime_err)?;
            if !entries.is_empty() {
                std::fs::write(&out, crate::signing::encode_request(&entries))
                    .map_err(|e| runtime_err(format!("{}: {e}", out.display())))?;
            }
            let summary: Vec<_> = entries.iter().map(|e| e.summary()).collect();
            println!(
                "{}",
                serde_json::json!({ "entries": summary, "verified_certs": certs })
            );
            Ok(())
        }
        DepotCmd::ImportSigned { file, db } => {
            let bundle =
                std::fs::read(&file).map_err(|e| input_err(format!("{}: {e}", file.display())))?;
            let imported = open_existing_store(&db)?
                .import_signed(&bundle)
                .map_err(|e| input_err(format!("{}: {e}", file.display())))?;
            println!("{}", serde_json::json!({ "imported": imported }));
            Ok(())
        }
        DepotCmd::Report { db, json: _, text } => {
            let report = open_existing_store(&db)?.report().map_err(runtime_err)?;
            match text {
                true => print!("{}", report_text(&report)),
                false => println!("{}", serde_json::to_string(&report).map_err(runtime_err)?),
            }
            Ok(())
        }
        DepotCmd::Findings { db, max } => {
            let findings = open_existing_store(&db)?
                .findings(max)
                .map_err(runtime_err)?;
            for f in findings {
                println!("{}", serde_json::to_string(&f).map_err(runtime_err)?);
            }
            Ok(())
        }
        DepotCmd::Export {
            db,
            out,
            acquirer: false,
        } => export(&db, out.as_deref()),
        DepotCmd::Export {
            db,
            out,
            acquirer: true,
        } => export_acquirer(&db, out.as_deref()),
        DepotCmd::Declines { file, db } => declines(&file, &db),
    }
}

/// Where `--http` alone puts the manager's page: loopback only.
pub const PAGE_ADDR_DEFAULT: &str = "127.0.0.1:7780";

/// Bind the manager's page and start serving it until `stop` fires; prints its address.
pub async fn start_page(
    db: &Path,
    addr: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<std::net::SocketAddr, (u8, String)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| input_err(format!("--http {addr}: {e}")))?;
    let bound = listener.local_addr().map_err(runtime_err)?;
    if depot::page::is_loopback(&bound) {
        tracing::info!(%bound, "depot page on this machine only (loopback)");
    } else {
        tracing::warn!(%bound, "depot page reachable from the network: it has no login");
    }
    let db = db.to_path_buf();
    let mut stop = stop;
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = depot::page::serve(db, listener, stopped).await {
            tracing::error!(error = %e, "depot page stopped");
        }
    });
    Ok(bound)
}

fn serve(db: &Path, listen: &str, http: Option<&str>) -> CmdResult {
    let store = open_store(db)?;
    if store.operator_key().map_err(runtime_err)?.is_some() {
        tracing::warn!(
            "depot: the operator signing key is in the station's database (online signing): for tests and demos only; production signs offline (docs/depot.md, key custody)"
        );
    }
    let rt = tokio::runtime::Runtime::new().map_err(runtime_err)?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| input_err(format!("{listen}: {e}")))?;
        let addr = listener.local_addr().map_err(runtime_err)?;
        let (page_stop, page_stopped) = tokio::sync::watch::channel(false);
        let page = match http {
            Some(a) => Some(start_page(db, a, page_stopped).await?),
            None => None,
        };
        match page {
            Some(p) => println!(
                "{}",
                serde_json::json!({ "listening": addr.to_string(), "page": format!("http://{p}/") })
            ),
            None => println!("{}", serde_json::json!({ "listening": addr.to_string() })),
        }
        let _ = std::io::stdout().flush();
        let stop = async move {
            wait_for_stop_signal().await;
            let _ = page_stop.send(true);
        };
        depot::serve(listener, store, stop).await;
        Ok(())
    })
}

/// Ctrl-C, or SIGTERM from the service manager.
pub async fn wait_for_stop_signal() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn blacklist(cmd: BlacklistCmd) -> CmdResult {
    let (op, args) = match cmd {
        BlacklistCmd::Add(a) => (ChangeOp::Add, a),
        BlacklistCmd::Remove(a) => (ChangeOp::Remove, a),
    };
    let id = match (&args.card, &args.account, &args.pan) {
        (Some(c), None, None) => ListId::Card(c.parse::<CardNo>().map_err(input_err)?),
        (None, Some(a), None) => ListId::Account(a.parse::<AccountId>().map_err(input_err)?),
        (None, None, Some(p)) => {
            let key = match &args.pan_token_key {
                Some(path) => PanTokenKey::load(path)
                    .map_err(|e| input_err(format!("{}: {e}", path.display())))?,
                None => PanTokenKey::TEST,
            };
            if key.is_test() && !p.starts_with(PAN_TOKEN_PREFIX) {
                eprintln!(
                    "warning: PAN tokenised with the TEST key (no --pan-token-key): buses \
                     with a real key will not match this entry; not for service"
                );
            }
            ListId::parse_pan(p, &key).map_err(input_err)?
        }
        _ => return Err(input_err("give exactly one of --card, --account or --pan")),
    };
    let reason: ListReason = args.reason.parse().map_err(input_err)?;
    let mut store = open_existing_store(&args.db)?;
    let version = store
        .blacklist_change(&Change { op, id, reason })
        .map_err(|e| match e {
            depot::StoreError::NotListed { .. } => input_err(e),
            e => runtime_err(e),
        })?;
    // What the id is listed for now, every reason (a late 解挂 leaves a reissue's `replaced`).
    let reasons = store.blacklist_reasons(&id).map_err(runtime_err)?;
    println!(
        "{}",
        serde_json::json!({ "version": version, "id": id.to_string(), "reasons": reasons,
                            "locks_card": reasons.locks_card() })
    );
    Ok(())
}

/// CSV header of `depot export`: a record a line; `conflict` is 1 for each claim of a ride
/// code claimed twice, `rule` the fare-table rule that priced the record (`unknown` for
/// records of format 4 and older; docs/fares.md, "Which rule priced a boarding").
pub const EXPORT_HEADER: &str = "terminal,seq,kind,at,route,category,fare_fen,balance_fen,card_no,channel,account,qr_counter,card_counter,terminal_seq,tac,terminal_no,conflict,rule";

fn csv_row(terminal: &str, r: &Record, dup: bool) -> String {
    let qr = r.qr;
    let opt = |v: Option<String>| v.unwrap_or_default();
    format!(
        "{terminal},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        r.seq,
        serde_json::to_value(r.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        r.at_rfc3339(),
        r.route,
        r.category.as_str(),
        r.fare_fen,
        opt(r.balance_fen.map(|b| b.to_string())),
        r.card_no,
        opt(qr.map(|q| q.account.channel.to_string())),
        opt(qr.map(|q| q.account.account.to_string())),
        opt(qr.map(|q| q.counter.to_string())),
        r.card_tx.offline_counter,
        r.card_tx.terminal_seq,
        hex(&r.card_tx.tac),
        hex(&r.terminal_no),
        u8::from(dup),
        r.rule.as_str(),
    )
}

fn export(db: &Path, out: Option<&Path>) -> CmdResult {
    let store = open_existing_store(db)?;
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| input_err(format!("{}: {e}", p.display())))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    writeln!(w, "{EXPORT_HEADER}").map_err(runtime_err)?;
    store
        .for_each_record(|t, r, dup| writeln!(w, "{}", csv_row(t, r, dup)))
        .map_err(runtime_err)?;
    w.flush().map_err(runtime_err)
}

fn output(out: Option<&Path>) -> Result<Box<dyn Write>, (u8, String)> {
    Ok(match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| input_err(format!("{}: {e}", p.display())))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

fn export_acquirer(db: &Path, out: Option<&Path>) -> CmdResult {
    let store = open_existing_store(db)?;
    let mut w = output(out)?;
    store
        .for_each_acquirer_ride(|ride| {
            let line = serde_json::to_string(ride).map_err(std::io::Error::other)?;
            writeln!(w, "{line}")
        })
        .map_err(runtime_err)?;
    w.flush().map_err(runtime_err)
}

fn declines(file: &Path, db: &Path) -> CmdResult {
    let text =
        std::fs::read_to_string(file).map_err(|e| input_err(format!("{}: {e}", file.display())))?;
    let lines = depot::acquirer::parse_declines(&text).map_err(input_err)?;
    let mut store = open_existing_store(db)?;
    let report = store.apply_declines(&lines).map_err(runtime_err)?;
    println!("{}", serde_json::to_string(&report).map_err(runtime_err)?);
    Ok(())
}

/// The QuickPass keys `depot terminal add` carries in its answer, each checked as a bus
/// reads it: `pan_token_key` and `acquirer_pub` as 64 hex digits, `emv_ca` as the CA.json
/// object.
fn terminal_quickpass(
    pan_token_key: Option<&Path>,
    emv_ca: Option<&Path>,
    acquirer_key: Option<&Path>,
) -> Result<serde_json::Map<String, serde_json::Value>, (u8, String)> {
    use crate::card::acquirer::AcquirerKey;
    use crate::card::quickpass::CaKeys;
    let at = |p: &Path, e: &dyn std::fmt::Display| input_err(format!("{}: {e}", p.display()));
    let mut out = serde_json::Map::new();
    if let Some(p) = pan_token_key {
        let key = PanTokenKey::load(p).map_err(|e| at(p, &e))?;
        out.insert("pan_token_key".into(), to_hex(&key.0).into());
    }
    if let Some(p) = emv_ca {
        let text = std::fs::read_to_string(p).map_err(|e| at(p, &e))?;
        CaKeys::from_json(&text).map_err(|e| at(p, &e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| at(p, &e))?;
        out.insert("emv_ca".into(), v);
    }
    if let Some(p) = acquirer_key {
        let text = std::fs::read_to_string(p).map_err(|e| at(p, &e))?;
        AcquirerKey::from_hex(&text).map_err(|e| at(p, &e))?;
        out.insert("acquirer_pub".into(), text.trim().to_lowercase().into());
    }
    Ok(out)
}

/// Environment variable that may hold the terminal's master secret (hex).
pub const SECRET_ENV: &str = "FARE_VALIDATOR_SECRET";

/// The terminal's master secret from `file`, else from [`SECRET_ENV`].
fn read_secret(file: Option<&Path>) -> Result<Secret, (u8, String)> {
    let (text, from) = match file {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| input_err(format!("{}: {e}", p.display())))?,
            p.display().to_string(),
        ),
        None => (
            std::env::var(SECRET_ENV)
                .map_err(|_| input_err(format!("give --secret-file FILE or set {SECRET_ENV}")))?,
            SECRET_ENV.to_string(),
        ),
    };
    from_hex::<32>(&text)
        .ok_or_else(|| input_err(format!("{from}: the secret must be 64 hex digits")))
}

pub fn run_upload(args: &UploadArgs) -> CmdResult {
    let secret = read_secret(args.secret_file.as_deref())?;
    let addr: std::net::SocketAddr = args
        .depot
        .parse()
        .map_err(|e| input_err(format!("--depot {}: {e}", args.depot)))?;
    if !args.journal.is_dir() {
        return Err(input_err(format!(
            "{}: not a journal folder",
            args.journal.display()
        )));
    }
    if let Some(k) = &args.operator_pub {
        let key = from_hex::<32>(k)
            .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
            .ok_or_else(|| input_err("--operator-pub must be an Ed25519 public key in hex"))?;
        // Pinned once: a key already pinned is never replaced in passing.
        super::validator::pin_once(&args.journal, &key)?;
    }
    let rt = tokio::runtime::Runtime::new().map_err(runtime_err)?;
    let report = rt
        .block_on(crate::upload::upload(
            &args.journal,
            addr,
            &args.terminal,
            &secret,
        ))
        .map_err(runtime_err)?;
    println!("{}", serde_json::to_string(&report).map_err(runtime_err)?);
    match upload_failures(&report) {
        None => Ok(()),
        Some(what) => Err(runtime_err(what)),
    }
}

/// What went wrong in a session that still ran to its end, for `upload`'s exit status: the
/// station refused records, records are declared gone, records could not go up, or a
/// downlink file failed its checks. None when everything sent was taken.
/// `depot report --text`: each terminal's records, gaps and fares (yuan), then the fares by
/// the rule that priced them.
pub fn report_text(r: &crate::depot::store::Report) -> String {
    use std::fmt::Write as _;
    let yuan = |fen: u64| format!("{}.{:02}", fen / 100, fen % 100);
    let mut out = format!(
        "{:<24}{:>10}{:>8}{:>14}{:>14}\n",
        "terminal", "records", "gaps", "charged", "in conflict"
    );
    for (id, t) in &r.terminals {
        let _ = writeln!(
            out,
            "{id:<24}{:>10}{:>8}{:>14}{:>14}",
            t.records,
            t.gaps.len(),
            yuan(t.fare_fen),
            yuan(t.fare_fen_in_conflict)
        );
    }
    out.push_str("\nfares charged by rule (yuan)\n");
    for (rule, fen) in &r.fare_fen_by_rule {
        let _ = writeln!(out, "  {:<22}{:>14}", rule.as_str(), yuan(*fen));
    }
    let total: u64 = r.fare_fen_by_rule.values().sum();
    let _ = writeln!(out, "  {:<22}{:>14}", "all", yuan(total));
    out
}

pub fn upload_failures(report: &crate::upload::UploadReport) -> Option<String> {
    let mut what = Vec::new();
    if report.records_refused > 0 {
        what.push(format!(
            "the depot refused {} record(s) (a different record at their seq, a field out of range, or an altered record: see `depot report`)",
            report.records_refused
        ));
    }
    if !report.gone.is_empty() {
        what.push(format!(
            "records declared gone (acknowledged earlier, lost at the depot): {:?}",
            report.gone
        ));
    }
    if !report.problems.is_empty() {
        what.push(report.problems.join("; "));
    }
    if !report.refused.is_empty() {
        what.push(format!("downlink refused: {}", report.refused.join("; ")));
    }
    (!what.is_empty()).then(|| what.join("; "))
}
