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
//! Accepted taps and scans show `请上车` / `please board`; each refusal shows the text of its
//! reason in [`reason_text`] (the table is also in docs/config.md).

use serde_json::Value;

use crate::engine::Decision;
use crate::types::Reason;

/// Display text of an accepted tap or scan: (Chinese, English).
pub const ACCEPTED_TEXT: (&str, &str) = ("请上车", "please board");

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
    let ((zh, en), sound) = match d.outcome {
        Ok(()) => (ACCEPTED_TEXT, "accept"),
        Err(r) => (reason_text(r), "refuse"),
    };
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
}
