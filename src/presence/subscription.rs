//! One subscription (RFC 6665) as the notifier keeps it: the dialog the
//! SUBSCRIBE created (Call-ID, both tags, the watcher's URI and contact,
//! the route set), the event package, when it ends, and the CSeq of our
//! NOTIFYs; the NOTIFY it sends; and its ring item, so that a node with
//! `--data` still has it after a restart.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use ezk_sip_types::header::typed::Via;
use ezk_sip_types::uri::SipUri;
use ezk_sip_types::{Method, Name};

use super::Package;
use crate::registrar::binding::Aor;
use crate::ring::{Item, NodeId};
use crate::sip::message::{HeaderAccess, Request, RequestUri, push_via, raw_tag};
use crate::sip::target::{NextHop, next_hop};
use crate::sip::transaction::{Peer, TransportKind};

/// The item kind of a subscription kept in the ring.
pub const WATCH_KIND: &str = "watch";

/// A watcher's subscription to one presentity's events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub package: Package,
    /// The `id` parameter of the Event header, if any.
    pub event_id: Option<String>,
    /// Whose state is watched.
    pub presentity: Aor,
    pub call_id: String,
    /// Our tag (the To tag of our 200, the From tag of our NOTIFYs).
    pub local_tag: String,
    /// The watcher's From tag.
    pub remote_tag: String,
    /// The SUBSCRIBE's To, without tag: the From of our NOTIFYs.
    pub local_uri: String,
    /// The SUBSCRIBE's From, without tag: the To of our NOTIFYs.
    pub remote_uri: String,
    /// The watcher's Contact: the Request-URI of our NOTIFYs.
    pub contact: String,
    /// The SUBSCRIBE's Record-Route values, in order: our Route.
    pub route: Vec<String>,
    /// Where the SUBSCRIBE came from (its connection, over TCP or TLS).
    pub source: Peer,
    pub expires: Instant,
    /// The CSeq of our last NOTIFY.
    pub cseq: u32,
}

impl Subscription {
    /// The dialog's identity: Call-ID and both tags.
    pub fn dialog(&self) -> (String, String, String) {
        (
            self.call_id.clone(),
            self.local_tag.clone(),
            self.remote_tag.clone(),
        )
    }

    /// The peer our NOTIFYs go to: back over the SUBSCRIBE's connection
    /// over TCP/TLS; else the first route, or the contact, by address; else
    /// where the SUBSCRIBE came from.
    pub fn peer(&self) -> Peer {
        if self.source.transport != TransportKind::Udp {
            return self.source;
        }
        let first = self.route.first().map(|r| {
            r.trim()
                .trim_start_matches('<')
                .split(['>', ';'])
                .next()
                .unwrap_or("")
                .to_string()
        });
        let target = first.unwrap_or_else(|| self.contact.clone());
        match target.parse::<SipUri>().map(|uri| next_hop(&uri)) {
            Ok(NextHop::Peer(peer)) => peer,
            _ => self.source,
        }
    }

    /// Our next NOTIFY, with `state` as its Subscription-State and `body`.
    pub fn notify(
        &mut self,
        state: &str,
        body: String,
        local: SocketAddr,
        contact: &str,
        branch: String,
    ) -> Option<Request> {
        let uri: SipUri = self.contact.parse().ok()?;
        self.cseq = self.cseq.wrapping_add(1);
        let peer = self.peer();
        let mut request = Request::new(Method::NOTIFY, RequestUri::Sip(uri));
        let via = Via::new(crate::proxy::transport_name(peer.transport), local, branch);
        push_via(&mut request.headers, &via);
        let headers = &mut request.headers;
        headers.insert(Name::MAX_FORWARDS, "70");
        for route in &self.route {
            headers.insert(Name::ROUTE, route.as_str());
        }
        headers.insert(
            Name::FROM,
            format!("{};tag={}", self.local_uri, self.local_tag),
        );
        headers.insert(
            Name::TO,
            format!("{};tag={}", self.remote_uri, self.remote_tag),
        );
        headers.insert(Name::CALL_ID, self.call_id.as_str());
        headers.insert(Name::CSEQ, format!("{} NOTIFY", self.cseq));
        headers.insert(Name::CONTACT, contact);
        let event = match &self.event_id {
            Some(id) => format!("{};id={id}", self.package.name()),
            None => self.package.name().to_string(),
        };
        headers.insert(Name::EVENT, event);
        headers.insert(Name::SUBSCRIPTION_STATE, state);
        headers.insert(Name::CONTENT_TYPE, self.package.content_type());
        request.body = Bytes::from(body);
        Some(request)
    }

