//! STUN on the node's SIP ports, with real clients nobody here wrote: the
//! `stun` client (Debian `stun-client`, RFC 3489) and `turnutils_stunclient`
//! (Debian `coturn`, RFC 5389) get their own source address back from the
//! node's UDP port; over TCP a Binding request and an OPTIONS in one write
//! are both answered, and a double CRLF gets a single CRLF; malformed STUN
//! is dropped (and counted) and the node still answers SIP. And a phone
//! behind NAT without Outbound (a private contact, `rport`) is reached at the
//! address its REGISTER came from, and an Outbound phone over the TCP
//! connection it registered on (docs/nat.md).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{
    Node, RawResponse, http_get, options_request, port_block, read_stream_message, require_tool,
    token, wait_until,
};

/// How long an answer that must come may take (a loaded machine).
const ANSWER: Duration = Duration::from_secs(30);
/// How long to listen for an answer that must not come.
const SILENCE: Duration = Duration::from_millis(700);
const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// A node with its HTTP address (for `/metrics`).
fn start() -> (Node, SocketAddr) {
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let node = Node::start(&["--http", &http.to_string()]);
    (node, http)
}

/// `p2psip_stun_total{outcome="OUTCOME"}`, 0 when absent.
fn stun_count(http: SocketAddr, outcome: &str) -> u64 {
    let prefix = format!("p2psip_stun_total{{outcome=\"{outcome}\"}}");
    http_get(http, "/metrics")
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
        })
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// Runs a tool to completion, bounded by coreutils `timeout`.
fn run(tool: &std::path::Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(tool)
        .args(args)
        .output()
        .expect("run tool")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A Binding request (RFC 8489) with this transaction ID and these attributes.
fn binding(id: [u8; 12], attributes: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00, 0x01];
    out.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    out.extend_from_slice(&COOKIE);
    out.extend_from_slice(&id);
    out.extend_from_slice(attributes);
    out
}

