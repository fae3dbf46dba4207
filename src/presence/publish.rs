//! PUBLISH (RFC 3903) for `presence`: the request read (Event, Expires,
//! SIP-If-Match, a bounded PIDF body), the presentity's current
//! publication fetched to check the entity-tag, then the new one stored
//! (or the old one removed) and the answer with `SIP-ETag` and `Expires`.

use std::time::{Duration, Instant};

use ezk_sip_types::Name;
use tracing::debug;

use super::pidf::{self, Status};
use super::state::{self, Publication};
use super::{Package, Presence, Purpose, RingOp, bad_event, read_event, refuse};
use crate::outbox::Outbox;
use crate::registrar::binding::Aor;
use crate::ring::{Item, NodeId};
use crate::sip::message::{HeaderAccess, Request, Response};
use crate::sip::transaction::ServerKey;

/// A PUBLISH in progress.
pub struct Publishing {
    key: ServerKey,
    request: Request,
    aor: Aor,
    /// The status of its body (none: a refresh or a removal).
    status: Option<Status>,
    if_match: Option<String>,
    expires: u32,
    /// The entity-tag given to the new publication.
    etag: String,
}

impl Presence {
    /// A PUBLISH for `aor`, already authorized.
    pub fn publish(
        &mut self,
        key: ServerKey,
        request: Request,
        aor: Aor,
        out: &mut Outbox,
        now: Instant,
    ) {
        match self.read_publish(&request) {
            Err(response) => out.respond(key, response, now),
            Ok((status, if_match, expires)) => {
                let publishing = Publishing {
                    key,
                    request,
                    aor: aor.clone(),
                    status,
                    if_match,
                    expires,
                    etag: out.random_hex(),
                };
                self.ops.push_back(RingOp::Fetch {
                    key: NodeId::of_key(aor.as_str()),
                    purpose: Purpose::Publish(Box::new(publishing)),
                });
            }
        }
    }

    /// What a PUBLISH asks: the status of its body, its SIP-If-Match and Expires.
    fn read_publish(
        &self,
        request: &Request,
    ) -> Result<(Option<Status>, Option<String>, u32), Response> {
        match read_event(request) {
            Some((Package::Presence, _)) => {}
            _ => return Err(bad_event(request)),
        }
        let expires = self.read_expires(request)?;
        let if_match = request
            .raw(&Name::from("SIP-If-Match"))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        if if_match.as_ref().is_some_and(|v| v.len() > 128) {
            return Err(refuse(request, 400, "Bad Request (SIP-If-Match too long)"));
        }
        if request.body.is_empty() {
            if if_match.is_none() {
                return Err(refuse(
                    request,
                    400,
                    "Bad Request (PUBLISH without a body or SIP-If-Match)",
                ));
            }
            return Ok((None, if_match, expires));
        }
        let content_type = request
            .raw(&Name::CONTENT_TYPE)
            .map(|v| v.to_ascii_lowercase());
        if !content_type.is_some_and(|t| t.trim().starts_with(pidf::CONTENT_TYPE)) {
            let mut response = refuse(request, 415, "");
            response.headers.insert(Name::ACCEPT, pidf::CONTENT_TYPE);
            return Err(response);
        }
        match pidf::parse(&request.body) {
            Ok(status) => Ok((Some(status), if_match, expires)),
            Err(pidf::Refused::TooLarge) => Err(refuse(request, 413, "")),
            Err(pidf::Refused::Malformed(why)) => {
                Err(refuse(request, 400, &format!("Bad Request (PIDF: {why})")))
            }
        }
    }

    /// Her current publication fetched (`None`: the ring failed).
    pub(super) fn publish_fetched(
        &mut self,
        mut publishing: Publishing,
        items: Option<Vec<Item>>,
        out: &mut Outbox,
        now: Instant,
    ) {
        let Some(items) = items else {
            let response = refuse(&publishing.request, 503, "");
            return out.respond(publishing.key, response, now);
        };
        let current = state::publication(&items, now);
        if let Some(tag) = &publishing.if_match
            && current.as_ref().is_none_or(|c| c.etag != *tag)
        {
            let response = refuse(&publishing.request, 412, "");
            return out.respond(publishing.key, response, now);
        }
        let key = NodeId::of_key(publishing.aor.as_str());
        if publishing.expires == 0 {
            self.ops.push_back(RingOp::Remove {
                key,
                name: state::PUBLICATION_NAME.to_string(),
                purpose: Some(Purpose::Published(Box::new(publishing))),
            });
            return;
        }
        let Some(status) = publishing.status.clone().or(current.map(|c| c.status)) else {
            let response = refuse(&publishing.request, 412, "");
            return out.respond(publishing.key, response, now);
        };
        publishing.status = Some(status.clone());
        let publication = Publication {
            etag: publishing.etag.clone(),
            status,
        };
        let expires = now + Duration::from_secs(u64::from(publishing.expires));
        let item = publication.to_item(&publishing.aor, self.wall_ms(now), expires);
        self.ops.push_back(RingOp::Store {
            item,
            purpose: Some(Purpose::Published(Box::new(publishing))),
        });
    }

    /// A store or removal asked for `purpose` is done.
    pub fn on_stored(&mut self, purpose: Purpose, stored: bool, out: &mut Outbox, now: Instant) {
        let Purpose::Published(publishing) = purpose else {
            return;
        };
        let Publishing {
            key,
            request,
            aor,
            expires,
            etag,
            ..
        } = *publishing;
        if !stored {
            return out.respond(key, refuse(&request, 503, ""), now);
        }
        let mut response = request.final_response(200);
        response.headers.insert(Name::EXPIRES, expires.to_string());
        if expires > 0 {
            response.headers.insert(Name::from("SIP-ETag"), etag);
        }
        debug!(%aor, expires, "publication");
        out.respond(key, response, now);
        self.changed(&aor, now);
    }
}
