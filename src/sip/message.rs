//! SIP messages: parsing a whole message from bytes, printing it back, and the
//! few header accessors every layer needs.
//!
//! Parsing stands on `ezk-sip-types` (see `docs/decisions.md`): its pull
//! parser splits lines (folded headers included), its `Name` knows compact
//! header names, and typed headers are parsed on demand from the raw values.
//! Two gaps of that crate are covered here, in one place:
//! - its request line only takes `sip:`/`sips:` URIs, so other schemes
//!   (`tel:`, `urn:`) are kept as [`RequestUri::Other`];
//! - it has no message type, so [`Request`] and [`Response`] live here;
//! - it accepts what RFC 3261 forbids and fails on what it allows (RFC 4475,
//!   `tests/torture.rs`): [`conformance`] refuses the former, and
//!   [`requote_display_names`] makes quoted display names with `\"` readable
//!   (docs/decisions.md lists each gap).

use std::fmt::{self, Write as _};

use bytes::{Bytes, BytesMut};
use bytesstr::BytesStr;
use ezk_sip_types::header::typed::{CSeq, CallID, FromTo, MaxForwards, Via};
use ezk_sip_types::msg::{Line, MessageLine, PullParser};
use ezk_sip_types::parse::Parse;
use ezk_sip_types::print::{AppendCtx, PrintCtx, UriContext};
use ezk_sip_types::uri::SipUri;
use ezk_sip_types::{Headers, Method, Name, StatusCode};

/// Largest message accepted on any transport.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Most header lines accepted in one message.
pub const MAX_HEADERS: usize = 128;

/// Why bytes are not a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message larger than {MAX_MESSAGE_SIZE} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    #[error("message head is incomplete")]
    Incomplete,
    #[error("message is not UTF-8 text")]
    NotText,
    #[error("bad start line")]
    BadStartLine,
    #[error("bad header line: {0}")]
    BadHeader(String),
    #[error("missing or malformed {0} header")]
    MissingHeader(&'static str),
    #[error("Content-Length {declared} exceeds the {available} bytes of body")]
    BodyTruncated { declared: usize, available: usize },
}

/// The Request-URI: a SIP URI, or any other absolute URI (`tel:` …) kept as text.
#[derive(Clone, Debug)]
pub enum RequestUri {
    Sip(SipUri),
    Other(BytesStr),
}

impl RequestUri {
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            RequestUri::Sip(uri) => Some(uri),
            RequestUri::Other(_) => None,
        }
    }

    /// The scheme in lower case: `sip`, `sips`, `tel`, …
    pub fn scheme(&self) -> String {
        match self {
            RequestUri::Sip(uri) if uri.sips => "sips".into(),
            RequestUri::Sip(_) => "sip".into(),
            RequestUri::Other(s) => s.split(':').next().unwrap_or("").to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for RequestUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestUri::Sip(uri) => {
                let ctx = PrintCtx {
                    method: None,
                    uri: Some(UriContext::ReqUri),
                };
                let printed = uri.print_ctx(ctx).to_string();
                f.write_str(&reescape_user(uri, printed))
            }
            RequestUri::Other(s) => f.write_str(s),
        }
    }
}

/// A SIP request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub uri: RequestUri,
    pub headers: Headers,
    pub body: Bytes,
}

/// A SIP response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

