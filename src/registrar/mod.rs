//! The registrar (RFC 3261 §10.3): turns a REGISTER and the current bindings
//! of its address-of-record into the new bindings and the answer.
//!
//! Pure rules, no store and no I/O: the node fetches the current bindings
//! from its [`LocationStore`](location::LocationStore), calls [`apply`], saves
//! the result and answers with [`ok_response`]. That keeps the same rules
//! for a lone node and for the ring.

pub mod binding;
pub mod location;
pub mod record;

use std::time::{Duration, Instant};

use ezk_sip_types::Name;
use ezk_sip_types::header::typed::Contact;
use ezk_sip_types::print::{AppendCtx, PrintCtx, UriContext};

use crate::sip::message::{HeaderAccess, Request, Response};
use crate::sip::transaction::Peer;
use binding::{Aor, Binding, parse_q};

/// Limits a registrar applies to expiry and contact count.
#[derive(Clone, Debug)]
pub struct RegistrarConfig {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts: 16,
        }
    }
}

/// A REGISTER read and checked, before the current bindings are known.
#[derive(Clone, Debug)]
pub struct Registration {
    pub aor: Aor,
    pub call_id: String,
    pub cseq: u32,
    pub change: Change,
    pub path: Vec<String>,
    pub source: Peer,
    /// The top Via asked for `rport` (RFC 3581): the phone knows its
    /// answers must follow the packet back, as behind a NAT.
    pub rport: bool,
}

/// What the REGISTER asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// No Contact: a query of the current bindings.
    Query,
    /// `Contact: *` with `Expires: 0`.
    RemoveAll,
    /// Add, refresh or remove (expires 0) these contacts.
    Update(Vec<ContactChange>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContactChange {
    pub contact: String,
    pub q: Option<u16>,
    pub expires: u32,
}

/// A registrar's refusal: status, reason and extra headers.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    pub headers: Vec<(Name, String)>,
}

impl Refusal {
    fn new(status: u16, reason: &'static str) -> Refusal {
        Refusal {
            status,
            reason,
            headers: Vec::new(),
        }
    }

    /// The response to `request` that carries this refusal.
    pub fn response(&self, request: &Request) -> Response {
        let mut response = request.final_response(self.status);
        response.reason = self.reason.to_string();
        for (name, value) in &self.headers {
            response.headers.insert(name.clone(), value.as_str());
        }
        response
    }
}

/// Reads a REGISTER whose address-of-record is `aor` (already canonical).
pub fn read(
    request: &Request,
    aor: Aor,
    source: Peer,
    config: &RegistrarConfig,
) -> Result<Registration, Refusal> {
    let call_id = request
        .call_id()
        .ok_or_else(|| Refusal::new(400, "Missing Call-ID"))?
        .to_string();
    let cseq = request
        .cseq()
        .map_err(|_| Refusal::new(400, "Bad CSeq"))?
        .cseq;
    let expires_header = match request.raw(&Name::EXPIRES) {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<u32>()
                .map_err(|_| Refusal::new(400, "Bad Expires"))?,
        ),
    };
    let raw_contacts: Vec<&str> = request
        .headers
        .get_raw(&Name::CONTACT)
        .map(|v| v.as_str())
        .collect();
    let path = request
        .headers
        .get_raw(&Name::from("Path"))
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();

    let change = if raw_contacts.is_empty() {
        Change::Query
    } else if raw_contacts.iter().any(|c| c.trim() == "*") {
        if raw_contacts.len() != 1 || expires_header != Some(0) {
            return Err(Refusal::new(
                400,
                "Contact * needs Expires: 0 and no other Contact",
            ));
        }
        Change::RemoveAll
    } else {
        let contacts = request
            .headers
            .get_named::<Vec<Contact>>()
            .map_err(|_| Refusal::new(400, "Bad Contact"))?;
        if contacts.is_empty() {
            return Err(Refusal::new(400, "Bad Contact"));
        }
        let mut changes = Vec::with_capacity(contacts.len());
        for contact in &contacts {
            let expires = match contact.params.get_val("expires") {
                Some(v) => v
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| Refusal::new(400, "Bad expires parameter"))?,
                None => expires_header.unwrap_or(config.default_expires),
            };
            if expires > 0 && expires < config.min_expires {
                let mut refusal = Refusal::new(423, "Interval Too Brief");
                refusal
                    .headers
                    .push((Name::MIN_EXPIRES, config.min_expires.to_string()));
                return Err(refusal);
            }
            let q = match contact.params.get_val("q") {
                Some(v) => Some(parse_q(v).ok_or_else(|| Refusal::new(400, "Bad q-value"))?),
                None => None,
            };
            changes.push(ContactChange {
                contact: contact_uri(contact),
                q,
                expires: expires.min(config.max_expires),
            });
        }
        Change::Update(changes)
    };
    let rport = request
        .top_via()
        .is_some_and(|via| via.params.get("rport").is_some());
    Ok(Registration {
        aor,
        call_id,
        cseq,
        change,
        path,
        source,
        rport,
    })
}

