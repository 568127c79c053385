//! Hostile scanner bytes never make the line splitter panic, and every line it hands on is
//! within its bound and ends nothing but at CR or LF.
#![no_main]

use fare_validator::validator::scanner::{LineSplitter, ScanLine, SCANNER_LINE_BYTES_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut split = LineSplitter::new();
    for &b in data {
        if let Some(ScanLine::Code(text)) = split.push(b) {
            assert!(!text.is_empty() && text.len() <= SCANNER_LINE_BYTES_MAX);
            assert!(!text.contains(['\r', '\n']));
        }
    }
    let _ = split.finish();
});