/// The XOR-MAPPED-ADDRESS (IPv4) of a Binding success response to `id`.
fn xor_mapped(response: &[u8], id: [u8; 12]) -> Option<SocketAddr> {
    if response.len() < 20 || response[..2] != [0x01, 0x01] || response[8..20] != id {
        return None;
    }
    let mut at = 20;
    while at + 4 <= response.len() {
        let kind = u16::from_be_bytes([response[at], response[at + 1]]);
        let len = usize::from(u16::from_be_bytes([response[at + 2], response[at + 3]]));
        let value = response.get(at + 4..at + 4 + len)?;
        if kind == 0x0020 && len == 8 && value[1] == 1 {
            let port = u16::from_be_bytes([value[2], value[3]]) ^ 0x2112;
            let ip: [u8; 4] = std::array::from_fn(|i| value[4 + i] ^ COOKIE[i]);
            return Some(SocketAddr::from((Ipv4Addr::from(ip), port)));
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// The next datagram within `limit`, if any.
fn recv(socket: &UdpSocket, limit: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    if limit.is_zero() {
        return None;
    }
    socket.set_read_timeout(Some(limit)).expect("timeout");
    match socket.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("UDP receive failed: {e}"),
    }
}

/// An OPTIONS over UDP gets 200.
fn options_ok(node: &mut Node, socket: &UdpSocket, after: &str) {
    let branch = format!("z9hG4bK{}", token());
    let local = socket.local_addr().expect("local");
    let request = options_request(node.addr, local, "UDP", &branch);
    socket.send_to(request.as_bytes(), node.addr).expect("send");
    let deadline = Instant::now() + ANSWER;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = recv(socket, left)
            .unwrap_or_else(|| panic!("after {after}: no answer to OPTIONS\n{}", node.log()));
        if String::from_utf8_lossy(&reply).contains(&branch) {
            let reply = RawResponse::parse(&reply).expect("a SIP response");
            assert_eq!(reply.status, 200, "after {after}: {}", reply.text);
            break;
        }
    }
    node.assert_alive();
}

#[test]
fn stun_clients_learn_their_source_address_from_the_udp_port() {
    let stun = require_tool("stun", "stun-client");
    let turnutils = require_tool("turnutils_stunclient", "coturn");
    let (mut node, http) = start();
    let server = format!("127.0.0.1:{}", node.port());

    // The classic client, test 1 of RFC 3489 (a plain Binding request),
    // from 127.0.0.3 and a port of our choosing: the answer names both.
    let source = port_block(1).to_string();
    let out = run(
        &stun,
        &[&server, "1", "-v", "-p", &source, "-i", "127.0.0.3"],
    );
    let all = text(&out);
    assert!(out.status.success(), "stun test 1 failed:\n{all}");
    assert!(
        all.contains(&format!("mappedAddr=127.0.0.3:{source}")),
        "stun got another mapped address:\n{all}\n{}",
        node.log()
    );

    // The whole classic NAT test: the node has no second address, so the
    // change requests go unanswered and the client sees an open address
    // behind a firewall, never "Blocked" (no answer at all).
    let out = run(&stun, &[&server, "-i", "127.0.0.3"]);
    let all = text(&out);
    assert!(all.contains("Primary: "), "stun printed no result:\n{all}");
    assert!(
        !all.contains("Blocked") && !all.contains("error"),
        "stun's NAT test failed:\n{all}"
    );

    // coturn's client (RFC 5389, XOR-MAPPED-ADDRESS) from 127.0.0.2.
    let out = run(
        &turnutils,
        &[
            "-L",
            "127.0.0.2",
            "-p",
            &node.port().to_string(),
            "127.0.0.1",
        ],
    );
    let all = text(&out);
    assert!(out.status.success(), "turnutils_stunclient failed:\n{all}");
    assert!(
        all.contains("UDP reflexive addr: 127.0.0.2:"),
        "turnutils_stunclient got another address:\n{all}\n{}",
        node.log()
    );

    wait_until(
        "the node counted the Binding requests it answered",
        ANSWER,
        || stun_count(http, "answered") >= 3,
        || http_get(http, "/metrics").unwrap_or_default(),
    );
    node.assert_alive();
}

#[test]
fn stun_and_sip_share_a_tcp_connection() {
    let (mut node, _http) = start();
    let mut stream = TcpStream::connect(node.addr).expect("connect");
    stream.set_read_timeout(Some(ANSWER)).expect("timeout");
    let local = stream.local_addr().expect("local");

    // A Binding request and an OPTIONS in one write: both answered, in order.
    let id = [0x42; 12];
    let branch = format!("z9hG4bK{}", token());
    let mut bytes = binding(id, &[]);
    bytes.extend_from_slice(options_request(node.addr, local, "TCP", &branch).as_bytes());
    stream.write_all(&bytes).expect("write");
    let mut head = [0u8; 20];
    stream.read_exact(&mut head).expect("STUN answer header");
    let length = usize::from(u16::from_be_bytes([head[2], head[3]]));
    assert!(length <= 1480, "answer length {length}");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("STUN answer body");
    let answer = [head.to_vec(), body].concat();
    assert_eq!(
        xor_mapped(&answer, id),
        Some(local),
        "the Binding answer names the connection's source: {answer:02x?}"
    );
    let reply = read_stream_message(&mut stream)
        .expect("read")
        .expect("an answer to OPTIONS");
    let reply = RawResponse::parse(&reply).expect("SIP");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.text.contains(&branch), "{}", reply.text);

    // RFC 5626 §4.4.1: a double CRLF ping gets a single CRLF pong.
    stream.write_all(b"\r\n\r\n").expect("ping");
    let mut pong = [0u8; 2];
    stream.read_exact(&mut pong).expect("pong");
    assert_eq!(&pong, b"\r\n");

    // The connection still carries SIP after both.
    let branch = format!("z9hG4bK{}", token());
    stream
        .write_all(options_request(node.addr, local, "TCP", &branch).as_bytes())
        .expect("write");
    let reply = read_stream_message(&mut stream)
        .expect("read")
        .expect("an answer to OPTIONS");
    let reply = RawResponse::parse(&reply).expect("SIP");
    assert_eq!(reply.status, 200, "{}", reply.text);
    node.assert_alive();
}

