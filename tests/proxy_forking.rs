//! The node as a forking proxy (RFC 3261 §16) against real SIPp user agents
//! over UDP on 127.0.0.1: contacts of one q-value tried in parallel, groups
//! of lower q only after the higher ones failed, the best final response
//! when every branch fails, CANCEL from the caller reaching every branch,
//! and Max-Forwards 0 refused with 483.
//! SIPp is required: these tests fail (they do not skip) without it.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{DOMAIN, Node, RawResponse, Sipp, SippBuilder, Transport, read_lossy, tail, token};

const TRANSPORT: Transport = Transport::Udp;

/// How long uas_busy.xml waits between its 100 and its 486.
const BUSY_DELAY: f64 = 0.3;

/// REGISTERs `contact` (with `q` as a Contact parameter when given) for
/// `user@example.test`, and asserts the node's 200.
fn register(node: &Node, user: &str, contact: &str, q: Option<&str>) {
    let builder = match q {
        None => SippBuilder::new(&format!("register-{user}"), "register.xml", TRANSPORT),
        Some(q) => {
            SippBuilder::new(&format!("register-{user}-q"), "register_q.xml", TRANSPORT).key("q", q)
        }
    };
    let run = builder
        .to(node.addr)
        .key("user", user)
        .key("domain", DOMAIN)
        .key("contact", contact)
        .key("expires", "3600")
        .spawn();
    finish_ok(run, node);
}

/// A UAS running `scenario` for one call, listening before it returns.
fn uas(name: &str, scenario: &str) -> Sipp {
    let mut uas = SippBuilder::new(name, scenario, TRANSPORT).calls(1).spawn();
    uas.wait_listening();
    uas
}

/// A UAC towards the node calling `sip:USER@example.test` with `scenario`.
fn uac(node: &Node, name: &str, scenario: &str, user: &str) -> Sipp {
    SippBuilder::new(name, scenario, TRANSPORT)
        .to(node.addr)
        .service(user)
        .key("domain", DOMAIN)
        .spawn()
}

/// One message in a SIPp `-trace_msg` log.
#[derive(Debug)]
struct Logged {
    /// Seconds since the epoch (SIPp's wall clock: comparable across processes).
    at: f64,
    received: bool,
    text: String,
}

impl Logged {
    fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    fn is_request(&self, method: &str) -> bool {
        self.first_line().starts_with(&format!("{method} "))
    }

    fn status(&self) -> Option<u16> {
        self.first_line()
            .strip_prefix("SIP/2.0 ")?
            .get(..3)?
            .parse()
            .ok()
    }

    fn header(&self, name: &str) -> Option<String> {
        RawResponse {
            status: 0,
            text: self.text.clone(),
        }
        .header(name)
    }

    /// The `branch` of the top Via.
    fn top_branch(&self) -> Option<String> {
        let via = common::via_values(&self.text).into_iter().next()?;
        via.split(';').find_map(|p| {
            p.trim()
                .strip_prefix("branch=")
                .map(|b| b.trim().to_string())
        })
    }
}

/// Waits for SIPp to exit and asserts exit 0 with one successful call and
/// no failed one; returns its message log with timestamps. On failure the
/// SIPp's logs and the node's log tail are in the panic message.
fn finish_ok(sipp: Sipp, node: &Node) -> Vec<Logged> {
    let name = sipp.name.clone();
    let dir = sipp.dir.clone();
    let result = sipp.finish();
    if !(result.code == Some(0) && result.successful == 1 && result.failed == 0) {
        let mut diagnostics = String::new();
        for file in ["stderr.log", "errors.log", "messages.log"] {
            let text = read_lossy(&dir.join(file));
            if !text.trim().is_empty() {
                diagnostics.push_str(&format!("--- {file}:\n{}\n", tail(&text, 80)));
            }
        }
        panic!(
            "{name}: expected exit 0 and 1 successful call, got {result:?}\n{diagnostics}\
             --- node log:\n{}",
            tail(&node.log(), 60)
        );
    }
    let log = parse_message_log(&read_lossy(&dir.join("messages.log")));
    let _ = std::fs::remove_dir_all(&dir);
    log
}

