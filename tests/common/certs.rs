//! Certificate mode for the overlay's process tests: an overlay CA and node
//! certificates made with `p2psip certs`, members started with them, and a
//! [`CertMember`] — a test process holding a member certificate that speaks
//! to members over mutual TLS, as a compromised member would.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::members::{Member, overlay_request, sha1_hex};
use super::{DOMAIN, Node, RawResponse, port_block, read_stream_message};

/// `p2psip certs ARGS`; the line it printed.
pub fn certs(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_p2psip"))
        .arg("certs")
        .args(args)
        .output()
        .expect("run p2psip certs");
    assert!(
        out.status.success(),
        "certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A node certificate for `sip` from the CA in `ca`; its directory and serial.
pub fn enroll(dir: &Path, ca: &Path, sip: SocketAddr, name: &str) -> (PathBuf, String) {
    let out = dir.join(name);
    let line = certs(&[
        "node",
        "--ca",
        &ca.display().to_string(),
        "--sip",
        &sip.to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    let serial = line
        .trim()
        .rsplit_once("serial ")
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| panic!("no serial in {line:?}"));
    (out, serial)
}

/// The flags of certificate mode for the node enrolled in `node`.
pub fn cert_args(ca: &Path, node: &Path) -> Vec<String> {
    vec![
        "--overlay-ca".into(),
        ca.join("ca.pem").display().to_string(),
        "--node-cert".into(),
        node.join("node.pem").display().to_string(),
        "--node-key".into(),
        node.join("node-key.pem").display().to_string(),
    ]
}

/// A fresh address (SIP) and HTTP address.
pub fn addresses() -> (SocketAddr, SocketAddr) {
    let base = port_block(2);
    (
        SocketAddr::from(([127, 0, 0, 1], base)),
        SocketAddr::from(([127, 0, 0, 1], base + 1)),
    )
}

/// A node at `sip` with its HTTP server at `http`, with `extra` flags.
pub fn start(
    name: &str,
    sip: SocketAddr,
    http: SocketAddr,
    extra: &[String],
    join: Option<SocketAddr>,
) -> Member {
    let mut builder = Node::builder()
        .name(name)
        .args(["--sip", &sip.to_string(), "--domain", DOMAIN])
        .args(["--http", &http.to_string()])
        .args(extra);
    if let Some(join) = join {
        builder = builder.args(["--join", &join.to_string()]);
    }
    Member {
        node: builder.spawn(),
        http,
    }
}

/// Three members enrolled by the CA in `ca`, started one after the other
/// (the first is the others' bootstrap).
pub fn three_members(dir: &Path, ca: &Path) -> Vec<Member> {
    let mut members = Vec::new();
    let mut boot = None;
    for i in 0..3 {
        let (sip, http) = addresses();
        let (node_dir, _) = enroll(dir, ca, sip, &format!("member-{i}"));
        let member = start(
            &format!("member-{i}"),
            sip,
            http,
            &cert_args(ca, &node_dir),
            boot,
        );
        boot.get_or_insert(member.node.addr);
        members.push(member);
    }
    members
}

/// A test process with a member certificate for `addr` (where nothing
/// listens): it speaks to members over mutual TLS and signs with its key.
pub struct CertMember {
    pub addr: SocketAddr,
    /// Its certificate (DER).
    pub cert_der: Vec<u8>,
    key: p2psip_certs::NodeKey,
    tls: Arc<rustls::ClientConfig>,
}

impl CertMember {
    /// Enrolled by the CA in `ca` for a fresh address.
    pub fn new(dir: &Path, ca: &Path, name: &str) -> CertMember {
        let (addr, _) = addresses();
        let (node_dir, _) = enroll(dir, ca, addr, name);
        let cert_pem = std::fs::read(node_dir.join("node.pem")).expect("node.pem");
        let key_pem = std::fs::read(node_dir.join("node-key.pem")).expect("node-key.pem");
        let ca_pem = std::fs::read(ca.join("ca.pem")).expect("ca.pem");
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca_pem) {
            roots.add(c.expect("CA PEM")).expect("CA");
        }
        let cert_der = p2psip_certs::first_cert_der(&cert_pem).expect("certificate");
        let chain = vec![CertificateDer::from(cert_der.clone())];
        let private = PrivateKeyDer::from_pem_slice(&key_pem).expect("key PEM");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private)
            .expect("client certificate");
        CertMember {
            addr,
            cert_der,
            key: p2psip_certs::NodeKey::from_pem(&String::from_utf8_lossy(&key_pem)).expect("key"),
            tls: Arc::new(tls),
        }
    }

    /// Its Node-ID (hex), as its certificate says.
    pub fn id(&self) -> String {
        sha1_hex(&self.addr.to_string())
    }

    /// Its signature over `message` (ECDSA P-256, as a node signs).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).expect("sign")
    }

    /// Its certificate as a `P2P-Cert` header line.
    pub fn cert_header(&self) -> String {
        let hex: String = self.cert_der.iter().map(|b| format!("{b:02x}")).collect();
        format!("P2P-Cert: {hex}\r\n")
    }

    /// The items member `node` itself holds under the key of `name` (a
    /// `fetch` over mutual TLS).
    pub fn items_at(&self, node: SocketAddr, name: &str) -> Vec<serde_json::Value> {
        let to = format!("sip:{}@overlay.invalid", sha1_hex(name));
        let answer = self.ask(node, "fetch", &to, "", "");
        let body = answer.text.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The item named `name` that member `node` holds, if any.
    pub fn item_at(&self, node: SocketAddr, name: &str) -> Option<serde_json::Value> {
        self.items_at(node, name)
            .into_iter()
            .find(|i| i["name"] == name)
    }

    /// Sends an overlay request (`op` with its flags, To `to_uri`, `extra`
    /// header lines, a JSON `body`) to member `to` over a new mutual TLS
    /// connection; the final response.
    pub fn ask(
        &self,
        to: SocketAddr,
        op: &str,
        to_uri: &str,
        extra: &str,
        body: &str,
    ) -> RawResponse {
        let request = overlay_request("TLS", self.addr, to, op, to_uri, extra, body);
        let tcp = TcpStream::connect(to).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let name = ServerName::IpAddress(to.ip().into());
        let connection = rustls::ClientConnection::new(self.tls.clone(), name).expect("TLS");
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        stream.write_all(request.as_bytes()).expect("write");
        loop {
            let message = read_stream_message(&mut stream)
                .unwrap_or_else(|e| panic!("reading {to}'s answer to {op}: {e}"))
                .unwrap_or_else(|| panic!("{to} closed without answering {op}"));
            if let Some(r) = RawResponse::parse(&message)
                && r.status >= 200
            {
                return r;
            }
        }
    }
}
