//! `fare-validator sim-card`: the project's simulated card, or its simulated PSAM, in one of
//! vsmartcard's virtual readers, so that pcscd and any PC/SC program (the validator's `run`,
//! `pcsc_scan`, `opensc-tool`) reach it like a card in a USB reader.
//!
//! ```text
//! fare-validator sim-card --vpcd 127.0.0.1:35963 --card CARD.json [--removal after_debit]
//!                         [--state STATE.json]
//! fare-validator sim-card --vpcd 127.0.0.1:35964 --psam [--t0]
//! ```
//!
//! `--t0` makes the PSAM a T=0 contact card: its ATR offers T=0 only, and it answers `61xx`
//! to case 4 commands (the data waits for GET RESPONSE) and `6Cxx` to a case 2 command whose
//! Le is not the answer's length (see [`PsamProtocol::T0`]).
//!
//! A card is presented (connects), answers until it has been idle `--idle-leave-ms` after its
//! first command (the holder takes it away: the socket closes), stays away `--away-ms`, and
//! comes back, `--taps` times; its balance and records live on between presentations. One
//! JSON line per presentation goes to standard output. `--removal` applies to the first
//! presentation: the card leaves mid-dialogue. `--state` keeps the card's memory (purse,
//! counter, last boarding, lock, proofs) in a file, written after every presentation and read
//! at start, so the card outlives a restart of `sim-card` as a real card outlives a reader.
//!
//! The card may carry a QuickPass application (quickpass.md's CARDS.json fields: `pan`, the
//! certificates, ...), alone or beside the transport fields: the validator then reads it as
//! it reads any QuickPass card, and `--removal` applies to it as in replay (`before_debit`:
//! before GET PROCESSING OPTIONS, `after_debit`: its answer lost). `--state` keeps a
//! transport-only card.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CmdError;
use crate::card::sim::{PsamProtocol, Removal, SimCard, SimCardState, SimPsam, TestKeys};
use crate::card::sim_quickpass::SimPhysicalCard;
use crate::card::vpcd::{parse_addr, SessionEnd, VpcdLink};
use crate::replay::REPLAY_TERMINAL_NO;

/// A presentation that no reader talks to ends after this long, milliseconds.
pub const PRESENTATION_MS_MAX: u64 = 60_000;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
pub enum RemovalArg {
    BeforeDebit,
    AfterDebit,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SimCardArgs {
    /// vpcd's port for the reader to sit in: 127.0.0.1:PORT or PORT (35963 is the first
    /// virtual reader, 35964 the second). Only 127.0.0.1 is accepted.
    #[arg(long)]
    pub vpcd: String,
    /// The card: a CardSpec JSON object, or a CARDS.json holding one card.
    #[arg(
        long,
        conflicts_with = "psam",
        required_unless_present_any = ["psam", "state"]
    )]
    pub card: Option<PathBuf>,
    /// The card's state file: read at start when it exists (the card as it was left, --card
    /// then only for a new card), written (atomically) after every presentation.
    #[arg(long, conflicts_with = "psam")]
    pub state: Option<PathBuf>,
    /// Present the simulated PSAM (test keys, replay's terminal number) instead of a card.
    #[arg(long)]
    pub psam: bool,
    /// The PSAM answers as a T=0 contact card: ATR with T=0 only, 61xx and 6Cxx answers.
    #[arg(long, requires = "psam")]
    pub t0: bool,
    /// The card leaves the field mid-dialogue in its first presentation.
    #[arg(long, value_enum)]
    pub removal: Option<RemovalArg>,
    /// Presentations of the card (0: until stopped).
    #[arg(long, default_value_t = 1)]
    pub taps: u64,
    /// The holder takes the card away once it was idle this long after its first command, ms.
    #[arg(long, default_value_t = 300)]
    pub idle_leave_ms: u64,
    /// Time away from the reader between presentations, ms.
    #[arg(long, default_value_t = 1_000)]
    pub away_ms: u64,
}

fn end_name(e: SessionEnd) -> &'static str {
    match e {
        SessionEnd::CardLeft => "card_left_mid_dialogue",
        SessionEnd::Withdrawn => "withdrawn",
        SessionEnd::ReaderClosed => "reader_closed",
    }
}

