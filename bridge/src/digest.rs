//! HTTP Digest, client side (RFC 2617, RFC 7616 §3.4 with MD5, as used by
//! SIP in RFC 3261 §22): answer a `WWW-Authenticate` / `Proxy-Authenticate`
//! challenge with an `Authorization` / `Proxy-Authorization` value.
//!
//! Supported: algorithm `MD5` (the default) and `MD5-sess`; `qop=auth` and
//! no qop (RFC 2069 compatibility). `opaque` is echoed. `auth-int` only
//! (without `auth`) and other algorithms are refused with an error.

use md5::{Digest, Md5};

/// Username and password for one realm.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Why a challenge cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("not a Digest challenge")]
    NotDigest,
    #[error("Digest challenge without {0}")]
    Missing(&'static str),
    #[error("unsupported Digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("unsupported qop {0:?} (only auth)")]
    UnsupportedQop(String),
    #[error("malformed Digest challenge: {0}")]
    Malformed(String),
}

/// A parsed Digest challenge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// As given (`None` = MD5).
    pub algorithm: Option<String>,
    /// The qop options offered, lower case.
    pub qop: Vec<String>,
    pub stale: bool,
}

/// Splits `name=value, name="quoted \" value", …` into pairs (names in
/// lower case): the parameters of a challenge or of credentials.
pub fn parse_params(s: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(DigestError::Malformed(format!(
                "parameter {name:?} without value"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.push(chars.next().ok_or_else(|| {
                        DigestError::Malformed("unterminated quoted string".into())
                    })?),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(DigestError::Malformed("unterminated quoted string".into()));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((name.to_ascii_lowercase(), value));
    }
}

/// Parses a `WWW-Authenticate` / `Proxy-Authenticate` value.
pub fn parse_challenge(challenge: &str) -> Result<Challenge, DigestError> {
    let s = challenge.trim();
    let (scheme, rest) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(DigestError::NotDigest);
    }
    let mut c = Challenge::default();
    let mut realm = None;
    let mut nonce = None;
    for (name, value) in parse_params(rest)? {
        match name.as_str() {
            "realm" => realm = Some(value),
            "nonce" => nonce = Some(value),
            "opaque" => c.opaque = Some(value),
            "algorithm" => c.algorithm = Some(value),
            "qop" => {
                c.qop = value
                    .split(',')
                    .map(|q| q.trim().to_ascii_lowercase())
                    .filter(|q| !q.is_empty())
                    .collect()
            }
            "stale" => c.stale = value.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    c.realm = realm.ok_or(DigestError::Missing("realm"))?;
    c.nonce = nonce.ok_or(DigestError::Missing("nonce"))?;
    if let Some(a) = &c.algorithm
        && !a.eq_ignore_ascii_case("md5")
        && !a.eq_ignore_ascii_case("md5-sess")
    {
        return Err(DigestError::UnsupportedAlgorithm(a.clone()));
    }
    if !c.qop.is_empty() && !c.qop.iter().any(|q| q == "auth") {
        return Err(DigestError::UnsupportedQop(c.qop.join(",")));
    }
    Ok(c)
}

fn md5_hex(data: &str) -> String {
    let digest = Md5::digest(data.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `Authorization` (or `Proxy-Authorization`) value answering
/// `challenge` for a request `method` to `uri` (the Request-URI as sent).
/// `cnonce` and `nc` are used only when the challenge offers `qop=auth`.
pub fn authorization(
    challenge: &str,
    method: &str,
    uri: &str,
    creds: &Credentials,
    cnonce: &str,
    nc: u32,
) -> Result<String, DigestError> {
    let c = parse_challenge(challenge)?;
    let sess = c
        .algorithm
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case("md5-sess"));
    let qop_auth = c.qop.iter().any(|q| q == "auth");
    if (sess || qop_auth) && cnonce.is_empty() {
        return Err(DigestError::Malformed("empty cnonce".into()));
    }
    let mut ha1 = md5_hex(&format!(
        "{}:{}:{}",
        creds.username, c.realm, creds.password
    ));
    if sess {
        ha1 = md5_hex(&format!("{ha1}:{}:{cnonce}", c.nonce));
    }
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let nc_hex = format!("{nc:08x}");
    let response = if qop_auth {
        md5_hex(&format!("{ha1}:{}:{nc_hex}:{cnonce}:auth:{ha2}", c.nonce))
    } else {
        md5_hex(&format!("{ha1}:{}:{ha2}", c.nonce))
    };
    let mut out = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\"",
        quote(&creds.username),
        quote(&c.realm),
        quote(&c.nonce),
        quote(uri),
    );
    if let Some(a) = &c.algorithm {
        out.push_str(&format!(", algorithm={a}"));
    }
    if qop_auth {
        out.push_str(&format!(
            ", cnonce={}, qop=auth, nc={nc_hex}",
            quote(cnonce)
        ));
    } else if sess {
        out.push_str(&format!(", cnonce={}", quote(cnonce)));
    }
    if let Some(o) = &c.opaque {
        out.push_str(&format!(", opaque={}", quote(o)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mufasa() -> Credentials {
        Credentials {
            username: "Mufasa".into(),
            password: "Circle Of Life".into(),
        }
    }

    fn param<'a>(header: &'a str, name: &str) -> Option<&'a str> {
        header
            .trim_start_matches("Digest ")
            .split(", ")
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
    }

    /// RFC 2617 §3.5.
    #[test]
    fn rfc2617_example() {
        let challenge = r#"Digest
                 realm="testrealm@host.com",
                 qop="auth,auth-int",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let h = authorization(
            challenge,
            "GET",
            "/dir/index.html",
            &mufasa(),
            "0a4f113b",
            1,
        )
        .unwrap();
        assert_eq!(
            param(&h, "response"),
            Some("\"6629fae49393a05397450978507c4ef1\"")
        );
        assert_eq!(param(&h, "username"), Some("\"Mufasa\""));
        assert_eq!(param(&h, "realm"), Some("\"testrealm@host.com\""));
        assert_eq!(param(&h, "uri"), Some("\"/dir/index.html\""));
        assert_eq!(param(&h, "qop"), Some("auth"));
        assert_eq!(param(&h, "nc"), Some("00000001"));
        assert_eq!(param(&h, "cnonce"), Some("\"0a4f113b\""));
        assert_eq!(
            param(&h, "opaque"),
            Some("\"5ccc069c403ebaf9f0171e9517f40e41\"")
        );
        assert_eq!(param(&h, "algorithm"), None);
        assert!(h.starts_with("Digest "));
    }

    /// No qop (RFC 2069): response = MD5(HA1:nonce:HA2), no cnonce/nc.
    #[test]
    fn without_qop() {
        let challenge = r#"Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", algorithm=MD5"#;
        let h =
            authorization(challenge, "GET", "/dir/index.html", &mufasa(), "ignored", 1).unwrap();
        // Computed independently with Python's hashlib:
        // md5(md5("Mufasa:testrealm@host.com:Circle Of Life") + ":" + nonce + ":" + md5("GET:/dir/index.html"))
        let expected = "670fd8c2df070c60b045671b8b24ff02";
        assert_eq!(
            param(&h, "response"),
            Some(format!("\"{expected}\"").as_str())
        );
        assert_eq!(param(&h, "qop"), None);
        assert_eq!(param(&h, "nc"), None);
        assert_eq!(param(&h, "cnonce"), None);
        assert_eq!(param(&h, "opaque"), None);
        assert_eq!(param(&h, "algorithm"), Some("MD5"));
    }

    #[test]
    fn sip_register_challenge() {
        // As Kamailio/Asterisk send it: unquoted algorithm, qop="auth".
        let challenge =
            "Digest realm=\"legacy.test\", nonce=\"abc\", qop=\"auth\", algorithm=MD5, stale=TRUE";
        let c = parse_challenge(challenge).unwrap();
        assert!(c.stale);
        assert_eq!(c.qop, vec!["auth".to_string()]);
        let creds = Credentials {
            username: "alice".into(),
            password: "pw".into(),
        };
        let h = authorization(challenge, "REGISTER", "sip:legacy.test", &creds, "c1", 2).unwrap();
        let ha1 = md5_hex("alice:legacy.test:pw");
        let ha2 = md5_hex("REGISTER:sip:legacy.test");
        let expected = md5_hex(&format!("{ha1}:abc:00000002:c1:auth:{ha2}"));
        assert_eq!(
            param(&h, "response"),
            Some(format!("\"{expected}\"").as_str())
        );
    }

    #[test]
    fn md5_sess() {
        let challenge = "Digest realm=\"r\", nonce=\"n\", qop=\"auth\", algorithm=MD5-sess";
        let creds = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        let h = authorization(challenge, "REGISTER", "sip:r", &creds, "cn", 1).unwrap();
        let ha1 = md5_hex(&format!("{}:n:cn", md5_hex("u:r:p")));
        let ha2 = md5_hex("REGISTER:sip:r");
        let expected = md5_hex(&format!("{ha1}:n:00000001:cn:auth:{ha2}"));
        assert_eq!(
            param(&h, "response"),
            Some(format!("\"{expected}\"").as_str())
        );
        assert_eq!(param(&h, "algorithm"), Some("MD5-sess"));
    }

    #[test]
    fn quoting_and_errors() {
        let creds = Credentials {
            username: "a\"b".into(),
            password: "p".into(),
        };
        let h = authorization(
            "Digest realm=\"r\\\"x\", nonce=\"n\"",
            "REGISTER",
            "sip:r",
            &creds,
            "c",
            1,
        )
        .unwrap();
        assert!(h.contains(r#"username="a\"b""#), "{h}");
        assert!(h.contains(r#"realm="r\"x""#), "{h}");
        assert_eq!(
            authorization("Basic realm=\"r\"", "GET", "/", &creds, "c", 1),
            Err(DigestError::NotDigest)
        );
        assert_eq!(
            authorization("Digest nonce=\"n\"", "GET", "/", &creds, "c", 1),
            Err(DigestError::Missing("realm"))
        );
        assert!(matches!(
            authorization(
                "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256",
                "GET",
                "/",
                &creds,
                "c",
                1
            ),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            authorization(
                "Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"",
                "GET",
                "/",
                &creds,
                "c",
                1
            ),
            Err(DigestError::UnsupportedQop(_))
        ));
        assert!(matches!(
            authorization("Digest realm=\"r, nonce=\"n\"", "GET", "/", &creds, "c", 1),
            Err(DigestError::Malformed(_))
        ));
    }
}