/// A request or a response.
#[derive(Clone, Debug)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    /// Parses one whole message (a UDP datagram, or a frame cut from a stream).
    /// A body longer than Content-Length is cut; a shorter one is an error.
    pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::TooLarge);
        }
        let text = std::str::from_utf8(head_of(&buf)).map_err(|_| ParseError::NotText)?;
        let mut lines = PullParser::new(text.as_bytes(), 0);
        let first = match lines.next() {
            Some(Ok(line)) => line,
            _ => return Err(ParseError::Incomplete),
        };
        let first = as_str(first)?;
        let start = parse_start_line(&buf, first)?;

        let mut headers = Headers::with_capacity(16);
        let mut count = 0;
        for line in lines.by_ref() {
            let line = as_str(line.map_err(|_| ParseError::Incomplete)?)?;
            count += 1;
            if count > MAX_HEADERS {
                return Err(ParseError::TooManyHeaders);
            }
            let src = buf.slice_ref(line.as_bytes());
            match Line::parse(&src, line) {
                Ok((_, parsed)) if !parsed.name.as_print_str().is_empty() => {
                    let value = match requote_display_names(&parsed.name, &parsed.value) {
                        Some(fixed) => BytesStr::from(fixed),
                        None => parsed.value,
                    };
                    headers.insert(parsed.name, value)
                }
                _ => return Err(ParseError::BadHeader(truncate(line, 60))),
            }
        }
        conformance(first, &start, &headers)?;
        let body_start = lines.head_end();
        let available = buf.len().saturating_sub(body_start);
        let declared = content_length(&headers)?.unwrap_or(available);
        if declared > available {
            return Err(ParseError::BodyTruncated {
                declared,
                available,
            });
        }
        let body = buf.slice(body_start..body_start + declared);

        Ok(match start {
            Start::Request(method, uri) => Message::Request(Request {
                method,
                uri,
                headers,
                body,
            }),
            Start::Response(status, reason) => Message::Response(Response {
                status,
                reason,
                headers,
                body,
            }),
        })
    }

    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    /// The message in wire form, with a Content-Length that matches the body.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

enum Start {
    Request(Method, RequestUri),
    Response(u16, String),
}

