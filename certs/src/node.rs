//! Node certificates for certificate-mode admission (`p2psip certs node`,
//! docs/security.md "Certificate mode"): a certificate signed by the
//! overlay CA that binds a node's key to its SIP URI and its Node-ID, and
//! the signatures a node makes with that key.
//!
//! The subject alternative names are, in this order:
//!
//! - `URI:sip:IP:PORT` — the node's SIP URI (its overlay address),
//! - `URI:urn:p2psip:node-id:<40 hex digits>` — its Node-ID,
//! - `IP:IP` — so that TLS clients can verify the server by address.

use std::net::SocketAddr;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, SigningKey,
};
use ring::rand::SecureRandom;
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{CertError, Pair, ca_issuer, generate};

/// The prefix of the URI SAN that carries the Node-ID.
pub const NODE_ID_URN: &str = "urn:p2psip:node-id:";
/// How long a node certificate is valid.
const NODE_VALIDITY: Duration = Duration::days(825);

/// What a node certificate says about its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCert {
    /// The address in the `sip:` URI SAN.
    pub sip: SocketAddr,
    /// The Node-ID in the `urn:p2psip:node-id:` SAN, lower-case hex.
    pub node_id: String,
    /// The serial number, lower-case hex without leading zero bytes
    /// (the form `overlay_revoked` lists).
    pub serial: String,
    /// The subject public key (for [`verify`]).
    pub public_key: Vec<u8>,
    /// Its algorithm.
    pub key_kind: KeyKind,
}

/// The signature algorithm of a node's key. New node certificates get
/// Ed25519 keys (checked about twice as fast as P-256, docs/BENCHMARKS.md
/// "Signed items"); certificates enrolled before keep ECDSA P-256 keys and
/// are still accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA over P-256 with SHA-256, signatures ASN.1 DER.
    EcdsaP256,
    /// Ed25519 (RFC 8032).
    Ed25519,
}

/// A node certificate for `sip` and `node_id` (hex), signed by the CA,
/// for a new Ed25519 key.
pub fn new_node(ca: &Pair, sip: SocketAddr, node_id: &str) -> Result<Pair, CertError> {
    new_node_with(ca, sip, node_id, KeyKind::Ed25519)
}

fn new_node_with(
    ca: &Pair,
    sip: SocketAddr,
    node_id: &str,
    kind: KeyKind,
) -> Result<Pair, CertError> {
    let issuer = ca_issuer(ca)?;
    let mut params = CertificateParams::default();
    let uri = |text: String| {
        text.clone()
            .try_into()
            .map(SanType::URI)
            .map_err(|e: rcgen::Error| CertError::Name {
                name: text,
                why: e.to_string(),
            })
    };
    params.subject_alt_names = vec![
        uri(format!("sip:{sip}"))?,
        uri(format!("{NODE_ID_URN}{node_id}"))?,
        SanType::IpAddress(sip.ip()),
    ];
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, format!("sip:{sip}"));
    params.distinguished_name = subject;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CertError::Generate("no random numbers".into()))?;
    // Positive, and no leading zero byte: the hex form is then unambiguous.
    serial[0] = (serial[0] & 0x7f) | 0x10;
    params.serial_number = Some(SerialNumber::from(serial.to_vec()));
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + NODE_VALIDITY;
    let algorithm = match kind {
        KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
    };
    let key = KeyPair::generate_for(algorithm).map_err(generate)?;
    let cert = params.signed_by(&key, &issuer).map_err(generate)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Reads the node's SIP URI, Node-ID and serial out of a DER certificate.
/// It does not check the signature (TLS and [`crate::node`] callers do).
pub fn parse_node(der: &[u8]) -> Result<NodeCert, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?
        .ok_or("no subjectAltName")?;
    let mut sip = None;
    let mut node_id = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name {
            if let Some(rest) = uri.strip_prefix("sip:") {
                let addr = rest
                    .parse::<SocketAddr>()
                    .map_err(|_| format!("the SIP URI {uri:?} is not sip:IP:PORT"))?;
                if sip.replace(addr).is_some() {
                    return Err("more than one SIP URI".into());
                }
            } else if let Some(hex) = uri.strip_prefix(NODE_ID_URN) {
                if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("the Node-ID {hex:?} is not 40 hex digits"));
                }
                if node_id.replace(hex.to_ascii_lowercase()).is_some() {
                    return Err("more than one Node-ID".into());
                }
            }
        }
    }
    let spki = cert.public_key();
    let key_kind = if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 {
        KeyKind::Ed25519
    } else if spki.algorithm.algorithm == x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        KeyKind::EcdsaP256
    } else {
        return Err(format!(
            "the key's algorithm {} is neither Ed25519 nor ECDSA P-256",
            spki.algorithm.algorithm
        ));
    };
    Ok(NodeCert {
        sip: sip.ok_or("no sip: URI in subjectAltName")?,
        node_id: node_id.ok_or("no urn:p2psip:node-id: URI in subjectAltName")?,
        serial: serial_hex(cert.raw_serial()),
        public_key: spki.subject_public_key.data.to_vec(),
        key_kind,
    })
}

