//! The codec: every message type built, encoded, parsed back; the bytes
//! pinned by golden fixtures; hostile input refused with a typed error and
//! never a panic.

mod common;

use common::*;
use outpost_wccp::*;

/// Rewrites the fixtures when OUTPOST_BLESS=1; otherwise compares.
#[test]
fn every_message_round_trips_and_matches_its_golden_fixture() {
    let bless = std::env::var_os("OUTPOST_BLESS").is_some();
    for (name, msg, signed) in samples() {
        let pw = password_for(signed);
        let bytes = encode(&msg, pw.as_ref());
        let back = decode(&bytes, pw.as_ref()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, msg, "{name} did not round-trip");
        let path = fixture_path(name);
        if bless {
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(bytes, golden, "{name} differs from {}", path.display());
    }
}

#[test]
fn header_layout_is_the_drafts() {
    let (_, msg, _) = samples().into_iter().find(|s| s.0 == "here_i_am").unwrap();
    let b = encode(&msg, None);
    assert_eq!(&b[0..4], &10u32.to_be_bytes(), "HERE_I_AM is type 10");
    assert_eq!(&b[4..6], &[0x02, 0x00], "version 2.0");
    assert_eq!(usize::from(u16::from_be_bytes([b[6], b[7]])), b.len() - 8);
    // Security Info first: type 0, length 4, option 0.
    assert_eq!(&b[8..16], &[0, 0, 0, 4, 0, 0, 0, 0]);
    // Service Info: type 1, length 24, standard service 0.
    assert_eq!(&b[16..22], &[0, 1, 0, 24, 0, 0]);
}

#[test]
fn md5_is_over_the_padded_password_and_the_zeroed_message() {
    use md5::{Digest, Md5};
    let (_, msg, _) = samples()
        .into_iter()
        .find(|s| s.0 == "removal_query")
        .unwrap();
    let pw = Password::new(PASSWORD).unwrap();
    let signed = encode(&msg, Some(&pw));
    // Security Info: type 0, length 20, option 1, then the digest.
    assert_eq!(&signed[8..16], &[0, 0, 0, 20, 0, 0, 0, 1]);
    let mut zeroed = signed.clone();
    zeroed[16..32].fill(0);
    let mut h = Md5::new();
    h.update(b"s3cret\0\0");
    h.update(&zeroed);
    let want: [u8; 16] = h.finalize().into();
    assert_eq!(&signed[16..32], &want);
}

#[test]
fn a_wrong_or_missing_password_is_refused_both_ways() {
    let (_, msg, _) = samples().into_iter().find(|s| s.0 == "i_see_you").unwrap();
    let ours = Password::new(PASSWORD).unwrap();
    let theirs = Password::new("other").unwrap();
    let signed_theirs = encode(&msg, Some(&theirs));
    assert_eq!(
        decode(&signed_theirs, Some(&ours)),
        Err(DecodeError::BadDigest)
    );
    let unsigned = encode(&msg, None);
    assert_eq!(
        decode(&unsigned, Some(&ours)),
        Err(DecodeError::SecurityMismatch)
    );
    let signed_ours = encode(&msg, Some(&ours));
    assert_eq!(
        decode(&signed_ours, None),
        Err(DecodeError::SecurityMismatch)
    );
    // A flipped bit anywhere breaks the digest.
    let mut tampered = encode(&msg, Some(&ours));
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(decode(&tampered, Some(&ours)).is_err());
    assert!(Password::new("ninechars").is_none());
    assert!(Password::new("").is_none());
}

#[test]
fn every_truncation_and_every_byte_flip_is_refused_or_parsed_without_panic() {
    for (name, msg, signed) in samples() {
        let pw = password_for(signed);
        let bytes = encode(&msg, pw.as_ref());
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut], pw.as_ref()).is_err(),
                "{name} cut at {cut} parsed"
            );
        }
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = decode(&b, None);
            }
        }
    }
}

fn with_component(msg: &[u8], ctype: u16, body: &[u8]) -> Vec<u8> {
    let mut b = msg.to_vec();
    b.extend_from_slice(&ctype.to_be_bytes());
    b.extend_from_slice(&(body.len() as u16).to_be_bytes());
    b.extend_from_slice(body);
    let len = (b.len() - 8) as u16;
    b[6..8].copy_from_slice(&len.to_be_bytes());
    b
}

#[test]
fn unknown_components_are_skipped_and_the_address_table_is_refused() {
    let (_, msg, _) = samples().into_iter().find(|s| s.0 == "here_i_am").unwrap();
    let b = encode(&msg, None);
    let extended = with_component(&b, 99, &[1, 2, 3, 4, 5]);
    assert_eq!(decode(&extended, None).unwrap(), msg);
    let table = with_component(&b, 17, &[0, 1, 0, 4, 0, 0, 0, 0]);
    assert!(matches!(
        decode(&table, None),
        Err(DecodeError::Unsupported(_, 17))
    ));
    let twice = with_component(&b, 1, &b[20..44]);
    assert_eq!(
        decode(&twice, None),
        Err(DecodeError::DuplicateComponent(1))
    );
}

#[test]
fn huge_counts_are_refused_before_any_allocation() {
    // A Web-Cache View Info claiming 4 billion routers in 12 bytes.
    let (_, msg, _) = samples().into_iter().find(|s| s.0 == "here_i_am").unwrap();
    let mut m = msg.clone();
    m.wc_view = None;
    let b = encode(&m, None);
    let hostile = with_component(&b, 5, &[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    assert!(matches!(
        decode(&hostile, None),
        Err(DecodeError::CountTooLarge {
            what: "router count",
            ..
        })
    ));
}

#[test]
fn wrong_header_length_version_or_type_is_refused() {
    let (_, msg, _) = samples().into_iter().find(|s| s.0 == "here_i_am").unwrap();
    let b = encode(&msg, None);
    let mut longer = b.clone();
    longer.push(0);
    assert!(matches!(
        decode(&longer, None),
        Err(DecodeError::LengthMismatch { .. })
    ));
    let mut v1 = b.clone();
    v1[4] = 1;
    assert!(matches!(decode(&v1, None), Err(DecodeError::Version(_))));
    let mut t = b.clone();
    t[3] = 7;
    assert_eq!(decode(&t, None), Err(DecodeError::UnknownMessage(7)));
    assert!(matches!(
        decode(&vec![0u8; 9000], None),
        Err(DecodeError::TooLong(9000))
    ));
}

#[test]
fn required_components_are_enforced_per_message_type() {
    let mut m = Message::new(MessageType::ISeeYou, ServiceInfo::web_cache());
    assert_eq!(
        decode(&encode(&m, None), None),
        Err(DecodeError::MissingComponent("router identity info"))
    );
    m.kind = MessageType::RedirectAssign;
    assert_eq!(
        decode(&encode(&m, None), None),
        Err(DecodeError::MissingComponent("assignment info"))
    );
    m.kind = MessageType::RemovalQuery;
    assert_eq!(
        decode(&encode(&m, None), None),
        Err(DecodeError::MissingComponent("router query info"))
    );
}
