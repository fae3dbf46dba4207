//! Certificate-mode admission (docs/security.md "Certificate mode"): the
//! overlay CA, this node's certificate and key, the revoked serials, and
//! everything done with them — the mutually authenticated TLS between
//! members, the check of a peer's certificate, and the signatures over
//! stored items. The rest of the node sees only addresses: the transport
//! tells the core which connection speaks for which member
//! ([`crate::core::Input::Member`]), and the overlay keeps that in
//! [`Members`].
//!
//! A member's identity is its certificate's `sip:IP:PORT` URI; its Node-ID
//! is SHA-1 of that address, and the certificate's `urn:p2psip:node-id:`
//! URI must say the same (so a node cannot choose its place on the ring).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use p2psip_certs::{NodeCert, NodeKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::overlay::admission::LOG_EVERY;
use crate::ring::NodeId;
use crate::sip::transaction::Peer;

/// The configured files and revoked serials.
#[derive(Clone, Debug, Default)]
pub struct IdentityFiles<'a> {
    pub ca: Option<&'a Path>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub revoked: &'a [String],
}

/// A configuration problem: the key and why (printed as one line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {why}")]
pub struct IdentityError {
    pub key: &'static str,
    pub why: String,
}

fn invalid(key: &'static str, why: impl ToString) -> IdentityError {
    IdentityError {
        key,
        why: why.to_string(),
    }
}

/// What the transports need: TLS that presents our certificate and
/// demands one from the peer, and the check of that certificate.
#[derive(Clone)]
pub struct MemberTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
    revoked: Arc<HashSet<String>>,
    /// What signs our items and checks members' certificates carried in
    /// overlay messages (`signed.rs`).
    pub signing: Arc<Signing>,
}

impl std::fmt::Debug for MemberTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberTls")
            .field("revoked", &self.revoked.len())
            .finish()
    }
}

impl MemberTls {
    /// The member a verified TLS peer speaks for: its certificate (already
    /// verified against the overlay CA by the handshake) must be a node
    /// certificate whose Node-ID is its address's, and not revoked.
    /// Also returns the certificate (DER).
    pub fn member(
        &self,
        certs: Option<&[CertificateDer<'_>]>,
    ) -> Result<(SocketAddr, Arc<Vec<u8>>), String> {
        let cert = certs
            .and_then(|c| c.first())
            .ok_or("no certificate presented")?;
        let node = check_node_cert(cert, &self.revoked)?;
        Ok((node.sip, Arc::new(cert.to_vec())))
    }
}

/// This node in certificate mode.
pub struct Identity {
    pub me: NodeCert,
    pub tls: MemberTls,
}

/// This node's signing key and certificate, and the check of another
/// member's certificate outside a handshake (carried with signed items).
pub struct Signing {
    key: NodeKey,
    /// Our certificate (DER).
    pub cert_der: Vec<u8>,
    /// Our Node-ID.
    pub me: NodeId,
    verifier: Arc<dyn ClientCertVerifier>,
    revoked: Arc<HashSet<String>>,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing").field("me", &self.me).finish()
    }
}

impl Signing {
    /// Our signature over `message`.
    pub fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        self.key.sign(message).ok()
    }

    /// What a member certificate says, if it is one: signed by the overlay
    /// CA and valid at `wall` (since the Unix epoch), a Node-ID that is its
    /// address's, not revoked.
    pub fn check_cert(&self, der: &[u8], wall: std::time::Duration) -> Result<NodeCert, String> {
        let node = check_node_cert(der, &self.revoked)?;
        let cert = CertificateDer::from(der.to_vec());
        self.verifier
            .verify_client_cert(&cert, &[], UnixTime::since_unix_epoch(wall))
            .map_err(|e| format!("not valid under the overlay CA: {e}"))?;
        Ok(node)
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("me", &self.me.sip)
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node certificate's content, if its Node-ID is its address's and its
/// serial is not revoked.
fn check_node_cert(der: &[u8], revoked: &HashSet<String>) -> Result<NodeCert, String> {
    let node = p2psip_certs::parse_node(der)?;
    if revoked.contains(&node.serial) {
        return Err(format!("certificate serial {} is revoked", node.serial));
    }
    let id = NodeId::of_addr(node.sip).to_string();
    if node.node_id != id {
        return Err(format!(
            "the certificate's Node-ID {} is not that of sip:{} ({id})",
            node.node_id, node.sip
        ));
    }
    Ok(node)
}

/// A revoked serial as configured: hex digits (any case, `:` allowed
/// between bytes), in the form [`p2psip_certs::serial_hex`] prints.
fn parse_serial(text: &str) -> Result<String, String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(format!("{text:?} is not a serial number in hex"));
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect();
    Ok(p2psip_certs::serial_hex(&bytes))
}

