//! ENUM (RFC 6116): the NAPTR lookup of an E.164 number, the `E2U+sip`
//! service test and the RFC 3402 substitution expression.

use hickory_proto::rr::{Name, RecordType};
use tracing::debug;

use super::{SipResolver, fqdn, is_no_data, naptrs_in_order};
use crate::DnsError;

impl SipResolver {
    /// ENUM (RFC 6116): NAPTR for an E.164 number `"+12125551234"` under
    /// `suffix` (`"e164.arpa"` when empty); the first usable `E2U+sip` URI
    /// after applying the NAPTR regexp, by order/preference, or `None`.
    pub async fn enum_lookup(&self, e164: &str, suffix: &str) -> Result<Option<String>, DnsError> {
        let name = enum_domain(e164, suffix)?;
        let aus = normalize_e164(e164)?;
        let lookup = match self
            .inner
            .resolver
            .lookup(name.clone(), RecordType::NAPTR)
            .await
        {
            Ok(l) => l,
            Err(e) if is_no_data(&e) => return Ok(None),
            Err(e) => {
                return Err(DnsError::Lookup {
                    name: name.to_ascii(),
                    reason: e.to_string(),
                });
            }
        };
        let naptrs = naptrs_in_order(&lookup);
        for n in naptrs {
            if !n.flags.eq_ignore_ascii_case(b"u") || !is_e2u_sip(&n.services) {
                continue;
            }
            let Ok(regexp) = std::str::from_utf8(&n.regexp) else {
                continue;
            };
            match apply_naptr_regexp(regexp, &aus) {
                Some(uri) if has_sip_scheme(&uri) => return Ok(Some(uri)),
                Some(uri) => debug!(%uri, "ENUM result is not a SIP URI"),
                None => debug!(%regexp, "ENUM regexp did not match"),
            }
        }
        Ok(None)
    }
}

fn has_sip_scheme(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    lower.starts_with("sip:") || lower.starts_with("sips:")
}

/// `E2U+sip` (RFC 3764), also with a subtype (`E2U+sip:x`), and the old
/// RFC 2916 spelling `sip+E2U`.
pub(super) fn is_e2u_sip(services: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(services) else {
        return false;
    };
    let parts: Vec<String> = s.split('+').map(|p| p.to_ascii_lowercase()).collect();
    let has_e2u = parts.iter().any(|p| p == "e2u");
    let has_sip = parts.iter().any(|p| p == "sip" || p.starts_with("sip:"));
    has_e2u && has_sip
}

/// `+1 212-555 1234` → `+12125551234`, or [`DnsError::InvalidE164`].
fn normalize_e164(e164: &str) -> Result<String, DnsError> {
    crate::e164::normalize_e164(e164).ok_or_else(|| DnsError::InvalidE164(e164.to_string()))
}

/// `+12125551234`, `e164.arpa` → `4.3.2.1.5.5.5.2.1.2.1.e164.arpa.`
pub fn enum_domain(e164: &str, suffix: &str) -> Result<Name, DnsError> {
    let aus = normalize_e164(e164)?;
    let suffix = suffix.trim().trim_matches('.');
    let suffix = if suffix.is_empty() {
        "e164.arpa"
    } else {
        suffix
    };
    let mut labels: Vec<String> = aus[1..].chars().rev().map(|c| c.to_string()).collect();
    labels.push(suffix.to_string());
    fqdn(&labels.join("."))
}

/// Apply a NAPTR substitution expression (RFC 3402 §3.2:
/// `<delim>ERE<delim>replacement<delim>flags`, backreferences `\1`..`\9`,
/// flag `i` = case-insensitive) to `input`. `None` when malformed or no match.
pub fn apply_naptr_regexp(expr: &str, input: &str) -> Option<String> {
    let mut chars = expr.chars();
    let delim = chars.next()?;
    if delim.is_ascii_alphanumeric() || delim == '\\' {
        return None;
    }
    // Split on unescaped delimiters; `\<delim>` stands for the delimiter itself.
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in chars {
        if escaped {
            if c != delim {
                parts.last_mut()?.push('\\');
            }
            parts.last_mut()?.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delim {
            parts.push(String::new());
        } else {
            parts.last_mut()?.push(c);
        }
    }
    if escaped || parts.len() != 3 {
        return None;
    }
    let (ere, repl, flags) = (&parts[0], &parts[1], &parts[2]);
    let pattern = if flags.contains('i') {
        format!("(?i){ere}")
    } else {
        ere.clone()
    };
    let re = regex::Regex::new(&pattern).ok()?;
    let caps = re.captures(input)?;
    let mut out = String::new();
    let mut it = repl.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some(d @ '0'..='9') => {
                    let idx = d.to_digit(10)? as usize;
                    out.push_str(caps.get(idx).map(|m| m.as_str()).unwrap_or(""));
                }
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}
