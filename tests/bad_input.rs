//! Malformed input over raw UDP and TCP sockets: the node answers 400 where
//! the request can be answered (a Via to answer to), stays silent where it
//! cannot, closes a TCP connection it can no longer frame, and after every
//! case still answers a valid OPTIONS with 200.

mod common;

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{Node, RawResponse, options_request, read_stream_message, token};

/// How long to wait for an answer that must come.
const ANSWER: Duration = Duration::from_secs(5);
/// How long to listen for an answer that must not come.
const SILENCE: Duration = Duration::from_millis(500);

/// Pseudo-random bytes (fixed seed: the same bytes every run).
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The headers every test request carries, for `branch`, with Via `via`
/// (None: no Via at all).
fn head(method: &str, via: Option<&str>, branch: &str) -> String {
    let mut out = String::new();
    if let Some(via) = via {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    out.push_str(&format!(
        "Max-Forwards: 70\r\n\
         From: <sip:bob@example.test>;tag={branch}\r\n\
         To: <sip:alice@example.test>\r\n\
         Call-ID: {branch}@bad-input\r\n\
         CSeq: 7 {method}\r\n"
    ));
    out
}

/// One malformed input. `via` is the exact Via value it carries (when it has one).
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    via: Option<String>,
    call_id: Option<String>,
    /// Text the 400's Warning must contain.
    warning: &'static str,
}

/// The cases that fit in a datagram and on a connection alike.
fn cases(node: SocketAddr, local: SocketAddr, transport: &str) -> Vec<Case> {
    let mut cases = Vec::new();

    // A request line without the SIP version.
    let b = format!("z9hG4bK{}", token());
    let via = format!("SIP/2.0/{transport} {local};branch={b}");
    cases.push(Case {
        name: "bad request line",
        bytes: format!(
            "INVITE sip:alice@example.test\r\n{}Content-Length: 0\r\n\r\n",
            head("INVITE", Some(&via), &b)
        )
        .into_bytes(),
        via: Some(via),
        call_id: Some(format!("{b}@bad-input")),
        warning: "bad start line",
    });

    // No Via: nothing to answer to.
    let b = format!("z9hG4bK{}", token());
    cases.push(Case {
        name: "no Via",
        bytes: format!(
            "OPTIONS sip:{node} SIP/2.0\r\n{}Content-Length: 0\r\n\r\n",
            head("OPTIONS", None, &b)
        )
        .into_bytes(),
        via: None,
        call_id: None,
        warning: "",
    });

    // A header line without a colon.
    let b = format!("z9hG4bK{}", token());
    let via = format!("SIP/2.0/{transport} {local};branch={b}");
    cases.push(Case {
        name: "header without a colon",
        bytes: format!(
            "OPTIONS sip:{node} SIP/2.0\r\n{}This line has no colon\r\nContent-Length: 0\r\n\r\n",
            head("OPTIONS", Some(&via), &b)
        )
        .into_bytes(),
        via: Some(via),
        call_id: Some(format!("{b}@bad-input")),
        warning: "bad header line",
    });
    cases
}

/// A MESSAGE whose Content-Length (100) is beyond its 5-byte body.
fn truncated_body(local: SocketAddr, transport: &str) -> Case {
    let b = format!("z9hG4bK{}", token());
    let via = format!("SIP/2.0/{transport} {local};branch={b}");
    Case {
        name: "Content-Length beyond the body",
        bytes: format!(
            "MESSAGE sip:alice@example.test SIP/2.0\r\n{}Content-Type: text/plain\r\nContent-Length: 100\r\n\r\nhello",
            head("MESSAGE", Some(&via), &b)
        )
        .into_bytes(),
        via: Some(via),
        call_id: Some(format!("{b}@bad-input")),
        warning: "Content-Length",
    }
}

/// Asserts `reply` is the node's 400 to `case`: Via and Call-ID copied, and a Warning.
fn assert_400(case: &Case, reply: &RawResponse) {
    assert_eq!(
        reply.status, 400,
        "{}: expected 400, got:\n{}",
        case.name, reply.text
    );
    assert_eq!(
        reply.headers("Via"),
        vec![case.via.clone().expect("case with Via")],
        "{}: the 400 must carry the request's Via unchanged:\n{}",
        case.name,
        reply.text
    );
    assert_eq!(
        reply.header("Call-ID"),
        case.call_id,
        "{}: Call-ID",
        case.name
    );
    let warning = reply.header("Warning").unwrap_or_default();
    assert!(
        warning.starts_with("399 ") && warning.contains(case.warning),
        "{}: Warning {warning:?} should say {:?}",
        case.name,
        case.warning
    );
}

// ---------------------------------------------------------------- UDP

/// Reads datagrams until one mentions `marker`, at most `limit`.
fn udp_recv_matching(socket: &UdpSocket, marker: &str, limit: Duration) -> Option<RawResponse> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 70_000];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        socket.set_read_timeout(Some(left)).expect("timeout");
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.contains(marker) {
                    return RawResponse::parse(&buf[..n]);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) => panic!("UDP receive failed: {e}"),
        }
    }
}