fn parse_start_line(buf: &Bytes, line: &str) -> Result<Start, ParseError> {
    let src = buf.slice_ref(line.as_bytes());
    if let Ok((rest, parsed)) = MessageLine::parse(&src)(line)
        && rest.trim().is_empty()
    {
        return Ok(match parsed {
            MessageLine::Request(r) => Start::Request(r.method, RequestUri::Sip(r.uri)),
            MessageLine::Response(s) => {
                let code = s.code.into_u16();
                if !(100..700).contains(&code) {
                    return Err(ParseError::BadStartLine);
                }
                let reason = s.reason.map(|r| r.to_string()).unwrap_or_default();
                Start::Response(code, reason)
            }
        });
    }
    // Not a sip:/sips: request line: accept `METHOD absolute-URI SIP/2.0`.
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(uri), Some("SIP/2.0"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadStartLine);
    };
    let scheme_ok = uri.split_once(':').is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && !rest.is_empty()
            && !scheme.eq_ignore_ascii_case("sip")
            && !scheme.eq_ignore_ascii_case("sips")
    });
    if !method.chars().all(|c| c.is_ascii_alphabetic()) || !scheme_ok {
        return Err(ParseError::BadStartLine);
    }
    Ok(Start::Request(
        Method::from(method),
        RequestUri::Other(BytesStr::from_parse(&src, uri)),
    ))
}

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
/// carrying `?` headers or spaces, a non-GMT Date.
fn conformance(first: &str, start: &Start, headers: &Headers) -> Result<(), ParseError> {
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
        if *name == Name::VIA {
            for via in
                split_outside(value, b',').ok_or(ParseError::BadHeader("Via quotes".into()))?
            {
                if !params_well_formed(via) {
                    return bad("Via: empty value or parameter");
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
fn reescape_user(uri: &SipUri, printed: String) -> String {
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
fn requote_display_names(name: &Name, value: &str) -> Option<String> {
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

/// The bytes up to and including the blank line that ends the head, or all of
/// them when there is none (the pull parser then reports the message incomplete).
fn head_of(buf: &[u8]) -> &[u8] {
    match find_head_end(buf) {
        Some(end) => &buf[..end],
        None => buf,
    }
}

/// Index just past the blank line ending the head (CRLFCRLF or LFLF).
pub(crate) fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

fn as_str(line: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(line).map_err(|_| ParseError::NotText)
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn content_length(headers: &Headers) -> Result<Option<usize>, ParseError> {
    match headers.get_raw(&Name::CONTENT_LENGTH).next() {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| ParseError::MissingHeader("Content-Length")),
    }
}

fn write_message(first_line: &str, headers: &Headers, body: &Bytes) -> Bytes {
    let mut out =
        BytesMut::with_capacity(first_line.len() + headers.printed_len() + body.len() + 32);
    out.extend_from_slice(first_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers.iter() {
        if *name == Name::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_print_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out.freeze()
}

impl Request {
    /// A request with no headers yet.
    pub fn new(method: Method, uri: RequestUri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::with_capacity(12),
            body: Bytes::new(),
        }
    }

    /// A response generated here (not relayed): as [`response`](Self::response),
    /// with a To tag of ours when it is final and the request had none
    /// (RFC 3261 §8.2.6.2; the tag is [`local_tag`]). The tag is appended to the To text, so a To the
    /// typed header cannot parse (`tel:`) gets one too.
    pub fn final_response(&self, status: u16) -> Response {
        let mut response = self.response(status);
        if status < 200 {
            return response;
        }
        let Some(raw) = response.raw(&Name::TO).map(|v| v.to_string()) else {
            return response;
        };
        if raw_tag(&raw).is_none() {
            let tag = local_tag(&self.headers);
            response.headers.remove(&Name::TO);
            response
                .headers
                .insert(Name::TO, format!("{raw};tag={tag}"));
        }
        response
    }

    pub fn to_bytes(&self) -> Bytes {
        let line = format!("{} {} SIP/2.0", self.method, self.uri);
        write_message(&line, &self.headers, &self.body)
    }

    /// Call-ID, CSeq number and method: what identifies the request in its dialog.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        self.headers
            .get_named::<CSeq>()
            .map_err(|_| ParseError::MissingHeader("CSeq"))
    }

    pub fn max_forwards(&self) -> Option<u8> {
        self.headers.get_named::<MaxForwards>().ok().map(|m| m.0)
    }

    /// A response to this request, copying Via, From, To, Call-ID and CSeq
    /// (RFC 3261 §8.2.6.2). The To tag is added by the caller where needed.
    pub fn response(&self, status: u16) -> Response {
        let mut headers = Headers::with_capacity(8);
        for name in [Name::VIA, Name::FROM, Name::TO, Name::CALL_ID, Name::CSEQ] {
            for value in self.headers.get_raw(&name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        Response {
            status,
            reason: reason_phrase(status).to_string(),
            headers,
            body: Bytes::new(),
        }
    }
}

impl Response {
    pub fn to_bytes(&self) -> Bytes {
        let line = if self.reason.is_empty() {
            format!("SIP/2.0 {}", self.status)
        } else {
            format!("SIP/2.0 {} {}", self.status, self.reason)
        };
        write_message(&line, &self.headers, &self.body)
    }

    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        self.headers
            .get_named::<CSeq>()
            .map_err(|_| ParseError::MissingHeader("CSeq"))
    }

    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }
}

/// Accessors shared by requests and responses.
pub trait HeaderAccess {
    fn header_map(&self) -> &Headers;

    /// All Via headers, top first.
    fn vias(&self) -> Vec<Via> {
        self.header_map()
            .get_named::<Vec<Via>>()
            .unwrap_or_default()
    }

    /// The top Via: only the first value of the first Via line is parsed.
    fn top_via(&self) -> Option<Via> {
        let value = self.header_map().get_raw(&Name::VIA).next()?;
        <Via as ezk_sip_types::header::HeaderParse>::parse(value.as_ref(), value.as_str())
            .ok()
            .map(|(_, via)| via)
    }

    /// The branch parameter of the top Via.
    fn branch(&self) -> Option<BytesStr> {
        self.top_via()
            .and_then(|v| v.params.get_val("branch").cloned())
    }

    fn call_id(&self) -> Option<BytesStr> {
        self.header_map().get_named::<CallID>().ok().map(|c| c.0)
    }

    #[allow(clippy::wrong_self_convention)] // the From header, not a conversion
    fn from_header(&self) -> Option<FromTo> {
        self.header_map().get::<FromTo>(Name::FROM).ok()
    }

    fn to_header(&self) -> Option<FromTo> {
        self.header_map().get::<FromTo>(Name::TO).ok()
    }

    fn raw(&self, name: &Name) -> Option<&BytesStr> {
        self.header_map().get_raw(name).next()
    }
}

impl HeaderAccess for Request {
    fn header_map(&self) -> &Headers {
        &self.headers
    }
}

impl HeaderAccess for Response {
    fn header_map(&self) -> &Headers {
        &self.headers
    }
}

impl HeaderAccess for Message {
    fn header_map(&self) -> &Headers {
        self.headers()
    }
}

/// Puts `value` first among the values of `name`, and the header first in
/// the message. (ezk's `insert_*_front` only puts a *new* header first; a
/// value for an existing one goes last, which is wrong for Via and
/// Record-Route — see docs/decisions.md.)
pub fn prepend(headers: &mut Headers, name: Name, value: BytesStr) {
    let old = headers.remove(&name).unwrap_or_default();
    headers.insert_front(name.clone(), value);
    for v in old {
        headers.insert(name.clone(), v);
    }
}

/// Puts our Via on top.
pub fn push_via(headers: &mut Headers, via: &Via) {
    let mut one = Headers::with_capacity(1);
    one.insert_named(via);
    if let Some(value) = one.get_raw(&Name::VIA).next().cloned() {
        prepend(headers, Name::VIA, value);
    }
}

/// Replaces the top Via (the first value of the first Via header line).
pub fn set_top_via(headers: &mut Headers, via: &Via) {
    let mut vias = headers.get_named::<Vec<Via>>().unwrap_or_default();
    if vias.is_empty() {
        headers.insert_named_front(via);
        return;
    }
    vias[0] = via.clone();
    headers.remove(&Name::VIA);
    headers.insert_named_front(&vias);
}

/// Removes the top Via and returns it.
pub fn pop_top_via(headers: &mut Headers) -> Option<Via> {
    let mut vias = headers.get_named::<Vec<Via>>().ok()?;
    if vias.is_empty() {
        return None;
    }
    let top = vias.remove(0);
    headers.remove(&Name::VIA);
    if !vias.is_empty() {
        headers.insert_named_front(&vias);
    }
    Some(top)
}

/// A 400 for bytes that did not parse, built from whatever Via, From, To,
/// Call-ID and CSeq lines can be found in them. `None` when there is no Via
/// to answer to, or the bytes are a response (never answered).
pub fn bad_request_reply(raw: &[u8], why: &str) -> Option<Bytes> {
    let head = &raw[..find_head_end(raw)
        .unwrap_or(raw.len())
        .min(MAX_MESSAGE_SIZE)];
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let first = lines.next()?;
    // A response, or an ACK: never answered.
    if first.starts_with("SIP/") || first.starts_with("ACK ") {
        return None;
    }
    let mut copied = String::new();
    let mut has_via = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let canonical = match name.as_str() {
            "via" | "v" => "Via",
            "from" | "f" => "From",
            "to" | "t" => "To",
            "call-id" | "i" => "Call-ID",
            "cseq" => "CSeq",
            _ => continue,
        };
        let value = value.trim();
        if value.is_empty() || value.chars().any(|c| c.is_control()) {
            continue;
        }
        has_via |= canonical == "Via";
        let _ = write!(copied, "{canonical}: {value}\r\n");
    }
    if !has_via {
        return None;
    }
    let why: String = why
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(100)
        .collect();
    let status = if unsupported_version(first) {
        "505 Version Not Supported"
    } else {
        "400 Bad Request"
    };
    let reply = format!(
        "SIP/2.0 {status}\r\n{copied}Warning: 399 p2psip \"{why}\"\r\nContent-Length: 0\r\n\r\n"
    );
    Some(Bytes::from(reply))
}

/// A request line that names a SIP version other than 2.0 (`SIP/7.0`): the
/// answer is 505 (RFC 3261 §21.5.26; RFC 4475 §3.1.2.16).
fn unsupported_version(first_line: &str) -> bool {
    first_line
        .split_ascii_whitespace()
        .last()
        .and_then(|v| {
            v.get(..4)
                .filter(|p| p.eq_ignore_ascii_case("SIP/"))
                .map(|_| v)
        })
        .is_some_and(|v| v != "SIP/2.0")
}

/// The `tag` parameter of a From or To value as written.
pub fn raw_tag(value: &str) -> Option<String> {
    let params = match value.rfind('>') {
        Some(close) => &value[close + 1..],
        None => value.split_once(';').map(|(_, p)| p).unwrap_or(""),
    };
    params.split(';').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("tag")
            .then(|| value.trim().to_string())
    })
}

/// The usual reason phrase for a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    StatusCode::from(status)
        .text()
        .unwrap_or(match status / 100 {
            1 => "Trying",
            2 => "OK",
            3 => "Redirect",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        })
}

/// The To tag for a response this node makes itself (RFC 3261 §8.2.6.2): a
/// hash of what makes the request unique (Call-ID, From, the top Via, CSeq),
/// as Kamailio's `sl` module does. The same request always gets the same tag
/// (a retransmitted answer names the same dialog), different requests get
/// different ones, and no random source is needed: a core fed the same
/// messages answers the same.
pub fn local_tag(headers: &Headers) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    for name in [&Name::CALL_ID, &Name::FROM, &Name::VIA, &Name::CSEQ] {
        if let Some(value) = headers.get_raw(name).next() {
            value.as_bytes().hash(&mut hasher);
        }
    }
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776\r\n\
        Max-Forwards: 70\r\n\
        t: <sip:bob@example.com>\r\n\
        f: Alice <sip:alice@example.com>;tag=1928\r\n\
        i: a84b4c76e66710\r\n\
        CSeq: 314159 INVITE\r\n\
        Subject: folded\r\n  continued\r\n\
        l: 4\r\n\r\nbodyEXTRA";

    #[test]
    fn parses_compact_and_folded_headers() {
        let msg = Message::parse(Bytes::from_static(INVITE.as_bytes())).expect("parse");
        let Message::Request(req) = msg else {
            panic!("not a request")
        };
        assert_eq!(req.method, Method::INVITE);
        assert_eq!(req.call_id().as_deref(), Some("a84b4c76e66710"));
        assert_eq!(req.branch().as_deref(), Some("z9hG4bK776"));
        assert_eq!(req.cseq().map(|c| c.cseq), Ok(314159));
        assert_eq!(&req.body[..], b"body", "body cut at Content-Length");
        let printed = String::from_utf8(req.to_bytes().to_vec()).expect("utf8");
        assert!(printed.starts_with("INVITE sip:bob@example.com SIP/2.0\r\n"));
        assert!(printed.contains("Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776\r\n"));
        assert!(printed.ends_with("Content-Length: 4\r\n\r\nbody"));
    }

    #[test]
    fn keeps_tel_uris() {
        let raw = "INVITE tel:+12125551234 SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
        let Ok(Message::Request(req)) = Message::parse(Bytes::from(raw)) else {
            panic!("tel: request did not parse")
        };
        assert_eq!(req.uri.scheme(), "tel");
        assert_eq!(req.uri.to_string(), "tel:+12125551234");
    }

    #[test]
    fn rejects_bad_input() {
        for raw in [
            "NOT A REQUEST\r\n\r\n",
            "INVITE sip:a@b SIP/2.0\r\nNoColonHere\r\n\r\n",
            "\u{1}\u{2}garbage",
        ] {
            assert!(
                Message::parse(Bytes::from(raw)).is_err(),
                "accepted {raw:?}"
            );
        }
        let short = "MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 50\r\n\r\nhi";
        assert!(matches!(
            Message::parse(Bytes::from(short)),
            Err(ParseError::BodyTruncated { .. })
        ));
        let big = vec![b'a'; MAX_MESSAGE_SIZE + 1];
        assert_eq!(
            Message::parse(Bytes::from(big)).err(),
            Some(ParseError::TooLarge)
        );
    }

    #[test]
    fn reads_quoted_display_names_with_specials() {
        let raw = "REGISTER sip:example.com SIP/2.0\r\n\
            Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
            From: \"J Rosenberg \\\\\\\"\" <sip:j@example.com>;tag=1\r\n\
            To: \"a, b; c <d> e\" <sip:j@example.com>\r\n\
            Contact: \"x \\\"y\\\", <z>;\" <sip:a@h1>;q=0.5, \"w\" <sip:b@h2>\r\n\
            Call-ID: q\r\nCSeq: 1 REGISTER\r\n\r\n";
        let Ok(Message::Request(req)) = Message::parse(Bytes::from(raw)) else {
            panic!("did not parse")
        };
        assert_eq!(req.from_header().and_then(|f| f.tag).as_deref(), Some("1"));
        let to = req.to_header().expect("To");
        assert_eq!(to.uri.name.as_deref(), Some("a, b; c <d> e"));
        let contacts = req
            .headers
            .get_named::<Vec<ezk_sip_types::header::typed::Contact>>()
            .expect("Contact");
        assert_eq!(contacts.len(), 2);
        assert!(Message::parse(req.to_bytes()).is_ok());
    }

    #[test]
    fn refuses_what_rfc_3261_forbids() {
        let ok = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
            From: <sip:c@d>;tag=1\r\nTo: sip:a@b\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n";
        assert!(Message::parse(Bytes::from(format!("{ok}\r\n"))).is_ok());
        for extra in [
            "Date: Fri, 01 Jan 2010 16:00:00 EST\r\n",
            "Contact: sip:a@b?Route=x\r\n",
            "Contact: <sip:a@b>;;\r\n",
            "Contact: <sip:a@b>,\r\n",
            "Contact: \"open <sip:a@b>\r\n",
            "Route: < sip:a@b >\r\n",
            "Call-ID: y\r\n",
            "v: SIP/2.0/UDP h2;;branch=z9hG4bK2\r\n",
        ] {
            let raw = format!("{ok}{extra}\r\n");
            assert!(
                Message::parse(Bytes::from(raw)).is_err(),
                "accepted {extra:?}"
            );
        }
        assert!(
            Message::parse(Bytes::from(format!(
                "{ok}Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\r\n"
            )))
            .is_ok()
        );
        for line in [
            "OPTIONS  sip:a@b SIP/2.0",
            "OPTIONS sip:a@b SIP/2.0 ",
            "OPTIONS <sip:a@b> SIP/2.0",
            "OPTIONS sip:a@b?Route=x SIP/2.0",
        ] {
            let raw = ok.replacen("OPTIONS sip:a@b SIP/2.0", line, 1) + "\r\n";
            assert!(
                Message::parse(Bytes::from(raw)).is_err(),
                "accepted {line:?}"
            );
        }
        let badvers = "OPTIONS sip:a@b SIP/7.0\r\nVia: SIP/7.0/UDP h;branch=z9hG4bK1\r\n\r\n";
        let reply = bad_request_reply(badvers.as_bytes(), "version").expect("reply");
        assert!(reply.starts_with(b"SIP/2.0 505 "));
    }

    #[test]
    fn escaped_percent_in_request_uri_survives_printing() {
        let raw = "INVITE sip:100%25off@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
        let Ok(Message::Request(req)) = Message::parse(Bytes::from(raw)) else {
            panic!("did not parse")
        };
        assert_eq!(req.uri.to_string(), "sip:100%25off@example.com");
        for uri in ["sip:a%%42b@h", "sip:a%4@h", "sip:a@h;p=%25", "sip:a%zz@h"] {
            let raw =
                format!("OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n");
            assert!(Message::parse(Bytes::from(raw)).is_err(), "accepted {uri}");
        }
    }

    #[test]
    fn answers_what_it_can_of_garbage() {
        let raw = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nNoColon\r\nCall-ID: x\r\n\r\n";
        let reply = bad_request_reply(raw, "bad header line").expect("a reply");
        let text = String::from_utf8(reply.to_vec()).expect("utf8");
        assert!(text.starts_with("SIP/2.0 400 Bad Request\r\n"));
        assert!(text.contains("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"));
        assert!(text.contains("Call-ID: x\r\n"));
        assert!(bad_request_reply(b"\x01\x02garbage", "x").is_none());
        let ack =
            b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nNoColon\r\n\r\n";
        assert!(
            bad_request_reply(ack, "x").is_none(),
            "an ACK is never answered"
        );
        assert!(bad_request_reply(b"SIP/2.0 200 OK\r\nVia: a\r\n\r\n", "x").is_none());
    }

    #[test]
    fn response_copies_dialog_headers_and_rewrites_via() {
        let Ok(Message::Request(req)) = Message::parse(Bytes::from_static(INVITE.as_bytes()))
        else {
            panic!("parse")
        };
        let mut resp = req.response(180);
        assert_eq!(resp.reason, "Ringing");
        let mut via = resp.top_via().expect("via");
        via.params.push_or_edit("received", "127.0.0.1");
        set_top_via(&mut resp.headers, &via);
        let back = Message::parse(resp.to_bytes()).expect("reparse");
        let Message::Response(back) = back else {
            panic!("not a response")
        };
        assert_eq!(back.status, 180);
        assert_eq!(
            back.top_via()
                .and_then(|v| v.params.get_val("received").cloned())
                .as_deref(),
            Some("127.0.0.1")
        );
        assert!(pop_top_via(&mut resp.headers).is_some());
        assert!(resp.top_via().is_none());
    }
}
