//! Tests of the cross-registration: the user mapping, the REGISTER
//! lifecycle (challenge, refresh, de-register), back-off, failures and
//! timeouts.

use super::*;
use crate::config::CrossUsers;

fn upstream(users: CrossUsers) -> UpstreamConfig {
    UpstreamConfig {
        registrar: "127.0.0.1:5080".into(),
        domain: "legacy.test".into(),
        username: Some("gateway".into()),
        password: Some("pw".into()),
        expires: 300,
        users,
        overlay_domain: None,
    }
}

fn gw() -> SocketAddr {
    "192.0.2.10:5060".parse().unwrap()
}

const CHALLENGE: &str = "Digest realm=\"legacy.test\", nonce=\"n1\", qop=\"auth\"";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn mapping() {
    let all = CrossRegistrar::new(upstream(CrossUsers::All), gw(), 7, Instant::now());
    assert!(all.wants("anyone"));
    let list = CrossRegistrar::new(
        upstream(CrossUsers::List(vec!["alice".into()])),
        gw(),
        7,
        Instant::now(),
    );
    assert!(list.wants("alice") && !list.wants("bob"));
    let mut up = upstream(CrossUsers::All);
    up.overlay_domain = Some("overlay.test".into());
    let scoped = CrossRegistrar::new(up, gw(), 7, Instant::now());
    assert!(scoped.wants_aor("alice", "OVERLAY.test") && !scoped.wants_aor("alice", "other.test"));
    let t = |s: &str| TargetUri::parse(s).unwrap();
    assert_eq!(
        list.inbound_user(&t("sip:alice@192.0.2.10:5060;transport=udp"))
            .as_deref(),
        Some("alice")
    );
    assert_eq!(list.inbound_user(&t("sip:bob@192.0.2.10")), None);
    assert_eq!(list.inbound_user(&t("sip:alice@192.0.2.11")), None);
    assert_eq!(list.inbound_user(&t("sip:alice@legacy.test")), None);
    let mut list = list;
    list.user_present("bob", Instant::now());
    assert!(list.poll_register().is_none());
    assert!(list.poll_timeout().is_none());
}

