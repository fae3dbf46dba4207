//! The media relay through real NAT (issue 13, item 3): two phones behind
//! two masquerading routers, with the same private address, register with
//! and call through a node on the "public" side (`tests/common/nat.rs`).
//! The SDP each phone sees names the node's relay, not the other's private
//! address, and RTP and RTCP flow both ways through the relay until the
//! BYE; the ACK and the callee's BYE reach the phones through their NATs
//! (Contact aliases). The phones are raw UDP sockets opened inside the home namespaces;
//! their SIP and RTP are written here, independent of the node's code.
//! Needs root, iproute2 and iptables.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::nat::{HOME, Nat};
use common::{DOMAIN, Node, tail, token, wait_until};

/// One phone: its SIP socket and its RTP and RTCP sockets, in its home.
struct Phone {
    user: &'static str,
    sip: UdpSocket,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    node: SocketAddr,
}

const SIP_PORT: u16 = 5060;
const RTP_PORT: u16 = 6000;

impl Phone {
    fn new(user: &'static str, home: &common::netns::Netns, node: SocketAddr) -> Phone {
        let open = |port| {
            let socket = home.udp_socket(SocketAddr::new(HOME, port));
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            socket
        };
        Phone {
            user,
            sip: open(SIP_PORT),
            rtp: open(RTP_PORT),
            rtcp: open(RTP_PORT + 1),
            node,
        }
    }

    fn via(&self) -> String {
        format!(
            "Via: SIP/2.0/UDP {HOME}:{SIP_PORT};rport;branch=z9hG4bK{}",
            token()
        )
    }

    fn contact(&self) -> String {
        format!("<sip:{}@{HOME}:{SIP_PORT}>", self.user)
    }

    /// The phone's offer or answer: its private address, as phones behind
    /// NAT write it.
    fn sdp(&self) -> String {
        format!(
            "v=0\r\no={} 1 1 IN IP4 {HOME}\r\ns=-\r\nc=IN IP4 {HOME}\r\nt=0 0\r\n\
             m=audio {RTP_PORT} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            self.user
        )
    }

    fn send(&self, text: &str) {
        self.sip
            .send_to(text.as_bytes(), self.node)
            .expect("send SIP");
    }

    /// The next SIP message that satisfies `want`, within 5 s.
    fn read(&self, what: &str, want: impl Fn(&str) -> bool, node: &Node) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 65535];
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sip.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if want(&text) {
                return text;
            }
            seen.push(text.lines().next().unwrap_or_default().to_string());
        }
        panic!(
            "{}: no {what} within 5 s (saw {seen:?}); node log:\n{}",
            self.user,
            tail(&node.log(), 60)
        );
    }

    fn register(&self, node: &Node) {
        let call_id = token();
        let request = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\n\
             From: <sip:{user}@{DOMAIN}>;tag={}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: {}\r\nExpires: 300\r\n\
             Content-Length: 0\r\n\r\n",
            self.via(),
            token(),
            self.contact(),
            user = self.user,
        );
        self.send(&request);
        let ok = self.read("200 to REGISTER", |t| t.starts_with("SIP/2.0 200"), node);
        assert!(ok.contains(&call_id), "{ok}");
    }
}

/// Values of header `name` in a message, in order, one per line as written.
fn header_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .skip(1)
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .collect()
}

fn header<'a>(text: &'a str, name: &str) -> &'a str {
    let line = header_lines(text, name)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    line.split_once(':')
        .map(|(_, v)| v.trim())
        .unwrap_or_default()
}

/// The URI of a message's Contact.
fn contact_uri(text: &str) -> String {
    let value = header(text, "Contact");
    value
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(uri, _)| uri.to_string())
        .unwrap_or_else(|| panic!("no Contact URI in:\n{text}"))
}

/// The RTP address an SDP body names (its c= and first m=audio).
fn sdp_address(text: &str) -> SocketAddr {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let ip: IpAddr = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no c= in:\n{text}"));
    let port: u16 = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in:\n{text}"));
    SocketAddr::new(ip, port)
}

/// An RTP packet (version 2, PCMU) or an RTCP sender report whose payload
/// names the sender and its number.
fn packet(rtcp: bool, who: &str, n: u16) -> Vec<u8> {
    let mut p = if rtcp {
        vec![0x80, 200, 0, 6]
    } else {
        let mut h = vec![0x80, 0];
        h.extend_from_slice(&n.to_be_bytes());
        h
    };
    p.extend_from_slice(&(u32::from(n) * 160).to_be_bytes());
    p.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    p.extend_from_slice(format!("{who} {n}").as_bytes());
    p
}

