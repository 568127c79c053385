//! The depot manager's page: a small read-only web page over the station's database.
//!
//! `depot serve --http [ADDR]` (and `demo --serve`) serve it; it is off unless asked, and binds
//! to 127.0.0.1 unless another address is given. Everything is rendered on the server: plain
//! HTML, one inline stylesheet and an SVG chart, no script, no build step and nothing fetched
//! from elsewhere (a depot may have no internet).
//!
//! | path | what |
//! | --- | --- |
//! | `/` | the page: buses and their newest record, gaps, security findings (altered records, cuts, PSAM numbers that skip), revenue by route, by medium and by fare rule, taps by hour, downlink versions, ride codes seen on several buses, why the charged revenue differs from the sum of fares |
//! | `/day.json` | the same figures as one JSON object ([`DayView`]) |
//!
//! Each request opens the database anew, read-only in effect (it only runs SELECTs), so the
//! page shows what the station stored up to that moment.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use crate::depot::integrity::Finding;
use crate::depot::store::ExportError;
use crate::depot::Store;
use crate::fare::FareRule;
use crate::journal::{Record, RecordKind};

/// Hours in the taps-by-hour chart (local time of each record).
pub const HOURS_PER_DAY: usize = 24;
/// Ride codes listed by name on the page; the count covers them all.
pub const SHARED_CODES_LISTED_MAX: usize = 200;
/// Security findings listed on the page, newest first (`depot findings` lists more).
pub const FINDINGS_LISTED_MAX: usize = 100;

/// One bus as the station knows it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct BusRow {
    pub terminal: String,
    pub records: u64,
    pub max_seq: u64,
    /// Unix seconds of the newest record stored (0: none yet).
    pub newest_record_unix_s: i64,
    /// Seq ranges `[from, to]` the station is waiting for.
    pub gaps: Vec<[u64; 2]>,
    /// The part of `gaps` the bus declared lost.
    pub declared_lost: Vec<[u64; 2]>,
    /// Fares charged (claims to a ride code in conflict are held for clearing).
    pub fare_fen: u64,
    /// Records refused: a field out of range, or a different record at their seq.
    pub refused: u64,
}

/// A ride code (channel, account, counter) recorded on more than one bus, or twice.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SharedCode {
    pub channel: u16,
    pub account: u64,
    pub counter: u32,
    pub terminals: Vec<String>,
    /// Fares of every claim to it: held for clearing, charged to no one here.
    pub not_charged_fen: u64,
}

/// Downlink file versions the station sends.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Versions {
    pub blacklist: u64,
    pub fares: Option<u64>,
    pub keys: Option<u64>,
}

/// Everything the page shows.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DayView {
    pub buses: Vec<BusRow>,
    pub records: u64,
    pub revenue_by_route_fen: BTreeMap<u16, u64>,
    /// `card` and `qr`.
    pub revenue_by_media_fen: BTreeMap<String, u64>,
    /// By the fare-table rule that priced each record (`unknown` for records of format
    /// version 4 and older).
    pub revenue_by_rule_fen: BTreeMap<FareRule, u64>,
    /// Records by local hour of the tap, 0..24.
    pub taps_by_hour: Vec<u64>,
    pub versions: Versions,
    pub shared_codes: Vec<SharedCode>,
    pub shared_code_records: u64,
    /// The sum of every stored record's fare.
    pub fares_recorded_fen: u64,
    /// What is charged: the sum less the repeats of shared ride codes.
    pub fares_charged_fen: u64,
    /// Security findings, newest first, at most [`FINDINGS_LISTED_MAX`]
    /// ([`crate::depot::integrity`]).
    pub findings: Vec<Finding>,
}

