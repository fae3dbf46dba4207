//! The notifier driven through a whole core on a virtual clock (a ring of
//! one, no sockets): a subscription that runs out gets its final NOTIFY, a
//! NOTIFY refused with 481 ends its subscription, and in digest mode only
//! authenticated users subscribe.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::{AuthConfig, AuthMode};
use crate::core::{Core, CoreConfig, Input, Location, Output};
use crate::overlay::Overlay;
use crate::ring::RingConfig;
use crate::sip::message::{HeaderAccess, Message, Request};
use crate::sip::transaction::{Peer, TransportKind};

const WATCHER: u16 = 5070;

fn udp(port: u16) -> Peer {
    Peer {
        transport: TransportKind::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn core(mode: AuthMode, now: Instant) -> Core {
    let local = udp(5060).addr;
    let mut config = CoreConfig::new(local, vec!["example.test".into()]);
    config.auth = AuthConfig {
        mode,
        ..AuthConfig::default()
    };
    let overlay = Overlay::new(local, RingConfig::default(), &[], now);
    Core::new(config, Location::Overlay(Box::new(overlay)), now)
}

/// Feeds a datagram from the watcher, then gives what the core sends.
fn feed(core: &mut Core, text: &str, now: Instant) -> Vec<Message> {
    let bytes = Bytes::from(text.replace('\n', "\r\n"));
    core.handle_input(
        Input::Datagram {
            bytes,
            from: udp(WATCHER),
        },
        now,
    );
    sent(core)
}

fn sent(core: &mut Core) -> Vec<Message> {
    let mut out = Vec::new();
    loop {
        match core.poll_output() {
            Output::Transmit { bytes, .. } => {
                out.push(Message::parse(bytes).expect("the core sends what parses"))
            }
            Output::Timeout(_) => return out,
            _ => {}
        }
    }
}

fn subscribe(from: &str, expires: u32) -> String {
    format!(
        "SUBSCRIBE sip:bob@example.test SIP/2.0\n\
         Via: SIP/2.0/UDP 127.0.0.1:{WATCHER};branch=z9hG4bK{}\n\
         Max-Forwards: 70\n\
         From: <sip:{from}>;tag=w1\n\
         To: <sip:bob@example.test>\n\
         Call-ID: sub1@watcher\n\
         CSeq: 1 SUBSCRIBE\n\
         Contact: <sip:alice@127.0.0.1:{WATCHER}>\n\
         Event: presence\n\
         Expires: {expires}\n\
         Content-Length: 0\n\n",
        from.len() * 1000 + expires as usize
    )
}

fn status_of(messages: &[Message]) -> Vec<u16> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Response(r) => Some(r.status),
            Message::Request(_) => None,
        })
        .collect()
}

fn notifies(messages: Vec<Message>) -> Vec<Request> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            Message::Request(r) if r.method == ezk_sip_types::Method::NOTIFY => Some(r),
            _ => None,
        })
        .collect()
}

fn answer(core: &mut Core, notify: &Request, status: u16, now: Instant) -> Vec<Message> {
    let response = notify.response(status).to_bytes();
    core.handle_input(
        Input::Datagram {
            bytes: response,
            from: udp(WATCHER),
        },
        now,
    );
    sent(core)
}

fn subscription_state(notify: &Request) -> String {
    notify
        .raw(&ezk_sip_types::Name::SUBSCRIPTION_STATE)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

#[test]
fn a_subscription_that_runs_out_gets_its_final_notify() {
    let t0 = Instant::now();
    let mut core = core(AuthMode::Open, t0);
    let out = feed(&mut core, &subscribe("alice@example.test", 60), t0);
    assert_eq!(status_of(&out), vec![200]);
    let first = notifies(out);
    assert_eq!(first.len(), 1, "one NOTIFY at once");
    assert!(subscription_state(&first[0]).starts_with("active;expires=60"));
    assert!(String::from_utf8_lossy(&first[0].body).contains("<basic>closed</basic>"));
    answer(&mut core, &first[0], 200, t0);
    assert_eq!(core.metrics.presence_subscriptions.get(), 1);

    // Nothing changes: the polls send nothing; at 60 s the final NOTIFY.
    let mut now = t0;
    let mut last = Vec::new();
    while now < t0 + Duration::from_secs(70) && last.is_empty() {
        now += Duration::from_secs(1);
        core.handle_input(Input::Timeout, now);
        last = notifies(sent(&mut core));
    }
    assert_eq!(last.len(), 1, "one final NOTIFY");
    assert!(now >= t0 + Duration::from_secs(60), "not before it ran out");
    assert_eq!(subscription_state(&last[0]), "terminated;reason=timeout");
    assert!(last[0].cseq().expect("cseq").cseq > first[0].cseq().expect("cseq").cseq);
    answer(&mut core, &last[0], 200, now);
    assert_eq!(core.metrics.presence_subscriptions.get(), 0);
    assert_eq!(core.metrics.presence_notifies.get(), 2);
}

#[test]
fn a_notify_refused_with_481_ends_the_subscription() {
    let t0 = Instant::now();
    let mut core = core(AuthMode::Open, t0);
    let first = notifies(feed(&mut core, &subscribe("alice@example.test", 600), t0));
    assert_eq!(core.metrics.presence_subscriptions.get(), 1);
    answer(&mut core, &first[0], 481, t0);
    assert_eq!(core.metrics.presence_subscriptions.get(), 0);
}

#[test]
fn in_digest_mode_only_authenticated_users_subscribe() {
    let t0 = Instant::now();
    let mut core = core(AuthMode::Digest, t0);
    // One of our users without credentials: challenged.
    let out = feed(&mut core, &subscribe("alice@example.test", 600), t0);
    assert_eq!(status_of(&out), vec![407]);
    // A stranger from another domain: refused.
    let out = feed(&mut core, &subscribe("mallory@elsewhere.test", 600), t0);
    assert_eq!(status_of(&out), vec![403]);
    assert_eq!(core.metrics.presence_subscriptions.get(), 0);
}