/// The contact URI as text, without the Contact header's own parameters.
/// ezk prints the user part decoded (`100%25off` as `100%off`): it is
/// escaped again, or the 200 OK and the requests routed to the binding
/// would name another user (or no valid URI at all).
fn contact_uri(contact: &Contact) -> String {
    let ctx = PrintCtx {
        method: None,
        uri: Some(UriContext::Contact),
    };
    let printed = contact.uri.uri.print_ctx(ctx).to_string();
    crate::sip::message::reescape_user(&contact.uri.uri, printed)
}

/// Applies a registration to the current bindings (§10.3 steps 6–8).
pub fn apply(
    registration: &Registration,
    mut bindings: Vec<Binding>,
    config: &RegistrarConfig,
    now: Instant,
) -> Result<Vec<Binding>, Refusal> {
    bindings.retain(|b| b.is_live(now));
    let out_of_order =
        |b: &Binding| b.call_id == registration.call_id && registration.cseq <= b.cseq;
    match &registration.change {
        Change::Query => {}
        Change::RemoveAll => {
            if bindings.iter().any(out_of_order) {
                return Err(Refusal::new(500, "Out of order REGISTER"));
            }
            bindings.clear();
        }
        Change::Update(changes) => {
            for change in changes {
                // URI equality, not text (RFC 3261 §10.3 step 7, §19.1.4):
                // scheme and host case-insensitively.
                let existing = bindings
                    .iter()
                    .position(|b| binding::same_contact(&b.contact, &change.contact));
                if let Some(i) = existing {
                    if out_of_order(&bindings[i]) {
                        return Err(Refusal::new(500, "Out of order REGISTER"));
                    }
                    bindings.remove(i);
                }
                if change.expires > 0 {
                    bindings.push(Binding {
                        contact: change.contact.clone(),
                        q: change.q,
                        expires_at: now + Duration::from_secs(change.expires.into()),
                        call_id: registration.call_id.clone(),
                        cseq: registration.cseq,
                        path: registration.path.clone(),
                        source: Some(registration.source),
                        behind_nat: binding::behind_nat(
                            &change.contact,
                            registration.source,
                            registration.rport,
                        ),
                    });
                }
            }
            if bindings.len() > config.max_contacts {
                return Err(Refusal::new(403, "Too many contacts"));
            }
        }
    }
    Ok(bindings)
}