impl DayView {
    /// Read the figures from the station's database.
    pub fn from_store(store: &Store) -> Result<DayView, ExportError> {
        let report = store.report()?;
        let mut view = DayView {
            findings: report
                .findings
                .iter()
                .take(FINDINGS_LISTED_MAX)
                .cloned()
                .collect(),
            taps_by_hour: vec![0; HOURS_PER_DAY],
            shared_code_records: report
                .qr_conflicts
                .iter()
                .map(|c| c.claims.len() as u64)
                .sum(),
            ..DayView::default()
        };
        let mut newest: BTreeMap<String, i64> = BTreeMap::new();
        let mut codes: BTreeMap<(u16, u64, u32), (BTreeSet<String>, u64)> = BTreeMap::new();
        store.for_each_record(|terminal, r, dup| {
            view.add_record(terminal, r, dup, &mut newest, &mut codes);
            Ok(())
        })?;
        for ((channel, account, counter), (terminals, not_charged_fen)) in codes {
            if not_charged_fen > 0 || terminals.len() > 1 {
                view.shared_codes.push(SharedCode {
                    channel,
                    account,
                    counter,
                    terminals: terminals.into_iter().collect(),
                    not_charged_fen,
                });
            }
        }
        view.shared_codes.retain(|c| c.not_charged_fen > 0);
        for (terminal, t) in report.terminals {
            view.buses.push(BusRow {
                newest_record_unix_s: newest.get(&terminal).copied().unwrap_or(0),
                terminal,
                records: t.records,
                max_seq: t.max_seq,
                gaps: t.gaps,
                declared_lost: t.declared_lost,
                fare_fen: t.fare_fen,
                refused: t.refused + t.conflicts,
            });
        }
        view.versions = Versions {
            blacklist: store.blacklist_version()?,
            fares: store.downlink("fares")?.map(|(v, _)| v),
            keys: store.downlink("keys")?.map(|(v, _)| v),
        };
        Ok(view)
    }

    fn add_record(
        &mut self,
        terminal: &str,
        r: &Record,
        dup: bool,
        newest: &mut BTreeMap<String, i64>,
        codes: &mut BTreeMap<(u16, u64, u32), (BTreeSet<String>, u64)>,
    ) {
        let fare = u64::from(r.fare_fen);
        self.records += 1;
        self.fares_recorded_fen += fare;
        let local_s = r.at_unix_s + i64::from(r.utc_offset_min) * 60;
        let hour = local_s.rem_euclid(86_400) / 3_600;
        self.taps_by_hour[hour as usize] += 1;
        let n = newest.entry(terminal.to_string()).or_insert(0);
        *n = (*n).max(r.at_unix_s);
        if let (RecordKind::QrRide, Some(q)) = (r.kind, r.qr) {
            let e = codes
                .entry((q.account.channel, q.account.account, q.counter))
                .or_default();
            e.0.insert(terminal.to_string());
            if dup {
                e.1 += fare;
            }
        }
        if dup {
            return;
        }
        self.fares_charged_fen += fare;
        *self.revenue_by_route_fen.entry(r.route).or_default() += fare;
        *self
            .revenue_by_media_fen
            .entry(r.media().as_str().to_string())
            .or_default() += fare;
        *self.revenue_by_rule_fen.entry(r.rule).or_default() += fare;
    }
}

/// A fare rule as the manager reads it.
fn rule_name(rule: FareRule) -> &'static str {
    match rule {
        FareRule::Unknown => "not recorded 未记录",
        FareRule::BaseFare => "base fare 基本票价",
        FareRule::RouteFare => "route fare 线路票价",
        FareRule::NetworkFare => "network fare 线网票价",
        FareRule::Concession => "concession 优惠",
        FareRule::Timeframe => "time of day 时段",
        FareRule::Interop => "other city's card 互联互通",
        FareRule::Transfer => "transfer 换乘",
        FareRule::SeveralRiders => "several riders 连刷",
        FareRule::Free => "free ride 免费",
        FareRule::RideCodeCategory => "ride code 乘车码",
    }
}

/// Yuan with two decimals, from integer fen (no floating point).
fn yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// Escape text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn utc_time(unix_s: i64) -> String {
    if unix_s == 0 {
        return "—".to_string();
    }
    time::OffsetDateTime::from_unix_timestamp(unix_s)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| unix_s.to_string())
}