fn read_pem_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let pem = std::fs::read(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            invalid(
                key,
                format!("{}: not a PEM certificate file: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            format!("{}: no CERTIFICATE in the file", path.display()),
        ));
    }
    Ok(certs)
}

impl Identity {
    /// Loads certificate mode; `None` when none of the keys is set. The
    /// certificate must be signed by the CA, not revoked, and name `local`
    /// (its SIP URI) and `local`'s Node-ID.
    pub fn load(
        files: &IdentityFiles,
        local: SocketAddr,
    ) -> Result<Option<Identity>, IdentityError> {
        let (ca, cert, key) = match (files.ca, files.cert, files.key) {
            (None, None, None) => {
                if !files.revoked.is_empty() {
                    return Err(invalid(
                        "overlay_revoked",
                        "needs certificate mode (`overlay_ca`)",
                    ));
                }
                return Ok(None);
            }
            (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
            (None, _, _) => {
                return Err(invalid(
                    "overlay_ca",
                    "certificate mode needs the overlay CA (--overlay-ca)",
                ));
            }
            (_, None, _) => {
                return Err(invalid(
                    "node_cert",
                    "certificate mode needs the node's certificate (--node-cert)",
                ));
            }
            (_, _, None) => {
                return Err(invalid(
                    "node_key",
                    "certificate mode needs the node's key (--node-key)",
                ));
            }
        };
        let revoked = files
            .revoked
            .iter()
            .map(|s| parse_serial(s))
            .collect::<Result<HashSet<_>, _>>()
            .map_err(|why| invalid("overlay_revoked", why))?;
        let revoked = Arc::new(revoked);
        let mut roots = RootCertStore::empty();
        for c in read_pem_certs("overlay_ca", ca)? {
            roots.add(c).map_err(|e| {
                invalid(
                    "overlay_ca",
                    format!("{}: not a usable CA certificate: {e}", ca.display()),
                )
            })?;
        }
        let roots = Arc::new(roots);
        let chain = read_pem_certs("node_cert", cert)?;
        let cert_error = |why: String| invalid("node_cert", format!("{}: {why}", cert.display()));
        let me = check_node_cert(&chain[0], &revoked).map_err(cert_error)?;
        if me.sip != local {
            return Err(cert_error(format!(
                "the certificate is for sip:{}, not this node's sip:{local}",
                me.sip
            )));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| invalid("overlay_ca", e))?;
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|e| cert_error(format!("not valid under the overlay CA: {e}")))?;
        let verifier_for_items: Arc<dyn ClientCertVerifier> = verifier.clone();
        let cert_der = chain[0].to_vec();
        let key_pem = std::fs::read(key)
            .map_err(|e| invalid("node_key", format!("{}: {e}", key.display())))?;
        let key_error = |why: String| invalid("node_key", format!("{}: {why}", key.display()));
        let private = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| key_error(format!("no PEM private key: {e}")))?;
        let signing = NodeKey::from_pem(&String::from_utf8_lossy(&key_pem)).map_err(key_error)?;
        if signing.public_key() != me.public_key {
            return Err(key_error("does not fit the certificate".into()));
        }
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("overlay_ca", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), private.clone_key())
            .map_err(|e| key_error(format!("does not fit the certificate: {e}")))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("overlay_ca", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private)
            .map_err(|e| key_error(format!("does not fit the certificate: {e}")))?;
        let signing = Signing {
            key: signing,
            cert_der,
            me: NodeId::of_addr(me.sip),
            verifier: verifier_for_items,
            revoked: revoked.clone(),
        };
        Ok(Some(Identity {
            me,
            tls: MemberTls {
                acceptor: TlsAcceptor::from(Arc::new(server)),
                connector: TlsConnector::from(Arc::new(client)),
                revoked,
                signing: Arc::new(signing),
            },
        }))
    }

    /// Our signature over `message` (an item's canonical bytes).
    pub fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        self.tls.signing.sign(message)
    }
}

/// Whether `signature` over `message` was made with the key of the member
/// certificate `cert_der`.
pub fn verify(cert_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    match p2psip_certs::parse_node(cert_der) {
        Ok(cert) => p2psip_certs::verify(cert.key_kind, &cert.public_key, message, signature),
        Err(_) => false,
    }
}

/// The overlay's view in certificate mode: which connection speaks for
/// which member (told by the transport), and the refusal log's pacing.
#[derive(Debug, Default)]
pub struct Members {
    by_peer: HashMap<Peer, SocketAddr>,
    /// Refusals not yet logged, and when we last logged.
    unlogged: u64,
    last_log: Option<Instant>,
}

