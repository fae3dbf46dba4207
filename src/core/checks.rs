//! What the core checks and stamps on a request before serving it, and the
//! small rules of the responses it makes itself: RFC 3261 §8.2 and §16.3
//! validation, `received`/`rport` (RFC 3581), Max-Forwards, To tags.

use ezk_sip_types::Name;

use crate::sip::message::{HeaderAccess, Request, Response};
use crate::sip::transaction::Peer;

/// Checks what RFC 3261 §8.2 and §16.3 require before a request is served.
pub(super) fn validate(request: &Request) -> Result<(), &'static str> {
    if request.top_via().is_none() {
        return Err("missing Via");
    }
    // From and To may hold any URI (RFC 3261 §20.20, §20.39): `tel:` is
    // common, and the typed header only parses SIP URIs.
    if !names_a_uri(request.raw(&Name::FROM)) && request.from_header().is_none() {
        return Err("missing or bad From");
    }
    if !names_a_uri(request.raw(&Name::TO)) && request.to_header().is_none() {
        return Err("missing or bad To");
    }
    if request.raw(&Name::CALL_ID).is_none() {
        return Err("missing Call-ID");
    }
    match request.cseq() {
        Ok(cseq) if cseq.method == request.method => {}
        Ok(_) => return Err("CSeq method does not match"),
        Err(_) => return Err("missing or bad CSeq"),
    }
    if request.raw(&Name::MAX_FORWARDS).is_some() && request.max_forwards().is_none() {
        return Err("bad Max-Forwards");
    }
    Ok(())
}

/// A From/To value the typed header could not parse still names a URI
/// (`scheme:rest`, optionally in angle brackets).
fn names_a_uri(value: Option<&bytesstr::BytesStr>) -> bool {
    let Some(value) = value else {
        return false;
    };
    let value = value.trim();
    let uri = match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        (None, None) => value,
        _ => return false,
    };
    uri.split_once(':').is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && !rest.is_empty()
    })
}

/// RFC 3581 and §18.2.1: note where the request really came from.
pub(super) fn stamp_via(request: &mut Request, from: Peer) {
    let Some(mut via) = request.top_via() else {
        return;
    };
    let mut changed = false;
    if via.sent_by.ip() != Some(from.addr.ip()) {
        via.params
            .push_or_edit("received", from.addr.ip().to_string());
        changed = true;
    }
    if via.params.get("rport").is_some() {
        via.params
            .push_or_edit("rport", from.addr.port().to_string());
        if via.params.get_val("received").is_none() {
            via.params
                .push_or_edit("received", from.addr.ip().to_string());
        }
        changed = true;
    }
    if changed {
        crate::sip::message::set_top_via(&mut request.headers, &via);
    }
}

/// Decrements Max-Forwards (70 when absent); false when it was already 0.
pub(super) fn decrement_max_forwards(request: &mut Request) -> bool {
    let current = request.max_forwards().unwrap_or(70);
    if current == 0 {
        return false;
    }
    request.headers.remove(&Name::MAX_FORWARDS);
    request
        .headers
        .insert(Name::MAX_FORWARDS, (current - 1).to_string());
    true
}

/// A response generated here, with a To tag when it is final.
pub fn local_response(request: &Request, status: u16) -> Response {
    request.final_response(status)
}

/// A response generated here with a reason phrase of its own.
pub(super) fn refusal(request: &Request, status: u16, reason: impl Into<String>) -> Response {
    let mut response = request.final_response(status);
    response.reason = reason.into();
    response
}

/// Adds our To tag to a response if the request had none.
pub(super) fn with_to_tag(request: &Request, mut response: Response) -> Response {
    if let Some(raw) = response.raw(&Name::TO).map(|v| v.to_string())
        && crate::sip::message::raw_tag(&raw).is_none()
    {
        let tagged = request.final_response(response.status);
        if let Some(to) = tagged.raw(&Name::TO).cloned() {
            response.headers.remove(&Name::TO);
            response.headers.insert(Name::TO, to);
        }
    }
    response
}