/// Datagrams waiting on `socket` whose payload names `from`, and whether
/// each came from `relay`.
fn drain(socket: &UdpSocket, from: &str, relay: SocketAddr) -> (u32, u32) {
    let mut buf = [0u8; 2048];
    let (mut heard, mut elsewhere) = (0, 0);
    while let Ok((n, source)) = socket.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.contains(from) {
            if source == relay {
                heard += 1;
            } else {
                elsewhere += 1;
            }
        }
    }
    (heard, elsewhere)
}

#[test]
fn two_phones_behind_two_nats_talk_through_the_relay() {
    let nat = Nat::new(2);
    let node_addr = SocketAddr::new(nat.public_ip(), 5060);
    let node = Node::builder()
        .in_netns(&nat.public)
        .args([
            "--sip",
            &node_addr.to_string(),
            "--domain",
            DOMAIN,
            "--auth",
            "open",
        ])
        .spawn();
    let alice = Phone::new("alice", nat.home(1), node_addr);
    let bob = Phone::new("bob", nat.home(2), node_addr);
    bob.register(&node);

    // Alice calls bob@example.test with her private address in the offer.
    let call_id = token();
    let offer = alice.sdp();
    let invite = format!(
        "INVITE sip:bob@{DOMAIN} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@{DOMAIN}>;tag=alice1\r\nTo: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: {}\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
        alice.via(),
        alice.contact(),
        offer.len()
    );
    alice.send(&invite);

    // Bob's phone gets it (through his NAT's mapping), with the relay in the SDP.
    let got = bob.read(
        "INVITE",
        |t| t.starts_with("INVITE ") && t.contains(&call_id),
        &node,
    );
    let towards_bob = sdp_address(&got);
    assert_eq!(
        towards_bob.ip(),
        nat.public_ip(),
        "the offer names the relay:\n{got}"
    );
    assert!(
        !got.split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .contains(&format!("c=IN IP4 {HOME}")),
        "Alice's private address reached Bob:\n{got}"
    );
    assert!((22000..26000).contains(&towards_bob.port()), "{got}");

    // Bob answers with his own private address.
    let answer = bob.sdp();
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for line in header_lines(&got, "Via")
        .into_iter()
        .chain(header_lines(&got, "Record-Route"))
    {
        ok.push_str(line);
        ok.push_str("\r\n");
    }
    for name in ["From", "Call-ID", "CSeq"] {
        ok.push_str(&format!("{name}: {}\r\n", header(&got, name)));
    }
    ok.push_str(&format!(
        "To: {};tag=bob1\r\nContact: {}\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{answer}",
        header(&got, "To"),
        bob.contact(),
        answer.len()
    ));
    bob.send(&ok);

    let ok = alice.read(
        "200 to INVITE",
        |t| t.starts_with("SIP/2.0 200") && t.contains(&call_id),
        &node,
    );
    let towards_alice = sdp_address(&ok);
    assert_eq!(
        towards_alice.ip(),
        nat.public_ip(),
        "the answer names the relay:\n{ok}"
    );
    assert_ne!(
        towards_alice.port(),
        towards_bob.port(),
        "one port pair per side"
    );
    let routes: Vec<String> = header_lines(&ok, "Record-Route")
        .iter()
        .map(|l| {
            l.split_once(':')
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        })
        .collect();
    let route = routes.join(", ");
    // Each side's Contact came with the alias of its NAT's mapping
    // (src/proxy/alias.rs): in-dialog requests go there.
    let bob_target = contact_uri(&ok);
    let alice_target = contact_uri(&got);
    assert!(
        bob_target.contains(&format!(";alias={}~", nat.router_ip(2))),
        "{ok}"
    );
    assert!(
        alice_target.contains(&format!(";alias={}~", nat.router_ip(1))),
        "{got}"
    );
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} {bob_target} SIP/2.0\r\n{}\r\nRoute: {route}\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@{DOMAIN}>;tag=alice1\r\nTo: <sip:bob@{DOMAIN}>;tag=bob1\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            alice.via()
        )
    };
    alice.send(&in_dialog("ACK", 1));
    // The ACK reaches Bob through his NAT, with the URI he wrote.
    let ack = bob.read("ACK", |t| t.starts_with("ACK "), &node);
    assert!(
        ack.starts_with(&format!("ACK sip:bob@{HOME}:{SIP_PORT} SIP/2.0\r\n")),
        "{ack}"
    );

    // Both phones talk: RTP to the relay port each was given, RTCP above it.
    let rtcp = |a: SocketAddr| SocketAddr::new(a.ip(), a.port() + 1);
    let (mut alice_heard, mut bob_heard, mut alice_rtcp, mut bob_rtcp) = (0, 0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0u16;
    while (alice_heard < 20 || bob_heard < 20 || alice_rtcp < 3 || bob_rtcp < 3)
        && Instant::now() < deadline
    {
        n += 1;
        alice
            .rtp
            .send_to(&packet(false, "alice", n), towards_alice)
            .expect("rtp");
        bob.rtp
            .send_to(&packet(false, "bob", n), towards_bob)
            .expect("rtp");
        if n.is_multiple_of(5) {
            alice
                .rtcp
                .send_to(&packet(true, "alice", n), rtcp(towards_alice))
                .expect("rtcp");
            bob.rtcp
                .send_to(&packet(true, "bob", n), rtcp(towards_bob))
                .expect("rtcp");
        }
        // One packet time (20 ms) for what was sent to come through.
        let (heard, other) = drain(&alice.rtp, "bob", towards_alice);
        assert_eq!(
            other, 0,
            "Bob's RTP reached Alice from elsewhere than the relay"
        );
        alice_heard += heard;
        bob_heard += drain(&bob.rtp, "alice", towards_bob).0;
        alice_rtcp += drain(&alice.rtcp, "bob", rtcp(towards_alice)).0;
        bob_rtcp += drain(&bob.rtcp, "alice", rtcp(towards_bob)).0;
    }
    assert!(
        alice_heard >= 20 && bob_heard >= 20,
        "RTP both ways through the relay: Alice heard {alice_heard}, Bob {bob_heard} of {n}; node log:\n{}",
        tail(&node.log(), 40)
    );
    assert!(
        alice_rtcp >= 3 && bob_rtcp >= 3,
        "RTCP: Alice {alice_rtcp}, Bob {bob_rtcp}"
    );

    // Bob hangs up: his BYE follows the route set of the INVITE to Alice's
    // aliased Contact, and reaches her phone through her NAT.
    let back_route: Vec<&str> = header_lines(&got, "Record-Route")
        .into_iter()
        .filter_map(|l| l.split_once(':').map(|(_, v)| v.trim()))
        .collect();
    let bye = format!(
        "BYE {alice_target} SIP/2.0\r\n{}\r\nRoute: {}\r\nMax-Forwards: 70\r\n\
         From: <sip:bob@{DOMAIN}>;tag=bob1\r\nTo: <sip:alice@{DOMAIN}>;tag=alice1\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        bob.via(),
        back_route.join(", ")
    );
    bob.send(&bye);
    let bye = alice.read("BYE", |t| t.starts_with("BYE "), &node);
    assert!(
        bye.starts_with(&format!("BYE sip:alice@{HOME}:{SIP_PORT} SIP/2.0\r\n")),
        "{bye}"
    );
    // The relay closes the call's ports.
    wait_until(
        "the relay session closed on BYE",
        Duration::from_secs(5),
        || node.log().contains("relay session closed"),
        || tail(&node.log(), 40),
    );
    for n in 1000..1010 {
        alice
            .rtp
            .send_to(&packet(false, "alice", n), towards_alice)
            .expect("rtp");
    }
    let mut after = 0;
    let quiet = Instant::now() + Duration::from_millis(300);
    while Instant::now() < quiet {
        after += drain(&bob.rtp, "alice", towards_bob).0;
    }
    assert_eq!(after, 0, "media still relayed after the BYE");
    let mut node = node;
    node.assert_alive();
}

#[test]
fn a_phone_behind_nat_without_outbound_gets_options_keep_alives() {
    let nat = Nat::new(1);
    let node_addr = SocketAddr::new(nat.public_ip(), 5060);
    let config = nat.public.dir.join("natping.toml");
    std::fs::write(&config, "[registrar]\nnatping_s = 1\n").expect("config");
    let node = Node::builder()
        .in_netns(&nat.public)
        .args([
            "--sip",
            &node_addr.to_string(),
            "--domain",
            DOMAIN,
            "--auth",
            "open",
        ])
        .args(["--config", &config.display().to_string()])
        .spawn();
    let bob = Phone::new("bob", nat.home(1), node_addr);
    bob.register(&node);
    // Through the router's mapping, addressed to the contact as registered.
    let ping = bob.read("OPTIONS keep-alive", |t| t.starts_with("OPTIONS "), &node);
    assert!(
        ping.starts_with(&format!("OPTIONS sip:bob@{HOME}:{SIP_PORT} SIP/2.0\r\n")),
        "{ping}"
    );
    // And again a round later.
    bob.read("a second keep-alive", |t| t.starts_with("OPTIONS "), &node);
}
