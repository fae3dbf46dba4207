//! Legacy phones that use the gateway as outbound proxy: their REGISTERs go
//! on to the legacy registrar, and on 2xx the bindings it accepted are
//! stored in the ring too (fetch, apply [`MirrorOp`]s, save), so overlay
//! callers find legacy users without DNS.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytesstr::BytesStr;
use ezk_sip_types::Name;
use ezk_sip_types::header::typed::Contact;
use ezk_sip_types::print::{AppendCtx, PrintCtx, UriContext};
use ezk_sip_types::uri::SipUri;
use p2psip_bridge::config::UpstreamConfig;
use p2psip_bridge::legacy::{ContactEntry, MirrorOp, mirror_bindings};
use tracing::{debug, info, warn};

use crate::registrar::binding::{Aor, Binding};
use crate::registrar::location::{LocationAnswer, LocationOp};
use crate::sip::message::{HeaderAccess, Request, RequestUri, Response};
use crate::sip::target::{host_text, user_of};
use crate::sip::transaction::ServerKey;

/// A REGISTER forwarded to the legacy registrar, to mirror on 2xx.
struct Forwarded {
    aor: Aor,
    contacts: Vec<ContactEntry>,
    expires: Option<u32>,
}

/// A mirrored AOR to fetch from the ring, and the changes to apply to it.
pub struct MirrorFetch {
    aor: Aor,
    ops: Vec<MirrorOp>,
}

impl MirrorFetch {
    pub fn aor(&self) -> &Aor {
        &self.aor
    }
}

/// Forwarded REGISTERs and mirrored AORs being fetched.
#[derive(Default)]
pub(super) struct Mirrors {
    forwarded: HashMap<ServerKey, Forwarded>,
    fetching: HashMap<LocationOp, MirrorFetch>,
}

impl Mirrors {
    /// The REGISTER to forward upstream, when `request` is for a user of
    /// the legacy domain.
    pub(super) fn forward(
        &mut self,
        key: ServerKey,
        request: &Request,
        upstream: &UpstreamConfig,
        to_us: bool,
    ) -> Option<Request> {
        let to = request.to_header()?;
        let domain = host_text(&to.uri.uri.host_port.host);
        let user = user_of(&to.uri.uri)?;
        let registrar = upstream.registrar.trim().to_string();
        let mut forwarded = request.clone();
        // A phone that has us as its registrar addresses the REGISTER to us
        // (sip:<our address>); the legacy registrar serves its domain.
        if to_us && let Ok(uri) = format!("sip:{domain}").parse::<SipUri>() {
            forwarded.uri = RequestUri::Sip(uri);
        }
        let route = format!("<sip:{registrar};lr>");
        crate::sip::message::prepend(&mut forwarded.headers, Name::ROUTE, BytesStr::from(route));
        self.forwarded.insert(
            key,
            Forwarded {
                aor: Aor::new(&user, &domain),
                contacts: contact_entries(&request.headers),
                expires: expires_header(&request.headers),
            },
        );
        debug!(%user, %domain, %registrar, "forwarding a legacy REGISTER upstream");
        Some(forwarded)
    }

    /// A forwarded REGISTER ended: what to mirror into the ring, if anything.
    pub(super) fn on_registered(
        &mut self,
        key: ServerKey,
        response: &Response,
    ) -> Option<MirrorFetch> {
        let forwarded = self.forwarded.remove(&key)?;
        let ops = mirror_bindings(
            &forwarded.contacts,
            forwarded.expires,
            response.status,
            &contact_entries(&response.headers),
            expires_header(&response.headers),
        );
        if ops.is_empty() {
            return None;
        }
        info!(aor = %forwarded.aor, changes = ops.len(), "mirroring a legacy registration into the ring");
        Some(MirrorFetch {
            aor: forwarded.aor,
            ops,
        })
    }

    pub(super) fn fetching(&mut self, op: LocationOp, fetch: MirrorFetch) {
        self.fetching.insert(op, fetch);
    }

    /// The fetched bindings of a mirrored AOR: what to save.
    pub(super) fn fetched(
        &mut self,
        op: LocationOp,
        answer: LocationAnswer,
        now: Instant,
    ) -> Option<(Aor, Vec<Binding>)> {
        let fetch = self.fetching.remove(&op)?;
        match answer {
            Ok(existing) => {
                let bindings = apply_mirror(existing.unwrap_or_default(), &fetch.ops, now);
                Some((fetch.aor, bindings))
            }
            Err(error) => {
                warn!(%error, aor = %fetch.aor, "could not mirror a legacy registration");
                None
            }
        }
    }

    pub(super) fn forget(&mut self, key: ServerKey) {
        self.forwarded.remove(&key);
    }
}

/// Applies mirror operations to the bindings of a legacy AOR.
fn apply_mirror(mut bindings: Vec<Binding>, ops: &[MirrorOp], now: Instant) -> Vec<Binding> {
    for op in ops {
        match op {
            MirrorOp::RemoveAll => bindings.clear(),
            MirrorOp::Remove { contact } => bindings.retain(|b| b.contact != *contact),
            MirrorOp::Store { contact, expires } => {
                bindings.retain(|b| b.contact != *contact);
                bindings.push(Binding {
                    contact: contact.clone(),
                    q: None,
                    expires_at: now + Duration::from_secs((*expires).into()),
                    call_id: String::new(),
                    cseq: 0,
                    path: Vec::new(),
                    source: None,
                    behind_nat: false,
                    flow: None,
                });
            }
        }
    }
    bindings
}

/// The Contact values of a REGISTER or its answer, with their `expires`.
pub(super) fn contact_entries(headers: &ezk_sip_types::Headers) -> Vec<ContactEntry> {
    if headers.get_raw(&Name::CONTACT).any(|v| v.trim() == "*") {
        return vec![ContactEntry {
            uri: "*".into(),
            expires: None,
        }];
    }
    let ctx = PrintCtx {
        method: None,
        uri: Some(UriContext::Contact),
    };
    headers
        .get_named::<Vec<Contact>>()
        .unwrap_or_default()
        .iter()
        .map(|c| ContactEntry {
            uri: c.uri.uri.print_ctx(ctx).to_string(),
            expires: c
                .params
                .get_val("expires")
                .and_then(|e| e.trim().parse().ok()),
        })
        .collect()
}

/// The Expires header's value.
pub(super) fn expires_header(headers: &ezk_sip_types::Headers) -> Option<u32> {
    headers
        .get_raw(&Name::EXPIRES)
        .next()
        .and_then(|v| v.trim().parse().ok())
}
