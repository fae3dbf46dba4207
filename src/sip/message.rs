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

mod conformance;
pub(crate) use conformance::reescape_user;
use conformance::{conformance, requote_display_names};

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
mod tests;