/// Asserts nothing at all comes back within [`SILENCE`].
fn udp_assert_silence(socket: &UdpSocket, case: &str) {
    let mut buf = vec![0u8; 70_000];
    socket.set_read_timeout(Some(SILENCE)).expect("timeout");
    match socket.recv_from(&mut buf) {
        Ok((n, _)) => panic!(
            "{case}: expected no answer, got:\n{}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Err(e) => panic!("{case}: UDP receive failed: {e}"),
    }
}

/// A valid OPTIONS from `socket` gets 200 (with its branch).
fn udp_options_ok(node: &mut Node, socket: &UdpSocket, after: &str) {
    let local = socket.local_addr().expect("local");
    let branch = format!("z9hG4bK{}", token());
    let request = options_request(node.addr, local, "UDP", &branch);
    socket
        .send_to(request.as_bytes(), node.addr)
        .expect("send OPTIONS");
    let reply = udp_recv_matching(socket, &branch, ANSWER)
        .unwrap_or_else(|| panic!("after {after}: no answer to OPTIONS over UDP"));
    assert_eq!(
        reply.status, 200,
        "after {after}: OPTIONS got\n{}",
        reply.text
    );
    node.assert_alive();
}

#[test]
fn bad_input_over_udp() {
    let mut node = Node::start(&[]);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let local = socket.local_addr().expect("local");
    udp_options_ok(&mut node, &socket, "start-up");

    let mut all = cases(node.addr, local, "UDP");
    all.push(truncated_body(local, "UDP"));
    for case in &all {
        socket.send_to(&case.bytes, node.addr).expect("send");
        match &case.via {
            Some(via) => {
                let branch = via.rsplit("branch=").next().expect("branch");
                let reply = udp_recv_matching(&socket, branch, ANSWER)
                    .unwrap_or_else(|| panic!("{}: no 400 came back over UDP", case.name));
                assert_400(case, &reply);
            }
            None => udp_assert_silence(&socket, case.name),
        }
        udp_options_ok(&mut node, &socket, case.name);
    }

    // Random bytes: no Via to answer to, so nothing comes back.
    socket
        .send_to(&random_bytes(1400), node.addr)
        .expect("send");
    udp_assert_silence(&socket, "random bytes");
    udp_options_ok(&mut node, &socket, "random bytes");

    // 100 kB: no such datagram exists (IPv4 UDP payloads end at 65,507 bytes);
    // the kernel refuses to send it.
    let huge = vec![b'x'; 100 * 1024];
    let err = socket
        .send_to(&huge, node.addr)
        .expect_err("a 100 kB UDP datagram cannot be sent");
    assert_eq!(err.raw_os_error(), Some(90), "EMSGSIZE expected, got {err}");
    // The largest datagram there is, claiming a 100 kB body: 400.
    let b = format!("z9hG4bK{}", token());
    let via = format!("SIP/2.0/UDP {local};branch={b}");
    let mut bytes = format!(
        "MESSAGE sip:alice@example.test SIP/2.0\r\n{}Content-Type: text/plain\r\nContent-Length: 102400\r\n\r\n",
        head("MESSAGE", Some(&via), &b)
    )
    .into_bytes();
    bytes.resize(65_507, b'x');
    socket
        .send_to(&bytes, node.addr)
        .expect("send 65,507 bytes");
    let big = Case {
        name: "65,507-byte datagram claiming 100 kB",
        bytes: Vec::new(),
        via: Some(via),
        call_id: Some(format!("{b}@bad-input")),
        warning: "Content-Length 102400 exceeds",
    };
    let reply = udp_recv_matching(&socket, &b, ANSWER)
        .unwrap_or_else(|| panic!("{}: no 400 came back", big.name));
    assert_400(&big, &reply);
    udp_options_ok(&mut node, &socket, big.name);
}

// ---------------------------------------------------------------- TCP

fn connect(node: &Node) -> TcpStream {
    let stream = TcpStream::connect(node.addr).expect("connect to the node");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

/// Reads the next message on `stream`; panics on timeout or end of stream.
fn tcp_read(stream: &mut TcpStream, what: &str) -> RawResponse {
    match read_stream_message(stream) {
        Ok(Some(bytes)) => RawResponse::parse(&bytes).unwrap_or_else(|| {
            panic!(
                "{what}: not a response: {:?}",
                String::from_utf8_lossy(&bytes)
            )
        }),
        Ok(None) => panic!("{what}: the node closed the connection"),
        Err(e) => panic!("{what}: read failed: {e}"),
    }
}

/// A valid OPTIONS on `stream` gets 200 (and it is the next message there:
/// nothing else was answered on this connection in between).
fn tcp_options_ok(node: &mut Node, stream: &mut TcpStream, after: &str) {
    let local = stream.local_addr().expect("local");
    let branch = format!("z9hG4bK{}", token());
    stream
        .write_all(options_request(node.addr, local, "TCP", &branch).as_bytes())
        .expect("write OPTIONS");
    let reply = tcp_read(stream, &format!("OPTIONS after {after}"));
    assert_eq!(
        reply.status, 200,
        "after {after}: OPTIONS got\n{}",
        reply.text
    );
    assert_eq!(
        reply.header("Via").map(|v| v.contains(&branch)),
        Some(true),
        "after {after}: the next message on the connection is not the OPTIONS' answer:\n{}",
        reply.text
    );
    node.assert_alive();
}

/// A valid OPTIONS on a new connection gets 200.
fn tcp_options_ok_fresh(node: &mut Node, after: &str) {
    let mut stream = connect(node);
    tcp_options_ok(node, &mut stream, after);
}

/// After the client shut its side: everything the node still writes, up to its close.
fn tcp_read_to_close(stream: &mut TcpStream, what: &str) -> (Vec<RawResponse>, Option<ErrorKind>) {
    let mut replies = Vec::new();
    loop {
        match read_stream_message(stream) {
            Ok(Some(bytes)) => replies.push(RawResponse::parse(&bytes).unwrap_or_else(|| {
                panic!(
                    "{what}: not a response: {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            })),
            Ok(None) => return (replies, None),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (replies, Some(e.kind())),
            Err(e) => panic!("{what}: expected the node to close the connection, got {e}"),
        }
    }
}

#[test]
fn bad_input_over_tcp() {
    let mut node = Node::start(&[]);

    // Answerable cases on a connection that stays usable: 400 on it, then
    // the next OPTIONS on the same connection gets 200.
    let mut stream = connect(&node);
    let local = stream.local_addr().expect("local");
    tcp_options_ok(&mut node, &mut stream, "connecting");
    for case in cases(node.addr, local, "TCP") {
        stream.write_all(&case.bytes).expect("write");
        if case.via.is_some() {
            let reply = tcp_read(&mut stream, case.name);
            assert_400(&case, &reply);
        }
        // For the case without Via, the OPTIONS' 200 must be the very next
        // message: the node answered nothing to it.
        tcp_options_ok(&mut node, &mut stream, case.name);
    }

    // Content-Length beyond the body, then the client stops sending: the node
    // answers 400 to what it has, then closes the connection.
    let mut stream = connect(&node);
    let case = truncated_body(stream.local_addr().expect("local"), "TCP");
    stream.write_all(&case.bytes).expect("write");
    stream.shutdown(Shutdown::Write).expect("shutdown");
    let (replies, _) = tcp_read_to_close(&mut stream, case.name);
    assert_eq!(
        replies.len(),
        1,
        "{}: expected one 400, got {replies:?}",
        case.name
    );
    assert_400(&case, &replies[0]);
    tcp_options_ok_fresh(&mut node, case.name);

    // Random bytes, then the client stops sending: nothing to answer; closed.
    let mut stream = connect(&node);
    stream.write_all(&random_bytes(1400)).expect("write");
    stream.shutdown(Shutdown::Write).expect("shutdown");
    let (replies, _) = tcp_read_to_close(&mut stream, "random bytes");
    assert!(
        replies.is_empty(),
        "random bytes: expected no answer, got {replies:?}"
    );
    tcp_options_ok_fresh(&mut node, "random bytes");

    // 100 kB: a body beyond the 64 KiB limit, and a head beyond it. The node
    // answers 400 to the head it read and closes (or the close comes first).
    for (name, oversized_head) in [("100 kB body", false), ("100 kB head", true)] {
        let mut stream = connect(&node);
        let local = stream.local_addr().expect("local");
        let b = format!("z9hG4bK{}", token());
        let via = format!("SIP/2.0/TCP {local};branch={b}");
        let mut bytes = format!(
            "MESSAGE sip:alice@example.test SIP/2.0\r\n{}Content-Type: text/plain\r\n",
            head("MESSAGE", Some(&via), &b)
        );
        if oversized_head {
            bytes.push_str("X-Padding: ");
            bytes.push_str(&"p".repeat(100 * 1024));
            bytes.push_str("\r\nContent-Length: 0\r\n\r\n");
        } else {
            bytes.push_str("Content-Length: 102400\r\n\r\n");
            bytes.push_str(&"b".repeat(100 * 1024));
        }
        // The node may close before taking all of it: a failed write is fine.
        let _ = stream.write_all(bytes.as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
        let (replies, reset) = tcp_read_to_close(&mut stream, name);
        let case = Case {
            name,
            bytes: Vec::new(),
            via: Some(via),
            call_id: Some(format!("{b}@bad-input")),
            // An oversized head is reported either as such or, when the
            // whole head arrived in one read, as "Content-Length 0 exceeds
            // the 65536-byte limit" (what the framing computes): both name the limit.
            warning: if oversized_head {
                "65536"
            } else {
                "Content-Length 102400 exceeds the 65536-byte limit"
            },
        };
        assert!(
            replies.len() <= 1,
            "{name}: expected at most one 400 before the close, got {replies:?}"
        );
        if let Some(reply) = replies.first() {
            assert_400(&case, reply);
        } else {
            eprintln!("{name}: connection closed ({reset:?}) without a readable 400");
        }
        tcp_options_ok_fresh(&mut node, name);
    }
}
