//! A small certificate authority for a node's SIP over TLS: a CA and the
//! server certificates it signs, as PEM files (`p2psip certs`). Private keys
//! are written readable by their owner only (mode 0600).
//!
//! The CA is meant for one deployment (a lab, a LAN, tests): phones are told
//! to trust `ca.pem`, and each node gets a certificate for the names and
//! addresses phones reach it at (docs/tls.md).

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

pub mod node;
pub use node::{
    KeyKind, NODE_ID_URN, NodeCert, NodeKey, first_cert_der, new_node, parse_node, serial_hex,
    verify,
};

/// The CA certificate in a CA directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key in a CA directory.
pub const CA_KEY: &str = "ca-key.pem";
/// A server certificate in its directory.
pub const SERVER_CERT: &str = "cert.pem";
/// A server's private key in its directory.
pub const SERVER_KEY: &str = "key.pem";
/// A node certificate in its directory (`p2psip certs node`).
pub const NODE_CERT: &str = "node.pem";
/// A node certificate's private key in its directory.
pub const NODE_KEY: &str = "node-key.pem";

/// How long a CA certificate is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a server certificate is valid (the CA/Browser limit some phones apply).
const SERVER_VALIDITY: Duration = Duration::days(825);

/// What went wrong, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: io::Error },
    #[error("{path}: {why}")]
    Parse { path: PathBuf, why: String },
    #[error("name {name:?}: {why}")]
    Name { name: String, why: String },
    #[error("give at least one --name (a DNS name or an IP address)")]
    NoName,
    #[error("cannot make the certificate: {0}")]
    Generate(String),
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A new CA: a self-signed certificate that may sign server certificates only.
pub fn new_ca() -> Result<Pair, CertError> {
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "p2psip CA");
    name.push(DnType::OrganizationName, "p2psip");
    params.distinguished_name = name;
    // A CA for end-entity certificates only: no intermediate below it.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key).map_err(generate)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A server certificate for `names` (DNS names, or IP addresses that go in
/// as IP SANs), signed by the CA.
pub fn new_server(ca: &Pair, names: &[String]) -> Result<Pair, CertError> {
    if names.is_empty() {
        return Err(CertError::NoName);
    }
    let issuer = ca_issuer(ca)?;
    let mut params = CertificateParams::default();
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if is_dns_name(name) => {
                SanType::DnsName(name.clone().try_into().map_err(|e: rcgen::Error| {
                    CertError::Name {
                        name: name.clone(),
                        why: e.to_string(),
                    }
                })?)
            }
            Err(_) => {
                return Err(CertError::Name {
                    name: name.clone(),
                    why: "neither a DNS name nor an IP address".into(),
                });
            }
        };
        params.subject_alt_names.push(san);
    }
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, names[0].as_str());
    params.distinguished_name = subject;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Server, and client for node-to-node TLS with the same certificate.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + SERVER_VALIDITY;
    let key = KeyPair::generate().map_err(generate)?;
    let cert = params.signed_by(&key, &issuer).map_err(generate)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The CA as an issuer of certificates.
fn ca_issuer(ca: &Pair) -> Result<Issuer<'static, KeyPair>, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|e| CertError::Parse {
        path: CA_KEY.into(),
        why: e.to_string(),
    })?;
    Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(|e| CertError::Parse {
        path: CA_CERT.into(),
        why: e.to_string(),
    })
}

/// `p2psip certs node --ca DIR --sip IP:PORT --out DIR`: writes `node.pem`
/// and `node-key.pem` into `out`, for the node at `sip` whose Node-ID is
/// `node_id` (hex), signed by the CA in `ca_dir`.
pub fn write_node(
    ca_dir: &Path,
    sip: std::net::SocketAddr,
    node_id: &str,
    out: &Path,
) -> Result<Pair, CertError> {
    let ca = Pair {
        cert_pem: read(&ca_dir.join(CA_CERT))?,
        key_pem: read(&ca_dir.join(CA_KEY))?,
    };
    let pair = new_node(&ca, sip, node_id).map_err(|e| match e {
        CertError::Parse { path, why } => CertError::Parse {
            path: ca_dir.join(path),
            why,
        },
        other => other,
    })?;
    write_pair(out, &pair, NODE_CERT, NODE_KEY)?;
    Ok(pair)
}

/// `p2psip certs ca --out DIR`: writes `ca.pem` and `ca-key.pem` into `out`.
pub fn write_ca(out: &Path) -> Result<Pair, CertError> {
    let pair = new_ca()?;
    write_pair(out, &pair, CA_CERT, CA_KEY)?;
    Ok(pair)
}

/// `p2psip certs server --ca DIR --name N… --out DIR`: writes `cert.pem` and
/// `key.pem` into `out`, signed by the CA in `ca_dir`.
pub fn write_server(ca_dir: &Path, names: &[String], out: &Path) -> Result<Pair, CertError> {
    let ca = Pair {
        cert_pem: read(&ca_dir.join(CA_CERT))?,
        key_pem: read(&ca_dir.join(CA_KEY))?,
    };
    let pair = new_server(&ca, names).map_err(|e| match e {
        CertError::Parse { path, why } => CertError::Parse {
            path: ca_dir.join(path),
            why,
        },
        other => other,
    })?;
    write_pair(out, &pair, SERVER_CERT, SERVER_KEY)?;
    Ok(pair)
}

/// Letters, digits and hyphens in dot-separated labels; `*.` may lead.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|why| CertError::File {
        path: path.to_path_buf(),
        why,
    })
}

fn write_pair(out: &Path, pair: &Pair, cert: &str, key: &str) -> Result<(), CertError> {
    fs::create_dir_all(out).map_err(|why| CertError::File {
        path: out.to_path_buf(),
        why,
    })?;
    write_file(&out.join(key), &pair.key_pem, true)?;
    write_file(&out.join(cert), &pair.cert_pem, false)
}

/// Writes a file; a private one is created with mode 0600 (and an existing
/// one is set to 0600 before anything is written to it).
fn write_file(path: &Path, text: &str, private: bool) -> Result<(), CertError> {
    let fail = |why| CertError::File {
        path: path.to_path_buf(),
        why,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        if path.exists() {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(fail)?;
        }
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

fn generate(e: rcgen::Error) -> CertError {
    CertError::Generate(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("p2psip-certs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_ca_signs_a_server_certificate_with_ip_and_dns_names() {
        let dir = temp_dir("sign");
        write_ca(&dir.join("ca")).expect("CA written");
        let names = vec!["127.0.0.1".to_string(), "node.example.test".to_string()];
        let server = write_server(&dir.join("ca"), &names, &dir.join("server")).expect("server");
        assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(server.key_pem.contains("PRIVATE KEY"));
        #[cfg(unix)]
        for key in [
            dir.join("ca").join(CA_KEY),
            dir.join("server").join(SERVER_KEY),
        ] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&key).expect("key file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_file_or_the_name() {
        let dir = temp_dir("errors");
        let err = write_server(&dir, &["a.test".into()], &dir.join("out")).expect_err("no CA");
        assert!(err.to_string().contains(CA_CERT), "{err}");
        write_ca(&dir).expect("CA");
        let err = write_server(&dir, &[], &dir.join("out")).expect_err("no name");
        assert!(matches!(err, CertError::NoName));
        let err = write_server(&dir, &["bad name!".into()], &dir.join("out")).expect_err("bad");
        assert!(err.to_string().contains("bad name!"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