pub fn run(args: &SimCardArgs) -> Result<(), CmdError> {
    let addr = parse_addr(&args.vpcd).map_err(|e| (2, e.to_string()))?;
    let runtime = |e: crate::card::vpcd::VpcdError| (1, e.to_string());
    let mut out = std::io::stdout().lock();
    if args.psam {
        let protocol = if args.t0 {
            PsamProtocol::T0
        } else {
            PsamProtocol::T1
        };
        let mut psam =
            SimPsam::new(TestKeys::default(), REPLAY_TERMINAL_NO, 1).with_protocol(protocol);
        let link = VpcdLink::connect(addr).map_err(runtime)?;
        let end = link.serve(&mut psam, &mut |_| false).map_err(runtime)?;
        let line = serde_json::json!({"psam": true, "end": end_name(end),
            "terminal_seq": psam.terminal_seq()});
        writeln!(out, "{line}").map_err(|e| (1, e.to_string()))?;
        return Ok(());
    }
    let mut card = open_card(args)?;
    let idle = Duration::from_millis(args.idle_leave_ms);
    let max = Duration::from_millis(PRESENTATION_MS_MAX);
    let mut n = 0u64;
    while args.taps == 0 || n < args.taps {
        let removal = match (n, args.removal) {
            (0, Some(RemovalArg::BeforeDebit)) => Some(Removal::BeforeDebit),
            (0, Some(RemovalArg::AfterDebit)) => Some(Removal::AfterDebit),
            _ => None,
        };
        card.enter_field(removal);
        let link = VpcdLink::connect(addr).map_err(runtime)?;
        let end = link
            .serve(&mut card, &mut |a| {
                (a.apdus > 0 && a.idle >= idle) || a.present_for >= max
            })
            .map_err(runtime)?;
        n += 1;
        if let (Some(state), Some(t)) = (&args.state, &card.transport) {
            save_state(state, t).map_err(|e| (1, format!("{}: {e}", state.display())))?;
        }
        let line = presentation_line(n, end, &card);
        writeln!(out, "{line}").map_err(|e| (1, e.to_string()))?;
        out.flush().map_err(|e| (1, e.to_string()))?;
        if end == SessionEnd::ReaderClosed {
            return Err((1, "vpcd closed the connection (pcscd stopped?)".into()));
        }
        std::thread::sleep(Duration::from_millis(args.away_ms));
    }
    Ok(())
}

/// One JSON line per presentation: the transport card's number, purse and counter, and the
/// QuickPass application's masked PAN and ATC, for the applications the card has.
fn presentation_line(n: u64, end: SessionEnd, card: &SimPhysicalCard) -> serde_json::Value {
    let mut line = serde_json::json!({"presentation": n, "end": end_name(end)});
    if let Some(t) = &card.transport {
        line["card_no"] = t.card_no().to_string().into();
        line["balance_fen"] = t.balance_fen().into();
        line["offline_counter"] = t.offline_counter().into();
    }
    if let Some(q) = &card.quickpass {
        line["pan"] = q.pan().masked().to_string().into();
        line["atc"] = q.atc().into();
    }
    line
}

/// The card from its state file when there is one, else new from --card.
fn open_card(args: &SimCardArgs) -> Result<SimPhysicalCard, CmdError> {
    if let Some(state) = args.state.as_ref().filter(|p| p.exists()) {
        return load_state(state)
            .map(|t| SimPhysicalCard::new(Some(t), None))
            .map_err(|e| (2, format!("{}: {e}", state.display())));
    }
    let Some(path) = &args.card else {
        return Err((
            2,
            "--card, --state of a saved card, or --psam is required".into(),
        ));
    };
    let card = load_physical_card(path).map_err(|e| (2, e))?;
    if card.quickpass.is_some() && args.state.is_some() {
        return Err((2, "--state keeps a transport-only card".into()));
    }
    Ok(card)
}

/// A card of CARDS.json's fields (transport, QuickPass or both) from a card JSON object, or
/// from a CARDS.json holding one card.
pub fn load_physical_card(path: &Path) -> Result<SimPhysicalCard, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let entry = match value.get("cards").and_then(|c| c.as_array()) {
        Some(cards) if cards.len() == 1 => cards[0].clone(),
        Some(cards) => {
            return Err(format!(
                "{}: holds {} cards; sim-card presents exactly one",
                path.display(),
                cards.len()
            ))
        }
        None => value,
    };
    let Some(entry) = entry.as_object() else {
        return Err(format!("{}: not a card", path.display()));
    };
    let (transport, quickpass) = crate::replay::card_entry(entry, &TestKeys::default())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(SimPhysicalCard::new(transport, quickpass))
}

/// Read a card saved by [`save_state`].
pub fn load_state(path: &Path) -> Result<SimCard, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let state: SimCardState =
        serde_json::from_str(&text).map_err(|e| format!("not a saved card: {e}"))?;
    SimCard::from_state(&state, &TestKeys::default())
}

/// Save the card's memory: a temporary file, synced, renamed over the old one.
pub fn save_state(path: &Path, card: &SimCard) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&card.state()).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