#[test]
fn malformed_stun_is_dropped_and_sip_still_answered() {
    let (mut node, http) = start();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    options_ok(&mut node, &socket, "start-up");

    let id = [0x17; 12];
    let mut length_past_end = binding(id, &[]);
    length_past_end[3] = 8;
    let mut attribute_overrun = binding(id, &[0x80, 0x22, 0x00, 0x40, b'a', b'b', b'c', b'd']);
    attribute_overrun[3] = 8;
    let bad_fingerprint = binding(id, &[0x80, 0x28, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]);
    let malformed: [(&str, Vec<u8>); 4] = [
        ("length past the end", length_past_end),
        ("attribute overrun", attribute_overrun),
        ("bad fingerprint", bad_fingerprint),
        ("short header", vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12]),
    ];
    for (name, bytes) in &malformed {
        socket.send_to(bytes, node.addr).expect("send");
        if let Some(reply) = recv(&socket, SILENCE) {
            panic!("{name}: answered with {reply:02x?}");
        }
        options_ok(&mut node, &socket, name);
    }
    wait_until(
        "the node counted the malformed STUN messages",
        ANSWER,
        || stun_count(http, "malformed") >= malformed.len() as u64,
        || http_get(http, "/metrics").unwrap_or_default(),
    );

    // A CRLF keep-alive over UDP: no answer (not a 400), then SIP as usual.
    for ping in [&b"\r\n"[..], b"\r\n\r\n"] {
        socket.send_to(ping, node.addr).expect("send");
        if let Some(reply) = recv(&socket, SILENCE) {
            panic!("keep-alive answered: {:?}", String::from_utf8_lossy(&reply));
        }
    }
    options_ok(&mut node, &socket, "CRLF keep-alives");

    // An unknown comprehension-required attribute: 420 naming it.
    let unknown = binding(id, &[0x7f, 0x01, 0x00, 0x00]);
    socket.send_to(&unknown, node.addr).expect("send");
    let reply = recv(&socket, ANSWER).expect("an answer to the unknown attribute");
    assert_eq!(
        &reply[..2],
        &[0x01, 0x11],
        "an error response: {reply:02x?}"
    );
    assert_eq!(&reply[8..20], &id);
    let tail = &reply[reply.len() - 8..];
    assert_eq!(tail, &[0x00, 0x0a, 0x00, 0x02, 0x7f, 0x01, 0x00, 0x00]);

    // A stream that starts as STUN without the cookie cannot be framed:
    // the node closes it, and new connections are served.
    let mut stream = TcpStream::connect(node.addr).expect("connect");
    stream.set_read_timeout(Some(ANSWER)).expect("timeout");
    let mut classic = binding(id, &[]);
    classic[4] = 0;
    stream.write_all(&classic).expect("write");
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "answered: {rest:02x?}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    options_ok(&mut node, &socket, "a stream without the cookie");
}

/// The next datagram on `socket` that contains `marker`, within [`ANSWER`].
fn recv_with(socket: &UdpSocket, marker: &str, node: &Node) -> String {
    let deadline = Instant::now() + ANSWER;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(bytes) = recv(socket, left) else {
            panic!("nothing with {marker:?} within {ANSWER:?}\n{}", node.log());
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.contains(marker) {
            return text;
        }
    }
}

