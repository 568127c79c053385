//! Depot wire frames: any bytes give a frame or a typed error, never a panic, and so do the
//! bodies of every frame type.
#![no_main]

use fare_validator::upload::frame::{
    decode_32, decode_acquirer, decode_gone, decode_proofs, decode_refused, parse_frame, Ack,
    Batch, FileChunk, FrameType, Hello,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((frame, used)) = parse_frame(data) {
        assert!(used <= data.len());
        let p = frame.payload;
        let _ = match frame.ty {
            FrameType::Hello => Hello::decode(p).map(|_| ()),
            FrameType::Batch => Batch::decode(p).map(|_| ()),
            FrameType::Ack => Ack::decode(p).map(|_| ()),
            FrameType::FileChunk => FileChunk::decode(p).map(|_| ()),
            FrameType::Refused => decode_refused(p).map(|_| ()),
            FrameType::Gone => decode_gone(p).map(|_| ()),
            FrameType::Proofs => decode_proofs(p).map(|_| ()),
            FrameType::AcquirerData => decode_acquirer(p).map(|_| ()),
            ty => decode_32(ty, p).map(|_| ()),
        };
    }
    let _ = Batch::decode(data);
    let _ = Hello::decode(data);
    let _ = decode_acquirer(data);
});