/// The 200 to a REGISTER: every current binding with its expiry, Path echoed.
pub fn ok_response(request: &Request, bindings: &[Binding], now: Instant) -> Response {
    let mut response = request.response(200);
    for b in bindings {
        let mut value = format!("<{}>;expires={}", b.contact, b.remaining(now).as_secs());
        if let Some(q) = b.q_text() {
            value.push_str(";q=");
            value.push_str(&q);
        }
        response.headers.insert(Name::CONTACT, value);
    }
    let path = Name::from("Path");
    for value in request.headers.get_raw(&path) {
        response.headers.insert(path.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::transaction::TransportKind;
    use bytes::Bytes;

    fn register(contacts: &[&str], expires: Option<u32>, call_id: &str, cseq: u32) -> Request {
        let mut raw = format!(
            "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK{cseq}\r\n\
             From: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
        );
        for c in contacts {
            raw.push_str(&format!("Contact: {c}\r\n"));
        }
        if let Some(e) = expires {
            raw.push_str(&format!("Expires: {e}\r\n"));
        }
        raw.push_str("\r\n");
        match Message::parse(Bytes::from(raw)) {
            Ok(Message::Request(r)) => r,
            other => panic!("bad test request: {other:?}"),
        }
    }

    fn source() -> Peer {
        Peer {
            transport: TransportKind::Udp,
            addr: "127.0.0.1:5090".parse().expect("addr"),
        }
    }

    fn run(req: &Request, existing: Vec<Binding>, now: Instant) -> Result<Vec<Binding>, Refusal> {
        let config = RegistrarConfig::default();
        let reg = read(req, Aor::new("alice", "example.test"), source(), &config)?;
        apply(&reg, existing, &config, now)
    }

    #[test]
    fn an_escaped_contact_comes_back_escaped() {
        let now = Instant::now();
        let req = register(&["<sip:100%25off@127.0.0.1:5090>"], Some(600), "c1", 1);
        let bindings = run(&req, vec![], now).expect("accepted");
        assert_eq!(bindings[0].contact, "sip:100%25off@127.0.0.1:5090");
        let ok = ok_response(&req, &bindings, now);
        let contacts: Vec<_> = ok
            .headers
            .get_raw(&Name::CONTACT)
            .map(|v| v.to_string())
            .collect();
        assert_eq!(contacts, vec!["<sip:100%25off@127.0.0.1:5090>;expires=600"]);
        // A refresh of the same contact is the same binding.
        let again = register(&["<sip:100%25off@127.0.0.1:5090>"], Some(600), "c1", 2);
        assert_eq!(run(&again, bindings, now).expect("refreshed").len(), 1);
    }

    #[test]
    fn adds_refreshes_and_removes_contacts() {
        let now = Instant::now();
        let req = register(
            &[
                "<sip:alice@127.0.0.1:5090>;q=0.5",
                "<sip:alice@127.0.0.1:5091>;expires=120",
            ],
            Some(600),
            "c1",
            1,
        );
        let bindings = run(&req, vec![], now).expect("accepted");
        assert_eq!(bindings.len(), 2);
        assert_eq!(bindings[0].q, Some(500));
        assert_eq!(bindings[0].remaining(now).as_secs(), 600);
        assert_eq!(bindings[1].remaining(now).as_secs(), 120);
        let ok = ok_response(&req, &bindings, now);
        let contacts: Vec<_> = ok
            .headers
            .get_raw(&Name::CONTACT)
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            contacts,
            vec![
                "<sip:alice@127.0.0.1:5090>;expires=600;q=0.5",
                "<sip:alice@127.0.0.1:5091>;expires=120"
            ]
        );

        let remove = register(&["<sip:alice@127.0.0.1:5090>"], Some(0), "c1", 2);
        let left = run(&remove, bindings.clone(), now).expect("removed");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].contact, "sip:alice@127.0.0.1:5091");

        let all = register(&["*"], Some(0), "c2", 1);
        assert!(run(&all, bindings, now).expect("wildcard").is_empty());
    }

    #[test]
    fn refuses_what_the_rfc_refuses() {
        let now = Instant::now();
        let brief = register(&["<sip:alice@127.0.0.1:5090>"], Some(10), "c1", 1);
        let refusal = run(&brief, vec![], now).expect_err("too brief");
        assert_eq!(refusal.status, 423);
        assert_eq!(refusal.headers, vec![(Name::MIN_EXPIRES, "60".to_string())]);

        let star = register(&["*"], Some(60), "c1", 1);
        assert_eq!(run(&star, vec![], now).expect_err("star").status, 400);

        let first = register(&["<sip:alice@127.0.0.1:5090>"], Some(600), "c1", 5);
        let bindings = run(&first, vec![], now).expect("ok");
        let stale = register(&["<sip:alice@127.0.0.1:5090>"], Some(600), "c1", 4);
        assert_eq!(
            run(&stale, bindings.clone(), now)
                .expect_err("out of order")
                .status,
            500
        );
        let other_call = register(&["<sip:alice@127.0.0.1:5090>"], Some(600), "c9", 1);
        assert!(
            run(&other_call, bindings, now).is_ok(),
            "another Call-ID may have any CSeq"
        );
    }

    #[test]
    fn a_contact_behind_nat_is_marked_and_kept_as_registered() {
        let now = Instant::now();
        let config = RegistrarConfig::default();
        let nat = Peer {
            transport: TransportKind::Udp,
            addr: "203.0.113.5:40000".parse().expect("addr"),
        };
        let mut req = register(&["<sip:alice@192.168.1.20:5060>"], Some(600), "c1", 1);
        let via = "SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK1;rport=40000;received=203.0.113.5";
        req.headers.remove(&Name::VIA);
        req.headers.insert(Name::VIA, via);
        let reg = read(&req, Aor::new("alice", "example.test"), nat, &config).expect("read");
        assert!(reg.rport);
        let bindings = apply(&reg, vec![], &config, now).expect("accepted");
        assert_eq!(bindings[0].contact, "sip:alice@192.168.1.20:5060");
        assert!(bindings[0].behind_nat);
        assert_eq!(bindings[0].source, Some(nat));
        let ok = ok_response(&req, &bindings, now);
        assert_eq!(
            ok.raw(&Name::CONTACT).map(|c| c.to_string()).as_deref(),
            Some("<sip:alice@192.168.1.20:5060>;expires=600"),
            "the phone sees its contact as it registered it"
        );
        // The same phone without NAT in between: as written.
        let direct =
            read(&req, Aor::new("alice", "example.test"), source(), &config).expect("read");
        let mut at_home = apply(&direct, vec![], &config, now).expect("accepted");
        assert!(at_home[0].behind_nat, "192.168.1.20 is not 127.0.0.1:5090");
        let same = register(&["<sip:alice@127.0.0.1:5090>"], Some(600), "c2", 1);
        let reg = read(&same, Aor::new("alice", "example.test"), source(), &config).expect("read");
        at_home = apply(&reg, vec![], &config, now).expect("accepted");
        assert!(!at_home[0].behind_nat, "the contact is the source");
    }

    #[test]
    fn caps_expiry_and_expires_on_time() {
        let now = Instant::now();
        let long = register(&["<sip:alice@127.0.0.1:5090>"], Some(99999), "c1", 1);
        let bindings = run(&long, vec![], now).expect("ok");
        assert_eq!(bindings[0].remaining(now).as_secs(), 7200);
        let later = now + std::time::Duration::from_secs(7201);
        let query = register(&[], None, "c1", 2);
        assert!(
            run(&query, bindings, later).expect("query").is_empty(),
            "expired binding dropped"
        );
    }
}
