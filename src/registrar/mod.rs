//! The registrar (RFC 3261 §10.3): turns a REGISTER and the current bindings
//! of its address-of-record into the new bindings and the answer.
//!
//! Pure rules, no store and no I/O: the node fetches the current bindings
//! from its [`LocationStore`](location::LocationStore), calls [`apply`], saves
//! the result and answers with [`ok_response`]. That keeps the same rules
//! for a lone node and for the ring.
//!
//! SIP Outbound (RFC 5626 §6) is the registrar's part only: a contact with
//! `+sip.instance` and `reg-id` in a REGISTER that supports `outbound` is a
//! flow; the same instance and reg-id replace the binding, the flow is
//! reached where the REGISTER came from, and the 200 says `Require:
//! outbound` and `Flow-Timer`.

pub mod binding;
pub mod flows;
pub mod location;
pub mod natping;
pub mod record;

use std::time::{Duration, Instant};

use ezk_sip_types::Name;
use ezk_sip_types::header::typed::Contact;
use ezk_sip_types::print::{AppendCtx, PrintCtx, UriContext};

use crate::sip::message::{HeaderAccess, Request, Response};
use crate::sip::transaction::Peer;
use binding::{Aor, Binding, Flow, parse_q};

/// Option tags a REGISTER may require of this registrar.
const SUPPORTED: [&str; 2] = ["outbound", "path"];
/// Seconds between a flow's keep-alives the 200 asks for (`Flow-Timer`):
/// under common UDP NAT timeouts (about 30 s), and under the node's idle
/// timeout of stream connections (120 s).
pub const FLOW_TIMER_UDP: u32 = 25;
pub const FLOW_TIMER_STREAM: u32 = 100;

/// Limits a registrar applies to expiry and contact count.
#[derive(Clone, Debug)]
pub struct RegistrarConfig {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
    /// OPTIONS keep-alives to phones behind NAT without Outbound, this
    /// often (`natping::NatPing`); `None`: none.
    pub natping: Option<std::time::Duration>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts: 16,
            natping: Some(std::time::Duration::from_secs(20)),
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
    /// The top Via's sent-by is not where the REGISTER came from: a NAT
    /// rewrote the packet on its way ([`binding::via_differs`]).
    pub via_nated: bool,
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
    /// The Outbound flow the contact registers, if any.
    pub flow: Option<Flow>,
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
    let required: Vec<String> = option_tags(request, "Require");
    if let Some(unknown) = required.iter().find(|t| !SUPPORTED.contains(&t.as_str())) {
        let mut refusal = Refusal::new(420, "Bad Extension");
        refusal
            .headers
            .push((Name::from("Unsupported"), unknown.clone()));
        return Err(refusal);
    }
    let outbound = option_tags(request, "Supported")
        .iter()
        .chain(&required)
        .any(|t| t == "outbound");
    let raw_contacts: Vec<&str> = request
        .headers
        .get_raw(&Name::CONTACT)
        .map(|v| v.as_str())
        .collect();
    let path: Vec<String> = request
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
            let flow = match (
                outbound,
                contact.params.get_val("+sip.instance"),
                contact.params.get_val("reg-id"),
            ) {
                (true, Some(instance), Some(reg_id)) => Some(Flow {
                    instance: instance.trim().trim_matches('"').to_string(),
                    reg_id: reg_id
                        .trim()
                        .parse()
                        .map_err(|_| Refusal::new(400, "Bad reg-id"))?,
                }),
                _ => None,
            };
            changes.push(ContactChange {
                contact: contact_uri(contact),
                q,
                expires: expires.min(config.max_expires),
                flow,
            });
        }
        // RFC 5626 §6: a flow needs an edge proxy that keeps it — us (one
        // Via), or a first hop that says so with `ob` in its Path.
        // (The Vias are parsed only when a flow asks: most REGISTERs make none.)
        let first_hop_keeps_flows =
            || request.vias().len() <= 1 || path.first().is_some_and(|p| p.contains(";ob"));
        if changes.iter().any(|c| c.flow.is_some()) && !first_hop_keeps_flows() {
            return Err(Refusal::new(439, "First Hop Lacks Outbound Support"));
        }
        Change::Update(changes)
    };
    let sent_by = request.top_via().and_then(|via| {
        let ip = via.sent_by.ip()?;
        let port = via.sent_by.port.unwrap_or(match source.transport {
            crate::sip::transaction::TransportKind::Tls => 5061,
            _ => 5060,
        });
        Some(std::net::SocketAddr::new(ip, port))
    });
    let via_nated = binding::via_differs(sent_by, source);
    Ok(Registration {
        aor,
        call_id,
        cseq,
        change,
        path,
        source,
        via_nated,
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
                // RFC 5626 §6: a flow is the same binding by instance and
                // reg-id, whatever its contact.
                let existing = bindings.iter().position(|b| match &change.flow {
                    Some(flow) => b.flow.as_ref() == Some(flow),
                    None => binding::same_contact(&b.contact, &change.contact),
                });
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
                        behind_nat: change.flow.is_some()
                            || binding::behind_nat(
                                &change.contact,
                                registration.source,
                                registration.via_nated,
                            ),
                        flow: change.flow.clone(),
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
        if let Some(flow) = &b.flow {
            value.push_str(&format!(
                ";+sip.instance=\"{}\";reg-id={}",
                flow.instance, flow.reg_id
            ));
        }
        response.headers.insert(Name::CONTACT, value);
    }
    // RFC 5626 §6: a REGISTER that made a flow learns that outbound was
    // used, and how often to keep the flow alive.
    let source = request.top_via().map(|via| via.transport.to_string());
    let flows = bindings.iter().any(|b| b.flow.is_some());
    if flows && registers_a_flow(request) {
        response.headers.insert(Name::from("Require"), "outbound");
        let udp = source.is_some_and(|t| t.eq_ignore_ascii_case("udp"));
        let timer = if udp {
            FLOW_TIMER_UDP
        } else {
            FLOW_TIMER_STREAM
        };
        response
            .headers
            .insert(Name::from("Flow-Timer"), timer.to_string());
    }
    let path = Name::from("Path");
    for value in request.headers.get_raw(&path) {
        response.headers.insert(path.clone(), value.clone());
    }
    response
}

