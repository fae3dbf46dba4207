//! Tests of the resolver: RFC 2782 SRV ordering, NAPTR regexps and ENUM
//! names.

use super::enum_lookup::is_e2u_sip;
use super::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn srv(priority: u16, weight: u16, port: u16) -> SRV {
    SRV::new(priority, weight, port, Name::from_ascii("h.test.").unwrap())
}

#[test]
fn srv_priority_then_weight() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut first_a = 0;
    for _ in 0..2000 {
        let o = order_srv(
            vec![srv(20, 0, 9), srv(10, 10, 2), srv(10, 90, 1), srv(5, 0, 0)],
            &mut rng,
        );
        let ports: Vec<u16> = o.iter().map(|s| s.port).collect();
        assert_eq!(ports[0], 0);
        assert_eq!(ports[3], 9);
        if ports[1] == 1 {
            first_a += 1;
        }
    }
    // weight 90 vs 10 → ~90 % first (91/101 with the inclusive RFC draw)
    assert!(
        (1700..1900).contains(&first_a),
        "weight-90 first {first_a} of 2000"
    );
}

#[test]
fn srv_zero_weights_all_present() {
    let mut rng = StdRng::seed_from_u64(1);
    let o = order_srv(vec![srv(0, 0, 1), srv(0, 0, 2), srv(0, 5, 3)], &mut rng);
    let mut ports: Vec<u16> = o.iter().map(|s| s.port).collect();
    ports.sort();
    assert_eq!(ports, vec![1, 2, 3]);
}

#[test]
fn naptr_regexp() {
    assert_eq!(
        apply_naptr_regexp("!^.*$!sip:info@example.com!", "+12125551234").as_deref(),
        Some("sip:info@example.com")
    );
    assert_eq!(
        apply_naptr_regexp(r"!^\+1(.*)$!sip:\1@gw.test!", "+12125551234").as_deref(),
        Some("sip:2125551234@gw.test")
    );
    assert_eq!(
        apply_naptr_regexp(r"/^\+44(.*)$/sip:\1@uk.test/i", "+12125551234"),
        None
    );
    assert_eq!(
        apply_naptr_regexp(r"#^\+(1)(2)(.*)$#sip:\3\#\1@x.test#", "+12125551234").as_deref(),
        Some("sip:125551234#1@x.test")
    );
    assert_eq!(apply_naptr_regexp("!broken", "+1"), None);
}

#[test]
fn enum_names() {
    assert_eq!(
        enum_domain("+12125551234", "e164.arpa").unwrap().to_ascii(),
        "4.3.2.1.5.5.5.2.1.2.1.e164.arpa."
    );
    assert_eq!(
        enum_domain("+44 20 7946-0000", "").unwrap().to_ascii(),
        "0.0.0.0.6.4.9.7.0.2.4.4.e164.arpa."
    );
    assert!(enum_domain("12125551234", "e164.arpa").is_err());
    assert!(enum_domain("+12a", "e164.arpa").is_err());
    assert!(is_e2u_sip(b"E2U+sip"));
    assert!(is_e2u_sip(b"sip+E2U"));
    assert!(!is_e2u_sip(b"E2U+tel"));
}
