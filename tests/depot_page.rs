//! The depot manager's page, as a manager sees it: a demo day is uploaded, `depot serve --http`
//! serves the page on 127.0.0.1, and what the page shows is checked against
//! `depot report --json`: over plain HTTP always, and rendered by a real headless Chromium
//! when one is installed (`.ci/run` installs Debian's and sets FARE_VALIDATOR_REQUIRE_CHROMIUM=1,
//! so there it never skips).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-validator"))
}

/// A station serving its page; killed when dropped, so the test never leaves it running.
struct Station {
    child: Child,
    page: String,
}

impl Drop for Station {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small demo day, uploaded to a depot in `dir`.
fn demo_day(dir: &Path) -> PathBuf {
    let data = dir.join("day");
    let out = bin()
        .args([
            "demo",
            "--buses",
            "3",
            "--taps-per-bus",
            "40",
            "--json",
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    data.join("depot.db")
}

fn serve(db: &Path) -> Station {
    let mut child = bin()
        .args([
            "depot",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    let page = v["page"].as_str().unwrap().to_string();
    assert!(page.starts_with("http://127.0.0.1:"), "{page}");
    Station { child, page }
}

fn report(db: &Path) -> Value {
    let out = bin()
        .args(["depot", "report", "--json", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// GET over a plain socket: the body.
fn get(page: &str, path: &str) -> String {
    let hostport = page.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn fen_to_yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// What the page must show for each bus, from the report: (terminal, records, fare in fen).
fn expected_buses(report: &Value) -> Vec<(String, u64, u64)> {
    report["terminals"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, t)| {
            (
                id.clone(),
                t["records"].as_u64().unwrap(),
                t["fare_fen"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The page's HTML (served, or as Chromium rendered it) shows every bus's records and fares,
/// and the charged total, as the report says.
fn assert_page_matches_report(html: &str, report: &Value) {
    let buses = expected_buses(report);
    assert_eq!(buses.len(), 3);
    let mut charged = 0;
    for (id, records, fare) in &buses {
        let row_at = html
            .find(&format!("data-terminal=\"{id}\""))
            .unwrap_or_else(|| panic!("no row for {id}"));
        let row = &html[row_at..html[row_at..].find("</tr>").unwrap() + row_at];
        assert!(
            row.contains(&format!("class=\"num records\">{records}<")),
            "{id}: records {records} not in {row}"
        );
        assert!(
            row.contains(&format!("data-fen=\"{fare}\">{}<", fen_to_yuan(*fare))),
            "{id}: fare {fare} not in {row}"
        );
        charged += fare;
    }
    assert!(
        html.contains(&format!("id=\"charged\">{}<", fen_to_yuan(charged))),
        "charged total {charged} fen not shown"
    );
    assert!(html.contains("<svg id=\"taps-by-hour\""), "no chart");
}

#[test]
fn depot_page_shows_what_the_report_says() {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_day(dir.path());
    let report = report(&db);
    let station = serve(&db);
    let html = get(&station.page, "/");
    assert_page_matches_report(&html, &report);

    let day: Value = serde_json::from_str(&get(&station.page, "/day.json")).unwrap();
    let stored: u64 = expected_buses(&report).iter().map(|b| b.1).sum();
    assert_eq!(day["records"].as_u64(), Some(stored));
    let taps: u64 = day["taps_by_hour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(taps, stored, "every record falls in one hour of the chart");
    let charged: u64 = expected_buses(&report).iter().map(|b| b.2).sum();
    assert_eq!(day["fares_charged_fen"].as_u64(), Some(charged));
    let by_media: u64 = day["revenue_by_media_fen"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_media, charged);
    let difference = day["fares_recorded_fen"].as_u64().unwrap() - charged;
    assert_eq!(
        day["shared_code_records"].as_u64(),
        Some(
            report["qr_conflicts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["claims"].as_array().unwrap().len() as u64)
                .sum()
        )
    );
    if difference > 0 {
        assert!(html.contains(&format!("id=\"difference\">{}<", fen_to_yuan(difference))));
    }
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn depot_page_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("FARE_VALIDATOR_REQUIRE_CHROMIUM").is_none(),
            "FARE_VALIDATOR_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        eprintln!("skipped: no chromium (apt-get install chromium; .ci/run does)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = demo_day(dir.path());
    let report = report(&db);
    let station = serve(&db);
    let profile = dir.path().join("chromium-profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&station.page)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    assert!(
        dom.contains("<table id=\"buses\">"),
        "page not rendered: {dom}"
    );
    assert_page_matches_report(&dom, &report);
}
