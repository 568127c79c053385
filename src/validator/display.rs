//! What the passenger sees and hears: the validator's stable line protocol on standard output.
//!
//! Every decision is one JSON line, the decision line of docs/replay.md with two more
//! fields, so that a display or buzzer driver can follow standard output line by line:
//!
//! | field | value |
//! | --- | --- |
//! | `at`, `media`, `id`, `result`, `reason`, `fare_fen`, `balance_fen`, `seq` | as in docs/replay.md |
//! | `text_zh` | short display text in Chinese (the screen's first line), e.g. `余额不足` |
//! | `text_en` | the same in English, e.g. `insufficient balance` |
//! | `sound` | `accept` (one short beep) or `refuse` (two long beeps) |
//!
//! Accepted taps and scans show `请上车` / `please board`, or the text of their fare note
//! ([`crate::fare::FareNote::text`]: an ended concession, another rider on the card); each refusal shows
//! the text of its reason in [`reason_text`] (the table is also in docs/config.md).
//!
//! The program writes each line with [`write_feedback_line`]: built in a fixed buffer of
//! [`FEEDBACK_LINE_BYTES_MAX`] bytes and written at once, nothing allocated per decision. It
//! is byte for byte what `serde_json` prints for [`feedback_line`] (a test holds them equal).

use std::fmt::Write as _;

use serde_json::Value;

use crate::clock::Timestamp;
use crate::engine::{Decision, Subject};
use crate::types::Reason;

/// Longest decision line, bytes, newline included. The longest possible line is about 330
/// bytes: keys and punctuation 130, a time of 25, an account id `65535:` and 20 digits, the
/// longest reason 24, three numbers of at most 11 digits and a seq of 20, a fare note and
/// rider of 45, display texts of at most 48 (16 Chinese characters) and 40 bytes, a sound
/// of 6.
pub const FEEDBACK_LINE_BYTES_MAX: usize = 512;

/// A decision line being built: a fixed buffer that refuses to overflow.
struct LineBuf {
    bytes: [u8; FEEDBACK_LINE_BYTES_MAX],
    len: usize,
}