    /// The ring item under `node`'s own key that keeps this subscription
    /// for the notifier at `notifier`.
    pub fn to_item(&self, node: NodeId, notifier: SocketAddr, wall_ms: u64) -> Item {
        let mut value = String::with_capacity(512);
        let mut line = |name: &str, text: &str| {
            value.push_str(name);
            value.push_str(": ");
            value.extend(text.chars().filter(|c| *c != '\r' && *c != '\n'));
            value.push_str("\r\n");
        };
        line("notifier", &notifier.to_string());
        line("package", self.package.name());
        line("event-id", self.event_id.as_deref().unwrap_or(""));
        line("presentity", self.presentity.as_str());
        line("call-id", &self.call_id);
        line("local-tag", &self.local_tag);
        line("remote-tag", &self.remote_tag);
        line("local-uri", &self.local_uri);
        line("remote-uri", &self.remote_uri);
        line("contact", &self.contact);
        for route in &self.route {
            line("route", route);
        }
        line("source", &self.source.addr.to_string());
        line("cseq", &self.cseq.to_string());
        Item {
            key: node,
            name: self.item_name(),
            kind: WATCH_KIND.to_string(),
            value: value.into_bytes(),
            version: wall_ms,
            expires: self.expires,
            writer: NodeId::default(),
            signature: Vec::new(),
            proof: None,
        }
    }

    /// The name of its ring item.
    pub fn item_name(&self) -> String {
        format!("watch:{}:{}", self.call_id, self.remote_tag)
    }

    /// A subscription read back from its item (over UDP: a connection does
    /// not outlive a restart); `cseq_gap` is added to its CSeq, since the
    /// NOTIFYs sent after the item was last written are not in it.
    pub fn from_item(item: &Item, cseq_gap: u32) -> Option<Subscription> {
        if item.kind != WATCH_KIND {
            return None;
        }
        let text = std::str::from_utf8(&item.value).ok()?;
        let mut field = std::collections::HashMap::new();
        let mut route = Vec::new();
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(": ")
                .unwrap_or((line.trim_end_matches(':'), ""));
            if name == "route" {
                route.push(value.to_string());
            } else {
                field.insert(name, value);
            }
        }
        let get = |name: &str| field.get(name).map(|v| v.to_string());
        let (user, domain) = get("presentity")?
            .rsplit_once('@')
            .map(|(u, d)| (u.to_string(), d.to_string()))?;
        Some(Subscription {
            package: Package::parse(&get("package")?)?,
            event_id: get("event-id").filter(|v| !v.is_empty()),
            presentity: Aor::new(&user, &domain),
            call_id: get("call-id")?,
            local_tag: get("local-tag")?,
            remote_tag: get("remote-tag")?,
            local_uri: get("local-uri")?,
            remote_uri: get("remote-uri")?,
            contact: get("contact")?,
            route,
            source: Peer {
                transport: TransportKind::Udp,
                addr: get("source")?.parse().ok()?,
            },
            expires: item.expires,
            cseq: get("cseq")?.parse::<u32>().ok()?.wrapping_add(cseq_gap),
        })
    }

    /// The address of the notifier that wrote a subscription's item.
    pub fn notifier_of(item: &Item) -> Option<SocketAddr> {
        let text = std::str::from_utf8(&item.value).ok()?;
        text.split("\r\n")
            .find_map(|l| l.strip_prefix("notifier: "))?
            .parse()
            .ok()
    }

    /// Seconds left, for `Subscription-State: active;expires=`.
    pub fn remaining(&self, now: Instant) -> u64 {
        self.expires.saturating_duration_since(now).as_secs()
    }
}