/// The first certificate of a PEM text, as DER.
pub fn first_cert_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
    Ok(pem.contents)
}

/// A serial number as `overlay_revoked` lists it: lower-case hex, no
/// leading zero bytes.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let hex: String = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
    if hex.is_empty() { "00".into() } else { hex }
}

/// A node's signing key (its certificate's key, PEM).
pub struct NodeKey(KeyPair);

impl NodeKey {
    pub fn from_pem(pem: &str) -> Result<NodeKey, String> {
        KeyPair::from_pem(pem)
            .map(NodeKey)
            .map_err(|e| format!("not a PEM private key: {e}"))
    }

    /// A signature over `message` with the key's algorithm ([`KeyKind`]).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.0.sign(message).map_err(|e| e.to_string())
    }

    /// The public key, as a certificate carries it.
    pub fn public_key(&self) -> Vec<u8> {
        self.0.public_key_raw().to_vec()
    }
}

/// Whether `signature` is `public_key`'s signature (of algorithm `kind`)
/// over `message`.
pub fn verify(kind: KeyKind, public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let algorithm: &dyn ring::signature::VerificationAlgorithm = match kind {
        KeyKind::EcdsaP256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
        KeyKind::Ed25519 => &ring::signature::ED25519,
    };
    ring::signature::UnparsedPublicKey::new(algorithm, public_key)
        .verify(message, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        first_cert_der(pem.as_bytes()).expect("PEM")
    }

    #[test]
    fn a_node_certificate_names_its_sip_uri_and_node_id() {
        let ca = crate::new_ca().expect("CA");
        let id = "0123456789abcdef0123456789abcdef01234567";
        let pair = new_node(&ca, "127.0.0.5:5070".parse().unwrap(), id).expect("node");
        let cert = parse_node(&der(&pair.cert_pem)).expect("parsed");
        assert_eq!(cert.sip, "127.0.0.5:5070".parse().unwrap());
        assert_eq!(cert.node_id, id);
        assert!(!cert.serial.starts_with('0'), "{}", cert.serial);
        let other = new_node(&ca, "127.0.0.5:5070".parse().unwrap(), id).expect("node");
        assert_ne!(
            parse_node(&der(&other.cert_pem)).unwrap().serial,
            cert.serial
        );
    }

    #[test]
    fn a_server_certificate_is_not_a_node_certificate() {
        let ca = crate::new_ca().expect("CA");
        let server = crate::new_server(&ca, &["127.0.0.1".into()]).expect("server");
        let err = parse_node(&der(&server.cert_pem)).expect_err("no SIP URI");
        assert!(err.contains("sip:"), "{err}");
        assert!(parse_node(b"junk").is_err());
    }

    #[test]
    fn signatures_verify_with_the_certificate_key_only() {
        let ca = crate::new_ca().expect("CA");
        let id = "0123456789abcdef0123456789abcdef01234567";
        let pair = new_node(&ca, "127.0.0.5:5070".parse().unwrap(), id).expect("node");
        let cert = parse_node(&der(&pair.cert_pem)).expect("parsed");
        let key = NodeKey::from_pem(&pair.key_pem).expect("key");
        assert_eq!(key.public_key(), cert.public_key);
        let signature = key.sign(b"item").expect("signed");
        assert_eq!(cert.key_kind, KeyKind::Ed25519);
        assert!(verify(cert.key_kind, &cert.public_key, b"item", &signature));
        assert!(!verify(
            cert.key_kind,
            &cert.public_key,
            b"itex",
            &signature
        ));
        let other = new_node(&ca, "127.0.0.5:5070".parse().unwrap(), id).expect("node");
        let other = parse_node(&der(&other.cert_pem)).expect("parsed");
        assert!(!verify(
            other.key_kind,
            &other.public_key,
            b"item",
            &signature
        ));
        // A P-256 signature is no Ed25519 one.
        // A node enrolled before Ed25519, with a P-256 key, is still read
        // and believed; the algorithms do not mix.
        let old = new_node_with(
            &ca,
            "127.0.0.5:5070".parse().unwrap(),
            id,
            KeyKind::EcdsaP256,
        )
        .expect("node");
        let old_cert = parse_node(&der(&old.cert_pem)).expect("parsed");
        assert_eq!(old_cert.key_kind, KeyKind::EcdsaP256);
        let old_key = NodeKey::from_pem(&old.key_pem).expect("key");
        assert_eq!(old_key.public_key(), old_cert.public_key);
        let theirs = old_key.sign(b"item").expect("signed");
        assert!(verify(
            KeyKind::EcdsaP256,
            &old_cert.public_key,
            b"item",
            &theirs
        ));
        assert!(!verify(
            KeyKind::Ed25519,
            &old_cert.public_key,
            b"item",
            &theirs
        ));
        assert!(!verify(
            KeyKind::EcdsaP256,
            &cert.public_key,
            b"item",
            &signature
        ));
    }

    #[test]
    fn serials_print_without_leading_zero_bytes() {
        assert_eq!(serial_hex(&[0, 0x1a, 0x02]), "1a02");
        assert_eq!(serial_hex(&[0]), "00");
    }
}
