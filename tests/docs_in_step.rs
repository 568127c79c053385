//! The reference pages under docs/ say everything the code accepts and prints: every replay
//! event and its keys and values, every CARDS.json field, every reason, every field of a
//! decision line and of `journal show`, and the journal's byte tables exactly as the code's
//! module docs give them. A user's clone has only these pages, so they must not fall behind.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use fare_validator::types::{ListReason, Reason, RiderCategory};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Names not written in `doc` as `name` (in backticks) or as a JSON key "name".
fn unnamed<'a>(doc: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| !doc.contains(&format!("`{n}`")) && !doc.contains(&format!("\"{n}\"")))
        .map(str::to_string)
        .collect()
}

/// String literals inside the first `[...]` after each `only_keys(` in `src`.
fn only_keys_lists(src: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (at, _) in src.match_indices("only_keys(") {
        let rest = &src[at..];
        let Some(open) = rest.find("&[") else {
            continue;
        };
        let close = rest[open..].find(']').unwrap() + open;
        for part in rest[open + 2..close].split(',') {
            let part = part.trim();
            if let Some(k) = part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                keys.insert(k.to_string());
            }
        }
    }
    keys
}

/// Values an event field may take: literals compared as `s == "..."` in `src`.
fn compared_literals(src: &str) -> BTreeSet<String> {
    src.match_indices("s == \"")
        .map(|(at, pat)| {
            let rest = &src[at + pat.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

#[test]
fn every_replay_event_key_and_value_is_named_in_docs_replay() {
    let doc = read("docs/replay.md");
    let src = read("src/replay.rs");
    let keys = only_keys_lists(&src);
    assert!(
        keys.contains("card_no") && keys.contains("restart"),
        "{keys:?}"
    );
    let values = compared_literals(&src);
    assert!(values.contains("after_record"), "{values:?}");
    let missing = unnamed(&doc, keys.iter().chain(&values).map(String::as_str));
    assert!(
        missing.is_empty(),
        "docs/replay.md does not name {missing:?}"
    );
}

#[test]
fn every_cards_json_field_is_named_in_docs_replay() {
    let doc = read("docs/replay.md");
    let src = read("src/card/sim.rs");
    let start = src.find("pub struct CardSpec {").unwrap();
    let body = &src[start..start + src[start..].find("\n}").unwrap()];
    let fields: Vec<&str> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .collect();
    assert!(fields.contains(&"balance_fen"), "{fields:?}");
    let missing = unnamed(&doc, fields.iter().copied());
    assert!(
        missing.is_empty(),
        "docs/replay.md does not name CARDS.json {missing:?}"
    );
}

#[test]
fn every_reason_category_and_list_reason_is_named_in_the_docs() {
    let doc = read("docs/replay.md") + &read("docs/ride-codes.md");
    let names = Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .chain(ListReason::ALL.iter().map(|r| r.as_str()))
        .chain(RiderCategory::ALL.iter().map(|c| c.as_str()));
    let missing = unnamed(&doc, names);
    assert!(missing.is_empty(), "docs do not name {missing:?}");
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-validator"))
}

fn json_keys(lines: &[u8]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for line in String::from_utf8_lossy(lines).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        keys.extend(v.as_object().unwrap().keys().cloned());
    }
    keys
}

#[test]
fn every_field_replay_and_journal_show_print_is_named_in_the_docs() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("j");
    let fx = root().join("fixtures");
    let out = bin()
        .args(["replay", "--cards"])
        .arg(fx.join("replay/cards.json"))
        .arg("--keys")
        .arg(fx.join("ride-code-keys.json"))
        .arg("--journal")
        .arg(&journal)
        .arg(fx.join("replay/events.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let decision_keys = json_keys(&out.stdout);
    let doc = read("docs/replay.md");
    let missing = unnamed(&doc, decision_keys.iter().map(String::as_str));
    assert!(
        missing.is_empty(),
        "docs/replay.md: decision field {missing:?}"
    );

    let out = bin()
        .args(["journal", "show"])
        .arg(&journal)
        .output()
        .unwrap();
    assert!(out.status.success());
    let record_keys = json_keys(&out.stdout);
    assert!(record_keys.contains("tac"), "{record_keys:?}");
    let doc = doc + &read("docs/journal.md");
    let missing = unnamed(&doc, record_keys.iter().map(String::as_str));
    assert!(missing.is_empty(), "docs: journal show field {missing:?}");
}

/// The `| ... |` rows of the first table in a module doc (`//! |` lines).
fn module_doc_table(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|l| l.strip_prefix("//! "))
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(str::to_string)
        .collect()
}

#[test]
fn journal_byte_tables_in_docs_are_the_code_s() {
    let doc = read("docs/journal.md");
    for src in ["src/journal/record.rs", "src/journal/grey.rs"] {
        let table = module_doc_table(&read(src));
        assert!(table.len() > 5, "{src}: no byte table");
        let block = table.join("\n");
        assert!(
            doc.contains(&block),
            "docs/journal.md lacks the byte table of {src} as it stands:\n{block}"
        );
    }
}

#[test]
fn depot_protocol_page_is_the_wire_format_module_doc() {
    let src = read("src/upload/frame.rs");
    let module_doc: Vec<&str> = src
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.strip_prefix("//! ").unwrap_or(""))
        .collect();
    assert!(module_doc.len() > 20, "frame.rs lost its module doc");
    let doc = read("docs/depot-protocol.md");
    assert!(
        doc.contains(&module_doc.join("\n")),
        "docs/depot-protocol.md is not the module doc of src/upload/frame.rs as it stands"
    );
}

#[test]
fn depot_protocol_constants_table_gives_the_code_s_values() {
    use fare_validator::upload::frame;
    let doc = read("docs/depot-protocol.md");
    let row = |name: &str| {
        doc.lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("docs/depot-protocol.md: no row for {name}"))
            .to_string()
    };
    let thousands = |n: usize| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    let version = row("PROTOCOL_VERSION");
    assert!(
        version.starts_with(&format!(
            "| `PROTOCOL_VERSION` | {} ",
            frame::PROTOCOL_VERSION
        )),
        "{version}"
    );
    for (name, value) in [
        ("FRAME_PAYLOAD_BYTES_MAX", frame::FRAME_PAYLOAD_BYTES_MAX),
        (
            "HANDSHAKE_PAYLOAD_BYTES_MAX",
            frame::HANDSHAKE_PAYLOAD_BYTES_MAX,
        ),
        ("BATCH_RECORDS_MAX", frame::BATCH_RECORDS_MAX),
        ("TERMINAL_ID_BYTES_MAX", frame::TERMINAL_ID_BYTES_MAX),
        ("REFUSED_TEXT_BYTES_MAX", frame::REFUSED_TEXT_BYTES_MAX),
    ] {
        let r = row(name);
        assert!(
            r.starts_with(&format!("| `{name}` | {} ", thousands(value))),
            "{r}"
        );
    }
}

/// The fixtures' TOML files are what users copy: each table says what it is, in a comment
/// right above its header.
#[test]
fn every_table_in_the_fixtures_toml_files_has_a_comment() {
    let mut files = Vec::new();
    let mut dirs = vec![root().join("fixtures")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 5, "{files:?}");
    let mut missing = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with('[') {
                continue;
            }
            let above = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
            if !above.is_some_and(|l| l.starts_with('#')) {
                missing.push(format!("{} line {}: {line}", path.display(), i + 1));
            }
        }
    }
    assert!(missing.is_empty(), "tables without a comment: {missing:#?}");
}
