//! The QR image of a ride code scans back to the same text.

use fare_validator::ride_code::issuer::{self, CertFields, KeyPair};
use fare_validator::ride_code::Alg;
use fare_validator::types::RiderCategory;

#[test]
fn qr_png_decodes_back_to_the_same_text() {
    let channel = KeyPair::from_seed(Alg::Sm2, 1);
    let holder = KeyPair::from_seed(Alg::Sm2, 2);
    let fields = CertFields {
        alg: Alg::Sm2,
        channel_id: 1,
        channel_key_id: 1,
        account_id: 42,
        card_no: "37140000000000000001".parse().unwrap(),
        rider_category: RiderCategory::Adult as u8,
        cert_not_before: 1_795_000_000,
        cert_not_after: 1_796_000_000,
        holder_public_key: holder.public_key(),
    };
    let cert = issuer::certificate(&fields, &channel);
    let text = issuer::code_text(&issuer::code(&cert, 1_795_824_000, 7, &holder));

    let qr = issuer::qr_code(&text).unwrap();
    assert_eq!(issuer::qr_version(&qr), 12);
    assert_eq!(qr.error_correction_level(), issuer::QR_EC_LEVEL);

    let png = issuer::qr_png(&text).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let img = image::load_from_memory(&png).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1);
    let (meta, content) = grids[0].decode().unwrap();
    assert_eq!(content, text);
    assert_eq!(meta.version.0, 12);
}
