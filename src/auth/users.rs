//! The users file (`--users FILE`): one line per user, the address-of-record
//! and the digest HA1s of her password for the MD5 and SHA-256 algorithms
//! (RFC 3261 §22, RFC 7616, RFC 8760), never the password itself:
//!
//! ```text
//! alice@example.test md5=0c2d… sha256=5f0e…
//! ```
//!
//! The realm is the AOR's domain and the digest username its user part,
//! which is what phones send by default. `#` starts a comment.

use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::registrar::binding::Aor;

/// One user's credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub aor: Aor,
    /// MD5(username:realm:password), hex.
    pub md5: String,
    /// SHA-256(username:realm:password), hex.
    pub sha256: String,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("aor", &self.aor)
            .finish_non_exhaustive()
    }
}

/// The digest algorithms the node knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum Algorithm {
    #[serde(rename = "SHA-256")]
    Sha256,
    #[serde(rename = "MD5")]
    Md5,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }

    /// The algorithm named in a header (absent means MD5, RFC 2617).
    pub fn parse(name: Option<&str>) -> Option<Algorithm> {
        match name.map(str::trim) {
            None => Some(Algorithm::Md5),
            Some(n) if n.eq_ignore_ascii_case("md5") => Some(Algorithm::Md5),
            Some(n) if n.eq_ignore_ascii_case("sha-256") => Some(Algorithm::Sha256),
            Some(_) => None,
        }
    }

    /// The hash of `data` in hex.
    pub fn hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl UserRecord {
    /// The record of `aor` with `password` (realm = the AOR's domain).
    pub fn new(aor: Aor, password: &str) -> UserRecord {
        let (user, realm) = split(&aor);
        let a1 = format!("{user}:{realm}:{password}");
        UserRecord {
            md5: Algorithm::Md5.hex(&a1),
            sha256: Algorithm::Sha256.hex(&a1),
            aor,
        }
    }

    /// The HA1 for `algorithm`.
    pub fn ha1(&self, algorithm: Algorithm) -> &str {
        match algorithm {
            Algorithm::Md5 => &self.md5,
            Algorithm::Sha256 => &self.sha256,
        }
    }

    /// The user part (the digest username) and the domain (the realm).
    pub fn user_and_realm(&self) -> (&str, &str) {
        split(&self.aor)
    }

    /// The line of the users file, and the value of the credential item in the ring.
    pub fn to_line(&self) -> String {
        format!("{} md5={} sha256={}", self.aor, self.md5, self.sha256)
    }

    /// Parses one line; `None` for a blank or comment line.
    pub fn parse_line(line: &str) -> Option<Result<UserRecord, String>> {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            return None;
        }
        Some(parse_record(line))
    }
}

fn parse_record(line: &str) -> Result<UserRecord, String> {
    let mut words = line.split_whitespace();
    let aor_text = words.next().ok_or("empty line")?;
    let (user, domain) = aor_text
        .split_once('@')
        .filter(|(u, d)| !u.is_empty() && !d.is_empty())
        .ok_or_else(|| format!("{aor_text:?} is not user@domain"))?;
    let (mut md5, mut sha256) = (None, None);
    for word in words {
        match word.split_once('=') {
            Some(("md5", v)) if is_hex(v, 32) => md5 = Some(v.to_ascii_lowercase()),
            Some(("sha256", v)) if is_hex(v, 64) => sha256 = Some(v.to_ascii_lowercase()),
            _ => {
                return Err(format!(
                    "{word:?}: expected md5=<32 hex> or sha256=<64 hex>"
                ));
            }
        }
    }
    Ok(UserRecord {
        aor: Aor::new(user, domain),
        md5: md5.ok_or("no md5= HA1")?,
        sha256: sha256.ok_or("no sha256= HA1")?,
    })
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn split(aor: &Aor) -> (&str, &str) {
    aor.as_str().rsplit_once('@').unwrap_or((aor.as_str(), ""))
}

/// Parses a whole users file: the records, or the first bad line (1-based) and why.
pub fn parse_users(text: &str) -> Result<Vec<UserRecord>, (usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| UserRecord::parse_line(line).map(|r| r.map_err(|e| (i + 1, e))))
        .collect()
}

/// `text` with `record` added, or replacing the line of the same AOR.
pub fn with_user(text: &str, record: &UserRecord) -> String {
    let mut out = String::new();
    let mut replaced = false;
    for line in text.lines() {
        let same = matches!(UserRecord::parse_line(line), Some(Ok(r)) if r.aor == record.aor);
        if same {
            if !replaced {
                out.push_str(&record.to_line());
                out.push('\n');
                replaced = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(&record.to_line());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_carry_no_password() {
        let r = UserRecord::new(Aor::new("alice", "Example.Test"), "secret");
        // RFC 2617's HA1 = MD5("alice:example.test:secret").
        assert_eq!(r.md5, Algorithm::Md5.hex("alice:example.test:secret"));
        assert_eq!(r.sha256.len(), 64);
        let line = r.to_line();
        assert!(!line.contains("secret"));
        assert_eq!(UserRecord::parse_line(&line), Some(Ok(r.clone())));
        let text = with_user(
            "# users\nbob@example.test md5=00000000000000000000000000000000 sha256=0000000000000000000000000000000000000000000000000000000000000000\n",
            &r,
        );
        let users = parse_users(&text).expect("parses");
        assert_eq!(users.len(), 2);
        let again = with_user(&text, &UserRecord::new(r.aor.clone(), "other"));
        assert_eq!(
            parse_users(&again).expect("parses").len(),
            2,
            "replaced, not added"
        );
        assert!(parse_users("alice@x md5=zz").is_err());
        assert!(matches!(parse_users("x\n"), Err((1, _))));
    }
}