#[test]
fn lifecycle_challenge_refresh_deregister() {
    let t0 = Instant::now();
    let mut cr = CrossRegistrar::new(upstream(CrossUsers::All), gw(), 7, Instant::now());
    cr.user_present("alice", t0);
    let r1 = cr.poll_register().expect("first REGISTER");
    assert!(cr.poll_register().is_none());
    assert_eq!(r1.user, "alice");
    assert_eq!(r1.request_uri, "sip:legacy.test");
    assert_eq!(r1.to, "<sip:alice@legacy.test>");
    assert_eq!(r1.contact, "<sip:alice@192.0.2.10:5060>");
    assert_eq!(r1.registrar, "127.0.0.1:5080");
    assert_eq!(r1.expires, 300);
    assert_eq!(r1.cseq, 1);
    assert!(r1.authorization.is_none());
    assert!(cr.registered().is_empty());

    // 401 → resent once with Authorization, same Call-ID, CSeq + 1.
    cr.handle_response(
        r1.token,
        401,
        Some(("WWW-Authenticate", CHALLENGE)),
        None,
        t0,
    );
    let r2 = cr.poll_register().expect("authenticated REGISTER");
    assert_eq!(r2.call_id, r1.call_id);
    assert_eq!(r2.from_tag, r1.from_tag);
    assert_eq!(r2.cseq, 2);
    assert_ne!(r2.token, r1.token);
    let (name, value) = r2.authorization.clone().expect("authorization");
    assert_eq!(name, "Authorization");
    assert!(value.contains("username=\"gateway\""), "{value}");
    assert!(value.contains("uri=\"sip:legacy.test\""), "{value}");
    assert!(value.contains("nc=00000001"), "{value}");
    // The response is right for the cnonce it carries.
    let cnonce = value
        .split("cnonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let expected = digest::authorization(
        CHALLENGE,
        "REGISTER",
        "sip:legacy.test",
        &Credentials {
            username: "gateway".into(),
            password: "pw".into(),
        },
        cnonce,
        1,
    )
    .unwrap();
    assert_eq!(value, expected);

    // A late response to the old token changes nothing.
    cr.handle_response(r1.token, 200, None, Some(120), t0);
    assert!(cr.registered().is_empty());

    // 200 with 120 s → registered, refresh due at +60 s.
    cr.handle_response(r2.token, 200, None, Some(120), t0);
    assert_eq!(cr.registered(), vec!["alice".to_string()]);
    assert_eq!(cr.poll_timeout(), Some(t0 + secs(60)));
    cr.handle_timeout(t0 + secs(59));
    assert!(cr.poll_register().is_none());
    cr.handle_timeout(t0 + secs(60));
    let r3 = cr.poll_register().expect("refresh");
    assert_eq!(r3.call_id, r1.call_id);
    assert_eq!(r3.cseq, 3);
    assert_eq!(r3.expires, 300);
    // The refresh re-uses the last challenge with the next nonce count.
    assert!(r3.authorization.as_ref().unwrap().1.contains("nc=00000002"));
    cr.handle_response(r3.token, 200, None, Some(120), t0 + secs(60));
    assert_eq!(cr.poll_timeout(), Some(t0 + secs(120)));

    // Presence again changes nothing.
    cr.user_present("alice", t0 + secs(70));
    assert!(cr.poll_register().is_none());

    // The overlay binding goes → one REGISTER with Expires 0.
    cr.user_gone("alice", t0 + secs(80));
    let r4 = cr.poll_register().expect("de-register");
    assert_eq!(r4.expires, 0);
    assert_eq!(r4.call_id, r1.call_id);
    assert_eq!(r4.cseq, 4);
    cr.user_gone("alice", t0 + secs(81));
    assert!(cr.poll_register().is_none());
    cr.handle_response(r4.token, 200, None, Some(0), t0 + secs(81));
    assert!(cr.registered().is_empty());
    assert_eq!(cr.poll_timeout(), None);
    cr.handle_timeout(t0 + secs(1000));
    assert!(cr.poll_register().is_none());

    // Back again: a new registration on the same Call-ID.
    cr.user_present("alice", t0 + secs(2000));
    let r5 = cr.poll_register().expect("register again");
    assert_eq!((r5.expires, r5.cseq, r5.call_id), (300, 5, r1.call_id));
}

#[test]
fn backoff_after_repeated_401() {
    let t0 = Instant::now();
    let mut cr = CrossRegistrar::new(upstream(CrossUsers::All), gw(), 7, Instant::now());
    cr.user_present("bob", t0);
    let r1 = cr.poll_register().unwrap();
    cr.handle_response(
        r1.token,
        401,
        Some(("WWW-Authenticate", CHALLENGE)),
        None,
        t0,
    );
    let r2 = cr.poll_register().unwrap();
    assert!(r2.authorization.is_some());
    // Wrong password: challenged again → no third request now.
    cr.handle_response(
        r2.token,
        401,
        Some(("WWW-Authenticate", CHALLENGE)),
        None,
        t0,
    );
    assert!(cr.poll_register().is_none());
    assert!(cr.registered().is_empty());
    assert_eq!(cr.poll_timeout(), Some(t0 + RETRY_BASE));
    cr.handle_timeout(t0 + secs(29));
    assert!(cr.poll_register().is_none());
    cr.handle_timeout(t0 + RETRY_BASE);
    let r3 = cr.poll_register().expect("retry after back-off");
    assert_eq!(r3.cseq, 3);
    // A new attempt may answer one challenge again.
    cr.handle_response(
        r3.token,
        401,
        Some(("WWW-Authenticate", CHALLENGE)),
        None,
        t0 + RETRY_BASE,
    );
    let r4 = cr.poll_register().expect("authenticated retry");
    cr.handle_response(
        r4.token,
        401,
        Some(("WWW-Authenticate", CHALLENGE)),
        None,
        t0 + RETRY_BASE,
    );
    // Second failure: the back-off doubles.
    assert_eq!(cr.poll_timeout(), Some(t0 + RETRY_BASE + RETRY_BASE * 2));
    assert!(cr.poll_register().is_none());
}