/// Splits a `-trace_msg` file into messages; each entry starts with
/// `----------------------------------------------- YYYY-MM-DD HH:MM:SS.ffffff`.
fn parse_message_log(log: &str) -> Vec<Logged> {
    let mut out = Vec::new();
    for entry in log
        .split("-----------------------------------------------")
        .skip(1)
    {
        let mut lines = entry.lines();
        let at = lines.next().and_then(parse_timestamp);
        let Some(kind) = lines.next() else { continue };
        let received = kind.contains("message received");
        if !received && !kind.contains("message sent") {
            continue;
        }
        let at = at.unwrap_or_else(|| panic!("no timestamp in SIPp log entry {entry:?}"));
        let text: Vec<&str> = lines.skip_while(|l| l.trim().is_empty()).collect();
        out.push(Logged {
            at,
            received,
            text: text.join("\r\n"),
        });
    }
    out
}

/// ` 2026-11-24 23:14:24.454200` as seconds since the epoch (UTC or local
/// time alike: only differences matter).
fn parse_timestamp(line: &str) -> Option<f64> {
    let mut parts = line.split_whitespace();
    let mut date = parts.next()?.split('-').map(|p| p.parse::<i64>());
    let (y, m, d) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let mut time = parts.next()?.split(':');
    let h: f64 = time.next()?.parse().ok()?;
    let min: f64 = time.next()?.parse().ok()?;
    let s: f64 = time.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days as f64 * 86400.0 + h * 3600.0 + min * 60.0 + s)
}

/// The requests of `method` a SIPp received, one per transaction: a
/// retransmission (same top Via branch) is left out.
fn received<'a>(log: &'a [Logged], method: &str) -> Vec<&'a Logged> {
    let mut seen = Vec::new();
    log.iter()
        .filter(|m| m.received && m.is_request(method))
        .filter(|m| {
            let branch = m.top_branch();
            let new = !seen.contains(&branch);
            seen.push(branch);
            new
        })
        .collect()
}

/// The final responses (≥ 200) a SIPp received, as status codes in order.
fn finals(log: &[Logged]) -> Vec<u16> {
    log.iter()
        .filter(|m| m.received)
        .filter_map(|m| m.status())
        .filter(|s| *s >= 200)
        .collect()
}

