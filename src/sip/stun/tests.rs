//! STUN parse and build, against the RFC 5769 test vectors where they apply.

use super::*;

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|b| (b as char).to_digit(16).map(|d| d as u8).unwrap_or(0))
        .collect();
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

/// RFC 5769 §2.1: a Binding request with SOFTWARE, PRIORITY,
/// ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY and FINGERPRINT.
fn sample_request() -> Vec<u8> {
    hex("00010058 2112a442 b7e7a701 bc34d686 fa87dfae
         80220010 5354554e 20746573 7420636c 69656e74
         00240004 6e0001ff
         80290008 932ff9b1 51263b36
         00060009 6576746a 3a683676 59202020
         00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
         80280004 e57a3bcf")
}

/// RFC 5769 §2.2: a success response, 192.0.2.1 port 32853.
fn sample_ipv4_response() -> Vec<u8> {
    hex("0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
         8022000b 74657374 20766563 746f7220
         00200008 0001a147 e112a643
         00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
         80280004 c07d4c96")
}

/// RFC 5769 §2.3: a success response, 2001:db8:1234:5678:11:2233:4455:6677 port 32853.
fn sample_ipv6_response() -> Vec<u8> {
    hex("01010048 2112a442 b7e7a701 bc34d686 fa87dfae
         8022000b 74657374 20766563 746f7220
         00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
         00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
         80280004 c8fb0b4c")
}

fn from() -> SocketAddr {
    "192.0.2.1:32853".parse().expect("addr")
}

fn local() -> SocketAddr {
    "198.51.100.7:5060".parse().expect("addr")
}

#[test]
fn the_rfc_5769_request_parses_and_its_fingerprint_checks() {
    let request = parse(&sample_request()).expect("parses");
    assert_eq!(request.class, Class::Request);
    assert_eq!(request.method, BINDING);
    assert!(!request.classic);
    assert!(request.fingerprint);
    assert!(request.unknown.is_empty(), "{:?}", request.unknown);
    let mut broken = sample_request();
    let last = broken.len() - 1;
    broken[last] ^= 1;
    assert_eq!(parse(&broken), Err(Malformed::Fingerprint));
}

#[test]
fn the_rfc_5769_responses_give_their_mapped_addresses() {
    let v4 = parse(&sample_ipv4_response()).expect("v4");
    assert_eq!(v4.class, Class::Success);
    assert!(v4.fingerprint);
    assert_eq!(v4.mapped, Some(from()));
    let v6 = parse(&sample_ipv6_response()).expect("v6");
    let expected: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .expect("addr");
    assert_eq!(v6.mapped, Some(expected));
}

#[test]
fn xor_mapped_address_is_written_as_the_rfc_5769_vectors() {
    let request = parse(&sample_request()).expect("parses");
    assert_eq!(address(from(), Some(&request.id)), hex("0001a147 e112a643"));
    let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .expect("addr");
    assert_eq!(
        address(v6, Some(&request.id)),
        hex("0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9")
    );
}

#[test]
fn a_binding_request_gets_its_source_back_with_a_fingerprint() {
    let Ok(Answer::Binding(bytes)) = answer(&sample_request(), from(), local()) else {
        panic!("no Binding answer");
    };
    let response = parse(&bytes).expect("our answer parses");
    assert_eq!(response.class, Class::Success);
    assert_eq!(response.method, BINDING);
    assert_eq!(&response.id, &sample_request()[4..20]);
    assert_eq!(response.mapped, Some(from()));
    assert!(
        response.fingerprint,
        "the request had one, so does the answer"
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("p2psip"), "SOFTWARE names us");
}

#[test]
fn a_request_without_fingerprint_gets_both_mapped_addresses() {
    let request = binding_request([7; 12], false);
    assert_eq!(request.len(), HEADER_LEN);
    let Ok(Answer::Binding(bytes)) = answer(&request, from(), local()) else {
        panic!("no answer");
    };
    let response = parse(&bytes).expect("parses");
    assert!(!response.fingerprint);
    // XOR-MAPPED-ADDRESS first, then MAPPED-ADDRESS in the clear.
    assert_eq!(&bytes[20..24], &[0x00, 0x20, 0x00, 0x08]);
    assert_eq!(&bytes[32..36], &[0x00, 0x01, 0x00, 0x08]);
    assert_eq!(&bytes[36..44], &hex("00018055 c0000201")[..]);
}

#[test]
fn a_classic_request_gets_mapped_source_and_changed_addresses() {
    // RFC 3489: no cookie, a 128-bit transaction ID.
    let mut request = hex("00010000");
    request.extend_from_slice(&[0x5a; 16]);
    let Ok(Answer::Binding(bytes)) = answer(&request, from(), local()) else {
        panic!("no answer");
    };
    let response = parse(&bytes).expect("parses");
    assert!(response.classic);
    assert_eq!(response.mapped, Some(from()));
    assert_eq!(&bytes[4..20], &[0x5a; 16]);
    let kinds = attribute_kinds(&bytes);
    assert_eq!(
        kinds,
        vec![
            attr::MAPPED_ADDRESS,
            attr::SOURCE_ADDRESS,
            attr::CHANGED_ADDRESS,
            attr::SOFTWARE
        ]
    );
    // A classic request for an answer from another address: none.
    let mut change = hex("00010008");
    change.extend_from_slice(&[0x5a; 16]);
    change.extend_from_slice(&hex("00030004 00000006"));
    assert_eq!(answer(&change, from(), local()), Ok(Answer::Nothing));
    let mut same = hex("00010008");
    same.extend_from_slice(&[0x5a; 16]);
    same.extend_from_slice(&hex("00030004 00000000"));
    assert!(matches!(
        answer(&same, from(), local()),
        Ok(Answer::Binding(_))
    ));
}

fn attribute_kinds(bytes: &[u8]) -> Vec<u16> {
    let mut kinds = Vec::new();
    let mut at = HEADER_LEN;
    while at + 4 <= bytes.len() {
        kinds.push(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        at += 4 + ((len + 3) & !3);
    }
    kinds
}

#[test]
fn unknown_comprehension_required_attributes_get_420() {
    let mut request = binding_request([1; 12], false);
    // 0x7777 (required, unknown), 0xC001 (optional, unknown: ignored).
    request.extend_from_slice(&hex("77770004 01020304 c0010000"));
    request[3] = 12;
    let Ok(Answer::Refusal { status: 420, bytes }) = answer(&request, from(), local()) else {
        panic!("no 420");
    };
    let response = parse(&bytes).expect("parses");
    assert_eq!(response.class, Class::Error);
    assert_eq!(
        attribute_kinds(&bytes),
        vec![attr::ERROR_CODE, attr::UNKNOWN_ATTRIBUTES]
    );
    let at = bytes.len() - 4;
    assert_eq!(&bytes[at..], &[0x77, 0x77, 0, 0], "the unknown one, padded");
    assert_eq!(&bytes[24..28], &[0, 0, 4, 20], "ERROR-CODE 420");
}

#[test]
fn other_methods_get_400_and_indications_and_responses_nothing() {
    let mut allocate = binding_request([2; 12], false);
    allocate[1] = 0x03;
    assert!(matches!(
        answer(&allocate, from(), local()),
        Ok(Answer::Refusal { status: 400, .. })
    ));
    let mut indication = binding_request([2; 12], false);
    indication[1] = 0x11;
    assert_eq!(answer(&indication, from(), local()), Ok(Answer::Nothing));
    assert_eq!(
        answer(&sample_ipv4_response(), from(), local()),
        Ok(Answer::Nothing)
    );
}

#[test]
fn malformed_messages_are_refused_by_kind() {
    let good = binding_request([3; 12], false);
    assert_eq!(parse(&good[..19]), Err(Malformed::Short));
    let mut long = good.clone();
    long[3] = 4;
    assert_eq!(parse(&long), Err(Malformed::Length), "length past the end");
    let mut odd = good.clone();
    odd.extend_from_slice(&[0, 0, 0, 0]);
    odd[3] = 2;
    assert_eq!(parse(&odd), Err(Malformed::Length), "not a multiple of 4");
    let mut overrun = good.clone();
    overrun.extend_from_slice(&hex("80220010 41414141"));
    overrun[3] = 8;
    assert_eq!(parse(&overrun), Err(Malformed::Attribute));
    // A FINGERPRINT that matches, with an attribute after it.
    let mut after = good.clone();
    after[3] = 12;
    let crc = crc32(&after) ^ FINGERPRINT_XOR;
    after.extend_from_slice(&hex("80280004"));
    after.extend_from_slice(&crc.to_be_bytes());
    after.extend_from_slice(&hex("80220000"));
    assert_eq!(
        parse(&after),
        Err(Malformed::Attribute),
        "after FINGERPRINT"
    );
    assert_eq!(parse(&[0x41; 20]), Err(Malformed::NotStun));
    assert_eq!(parse(&vec![0; MAX_STUN_SIZE + 4]), Err(Malformed::TooLong));
}

#[test]
fn stun_is_told_from_sip_and_keepalives() {
    assert!(looks_like_stun(&binding_request([4; 12], false)));
    assert!(!looks_like_stun(b"OPTIONS sip:a SIP/2.0\r\n"));
    assert!(!looks_like_stun(b"\r\n\r\n"));
    assert!(!looks_like_stun(b""));
    assert!(is_keepalive(b"\r\n"));
    assert!(is_keepalive(b"\r\n\r\n"));
    assert!(!is_keepalive(b""));
    assert!(!is_keepalive(b"\r\nX"));
}

#[test]
fn stream_frames_need_the_cookie_and_stay_small() {
    let request = binding_request([5; 12], true);
    assert_eq!(frame_len(&request[..6]), Ok(None));
    assert_eq!(frame_len(&request[..21]), Ok(None));
    assert_eq!(frame_len(&request), Ok(Some(request.len())));
    let mut classic = request.clone();
    classic[4] = 0;
    assert_eq!(frame_len(&classic), Err(Malformed::NoCookie));
    let mut huge = request.clone();
    huge[2] = 0x10;
    assert_eq!(frame_len(&huge), Err(Malformed::TooLong));
}
