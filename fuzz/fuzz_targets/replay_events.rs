//! Arbitrary event lines never make `replay::parse_event` panic; the same line always gives
//! the same answer.
#![no_main]

use fare_validator::replay::parse_event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let first = parse_event(&line);
    let second = parse_event(&line);
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
});