#[test]
fn proxy_challenge_and_failures() {
    let t0 = Instant::now();
    let mut cr = CrossRegistrar::new(upstream(CrossUsers::All), gw(), 7, Instant::now());
    cr.user_present("carol", t0);
    let r1 = cr.poll_register().unwrap();
    cr.handle_response(
        r1.token,
        407,
        Some(("Proxy-Authenticate", CHALLENGE)),
        None,
        t0,
    );
    let r2 = cr.poll_register().unwrap();
    assert_eq!(r2.authorization.unwrap().0, "Proxy-Authorization");
    // 503 → back-off.
    cr.handle_response(r2.token, 503, None, None, t0);
    assert!(cr.poll_register().is_none());
    assert_eq!(cr.poll_timeout(), Some(t0 + RETRY_BASE));

    // No credentials: a 401 is a failure straight away.
    let mut up = upstream(CrossUsers::All);
    up.username = None;
    up.password = None;
    let mut cr = CrossRegistrar::new(up, gw(), 7, Instant::now());
    cr.user_present("dave", t0);
    let r = cr.poll_register().unwrap();
    cr.handle_response(
        r.token,
        401,
        Some(("WWW-Authenticate", CHALLENGE)),
        None,
        t0,
    );
    assert!(cr.poll_register().is_none());
    assert_eq!(cr.poll_timeout(), Some(t0 + RETRY_BASE));
}

#[test]
fn unanswered_request_times_out() {
    let t0 = Instant::now();
    let mut cr = CrossRegistrar::new(upstream(CrossUsers::All), gw(), 7, Instant::now());
    cr.user_present("erin", t0);
    let r1 = cr.poll_register().unwrap();
    assert_eq!(cr.poll_timeout(), Some(t0 + RESPONSE_GUARD));
    cr.handle_timeout(t0 + RESPONSE_GUARD);
    assert!(cr.poll_register().is_none());
    assert_eq!(cr.poll_timeout(), Some(t0 + RESPONSE_GUARD + RETRY_BASE));
    // The late response is ignored.
    cr.handle_response(r1.token, 200, None, None, t0 + RESPONSE_GUARD);
    assert!(cr.registered().is_empty());
}

#[test]
fn gone_while_registering_and_interval_too_brief() {
    let t0 = Instant::now();
    let mut cr = CrossRegistrar::new(upstream(CrossUsers::All), gw(), 7, Instant::now());
    cr.user_present("fred", t0);
    let r1 = cr.poll_register().unwrap();
    // 423 with Min-Expires 600 → resent at once asking for 600.
    cr.handle_response(r1.token, 423, None, Some(600), t0);
    let r2 = cr.poll_register().unwrap();
    assert_eq!((r2.expires, r2.cseq), (600, 2));
    cr.user_gone("fred", t0);
    assert!(cr.poll_register().is_none());
    // The registration succeeds after the user left: de-register it.
    cr.handle_response(r2.token, 200, None, None, t0);
    let r3 = cr.poll_register().expect("de-register");
    assert_eq!(r3.expires, 0);
    // A failed de-registration is not retried.
    cr.handle_response(r3.token, 500, None, None, t0);
    assert!(cr.poll_register().is_none());
    assert!(cr.registered().is_empty());
    assert_eq!(cr.poll_timeout(), None);

    // Present then gone before anything was sent: nothing is sent.
    cr.user_present("gina", t0);
    cr.user_gone("gina", t0);
    assert!(cr.poll_register().is_none());
}

#[test]
fn registration_expires_when_refreshes_fail() {
    let t0 = Instant::now();
    let mut cr = CrossRegistrar::new(upstream(CrossUsers::All), gw(), 7, Instant::now());
    cr.user_present("hal", t0);
    let r1 = cr.poll_register().unwrap();
    cr.handle_response(r1.token, 200, None, Some(100), t0);
    cr.handle_timeout(t0 + secs(50));
    let r2 = cr.poll_register().unwrap();
    cr.handle_response(r2.token, 500, None, None, t0 + secs(50));
    assert_eq!(cr.registered(), vec!["hal".to_string()]);
    cr.handle_timeout(t0 + secs(80));
    let r3 = cr.poll_register().expect("retry");
    cr.handle_response(r3.token, 500, None, None, t0 + secs(80));
    cr.handle_timeout(t0 + secs(100));
    assert!(cr.registered().is_empty());
}
