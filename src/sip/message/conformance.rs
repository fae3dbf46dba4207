//! Where ezk-sip-types and RFC 3261 disagree (RFC 4475, `tests/torture.rs`,
//! docs/decisions.md): the checks that refuse what the RFC forbids but the
//! crate accepts, and the rewrites that let the crate read what the RFC
//! allows (quoted display names with `\"`, escaped `%` in a Request-URI).

use super::*;

/// Headers whose values are `name-addr` or `addr-spec` (RFC 3261 §20).
fn is_name_addr_header(name: &Name) -> bool {
    [
        Name::FROM,
        Name::TO,
        Name::CONTACT,
        Name::ROUTE,
        Name::RECORD_ROUTE,
        Name::REPLY_TO,
    ]
    .contains(name)
}

/// What RFC 3261 forbids but ezk-sip-types accepts (RFC 4475 §3.1.2, §3.3.8,
/// §3.3.9): a request line with extra or trailing white space, a `<…>` or
/// escaped headers in the Request-URI, a repeated single-value header, an
/// unbalanced quote, an empty parameter or list element, an addr-spec
/// carrying `?` headers or spaces, a non-GMT Date, a control character in a
/// header value.
pub(super) fn conformance(first: &str, start: &Start, headers: &Headers) -> Result<(), ParseError> {
    let bad = |what: &str| Err(ParseError::BadHeader(what.to_string()));
    if let Start::Request(_, uri) = start {
        if !strict_request_line(first) {
            return Err(ParseError::BadStartLine);
        }
        if let RequestUri::Sip(uri) = uri
            && !uri.header_params.is_empty()
        {
            return Err(ParseError::BadStartLine);
        }
        if matches!(uri, RequestUri::Sip(_))
            && !first
                .split(' ')
                .nth(1)
                .is_some_and(escapes_survive_printing)
        {
            return Err(ParseError::BadStartLine);
        }
    }
    for name in [
        Name::FROM,
        Name::TO,
        Name::CALL_ID,
        Name::CSEQ,
        Name::MAX_FORWARDS,
        Name::CONTENT_LENGTH,
    ] {
        if headers.get_raw(&name).count() > 1 {
            return bad(&format!("more than one {}", name.as_print_str()));
        }
    }
    for (name, value) in headers.iter() {
        // No control characters but white space in a header value, except
        // quoted-pairs (RFC 3261 §25.1: tokens and qdtext exclude CTLs;
        // RFC 4475's `intmeth` quotes a NUL as `\` NUL): ezk-sip-types takes a
        // NUL as a parameter name and prints it back, so a Via such as
        // `branch=x;\0` came back as `;\0;received=…`, which nobody parses
        // (found by the `core_input` fuzz target).
        if has_bare_control(value) {
            return bad(&format!(
                "{}: control character in the value",
                name.as_print_str()
            ));
        }
        if *name == Name::VIA {
            for via in
                split_outside(value, b',').ok_or(ParseError::BadHeader("Via quotes".into()))?
            {
                if !params_well_formed(via) {
                    return bad("Via: empty value or parameter");
                }
                if !param_names_are_tokens(via) {
                    return bad("Via: a parameter name that is not a token");
                }
            }
        } else if is_name_addr_header(name) {
            if *name == Name::CONTACT && value.trim() == "*" {
                continue;
            }
            let Some(elements) = split_outside(value, b',') else {
                return bad(&format!("{}: unbalanced quotes or <>", name.as_print_str()));
            };
            if elements.len() > 1 && (*name == Name::FROM || *name == Name::TO) {
                return bad(&format!("more than one {}", name.as_print_str()));
            }
            for element in elements {
                if !name_addr_well_formed(element) {
                    return bad(&format!("{}: malformed address", name.as_print_str()));
                }
            }
        } else if *name == Name::DATE && !is_rfc1123_gmt(value) {
            return bad("Date: not an RFC 1123 date in GMT");
        }
    }
    Ok(())
}

/// Whether `value` holds a control character (but HTAB, CR, LF) that is not
/// a quoted-pair inside a quoted string.
fn has_bare_control(value: &str) -> bool {
    let (mut quoted, mut escaped) = (false, false);
    for b in value.bytes() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'"' => quoted = !quoted,
            b'\\' if quoted => escaped = true,
            b'\t' | b'\r' | b'\n' => {}
            b if b < 0x20 || b == 0x7f => return true,
            _ => {}
        }
    }
    false
}

/// ezk-sip-types decodes `%XX` in a SIP URI's user and parameters and
/// prints them again with `%` left as it is: `sip:100%25off@h` would be
/// forwarded as `sip:100%off@h`. [`reescape_user`] fixes the user part when
/// printing; this refuses what cannot be printed back: a `%` that is not an
/// escape (`escaped = "%" HEXDIG HEXDIG`, RFC 3261 §25.1), or an escaped `%`
/// after the user part (parameters, an IPv6 zone).
fn escapes_survive_printing(uri: &str) -> bool {
    let bytes = uri.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    let after_user = uri.split_once('@').map_or(uri, |(_, rest)| rest);
    well_formed && !after_user.to_ascii_lowercase().contains("%25")
}