/// The dialog an in-dialog request names, as the notifier sees it:
/// Call-ID, our tag (its To tag), the watcher's tag (its From tag).
pub(super) fn dialog_of(request: &Request) -> Option<(String, String, String)> {
    let call_id = request.raw(&Name::CALL_ID)?.to_string();
    let ours = raw_tag(request.raw(&Name::TO)?)?;
    let theirs = raw_tag(request.raw(&Name::FROM)?)?;
    Some((call_id, ours, theirs))
}

/// The URI of a Contact value (`<uri>;params` or a bare URI), if it is a SIP URI.
pub fn contact_uri(value: &str) -> Option<String> {
    let value = value.split(',').next()?.trim();
    let uri = match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value.split(';').next()?,
    };
    let uri = uri.trim();
    uri.parse::<ezk_sip_types::uri::SipUri>().ok()?;
    Some(uri.to_string())
}

/// A From/To value without its tag parameter.
pub(super) fn without_tag(value: &str) -> String {
    let (head, params) = match value.rfind('>') {
        Some(close) => value.split_at(close + 1),
        None => match value.find(';') {
            Some(at) => value.split_at(at),
            None => (value, ""),
        },
    };
    let kept: String = params
        .split(';')
        .filter(|p| !p.is_empty() && !p.trim().to_ascii_lowercase().starts_with("tag="))
        .map(|p| format!(";{}", p.trim()))
        .collect();
    format!("{}{kept}", head.trim())
}

/// Values of a comma-separated header (commas inside `<…>` kept).
pub(super) fn split_commas(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => {
                out.push(value[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim().to_string());
    out.retain(|v| !v.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn subscription(now: Instant) -> Subscription {
        Subscription {
            package: Package::Presence,
            event_id: Some("7".into()),
            presentity: Aor::new("bob", "example.test"),
            call_id: "c1@watcher".into(),
            local_tag: "ours".into(),
            remote_tag: "theirs".into(),
            local_uri: "<sip:bob@example.test>".into(),
            remote_uri: "<sip:alice@example.test>".into(),
            contact: "sip:alice@127.0.0.1:5070".into(),
            route: vec!["<sip:127.0.0.1:5080;lr>".into()],
            source: Peer {
                transport: TransportKind::Udp,
                addr: "127.0.0.1:5071".parse().expect("addr"),
            },
            expires: now + Duration::from_secs(600),
            cseq: 4,
        }
    }

    #[test]
    fn a_subscription_comes_back_from_its_item() {
        let now = Instant::now();
        let sub = subscription(now);
        let notifier: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        let item = sub.to_item(NodeId::of_key("node"), notifier, 1);
        assert_eq!(Subscription::notifier_of(&item), Some(notifier));
        let back = Subscription::from_item(&item, 100).expect("reads back");
        assert_eq!(back.cseq, 104);
        assert_eq!(Subscription { cseq: 4, ..back }, sub);
        let mut other = item.clone();
        other.kind = "binding".into();
        assert!(Subscription::from_item(&other, 0).is_none());
        other = item;
        other.value = b"package: nonsense\r\n".to_vec();
        assert!(Subscription::from_item(&other, 0).is_none());
    }

    #[test]
    fn a_notify_follows_the_route_and_counts_its_cseq() {
        let now = Instant::now();
        let mut sub = subscription(now);
        let local: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        assert_eq!(sub.peer().addr.port(), 5080);
        let notify = sub
            .notify(
                "active;expires=600",
                "body".into(),
                local,
                "<sip:127.0.0.1:5060>",
                "z9hG4bKx".into(),
            )
            .expect("a NOTIFY");
        let text = String::from_utf8_lossy(&notify.to_bytes()).to_string();
        assert!(
            text.starts_with("NOTIFY sip:alice@127.0.0.1:5070 SIP/2.0"),
            "{text}"
        );
        assert!(text.contains("CSeq: 5 NOTIFY"), "{text}");
        assert!(text.contains("Event: presence;id=7"), "{text}");
        assert!(
            text.contains("From: <sip:bob@example.test>;tag=ours"),
            "{text}"
        );
        assert!(
            text.contains("To: <sip:alice@example.test>;tag=theirs"),
            "{text}"
        );
        assert!(text.contains("Route: <sip:127.0.0.1:5080;lr>"), "{text}");
    }
}