impl Members {
    /// A connection whose certificate names member `node`.
    pub fn connected(&mut self, peer: Peer, node: SocketAddr) {
        self.by_peer.insert(peer, node);
    }

    /// A connection closed.
    pub fn closed(&mut self, peer: Peer) {
        self.by_peer.remove(&peer);
    }

    /// The member a message from `peer` comes from, if any.
    pub fn member(&self, peer: &Peer) -> Option<SocketAddr> {
        self.by_peer.get(peer).copied()
    }

    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    /// Counts a refusal; `Some(n)` when it is time to log the `n` since the
    /// last log (at most once per [`LOG_EVERY`]).
    pub fn note_refusal(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .last_log
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_EVERY);
        if !due {
            return None;
        }
        self.last_log = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::TransportKind;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("p2psip-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn enroll(dir: &Path, addr: SocketAddr, id: &str) {
        p2psip_certs::write_node(
            &dir.join("ca"),
            addr,
            id,
            &dir.join(addr.port().to_string()),
        )
        .expect("node");
    }

    #[test]
    fn a_certificate_must_name_this_node() {
        let dir = temp_dir("load");
        p2psip_certs::write_ca(&dir.join("ca")).expect("CA");
        let addr: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        enroll(&dir, addr, &NodeId::of_addr(addr).to_string());
        let ca = dir.join("ca").join(p2psip_certs::CA_CERT);
        let cert = dir.join("5070").join(p2psip_certs::NODE_CERT);
        let key = dir.join("5070").join(p2psip_certs::NODE_KEY);
        let files = IdentityFiles {
            ca: Some(&ca),
            cert: Some(&cert),
            key: Some(&key),
            revoked: &[],
        };
        let identity = Identity::load(&files, addr).expect("loads").expect("on");
        assert_eq!(identity.me.sip, addr);
        let signature = identity.sign(b"item").expect("signed");
        let der = p2psip_certs::first_cert_der(&std::fs::read(&cert).unwrap()).unwrap();
        assert!(verify(&der, b"item", &signature));
        assert!(!verify(&der, b"other", &signature));

        let err =
            Identity::load(&files, "127.0.0.1:5071".parse().unwrap()).expect_err("other address");
        assert_eq!(err.key, "node_cert");
        assert!(err.why.contains("not this node's"), "{err}");

        let revoked = [identity.me.serial.to_uppercase()];
        let err = Identity::load(
            &IdentityFiles {
                revoked: &revoked,
                ..files.clone()
            },
            addr,
        )
        .expect_err("revoked");
        assert!(err.why.contains("revoked"), "{err}");

        let err = Identity::load(
            &IdentityFiles {
                revoked: &["xyz".into()],
                ..files.clone()
            },
            addr,
        )
        .expect_err("bad serial");
        assert_eq!(err.key, "overlay_revoked");

        // A Node-ID that is not the address's.
        let other: SocketAddr = "127.0.0.1:5072".parse().unwrap();
        enroll(&dir, other, &"ab".repeat(20));
        let cert = dir.join("5072").join(p2psip_certs::NODE_CERT);
        let key = dir.join("5072").join(p2psip_certs::NODE_KEY);
        let err = Identity::load(
            &IdentityFiles {
                cert: Some(&cert),
                key: Some(&key),
                ..files.clone()
            },
            other,
        )
        .expect_err("node id");
        assert!(err.why.contains("Node-ID"), "{err}");

        // Another CA's certificate.
        p2psip_certs::write_ca(&dir.join("other-ca")).expect("CA");
        let other_ca = dir.join("other-ca").join(p2psip_certs::CA_CERT);
        let err = Identity::load(
            &IdentityFiles {
                ca: Some(&other_ca),
                ..files.clone()
            },
            addr,
        )
        .expect_err("other CA");
        assert!(err.why.contains("overlay CA"), "{err}");

        let err = Identity::load(
            &IdentityFiles {
                key: None,
                ..files.clone()
            },
            addr,
        )
        .expect_err("no key");
        assert_eq!(err.key, "node_key");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn members_are_known_by_connection() {
        let mut members = Members::default();
        let peer = Peer {
            transport: TransportKind::Tls,
            addr: "127.0.0.1:40000".parse().unwrap(),
        };
        let node: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        assert_eq!(members.member(&peer), None);
        members.connected(peer, node);
        assert_eq!(members.member(&peer), Some(node));
        members.closed(peer);
        assert!(members.is_empty());
    }
}