/// The printed Request-URI with the user part escaped again, `%` included
/// (ezk's own printing leaves a decoded `%` bare; see
/// [`escapes_survive_printing`]).
pub(crate) fn reescape_user(uri: &SipUri, printed: String) -> String {
    use ezk_sip_types::uri::SipUriUserPart;
    let user = match &uri.user_part {
        SipUriUserPart::User(user) => user,
        SipUriUserPart::UserPw(user_pw) => &user_pw.user,
        SipUriUserPart::Empty => return printed,
    };
    if !user.contains('%') {
        return printed;
    }
    let scheme = if uri.sips { "sips:" } else { "sip:" };
    let Some(rest) = printed.strip_prefix(scheme) else {
        return printed;
    };
    // ezk escapes `:` and `@` in the user, so the first of them ends it.
    let Some(end) = rest.find([':', '@']) else {
        return printed;
    };
    let mut out = String::with_capacity(printed.len() + 8);
    out.push_str(scheme);
    for b in user.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(b) {
            out.push(*b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out.push_str(&rest[end..]);
    out
}

/// `Method SP Request-URI SP SIP-Version`: single spaces, nothing after the
/// version, no `<>` around the URI (RFC 3261 §25.1; RFC 4475 §3.1.2.7–10).
fn strict_request_line(line: &str) -> bool {
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && !uri.is_empty()
        && !uri.starts_with('<')
        && version == "SIP/2.0"
        && !line.contains(['\t', '\r', '\n'])
}

/// Splits `value` at `sep` where it is outside quoted strings and `<…>`;
/// `None` when a quoted string or a `<` is not closed.
fn split_outside(value: &str, sep: u8) -> Option<Vec<&str>> {
    let bytes = value.as_bytes();
    let mut parts = Vec::new();
    let (mut quoted, mut angle, mut start, mut i) = (false, false, 0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            match b {
                b'\\' => i += 1,
                b'"' => quoted = false,
                _ => {}
            }
        } else if angle {
            if b == b'>' {
                angle = false;
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == b'<' {
            angle = true;
        } else if b == sep {
            parts.push(&value[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    if quoted || angle {
        return None;
    }
    parts.push(&value[start.min(value.len())..]);
    Some(parts)
}

/// Whether every `;` parameter after the first part of `value` is named by
/// a token (RFC 3261 §25.1 `generic-param`): ezk-sip-types takes
/// `;\\branch=x` and prints it back as an empty parameter (found by the
/// `core_input` fuzz target).
fn param_names_are_tokens(value: &str) -> bool {
    let Some(parts) = split_outside(value, b';') else {
        return false;
    };
    parts.iter().skip(1).all(|p| {
        let name = p.split('=').next().unwrap_or("").trim();
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
    })
}

/// A non-empty value whose `;` parameters are each non-empty.
fn params_well_formed(value: &str) -> bool {
    let Some(parts) = split_outside(value, b';') else {
        return false;
    };
    parts.iter().all(|p| !p.trim().is_empty())
}

/// One `name-addr` or `addr-spec` with its parameters (RFC 3261 §20.10):
/// non-empty parameters; an addr-spec (no `<>`) may not carry `?` headers or
/// white space, and no white space just inside `<` and `>`.
fn name_addr_well_formed(element: &str) -> bool {
    let element = element.trim();
    if element.is_empty() || !params_well_formed(element) {
        return false;
    }
    let uri = match position_outside_quotes(element, b'<') {
        Some(open) => {
            let rest = &element[open + 1..];
            match rest.find('>') {
                Some(close) => &rest[..close],
                None => return false,
            }
        }
        None => {
            let uri = split_outside(element, b';')
                .and_then(|p| p.first().copied())
                .unwrap_or("")
                .trim();
            if uri.contains(['?', '>', '"']) {
                return false;
            }
            uri
        }
    };
    !uri.is_empty() && !uri.contains(|c: char| c.is_ascii_whitespace())
}

/// Where `byte` first occurs outside quoted strings.
fn position_outside_quotes(value: &str, byte: u8) -> Option<usize> {
    let bytes = value.as_bytes();
    let (mut quoted, mut i) = (false, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b if b == byte && !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// `rfc1123-date` (RFC 3261 §20.17): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn is_rfc1123_gmt(value: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let Some((day, rest)) = value.trim().split_once(", ") else {
        return false;
    };
    let parts: Vec<&str> = rest.split(' ').collect();
    let [date, month, year, time, zone] = parts[..] else {
        return false;
    };
    let time: Vec<&str> = time.split(':').collect();
    DAYS.contains(&day)
        && digits(date, 2)
        && MONTHS.contains(&month)
        && digits(year, 4)
        && time.len() == 3
        && time.iter().all(|t| digits(t, 2))
        && zone == "GMT"
}

/// ezk-sip-types reads a quoted display name up to the first `"`, so a
/// quoted-pair `\"` inside it (`"J Rosenberg \\\""`, RFC 4475 §3.1.1.1)
/// leaves the whole From/To/Contact unparsable. For those headers each `\"`
/// inside a quoted string outside `<>` becomes U+201D (”), which reads the
/// same to a person and which ezk can parse; every other byte is kept.
/// `None` when nothing needs changing.
pub(super) fn requote_display_names(name: &Name, value: &str) -> Option<String> {
    if !is_name_addr_header(name) || !value.contains("\\\"") {
        return None;
    }
    let mut out = String::with_capacity(value.len() + 4);
    let (mut quoted, mut angle, mut changed) = (false, false, false);
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '\\' => match chars.next() {
                    Some('"') => {
                        out.push('\u{201D}');
                        changed = true;
                    }
                    Some(next) => {
                        out.push('\\');
                        out.push(next);
                    }
                    None => out.push('\\'),
                },
                '"' => {
                    quoted = false;
                    out.push(c);
                }
                _ => out.push(c),
            }
            continue;
        }
        match c {
            '"' if !angle => quoted = true,
            '<' => angle = true,
            '>' => angle = false,
            _ => {}
        }
        out.push(c);
    }
    changed.then_some(out)
}