/// The option tags of every `name` header (Require, Supported), lower case.
fn option_tags(request: &Request, name: &str) -> Vec<String> {
    request
        .headers
        .get_raw(&Name::from(name))
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .take(32)
        .collect()
}

/// The REGISTER supports outbound and one of its contacts has `reg-id`.
fn registers_a_flow(request: &Request) -> bool {
    let outbound = option_tags(request, "Supported")
        .iter()
        .chain(&option_tags(request, "Require"))
        .any(|t| t == "outbound");
    outbound
        && request
            .headers
            .get_raw(&Name::CONTACT)
            .any(|c| c.to_ascii_lowercase().contains("reg-id="))
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
        assert!(reg.via_nated);
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

    fn with(mut req: Request, name: &str, value: &str) -> Request {
        req.headers.insert(Name::from(name), value.to_string());
        req
    }

    const INSTANCE: &str = "+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\"";

    #[test]
    fn an_outbound_flow_is_replaced_by_instance_and_reg_id() {
        let now = Instant::now();
        let first = format!("<sip:alice@192.0.2.1:5090>;{INSTANCE};reg-id=1");
        let req = with(
            register(&[&first], Some(600), "c1", 1),
            "Supported",
            "path, outbound",
        );
        let bindings = run(&req, vec![], now).expect("accepted");
        assert_eq!(bindings.len(), 1);
        let flow = bindings[0].flow.clone().expect("a flow");
        assert_eq!(flow.reg_id, 1);
        assert_eq!(
            flow.instance,
            "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"
        );
        assert!(
            bindings[0].behind_nat,
            "a flow is reached where it came from"
        );
        let ok = ok_response(&req, &bindings, now);
        assert_eq!(
            ok.raw(&Name::from("Require")).map(|v| v.as_str()),
            Some("outbound")
        );
        assert_eq!(
            ok.raw(&Name::from("Flow-Timer")).map(|v| v.as_str()),
            Some("25")
        );
        let contact = ok
            .raw(&Name::CONTACT)
            .map(|c| c.to_string())
            .unwrap_or_default();
        assert!(
            contact.contains(";reg-id=1") && contact.contains("urn:uuid:f81d"),
            "{contact}"
        );

        // The phone came back from another port (a new NAT mapping): the
        // same instance and reg-id replace the binding.
        let moved = format!("<sip:alice@192.0.2.1:6000>;{INSTANCE};reg-id=1");
        let again = with(
            register(&[&moved], Some(600), "c1", 2),
            "Supported",
            "outbound",
        );
        let replaced = run(&again, bindings.clone(), now).expect("accepted");
        assert_eq!(replaced.len(), 1, "{replaced:?}");
        assert_eq!(replaced[0].contact, "sip:alice@192.0.2.1:6000");
        // A second flow (reg-id 2) is added beside it.
        let second = format!("<sip:alice@192.0.2.1:6001>;{INSTANCE};reg-id=2");
        let other = with(
            register(&[&second], Some(600), "c1", 3),
            "Supported",
            "outbound",
        );
        assert_eq!(run(&other, replaced, now).expect("accepted").len(), 2);
        // Without `Supported: outbound` the parameters mean nothing: by URI.
        let plain = register(&[&moved], Some(600), "c1", 2);
        let both = run(&plain, bindings, now).expect("accepted");
        assert_eq!(both.len(), 2);
        assert!(both[1].flow.is_none());
        let ok = ok_response(&plain, &both, now);
        assert!(ok.raw(&Name::from("Require")).is_none());
    }

    #[test]
    fn require_is_checked_and_a_flow_needs_an_outbound_first_hop() {
        let now = Instant::now();
        let contact = format!("<sip:alice@192.0.2.1:5090>;{INSTANCE};reg-id=1");
        let req = with(
            register(&[&contact], Some(600), "c1", 1),
            "Require",
            "outbound",
        );
        assert!(run(&req, vec![], now).expect("accepted")[0].flow.is_some());
        let unknown = with(
            register(&[&contact], Some(600), "c1", 1),
            "Require",
            "100rel",
        );
        let refusal = run(&unknown, vec![], now).expect_err("unknown extension");
        assert_eq!(refusal.status, 420);
        assert_eq!(
            refusal.headers,
            vec![(Name::from("Unsupported"), "100rel".to_string())]
        );
        // Through a proxy that does not keep flows: 439.
        let proxied = with(
            with(
                register(&[&contact], Some(600), "c1", 1),
                "Supported",
                "outbound",
            ),
            "Via",
            "SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKedge",
        );
        assert_eq!(run(&proxied, vec![], now).expect_err("439").status, 439);
        let with_ob = with(proxied, "Path", "<sip:edge.example.test;lr;ob>");
        assert!(run(&with_ob, vec![], now).is_ok());
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