/// A REGISTER for `user` with this Via and Contact.
fn register(node: SocketAddr, user: &str, via: &str, contact: &str) -> String {
    let t = token();
    format!(
        "REGISTER sip:example.test SIP/2.0\r\n\
         Via: {via};branch=z9hG4bK{t}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@example.test>;tag={t}\r\n\
         To: <sip:{user}@example.test>\r\n\
         Call-ID: reg-{t}@{node}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <{contact}>\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// An INVITE for `user` from `caller`'s socket.
fn invite(user: &str, caller: SocketAddr, call_id: &str) -> String {
    format!(
        "INVITE sip:{user}@example.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {caller};branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@example.test>;tag={call_id}\r\n\
         To: <sip:{user}@example.test>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:carol@{caller}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A 486 to a request received as text: its Vias, From, To (tagged),
/// Call-ID and CSeq.
fn busy(request: &str) -> String {
    let mut out = String::from("SIP/2.0 486 Busy Here\r\n");
    for line in request.lines() {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if ["via", "from", "call-id", "cseq"].contains(&name.as_str()) {
            out.push_str(line);
            out.push_str("\r\n");
        } else if name == "to" {
            out.push_str(line);
            out.push_str(";tag=busy\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

#[test]
fn a_phone_behind_nat_is_called_at_the_address_its_register_came_from() {
    let (mut node, _http) = start();
    // Alice's phone writes its private address (the NAT's inside) in Via
    // and Contact and asks for rport; the node sees the NAT's mapping, this
    // socket. Nothing listens at 192.168.77.20.
    let phone = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let private = "192.168.77.20:5060";
    let request = register(
        node.addr,
        "alice",
        &format!("SIP/2.0/UDP {private};rport"),
        &format!("sip:alice@{private}"),
    );
    phone.send_to(request.as_bytes(), node.addr).expect("send");
    let ok = recv_with(&phone, "REGISTER", &node);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(
        ok.contains(&format!("<sip:alice@{private}>;expires=")),
        "the contact comes back as registered: {ok}"
    );

    // Bob registers a contact that is not where his REGISTER came from, but
    // public and without rport: he is reached at his contact, as written.
    let bob_registrar = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let bob_phone = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let bob_at = bob_phone.local_addr().expect("local");
    let request = register(
        node.addr,
        "bob",
        &format!("SIP/2.0/UDP {}", bob_registrar.local_addr().expect("local")),
        &format!("sip:bob@{bob_at}"),
    );
    bob_registrar
        .send_to(request.as_bytes(), node.addr)
        .expect("send");
    let ok = recv_with(&bob_registrar, "REGISTER", &node);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");

    // A call to Alice reaches her phone through the mapping, with her
    // contact as the Request-URI; her 486 reaches the caller.
    let caller = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let from = caller.local_addr().expect("local");
    let call_id = format!("nat{}", token());
    caller
        .send_to(invite("alice", from, &call_id).as_bytes(), node.addr)
        .expect("send");
    let offered = recv_with(&phone, &call_id, &node);
    assert!(
        offered.starts_with(&format!("INVITE sip:alice@{private} SIP/2.0")),
        "{offered}"
    );
    phone
        .send_to(busy(&offered).as_bytes(), node.addr)
        .expect("send");
    let answer = loop {
        let answer = recv_with(&caller, &call_id, &node);
        if !answer.starts_with("SIP/2.0 100") {
            break answer;
        }
    };
    assert!(answer.starts_with("SIP/2.0 486"), "{answer}");

    // A call to Bob goes to his contact, not to where he registered from.
    let call_id = format!("direct{}", token());
    caller
        .send_to(invite("bob", from, &call_id).as_bytes(), node.addr)
        .expect("send");
    let offered = recv_with(&bob_phone, &call_id, &node);
    assert!(offered.starts_with("INVITE sip:bob@"), "{offered}");
    if let Some(stray) = recv(&bob_registrar, SILENCE) {
        panic!(
            "the call went to where Bob registered from: {}",
            String::from_utf8_lossy(&stray)
        );
    }
    node.assert_alive();
}

/// Reads SIP messages off `stream` until one contains `marker`.
fn read_with(stream: &mut TcpStream, marker: &str, node: &Node) -> String {
    loop {
        let message = read_stream_message(stream)
            .unwrap_or_else(|e| panic!("reading for {marker:?}: {e}\n{}", node.log()))
            .unwrap_or_else(|| panic!("connection closed before {marker:?}\n{}", node.log()));
        let text = String::from_utf8_lossy(&message).into_owned();
        if text.contains(marker) {
            return text;
        }
    }
}

#[test]
fn an_outbound_phone_is_called_over_the_connection_it_registered_on() {
    let (mut node, _http) = start();
    let mut phone = TcpStream::connect(node.addr).expect("connect");
    phone.set_read_timeout(Some(ANSWER)).expect("timeout");
    let instance = "+sip.instance=\"<urn:uuid:0c3f4a52-3b1e-4d7e-9b1a-5f0e2a9c1d11>\"";
    let private = "192.168.77.21";
    let mut cseq = 0;
    let mut register_from = |phone: &mut TcpStream, port: u16| {
        cseq += 1;
        let request = format!(
            "REGISTER sip:example.test SIP/2.0\r\n\
             Via: SIP/2.0/TCP {private}:{port};branch=z9hG4bKob{cseq}x{}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@example.test>;tag=ob\r\n\
             To: <sip:alice@example.test>\r\n\
             Call-ID: outbound-{}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Supported: path, outbound\r\n\
             Contact: <sip:alice@{private}:{port};transport=tcp;ob>;{instance};reg-id=1\r\n\
             Expires: 600\r\n\
             Content-Length: 0\r\n\r\n",
            token(),
            node.port()
        );
        phone.write_all(request.as_bytes()).expect("write");
        read_with(phone, "REGISTER", &node)
    };
    let ok = register_from(&mut phone, 5060);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(ok.contains("Require: outbound"), "{ok}");
    assert!(ok.contains("Flow-Timer: 100"), "{ok}");
    // The same instance and reg-id from another contact: one binding, the new one.
    let ok = register_from(&mut phone, 5070);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let contacts: Vec<&str> = ok.lines().filter(|l| l.starts_with("Contact:")).collect();
    assert_eq!(contacts.len(), 1, "{ok}");
    assert!(contacts[0].contains(&format!("{private}:5070")), "{ok}");

    // A call reaches the phone over its connection, not at the private contact.
    let caller = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let from = caller.local_addr().expect("local");
    let call_id = format!("ob{}", token());
    caller
        .send_to(invite("alice", from, &call_id).as_bytes(), node.addr)
        .expect("send");
    let offered = read_with(&mut phone, &call_id, &node);
    assert!(
        offered.starts_with(&format!(
            "INVITE sip:alice@{private}:5070;transport=tcp;ob SIP/2.0"
        )),
        "{offered}"
    );
    node.assert_alive();
}

/// RFC 5626 through the ring: an Outbound phone registers over TCP at node
/// A; a call for her arrives at node B, which sends it to A (A's flow route
/// is in her binding's path), and A sends it down her connection; her 486
/// goes back the same way. A Route naming a flow A does not hold gets 430.
#[test]
fn an_outbound_phone_is_called_over_its_connection_through_a_second_node() {
    let (mut a, _) = start();
    let http_b = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let join = a.addr.to_string();
    let mut b = Node::start(&["--http", &http_b.to_string(), "--join", &join]);
    wait_until(
        "b joined a",
        ANSWER,
        || {
            http_get(http_b, "/status")
                .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                .is_some_and(|s| s["successors"][0]["id"].as_str() == Some(a.node_id.as_str()))
        },
        || b.log(),
    );
    let mut phone = TcpStream::connect(a.addr).expect("connect");
    phone.set_read_timeout(Some(ANSWER)).expect("timeout");
    let private = "192.168.77.22";
    let request = format!(
        "REGISTER sip:example.test SIP/2.0\r\n\
         Via: SIP/2.0/TCP {private}:5060;branch=z9hG4bKob2{}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:dora@example.test>;tag=ob2\r\n\
         To: <sip:dora@example.test>\r\n\
         Call-ID: outbound2-{}\r\n\
         CSeq: 1 REGISTER\r\n\
         Supported: path, outbound\r\n\
         Contact: <sip:dora@{private}:5060;transport=tcp;ob>;\
         +sip.instance=\"<urn:uuid:5d1c0a7e-1f2b-4c3d-8e9f-0a1b2c3d4e5f>\";reg-id=1\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n",
        token(),
        token()
    );
    phone.write_all(request.as_bytes()).expect("write");
    let ok = read_with(&mut phone, "REGISTER", &a);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");

    // The call arrives at B; the binding B fetches from the ring names A's flow.
    let caller = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let from = caller.local_addr().expect("local");
    let call_id = format!("ob2{}", token());
    // Her binding is in the ring before her 200: B finds it at once.
    let call = call_id;
    caller
        .send_to(invite("dora", from, &call).as_bytes(), b.addr)
        .expect("send");
    let invite_at_phone = read_with(&mut phone, "INVITE ", &a);
    assert!(
        invite_at_phone.starts_with(&format!(
            "INVITE sip:dora@{private}:5060;transport=tcp;ob SIP/2.0"
        )),
        "{invite_at_phone}"
    );
    assert!(invite_at_phone.contains(&call), "{invite_at_phone}");
    let vias: Vec<&str> = invite_at_phone
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("via:"))
        .collect();
    assert!(
        vias.len() >= 3
            && vias[0].contains(&a.addr.to_string())
            && vias[1].contains(&b.addr.to_string()),
        "caller -> B -> A -> phone: {vias:?}"
    );
    // Her 486 goes back down the same path to the caller.
    phone
        .write_all(busy(&invite_at_phone).as_bytes())
        .expect("write");
    let answer = recv_with(&caller, "486 Busy Here", &b);
    assert!(answer.contains(&call), "{answer}");

    // A flow A does not hold: 430 Flow Failed.
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let at = stranger.local_addr().expect("local");
    let gone = format!("gone{}", token());
    let request = invite("dora", at, &gone).replacen(
        "Max-Forwards: 70\r\n",
        &format!(
            "Max-Forwards: 70\r\nRoute: <sip:ob-u7f000042-5060@{};lr;ob>\r\n",
            a.addr
        ),
        1,
    );
    stranger.send_to(request.as_bytes(), a.addr).expect("send");
    let refused = recv_with(&stranger, "430 Flow Failed", &a);
    assert!(refused.contains(&gone), "{refused}");

    // Her connection closes: the flow failed, and A removes her binding
    // (RFC 5626 §7) rather than keep routing to a flow that is gone.
    drop(phone);
    wait_until(
        "A removed the closed flow's binding",
        ANSWER,
        || {
            a.log()
                .contains("outbound flow closed: its binding removed")
        },
        || a.log(),
    );
    let after = format!("after{}", token());
    caller
        .send_to(invite("dora", from, &after).as_bytes(), a.addr)
        .expect("send");
    let answer = recv_with(&caller, &after, &a);
    let answer = if answer.starts_with("SIP/2.0 100") {
        recv_with(&caller, &after, &a)
    } else {
        answer
    };
    assert!(
        answer.starts_with("SIP/2.0 480") || answer.starts_with("SIP/2.0 404"),
        "no binding left for dora: {answer}"
    );
    a.assert_alive();
    b.assert_alive();
}