fn summary(log: &[Logged]) -> String {
    log.iter()
        .map(|m| {
            format!(
                "{:.6} {} {}",
                m.at,
                if m.received { "<-" } else { "->" },
                m.first_line()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts a busy UAS's log: one INVITE, no CANCEL, its 486 ACKed on the
/// INVITE's branch (the ACK of a non-2xx belongs to the INVITE's client
/// transaction, RFC 3261 §17.1.1.3).
fn assert_busy_branch(name: &str, log: &[Logged]) {
    let invites = received(log, "INVITE");
    let acks = received(log, "ACK");
    assert_eq!(
        invites.len(),
        1,
        "{name}: one INVITE expected:\n{}",
        summary(log)
    );
    assert!(
        received(log, "CANCEL").is_empty(),
        "{name}: a branch that answered 486 by itself got a CANCEL:\n{}",
        summary(log)
    );
    assert_eq!(acks.len(), 1, "{name}: one ACK expected:\n{}", summary(log));
    assert_eq!(
        acks[0].top_branch(),
        invites[0].top_branch(),
        "{name}: the ACK for the 486 must carry the INVITE's branch"
    );
}

/// Asserts bob's call got 200s only (the INVITE's and the BYE's, maybe
/// retransmitted): no 486 of a failed branch was relayed.
fn assert_only_200s(bob: &[Logged]) {
    let finals = finals(bob);
    assert!(
        finals.len() >= 2 && finals.iter().all(|s| *s == 200),
        "bob: expected the INVITE's 200 and the BYE's 200 only:\n{}",
        summary(bob)
    );
}

/// 1. Two contacts with the same q are tried in parallel: the busy one's
///    486 does not end the call, the other one's 180 and 200 reach bob.
#[test]
fn same_q_contacts_are_forked_in_parallel() {
    let mut node = Node::start(&[]);
    let busy = uas("busy", "uas_busy.xml");
    let answer = uas("answer", "uas_ring_answer.xml");
    register(&node, "alice", &TRANSPORT.contact("alice", busy.port), None);
    register(
        &node,
        "alice",
        &TRANSPORT.contact("alice", answer.port),
        None,
    );

    let bob = finish_ok(uac(&node, "bob", "uac_call.xml", "alice"), &node);
    let busy = finish_ok(busy, &node);
    let answer = finish_ok(answer, &node);

    assert_busy_branch("busy", &busy);
    let answer_invites = received(&answer, "INVITE");
    assert_eq!(answer_invites.len(), 1, "answer:\n{}", summary(&answer));
    // Parallel: the answering contact got its INVITE while the busy one
    // was still waiting to send its 486 (BUSY_DELAY after its INVITE); a
    // sequential attempt would reach it only after the 486.
    let gap = answer_invites[0].at - received(&busy, "INVITE")[0].at;
    assert!(
        gap.abs() < BUSY_DELAY / 2.0,
        "the two INVITEs should arrive together, {gap:.3} s apart:\nbusy:\n{}\nanswer:\n{}",
        summary(&busy),
        summary(&answer)
    );
    // bob saw the answer only: the 486 of a failed branch is not relayed
    // while another branch can still answer.
    assert_only_200s(&bob);
    node.assert_alive();
}

/// 2. A contact with q=0.5 is tried only after the q=1.0 one failed, even
///    though it was registered first.
#[test]
fn lower_q_contact_is_tried_after_the_higher_one_fails() {
    let mut node = Node::start(&[]);
    let low = uas("low-q-answers", "uas_call.xml");
    let high = uas("high-q-busy", "uas_busy.xml");
    register(
        &node,
        "alice",
        &TRANSPORT.contact("alice", low.port),
        Some("0.5"),
    );
    register(
        &node,
        "alice",
        &TRANSPORT.contact("alice", high.port),
        Some("1.0"),
    );

    let bob = finish_ok(uac(&node, "bob", "uac_call.xml", "alice"), &node);
    let high = finish_ok(high, &node);
    let low = finish_ok(low, &node);

    assert_busy_branch("high-q-busy", &high);
    let low_invites = received(&low, "INVITE");
    assert_eq!(low_invites.len(), 1, "low-q:\n{}", summary(&low));
    let high_486 = high
        .iter()
        .find(|m| !m.received && m.status() == Some(486))
        .expect("the busy UAS logged its 486");
    // The q=0.5 INVITE follows the q=1.0 branch's 486 (small slack for
    // SIPp's clock being read once per event loop).
    let high_invite = received(&high, "INVITE")[0].at;
    assert!(
        low_invites[0].at >= high_invite + BUSY_DELAY * 0.8
            && low_invites[0].at >= high_486.at - 0.01,
        "the q=0.5 INVITE must come after the q=1.0 branch's 486:\nq=1.0:\n{}\nq=0.5:\n{}",
        summary(&high),
        summary(&low)
    );
    assert_only_200s(&bob);
    node.assert_alive();
}

/// 3. When every branch fails with 486, bob gets 486 (once), and nothing else final.
#[test]
fn all_branches_busy_gives_486() {
    let mut node = Node::start(&[]);
    let first = uas("busy-1", "uas_busy.xml");
    let second = uas("busy-2", "uas_busy.xml");
    register(
        &node,
        "alice",
        &TRANSPORT.contact("alice", first.port),
        Some("1.0"),
    );
    register(
        &node,
        "alice",
        &TRANSPORT.contact("alice", second.port),
        Some("0.5"),
    );

    let bob = finish_ok(uac(&node, "bob", "uac_invite_486.xml", "alice"), &node);
    let first = finish_ok(first, &node);
    let second = finish_ok(second, &node);

    assert_busy_branch("busy-1", &first);
    assert_busy_branch("busy-2", &second);
    let distinct: std::collections::BTreeSet<u16> = finals(&bob).into_iter().collect();
    assert_eq!(
        distinct.into_iter().collect::<Vec<_>>(),
        vec![486],
        "bob should get 486 (retransmissions aside) and no other final response:\n{}",
        summary(&bob)
    );
    let response = bob
        .iter()
        .find(|m| m.received && m.status() == Some(486))
        .expect("bob got 486");
    assert_eq!(
        common::via_values(&response.text).len(),
        1,
        "the relayed 486 carries bob's Via only:\n{}",
        response.text
    );
    node.assert_alive();
}

/// Asserts a cancelled UAS's log: one INVITE, one CANCEL on the INVITE's
/// branch and Request-URI (RFC 3261 §9.1), one ACK for its 487.
fn assert_cancelled_branch(name: &str, log: &[Logged]) {
    let invites = received(log, "INVITE");
    let cancels = received(log, "CANCEL");
    assert_eq!(invites.len(), 1, "{name}:\n{}", summary(log));
    assert_eq!(cancels.len(), 1, "{name}:\n{}", summary(log));
    assert_eq!(received(log, "ACK").len(), 1, "{name}:\n{}", summary(log));
    assert_eq!(
        cancels[0].top_branch(),
        invites[0].top_branch(),
        "{name}: the CANCEL must carry the branch of the INVITE it cancels"
    );
    let uri = |m: &Logged| m.first_line().split(' ').nth(1).map(str::to_string);
    assert_eq!(
        uri(cancels[0]),
        uri(invites[0]),
        "{name}: CANCEL and INVITE Request-URIs differ"
    );
}

/// Asserts bob's side of a cancelled call: 200 for the CANCEL and a 487
/// with a To tag for the INVITE.
fn assert_caller_cancelled(log: &[Logged]) {
    let cancel_ok = log.iter().any(|m| {
        m.received
            && m.status() == Some(200)
            && m.header("CSeq").is_some_and(|c| c.ends_with("CANCEL"))
    });
    assert!(cancel_ok, "bob: no 200 for the CANCEL:\n{}", summary(log));
    let terminated = log
        .iter()
        .find(|m| m.received && m.status() == Some(487))
        .unwrap_or_else(|| panic!("bob: no 487:\n{}", summary(log)));
    assert!(
        terminated
            .header("CSeq")
            .is_some_and(|c| c.ends_with("INVITE")),
        "{}",
        terminated.text
    );
    let to = terminated.header("To").unwrap_or_default();
    assert!(
        to.contains(";tag="),
        "the 487 is a final response and needs a To tag (RFC 3261 §8.2.6.2): To: {to}"
    );
}

/// 4. bob cancels a ringing call: the node answers the CANCEL 200 and the
///    INVITE 487, and forwards a CANCEL to the ringing contact, which
///    answers 200/487 and gets the node's ACK.
#[test]
fn cancel_from_the_caller_reaches_the_ringing_contact() {
    let mut node = Node::start(&[]);
    let alice = uas("ringing", "uas_ring_cancelled.xml");
    register(
        &node,
        "alice",
        &TRANSPORT.contact("alice", alice.port),
        None,
    );

    let bob = finish_ok(uac(&node, "bob", "uac_ring_cancel.xml", "alice"), &node);
    let alice = finish_ok(alice, &node);

    assert_caller_cancelled(&bob);
    assert_cancelled_branch("ringing", &alice);
    node.assert_alive();
}

/// 4b. With two ringing contacts, bob's CANCEL reaches both branches.
#[test]
fn cancel_from_the_caller_reaches_every_branch() {
    let mut node = Node::start(&[]);
    let first = uas("ringing-1", "uas_ring_cancelled.xml");
    let second = uas("ringing-2", "uas_ring_cancelled.xml");
    register(
        &node,
        "alice",
        &TRANSPORT.contact("alice", first.port),
        None,
    );
    register(
        &node,
        "alice",
        &TRANSPORT.contact("alice", second.port),
        None,
    );

    let bob = finish_ok(uac(&node, "bob", "uac_ring_cancel.xml", "alice"), &node);
    let first = finish_ok(first, &node);
    let second = finish_ok(second, &node);

    assert_caller_cancelled(&bob);
    assert_cancelled_branch("ringing-1", &first);
    assert_cancelled_branch("ringing-2", &second);
    node.assert_alive();
}

/// An INVITE from `local` to alice with `max_forwards`.
fn raw_invite(local: SocketAddr, call_id: &str, max_forwards: u32) -> String {
    let branch = format!("z9hG4bK{}", token());
    format!(
        "INVITE sip:alice@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch}\r\n\
         Max-Forwards: {max_forwards}\r\n\
         From: <sip:bob@{DOMAIN}>;tag={branch}\r\n\
         To: <sip:alice@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:bob@{local}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The next datagram on `socket` whose Call-ID is `call_id` and that `pick`
/// accepts, within 5 s; None after that.
fn recv_matching(socket: &UdpSocket, call_id: &str, pick: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        socket.set_read_timeout(Some(left)).expect("read timeout");
        let n = match socket.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(e) => panic!("UDP receive failed: {e}"),
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let same_call = RawResponse {
            status: 0,
            text: text.clone(),
        }
        .header("Call-ID")
        .is_some_and(|c| c == call_id);
        if same_call && pick(&text) {
            return Some(text);
        }
    }
}

/// 5. An INVITE to a registered user with Max-Forwards 0 is refused with
///    483 and not forwarded; one with Max-Forwards 1 is forwarded with 0.
#[test]
fn max_forwards_zero_gets_483() {
    let mut node = Node::start(&[]);
    let contact = UdpSocket::bind("127.0.0.1:0").expect("bind contact");
    let contact_addr = contact.local_addr().expect("contact addr");
    register(
        &node,
        "alice",
        &TRANSPORT.contact("alice", contact_addr.port()),
        None,
    );
    let caller = UdpSocket::bind("127.0.0.1:0").expect("bind caller");
    let local = caller.local_addr().expect("caller addr");

    let refused = format!("{}@max-forwards", token());
    caller
        .send_to(raw_invite(local, &refused, 0).as_bytes(), node.addr)
        .expect("send");
    let reply = recv_matching(&caller, &refused, |t| {
        RawResponse::parse(t.as_bytes()).is_some_and(|r| r.status >= 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "no final response to Max-Forwards: 0 within 5 s; node log:\n{}",
            tail(&node.log(), 40)
        )
    });
    let reply = RawResponse::parse(reply.as_bytes()).expect("a response");
    assert_eq!(reply.status, 483, "{}", reply.text);
    assert!(
        reply.header("To").is_some_and(|t| t.contains(";tag=")),
        "483 without a To tag:\n{}",
        reply.text
    );

    // The first INVITE the contact ever sees is the Max-Forwards: 1 one,
    // arriving with 0: the refused one was not forwarded.
    let forwarded = format!("{}@max-forwards", token());
    caller
        .send_to(raw_invite(local, &forwarded, 1).as_bytes(), node.addr)
        .expect("send");
    let mut buf = vec![0u8; 65_536];
    contact
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let (n, _) = contact.recv_from(&mut buf).unwrap_or_else(|e| {
        panic!(
            "the contact got nothing within 5 s ({e}); node log:\n{}",
            tail(&node.log(), 40)
        )
    });
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    let message = RawResponse {
        status: 0,
        text: first.clone(),
    };
    assert!(first.starts_with("INVITE "), "{first}");
    assert_eq!(
        message.header("Call-ID").as_deref(),
        Some(forwarded.as_str()),
        "the contact's first INVITE should be the Max-Forwards: 1 one:\n{first}"
    );
    assert_eq!(
        message.header("Max-Forwards").as_deref(),
        Some("0"),
        "{first}"
    );
    node.assert_alive();
}
