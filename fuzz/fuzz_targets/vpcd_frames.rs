//! Arbitrary bytes from the vpcd socket never make the framing panic: `read_frame` reads a
//! stream of frames into a fixed buffer (short reads, oversized and truncated frames
//! included), `parse_message` decodes each payload, and a frame that parses re-encodes with
//! `write_frame` to the same bytes.
#![no_main]

use std::io::{Cursor, Read};

use fare_validator::card::vpcd::{parse_addr, parse_message, read_frame, write_frame, VpcdError};
use libfuzzer_sys::fuzz_target;

/// A reader that hands out at most `step` bytes a call, to exercise partial reads.
struct Trickle<'a> {
    inner: Cursor<&'a [u8]>,
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step);
        self.inner.read(&mut buf[..n])
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(head & 0x0F) + 1;
    let buf_len = [8usize, 64, 261, 512][usize::from(head >> 4) % 4];
    let mut r = Trickle {
        inner: Cursor::new(rest),
        step,
    };
    let mut buf = vec![0u8; buf_len];
    // A stream of at most 1 + len/2 frames: each frame consumes at least 2 bytes.
    for _ in 0..=rest.len() / 2 {
        match read_frame(&mut r, &mut buf) {
            Ok(n) => {
                assert!(n > 0 && n <= buf.len());
                let payload = &buf[..n];
                let _ = parse_message(payload);
                let mut out = Vec::new();
                match write_frame(&mut out, payload) {
                    Ok(()) => {
                        assert_eq!(&out[..2], &(n as u16).to_be_bytes());
                        assert_eq!(&out[2..], payload);
                    }
                    Err(VpcdError::FrameTooLong { .. }) => {}
                    Err(e) => panic!("write_frame of a read frame: {e}"),
                }
            }
            Err(VpcdError::FrameTooLong { len, max }) => assert!(len > max),
            Err(VpcdError::Closed) | Err(VpcdError::Truncated { .. }) => break,
            Err(_) => {}
        }
    }
    let _ = parse_message(rest);
    let _ = parse_addr(&String::from_utf8_lossy(rest));
});
