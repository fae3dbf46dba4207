//! SIP over TLS with certificates from `p2psip certs`: a phone registers
//! over TLS and gets 200; a second phone calls it over TLS and the INVITE
//! reaches the first over the connection it registered on, with the node's
//! TLS address in Via and Record-Route.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use common::{DOMAIN, Node, RawResponse, read_stream_message, temp_dir, token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// `p2psip certs ARGS`; panics with its stderr when it fails.
fn certs(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_p2psip"))
        .arg("certs")
        .args(args)
        .output()
        .expect("run p2psip certs");
    assert!(
        out.status.success(),
        "p2psip certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node named `name` on loopback with SIP over TLS, its certificate and
/// key from `node_dir` (as `p2psip certs server` writes them).
fn tls_node<'a>(name: &str, node_dir: &Path) -> common::NodeBuilder<'a> {
    let file = |f: &str| node_dir.join(f).to_str().expect("utf-8 path").to_string();
    Node::builder()
        .name(name)
        .args([
            "--sip",
            "127.0.0.1:0",
            "--domain",
            DOMAIN,
            "--sips",
            "127.0.0.1:0",
        ])
        .args([
            "--tls-cert",
            &file("cert.pem"),
            "--tls-key",
            &file("key.pem"),
        ])
}

/// A TLS client that trusts `ca` only, connected to `node`.
fn tls_connect(ca: &Path, node: SocketAddr) -> TlsStream {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca.pem") {
        roots.add(cert.expect("a CA certificate")).expect("root");
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = ServerName::IpAddress(node.ip().into());
    let connection = ClientConnection::new(Arc::new(config), name).expect("client connection");
    let socket = TcpStream::connect(node).expect("connect to the TLS port");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    socket
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    StreamOwned::new(connection, socket)
}

fn local(stream: &TlsStream) -> SocketAddr {
    stream.sock.local_addr().expect("local address")
}

/// The next message on `stream` as text; panics on end of stream or timeout.
fn read(stream: &mut TlsStream, what: &str, node: &Node) -> String {
    match read_stream_message(stream) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(None) => panic!(
            "{what}: the node closed the connection; log:\n{}",
            common::tail(&node.log(), 40)
        ),
        Err(e) => panic!("{what}: {e}; log:\n{}", common::tail(&node.log(), 40)),
    }
}

/// The next response that is not 100 Trying.
fn final_response(stream: &mut TlsStream, what: &str, node: &Node) -> RawResponse {
    loop {
        let text = read(stream, what, node);
        let response = RawResponse::parse(text.as_bytes())
            .unwrap_or_else(|| panic!("{what}: not a response:\n{text}"));
        if response.status != 100 {
            return response;
        }
    }
}

fn register(user: &str, contact: SocketAddr) -> String {
    let t = token();
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/TLS {contact};branch=z9hG4bK{t};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{DOMAIN}>;tag={t}\r\n\
         To: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: {t}@tls-test\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@{contact};transport=tls>\r\n\
         Expires: 300\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn invite(from: &str, to: &str, contact: SocketAddr) -> String {
    let t = token();
    let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    format!(
        "INVITE sips:{to}@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/TLS {contact};branch=z9hG4bK{t};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sips:{from}@{DOMAIN}>;tag={t}\r\n\
         To: <sips:{to}@{DOMAIN}>\r\n\
         Call-ID: {t}@tls-test\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sips:{from}@{contact}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A response to `request` (its Via, From, To with a tag, Call-ID, CSeq).
fn answer(request: &str, status: u16, reason: &str) -> String {
    let head = request.split("\r\n\r\n").next().unwrap_or("");
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for line in head.lines().skip(1) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" | "record-route" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "to" => {
                out.push_str(line);
                out.push_str(";tag=callee\r\n");
            }
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

#[test]
fn register_and_call_over_tls() {
    let dir = temp_dir("tls-certs");
    let ca_dir = dir.join("ca");
    let node_dir = dir.join("node");
    certs(&["ca", "--out", ca_dir.to_str().expect("utf-8 path")]);
    certs(&[
        "server",
        "--ca",
        ca_dir.to_str().expect("utf-8 path"),
        "--name",
        "127.0.0.1",
        "--out",
        node_dir.to_str().expect("utf-8 path"),
    ]);
    #[cfg(unix)]
    for key in [ca_dir.join("ca-key.pem"), node_dir.join("key.pem")] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    }
    let ca = ca_dir.join("ca.pem");
    let mut node = tls_node("tls-node", &node_dir).spawn();
    let sips = node.sips.expect("the listening line names the TLS address");
    assert_ne!(sips.port(), 0);

    // Alice registers over TLS: her contact is her side of the connection.
    let mut alice = tls_connect(&ca, sips);
    let alice_addr = local(&alice);
    alice
        .write_all(register("alice", alice_addr).as_bytes())
        .expect("send REGISTER");
    let ok = final_response(&mut alice, "alice's REGISTER", &node);
    assert_eq!(ok.status, 200, "REGISTER over TLS got\n{}", ok.text);

    // Bob calls her over his own TLS connection.
    let mut bob = tls_connect(&ca, sips);
    let bob_addr = local(&bob);
    bob.write_all(invite("bob", "alice", bob_addr).as_bytes())
        .expect("send INVITE");
    let request = read(
        &mut alice,
        "the INVITE on alice's registered connection",
        &node,
    );
    assert!(request.starts_with("INVITE "), "alice got\n{request}");
    let top_via = request
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("via:"))
        .unwrap_or("");
    assert!(
        top_via.contains(&format!("SIP/2.0/TLS {sips}")),
        "the node's Via names its TLS address: {top_via}\n{request}"
    );
    assert!(
        request.contains(&format!("<sips:{}:{};lr>", sips.ip(), sips.port())),
        "the node record-routes its TLS address:\n{request}"
    );
    alice
        .write_all(answer(&request, 486, "Busy Here").as_bytes())
        .expect("send 486");
    let busy = final_response(&mut bob, "bob's INVITE", &node);
    assert_eq!(busy.status, 486, "bob got\n{}", busy.text);

    // Carol calls over UDP: the INVITE crosses from UDP to TLS, and the node
    // record-routes both sides (RFC 5658), its TLS side on top for alice.
    let carol = UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
    carol
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let carol_addr = carol.local_addr().expect("local address");
    let udp_invite = invite("carol", "alice", carol_addr)
        .replace("SIP/2.0/TLS", "SIP/2.0/UDP")
        .replace("sips:", "sip:");
    carol
        .send_to(udp_invite.as_bytes(), node.addr)
        .expect("send INVITE over UDP");
    // (The node's ACK for the 486 may come first.)
    let request = loop {
        let message = read(
            &mut alice,
            "the INVITE from UDP on alice's connection",
            &node,
        );
        if message.starts_with("INVITE ") {
            break message;
        }
    };
    let routes: Vec<&str> = request
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
        .collect();
    let tls_side = format!("<sips:{}:{};lr>", sips.ip(), sips.port());
    let udp_side = format!("<sip:{}:{};lr>", node.addr.ip(), node.addr.port());
    let tls_at = request.find(&tls_side);
    let udp_at = request.find(&udp_side);
    assert!(
        tls_at.is_some() && udp_at.is_some() && tls_at < udp_at,
        "both sides record-routed, TLS first: {routes:?}\n{request}"
    );
    alice
        .write_all(answer(&request, 486, "Busy Here").as_bytes())
        .expect("send 486");
    let mut buf = [0u8; 4096];
    loop {
        let n = carol
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("carol: no final response: {e}"));
        let reply = RawResponse::parse(&buf[..n]).expect("a response");
        if reply.status != 100 {
            assert_eq!(reply.status, 486, "carol got\n{}", reply.text);
            break;
        }
    }
    node.assert_alive();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_key_file_is_one_line_naming_the_key() {
    let dir = temp_dir("tls-bad-key");
    let ca_dir = dir.join("ca");
    certs(&["ca", "--out", ca_dir.to_str().expect("utf-8 path")]);
    let out = Command::new(env!("CARGO_BIN_EXE_p2psip"))
        .args([
            "node",
            "--sip",
            "127.0.0.1:0",
            "--sips",
            "127.0.0.1:0",
            "--tls-cert",
        ])
        .arg(ca_dir.join("ca.pem"))
        .arg("--tls-key")
        .arg(dir.join("missing.pem"))
        .output()
        .expect("run p2psip");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a node with a missing key started");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("`tls_key`") && stderr.contains("missing.pem"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A phone's TLS server on 127.0.0.1 with the certificate in `dir`: the
/// first message on the first connection comes out of the channel, and the
/// thread answers it with `status`.
fn tls_phone(dir: &Path, status: u16) -> (SocketAddr, mpsc::Receiver<Result<String, String>>) {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .expect("cert.pem")
        .map(|c| c.expect("certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("key.pem");
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").expect("phone listener");
    let addr = listener.local_addr().expect("phone address");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = (|| -> Result<String, String> {
            let (socket, _) = listener.accept().map_err(|e| e.to_string())?;
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let connection = ServerConnection::new(Arc::new(config)).map_err(|e| e.to_string())?;
            let mut stream = StreamOwned::new(connection, socket);
            let bytes = read_stream_message(&mut stream)
                .map_err(|e| e.to_string())?
                .ok_or("the node closed the connection")?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            stream
                .write_all(answer(&text, status, "Busy Here").as_bytes())
                .map_err(|e| e.to_string())?;
            let _ = stream.flush();
            Ok(text)
        })();
        let _ = tx.send(result);
    });
    (addr, rx)
}

fn udp_register(node: &Node, user: &str, contact: &str) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let local = socket.local_addr().expect("local address");
    let text = register(user, local)
        .replace("SIP/2.0/TLS", "SIP/2.0/UDP")
        .replace(&format!("<sip:{user}@{local};transport=tls>"), contact);
    socket
        .send_to(text.as_bytes(), node.addr)
        .expect("send REGISTER");
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no answer to REGISTER: {e}"));
    let reply = RawResponse::parse(&buf[..n]).expect("a response");
    assert_eq!(reply.status, 200, "REGISTER got\n{}", reply.text);
}

fn udp_call(node: &Node, to: &str) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let local = socket.local_addr().expect("local address");
    let text = invite("carol", to, local)
        .replace("SIP/2.0/TLS", "SIP/2.0/UDP")
        .replace("sips:", "sip:");
    socket
        .send_to(text.as_bytes(), node.addr)
        .expect("send INVITE");
    socket
}

#[test]
fn outgoing_tls_verifies_the_server_against_the_ca() {
    let dir = temp_dir("tls-client");
    let path = |p: &str| dir.join(p).to_str().expect("utf-8 path").to_string();
    certs(&["ca", "--out", &path("ca")]);
    certs(&[
        "server",
        "--ca",
        &path("ca"),
        "--name",
        "127.0.0.1",
        "--out",
        &path("node"),
    ]);
    certs(&[
        "server",
        "--ca",
        &path("ca"),
        "--name",
        "127.0.0.1",
        "--out",
        &path("phone"),
    ]);
    // A phone whose certificate comes from another CA.
    certs(&["ca", "--out", &path("other-ca")]);
    certs(&[
        "server",
        "--ca",
        &path("other-ca"),
        "--name",
        "127.0.0.1",
        "--out",
        &path("stranger"),
    ]);
    let mut node = tls_node("tls-client-node", &dir.join("node"))
        .args(["--tls-ca", &path("ca/ca.pem")])
        .spawn();

    // Dave registered over UDP with a TLS contact: the node connects to it.
    let (dave, dave_rx) = tls_phone(&dir.join("phone"), 486);
    udp_register(&node, "dave", &format!("<sip:dave@{dave};transport=tls>"));
    let carol = udp_call(&node, "dave");
    let request = match dave_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => panic!(
            "dave's TLS server: {e}; log:\n{}",
            common::tail(&node.log(), 40)
        ),
        Err(_) => panic!(
            "no connection to dave within 10 s; log:\n{}",
            common::tail(&node.log(), 40)
        ),
    };
    assert!(request.starts_with("INVITE "), "dave got\n{request}");
    let mut buf = [0u8; 4096];
    loop {
        let n = carol
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("carol: no final response: {e}"));
        let reply = RawResponse::parse(&buf[..n]).expect("a response");
        if reply.status != 100 {
            assert_eq!(reply.status, 486, "carol got\n{}", reply.text);
            break;
        }
    }

    // Eve's certificate is not from the node's CA: the node does not talk to her.
    let (eve, eve_rx) = tls_phone(&dir.join("stranger"), 486);
    udp_register(&node, "eve", &format!("<sip:eve@{eve};transport=tls>"));
    let _carol = udp_call(&node, "eve");
    common::wait_until(
        "the node refuses eve's certificate",
        Duration::from_secs(10),
        || node.log().contains("the server is not verified"),
        || common::tail(&node.log(), 40),
    );
    match eve_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(text)) => panic!("eve got a message over an unverified connection:\n{text}"),
        Ok(Err(_)) => {}
        Err(_) => panic!("eve's TLS server saw no handshake"),
    }
    node.assert_alive();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real phone: baresip registers over TLS with the CA from `p2psip
/// certs`, and a call to it over UDP reaches it over its TLS connection
/// (it rings). baresip 1.0 does not check the server's certificate; the
/// node's side of the handshake is what this shows with a real stack.
#[test]
fn baresip_registers_and_rings_over_tls() {
    let baresip = common::require_tool("baresip", "baresip-core");
    let dir = temp_dir("tls-baresip");
    let path = |p: &str| dir.join(p).to_str().expect("utf-8 path").to_string();
    certs(&["ca", "--out", &path("ca")]);
    certs(&[
        "server",
        "--ca",
        &path("ca"),
        "--name",
        "127.0.0.1",
        "--out",
        &path("node"),
    ]);
    let node = tls_node("tls-baresip-node", &dir.join("node")).spawn();
    let sips = node.sips.expect("TLS address");
    let conf = dir.join("baresip");
    std::fs::create_dir_all(&conf).expect("baresip dir");
    std::fs::write(
        conf.join("config"),
        format!(
            "poll_method epoll\n\
             sip_listen 127.0.0.1:0\n\
             sip_cafile {}\n\
             module_path /usr/lib/baresip/modules\n\
             module_app account.so\n\
             module g711.so\n\
             module ausine.so\n\
             module aufile.so\n\
             audio_player aufile,/dev/null\n\
             audio_source ausine,440\n\
             audio_alert aufile,/dev/null\n",
            path("ca/ca.pem")
        ),
    )
    .expect("baresip config");
    std::fs::write(
        conf.join("accounts"),
        format!(
            "<sip:alice@{DOMAIN};transport=tls>;regint=300;outbound=\"sip:{sips};transport=tls\"\n"
        ),
    )
    .expect("baresip accounts");
    let out = dir.join("baresip.out");
    let child = Command::new(baresip)
        .args(["-f", &path("baresip"), "-s", "-t", "60"])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).expect("baresip output"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn baresip");
    let _baresip = common::ChildGuard::new("baresip", child);
    let output = || common::read_lossy(&out);
    common::wait_until(
        "baresip registered over TLS",
        Duration::from_secs(15),
        || output().contains("{0/TLS/v4} 200 OK"),
        || {
            format!(
                "baresip:\n{}\nnode:\n{}",
                common::tail(&output(), 40),
                common::tail(&node.log(), 20)
            )
        },
    );
    let carol = udp_call(&node, "alice");
    let mut buf = [0u8; 4096];
    let ringing = loop {
        let n = carol.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "carol: no 180 from baresip: {e}\nbaresip:\n{}",
                common::tail(&output(), 60)
            )
        });
        let reply = RawResponse::parse(&buf[..n]).expect("a response");
        if reply.status != 100 {
            break reply;
        }
    };
    assert_eq!(ringing.status, 180, "carol got\n{}", ringing.text);
    assert!(
        output().contains(&format!("TLS {sips} -> ")) && output().contains("INVITE sip"),
        "the INVITE reached baresip over TLS:\n{}",
        common::tail(&output(), 60)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