fn ranges(r: &[[u64; 2]]) -> String {
    if r.is_empty() {
        return "none".to_string();
    }
    r.iter()
        .map(|[a, b]| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}–{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The taps-by-hour chart as inline SVG: one bar an hour, its count as a label.
pub fn hour_chart_svg(taps_by_hour: &[u64]) -> String {
    const W: u64 = 720;
    const H: u64 = 200;
    const BAR: u64 = 30;
    let max = taps_by_hour.iter().copied().max().unwrap_or(0).max(1);
    let mut s = format!(
        "<svg id=\"taps-by-hour\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" \
         role=\"img\" aria-label=\"Taps by hour\">",
        H + 40
    );
    for (hour, &n) in taps_by_hour.iter().enumerate() {
        let h = n * H / max;
        let x = hour as u64 * BAR;
        let _ = write!(
            s,
            "<rect class=\"bar\" data-hour=\"{hour}\" data-taps=\"{n}\" x=\"{}\" y=\"{}\" \
             width=\"{}\" height=\"{h}\"><title>{hour:02}:00 {n} taps</title></rect>\
             <text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{hour:02}</text>",
            x + 3,
            H - h + 10,
            BAR - 6,
            x + BAR / 2,
            H + 25
        );
        if n > 0 {
            let _ = write!(
                s,
                "<text x=\"{}\" y=\"{}\" font-size=\"9\" text-anchor=\"middle\">{n}</text>",
                x + BAR / 2,
                H - h + 7
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// The whole page.
pub fn render(view: &DayView, db_name: &str) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Depot — {db}</title><style>{CSS}</style></head><body>\
         <h1>Depot upload station 车场上传站</h1><p class=\"sub\">{db} · read-only · \
         {n} records stored · charged <b id=\"charged\">{charged}</b> yuan</p>",
        db = esc(db_name),
        n = view.records,
        charged = yuan(view.fares_charged_fen),
    );
    buses_table(&mut h, view);
    findings_table(&mut h, view);
    revenue_tables(&mut h, view);
    let _ = write!(
        h,
        "<h2>Taps by hour (local time)</h2>{}",
        hour_chart_svg(&view.taps_by_hour)
    );
    let v = &view.versions;
    let opt = |x: Option<u64>| x.map_or("none published".to_string(), |x| x.to_string());
    let _ = write!(
        h,
        "<h2>Files sent to buses</h2><table id=\"versions\"><tr><th>file</th><th>version</th></tr>\
         <tr><td>blacklist 黑名单</td><td class=\"num\">{}</td></tr>\
         <tr><td>fare table 票价表</td><td class=\"num\">{}</td></tr>\
         <tr><td>ride-code keys 乘车码密钥</td><td class=\"num\">{}</td></tr></table>",
        v.blacklist,
        opt(v.fares),
        opt(v.keys)
    );
    shared_codes(&mut h, view);
    h.push_str("</body></html>");
    h
}

fn buses_table(h: &mut String, view: &DayView) {
    h.push_str(
        "<h2>Buses</h2><table id=\"buses\"><tr><th>terminal</th><th>records</th>\
         <th>last seq</th><th>newest record</th><th>waiting for (gaps)</th>\
         <th>declared lost</th><th>records refused</th><th>fares charged, yuan</th></tr>",
    );
    for b in &view.buses {
        let gap_class = if b.gaps.is_empty() { "" } else { " warn" };
        let refused_class = if b.refused == 0 { "" } else { " warn" };
        let _ = write!(
            h,
            "<tr data-terminal=\"{t}\"><td>{t}</td><td class=\"num records\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td class=\"gaps{gap_class}\">{}</td>\
             <td>{}</td><td class=\"num refused{refused_class}\">{}</td>\
             <td class=\"num fare\" data-fen=\"{}\">{}</td></tr>",
            b.records,
            b.max_seq,
            utc_time(b.newest_record_unix_s),
            ranges(&b.gaps),
            ranges(&b.declared_lost),
            b.refused,
            b.fare_fen,
            yuan(b.fare_fen),
            t = esc(&b.terminal),
        );
    }
    h.push_str("</table>");
}

fn findings_table(h: &mut String, view: &DayView) {
    h.push_str("<h2>Security findings 安全</h2>");
    if view.findings.is_empty() {
        h.push_str(
            "<p id=\"findings\">None: every record's chain MAC and PSAM number checked out.</p>",
        );
        return;
    }
    h.push_str(
        "<table id=\"findings\"><tr><th>when (UTC)</th><th>terminal</th><th>finding</th>\
         <th>seqs (PSAM numbers)</th><th>records</th><th>what</th></tr>",
    );
    for f in &view.findings {
        let _ = write!(
            h,
            "<tr class=\"warn\"><td>{}</td><td>{}</td><td class=\"kind\">{}</td><td>{}–{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            utc_time(f.at_unix_s),
            esc(&f.terminal),
            esc(f.kind),
            f.from,
            f.to,
            f.count,
            esc(&f.detail),
        );
    }
    h.push_str("</table>");
}

fn revenue_tables(h: &mut String, view: &DayView) {
    h.push_str(
        "<h2>Revenue</h2><div class=\"row\"><table id=\"by-route\">\
         <tr><th>route 线路</th><th>yuan</th></tr>",
    );
    for (route, fen) in &view.revenue_by_route_fen {
        let _ = write!(
            h,
            "<tr><td>{route}</td><td class=\"num\" data-fen=\"{fen}\">{}</td></tr>",
            yuan(*fen)
        );
    }
    h.push_str("</table><table id=\"by-media\"><tr><th>medium</th><th>yuan</th></tr>");
    for (media, fen) in &view.revenue_by_media_fen {
        let name = match media.as_str() {
            "card" => "card 社保卡",
            "qr" => "ride code 乘车码",
            other => other,
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\" data-fen=\"{fen}\">{}</td></tr>",
            esc(name),
            yuan(*fen)
        );
    }
    h.push_str("</table><table id=\"by-rule\"><tr><th>fare rule 票价规则</th><th>yuan</th></tr>");
    for (rule, fen) in &view.revenue_by_rule_fen {
        let _ = write!(
            h,
            "<tr><td data-rule=\"{}\">{}</td><td class=\"num\" data-fen=\"{fen}\">{}</td></tr>",
            rule.as_str(),
            rule_name(*rule),
            yuan(*fen)
        );
    }
    h.push_str("</table></div>");
}

fn shared_codes(h: &mut String, view: &DayView) {
    let diff = view.fares_recorded_fen - view.fares_charged_fen;
    let _ = write!(
        h,
        "<h2>Why revenue differs from the sum of fares</h2><p id=\"why\">The buses recorded \
         <b>{}</b> yuan of fares; <b>{}</b> yuan is charged. The difference, <b id=\"difference\">{}</b> \
         yuan, is {} ride-code record(s) claiming a code another record claims too (one \
         channel, account and counter on several buses, or twice): held for clearing, which \
         decides which claim, if any, is charged. Records refused at the depot (a field out of \
         range, see the buses table) are in neither sum.</p>",
        yuan(view.fares_recorded_fen),
        yuan(view.fares_charged_fen),
        yuan(diff),
        view.shared_code_records,
    );
    if view.shared_codes.is_empty() {
        return;
    }
    h.push_str(
        "<table id=\"shared-codes\"><tr><th>channel:account</th><th>counter</th>\
         <th>buses</th><th>held for clearing, yuan</th></tr>",
    );
    for c in view.shared_codes.iter().take(SHARED_CODES_LISTED_MAX) {
        let _ = write!(
            h,
            "<tr><td>{}:{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            c.channel,
            c.account,
            c.counter,
            esc(&c.terminals.join(", ")),
            yuan(c.not_charged_fen)
        );
    }
    h.push_str("</table>");
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.4em;margin-bottom:0}.sub{color:#555;margin-top:.3em}\
table{border-collapse:collapse;margin:.5em 1.5em 1em 0}td,th{border:1px solid #ccc;padding:.25em .6em}\
th{background:#f0f0f0;text-align:left}.num{text-align:right;font-variant-numeric:tabular-nums}\
.warn{background:#fff0d0}.row{display:flex;flex-wrap:wrap}rect.bar{fill:#3a7bd5}";

/// Serve the page on `listener` until `stop` resolves.
pub async fn serve(
    db: PathBuf,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let db_page = db.clone();
    let app = axum::Router::new()
        .route(
            "/",
            get(move || {
                let db = db_page.clone();
                async move { page_response(&db) }
            }),
        )
        .route(
            "/day.json",
            get(move || {
                let db = db.clone();
                async move { json_response(&db) }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

/// Whether an address is on this machine only.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

fn read_view(db: &std::path::Path) -> Result<DayView, String> {
    let store = Store::open_read(db).map_err(|e| e.to_string())?;
    DayView::from_store(&store).map_err(|e| e.to_string())
}

fn page_response(db: &std::path::Path) -> axum::response::Response {
    use axum::response::IntoResponse;
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match read_view(db) {
        Ok(v) => axum::response::Html(render(&v, &name)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "depot page: cannot read the database");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("depot database: {e}"),
            )
                .into_response()
        }
    }
}

fn json_response(db: &std::path::Path) -> axum::response::Response {
    use axum::response::IntoResponse;
    match read_view(db) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("depot database: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_is_exact_from_fen() {
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan(12_345), "123.45");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn chart_has_one_bar_an_hour_with_its_count() {
        let mut taps = vec![0; HOURS_PER_DAY];
        taps[7] = 40;
        taps[8] = 10;
        let svg = hour_chart_svg(&taps);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), HOURS_PER_DAY);
        assert!(svg.contains("data-hour=\"7\" data-taps=\"40\""));
        assert!(svg.contains("data-hour=\"8\" data-taps=\"10\""));
    }
}