impl std::fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl std::io::Write for LineBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let end = self.len + b.len();
        let dst = self
            .bytes
            .get_mut(self.len..end)
            .ok_or_else(|| std::io::Error::other("decision line buffer full"))?;
        dst.copy_from_slice(b);
        self.len = end;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A JSON string as serde_json writes it: `"` and `\` escaped, control characters as
/// `\n`-style or `\u00XX` escapes, everything else (Chinese too) as it is.
fn json_str(out: &mut LineBuf, s: &str) -> std::fmt::Result {
    out.write_char('"')?;
    escape_into(out, s)?;
    out.write_char('"')
}

/// What is written through it lands in the line JSON-escaped (a value's `Display` inside a
/// JSON string).
struct Escaping<'a>(&'a mut LineBuf);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        escape_into(self.0, s)
    }
}

fn escape_into(out: &mut LineBuf, s: &str) -> std::fmt::Result {
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\u{8}' => out.write_str("\\b")?,
            '\u{c}' => out.write_str("\\f")?,
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// `null` or the number.
fn json_opt(out: &mut LineBuf, v: Option<impl std::fmt::Display>) -> std::fmt::Result {
    match v {
        Some(v) => write!(out, "{v}"),
        None => out.write_str("null"),
    }
}

fn build_line(out: &mut LineBuf, at: Timestamp, d: &Decision) -> std::io::Result<()> {
    let full = |_| std::io::Error::other("decision line over FEEDBACK_LINE_BYTES_MAX");
    out.write_str("{\"at\":\"").map_err(full)?;
    at.write_rfc3339(out)?;
    let ((zh, en), sound) = display_texts(d);
    (|| {
        write!(out, "\",\"media\":\"{}\",\"id\":", d.media.as_str())?;
        match d.subject {
            // Digits and a colon: nothing to escape.
            Subject::Card(c) => write!(out, "\"{c}\"")?,
            Subject::Account(a) => write!(out, "\"{a}\"")?,
            // Characters read from the card: escaped like any JSON string.
            Subject::Quickpass(m) => {
                out.write_char('"')?;
                write!(Escaping(out), "{m}")?;
                out.write_char('"')?;
            }
            Subject::Unknown => out.write_str("null")?,
        }
        let result = if d.accepted() { "accepted" } else { "rejected" };
        write!(out, ",\"result\":\"{result}\",\"reason\":")?;
        match d.outcome {
            Ok(()) => out.write_str("null")?,
            Err(r) => write!(out, "\"{}\"", r.as_str())?,
        }
        write!(out, ",\"fare_fen\":{},\"balance_fen\":", d.fare_fen)?;
        json_opt(out, d.balance_fen)?;
        out.write_str(",\"seq\":")?;
        json_opt(out, d.seq)?;
        if let Some(note) = d.fare_note {
            write!(out, ",\"fare_note\":\"{}\"", note.as_str())?;
            if let Some(n) = note.rider() {
                write!(out, ",\"rider\":{n}")?;
            }
        }
        out.write_str(",\"text_zh\":")?;
        json_str(out, zh)?;
        out.write_str(",\"text_en\":")?;
        json_str(out, en)?;
        writeln!(out, ",\"sound\":\"{sound}\"}}")
    })()
    .map_err(full)
}

/// Write the decision's line ([`feedback_line`] and a newline) to `out` in one write, from a
/// fixed buffer: nothing is allocated. An error only if `out` fails (or, a bug, the line
/// outgrew [`FEEDBACK_LINE_BYTES_MAX`]: then nothing is written).
pub fn write_feedback_line(
    out: &mut (impl std::io::Write + ?Sized),
    at: Timestamp,
    d: &Decision,
) -> std::io::Result<()> {
    let mut line = LineBuf {
        bytes: [0; FEEDBACK_LINE_BYTES_MAX],
        len: 0,
    };
    build_line(&mut line, at, d)?;
    out.write_all(&line.bytes[..line.len])
}

/// Display text of an accepted tap or scan: (Chinese, English).
pub const ACCEPTED_TEXT: (&str, &str) = ("请上车", "please board");

/// The display's texts and the sound of a decision: an accepted tap with a fare note (an
/// ended concession, another rider) shows the note's text ([`crate::fare::FareNote::text`]).
fn display_texts(d: &Decision) -> ((&'static str, &'static str), &'static str) {
    match (d.outcome, d.fare_note) {
        (Ok(()), Some(note)) => (note.text(), "accept"),
        (Ok(()), None) => (ACCEPTED_TEXT, "accept"),
        (Err(r), _) => (reason_text(r), "refuse"),
    }
}

/// The short display text of a refusal: (Chinese, English). Every reason has one (the match
/// is exhaustive, and a test walks [`Reason::ALL`]).
pub fn reason_text(reason: Reason) -> (&'static str, &'static str) {
    match reason {
        Reason::Unreadable => ("请重新刷卡", "card not read, tap again"),
        Reason::CardBlocked => ("卡已锁定", "card blocked"),
        Reason::NotActivated => ("卡未启用", "card not activated"),
        Reason::CardNotYetValid => ("卡未到启用日期", "card not yet valid"),
        Reason::CardExpired => ("卡已过期", "card expired"),
        Reason::Blacklisted => ("黑名单卡", "card refused, see service counter"),
        Reason::RepeatTap => ("已刷卡", "already tapped"),
        Reason::IssuerNotAccepted => ("此卡本地不受理", "card's city not accepted here"),
        Reason::InsufficientBalance => ("余额不足", "insufficient balance"),
        Reason::CardRemoved => ("请重新刷卡", "card moved away, tap again"),
        Reason::Malformed => ("无效乘车码", "not a ride code"),
        Reason::UnsupportedAlgorithm => ("乘车码不支持", "ride code not supported"),
        Reason::UnsupportedChannel => ("乘车码渠道不支持", "ride code app not accepted"),
        Reason::UnknownKey => ("乘车码无效", "ride code not recognised"),
        Reason::KeyNotValid => ("乘车码无效", "ride code key not valid"),
        Reason::BadCertificate => ("乘车码无效", "ride code not genuine"),
        Reason::CertificateNotValid => ("乘车码已失效", "ride code certificate expired"),
        Reason::BadSignature => ("乘车码无效", "ride code not genuine"),
        Reason::CodeNotYetValid => ("请刷新乘车码", "refresh your ride code"),
        Reason::CodeExpired => ("请刷新乘车码", "ride code expired, refresh it"),
        Reason::Replayed => ("乘车码已使用", "ride code already used"),
        Reason::StorageUnavailable => ("设备故障", "validator out of order"),
    }
}

/// The decision line of docs/replay.md with the display texts and the sound added.
pub fn feedback_line(at: &str, d: &Decision) -> Value {
    let mut line = crate::replay::decision_line(at, d, None);
    let ((zh, en), sound) = display_texts(d);
    if let Some(o) = line.as_object_mut() {
        o.insert("text_zh".into(), zh.into());
        o.insert("text_en".into(), en.into());
        o.insert("sound".into(), sound.into());
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fare::FareNote;

    #[test]
    fn every_reason_has_a_display_text_in_both_languages() {
        for r in Reason::ALL {
            let (zh, en) = reason_text(r);
            assert!(!zh.is_empty() && !en.is_empty(), "{r:?}");
            assert!(!zh.is_ascii(), "{r:?}: {zh} is not Chinese");
            assert!(en.is_ascii(), "{r:?}: {en}");
            // A two-line passenger display holds 16 Chinese or 40 Latin characters a line.
            assert!(zh.chars().count() <= 16 && en.len() <= 40, "{r:?} too long");
        }
        assert_eq!(
            reason_text(Reason::InsufficientBalance),
            ("余额不足", "insufficient balance")
        );
    }

    /// docs/config.md shows the same texts as the code, for every reason.
    #[test]
    fn the_docs_table_holds_every_reason_text() {
        let doc = include_str!("../../docs/config.md");
        for r in Reason::ALL {
            let (zh, en) = reason_text(r);
            let row = format!("| `{}` | {zh} | {en} |", r.as_str());
            assert!(doc.contains(&row), "docs/config.md lacks {row}");
        }
        let (zh, en) = ACCEPTED_TEXT;
        assert!(doc.contains(&format!("| accepted | {zh} | {en} |")));
    }

    #[test]
    fn feedback_line_keeps_the_decision_line_and_adds_the_texts() {
        let d = Decision {
            media: crate::types::Media::Card,
            subject: crate::engine::Subject::Unknown,
            outcome: Err(Reason::InsufficientBalance),
            fare_fen: 0,
            balance_fen: Some(50),
            seq: None,
            fare_note: None,
        };
        let at = "2026-11-28T08:00:05+08:00";
        let line = feedback_line(at, &d);
        let base = crate::replay::decision_line(at, &d, None);
        for (k, v) in base.as_object().unwrap() {
            assert_eq!(&line[k], v, "{k}");
        }
        assert_eq!(line["text_zh"], "余额不足");
        assert_eq!(line["text_en"], "insufficient balance");
        assert_eq!(line["sound"], "refuse");
    }

    fn written(at: Timestamp, d: &Decision) -> String {
        let mut out = Vec::new();
        write_feedback_line(&mut out, at, d).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The fixed-buffer writer prints exactly what serde_json prints for the line, for every
    /// outcome, subject and the extremes of every number.
    #[test]
    fn the_fixed_buffer_line_is_byte_for_byte_the_json_line() {
        use crate::types::{AccountId, CardNo, Media};
        let subjects = [
            Subject::Quickpass(crate::card::quickpass::MaskedPan {
                first6: *b"62\"\\12",
                last4: *b"9\n01",
                len: 19,
            }),
            Subject::Unknown,
            Subject::Card(CardNo::from_u128(99_999_999_999_999_999_999).unwrap()),
            Subject::Account(AccountId {
                channel: u16::MAX,
                account: u64::MAX,
            }),
        ];
        let outcomes = std::iter::once(Ok(())).chain(Reason::ALL.into_iter().map(Err));
        let times = [
            Timestamp {
                unix_s: 1_795_824_005,
                utc_offset_s: 8 * 3600,
            },
            Timestamp {
                unix_s: 0,
                utc_offset_s: 0,
            },
            Timestamp {
                unix_s: -1,
                utc_offset_s: -(14 * 3600),
            },
            // Past year 9999: RFC 3339 cannot say it, so the unix seconds are written.
            Timestamp {
                unix_s: 400_000_000_000,
                utc_offset_s: 3600,
            },
        ];
        let mut longest = 0;
        for outcome in outcomes {
            for (i, subject) in subjects.into_iter().enumerate() {
                for at in times {
                    let d = Decision {
                        media: [Media::Quickpass, Media::Card, Media::Card, Media::Qr][i],
                        subject,
                        outcome,
                        fare_fen: if i == 2 { u32::MAX } else { 200 },
                        balance_fen: [None, None, Some(i32::MIN), Some(i32::MAX)][i],
                        seq: [Some(1), None, Some(u64::MAX), Some(7)][i],
                        fare_note: [
                            None,
                            None,
                            Some(FareNote::ExtraRider(u8::MAX)),
                            Some(FareNote::AnnualReviewDue),
                        ][i],
                    };
                    let line = written(at, &d);
                    let want = format!("{}\n", feedback_line(&at.to_rfc3339(), &d));
                    assert_eq!(line, want);
                    longest = longest.max(line.len());
                }
            }
        }
        assert!(longest < FEEDBACK_LINE_BYTES_MAX, "{longest}");
    }

    #[test]
    fn json_strings_are_escaped_as_serde_json_escapes_them() {
        let s = "a\"b\\c\nd\u{1}e\u{8}\u{c}\t\r余";
        let mut out = LineBuf {
            bytes: [0; FEEDBACK_LINE_BYTES_MAX],
            len: 0,
        };
        json_str(&mut out, s).unwrap();
        assert_eq!(
            std::str::from_utf8(&out.bytes[..out.len]).unwrap(),
            serde_json::to_string(s).unwrap()
        );
    }
}
