//! Connection limits over real sockets: one source address that opens more
//! connections than its share does not lock others out, and a connection
//! that dribbles a message byte by byte (slowloris) is closed within the
//! guard time while a normal one is served.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Node, RawResponse, options_request, read_stream_message, tail, token};

/// The node's default per-source cap (`max_connections_per_source`).
const CAP: usize = 64;

/// A TCP connection to `node` from `source` (any port).
fn connect_from(source: [u8; 4], node: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&node.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// An OPTIONS over `stream` gets 200.
fn options_ok(node: &Node, stream: &mut TcpStream, what: &str) {
    let local = stream.local_addr().expect("local address");
    let branch = format!("z9hG4bK{}", token());
    stream
        .write_all(options_request(node.addr, local, "TCP", &branch).as_bytes())
        .expect("write OPTIONS");
    match read_stream_message(stream) {
        Ok(Some(bytes)) => {
            let reply = RawResponse::parse(&bytes).expect("a response");
            assert_eq!(reply.status, 200, "{what}: OPTIONS got\n{}", reply.text);
        }
        other => panic!(
            "{what}: no answer to OPTIONS: {other:?}; log:\n{}",
            tail(&node.log(), 40)
        ),
    }
}

/// Whether the node closes `stream` (EOF or reset) within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn one_source_cannot_take_every_connection() {
    let mut node = Node::start(&[]);
    let mut held = Vec::new();
    for i in 0..CAP {
        held.push(
            connect_from([127, 0, 0, 2], node.addr)
                .unwrap_or_else(|e| panic!("connection {i} from 127.0.0.2: {e}")),
        );
    }
    // The connections are accepted in order: once one of them is answered,
    // all of them hold a place.
    let last = held.last_mut().expect("a connection");
    options_ok(&node, last, "the last connection within the cap");
    // One more from the same source is closed at once.
    let mut over = connect_from([127, 0, 0, 2], node.addr).expect("connect beyond the cap");
    assert!(
        closed_within(&mut over, Duration::from_secs(5)),
        "a connection beyond the cap of {CAP} from one source stayed open"
    );
    // Another source is served.
    let mut other = connect_from([127, 0, 0, 3], node.addr).expect("connect from 127.0.0.3");
    options_ok(&node, &mut other, "127.0.0.3 while 127.0.0.2 is at its cap");
    // The first connections are still served.
    options_ok(&node, &mut held[0], "the first connection from 127.0.0.2");
    node.assert_alive();
    let log = node.log();
    assert_eq!(
        log.matches("connection limit reached").count(),
        1,
        "one refusal, one log line:\n{}",
        tail(&log, 20)
    );
}

#[test]
fn a_message_dribbled_byte_by_byte_is_cut_off() {
    let mut node = Node::start(&[]);
    let mut slow = connect_from([127, 0, 0, 1], node.addr).expect("connect");
    let mut normal = connect_from([127, 0, 0, 1], node.addr).expect("connect");
    let started = Instant::now();
    let head = b"OPTIONS sip:slow@example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKslow\r\n";
    slow.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("read timeout");
    let mut closed = false;
    for byte in head.iter().cycle() {
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
        if slow.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        // Waits a second for the node's close, which is the event awaited.
        let mut buf = [0u8; 64];
        match slow.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    let took = started.elapsed();
    assert!(closed, "the slow connection was still open after {took:?}");
    assert!(
        took < Duration::from_secs(10) && took >= Duration::from_secs(4),
        "closed after {took:?}: the guard is 5 s"
    );
    // The normal connection, opened at the same time, is served.
    options_ok(
        &node,
        &mut normal,
        "a normal connection beside the slow one",
    );
    node.assert_alive();
}
