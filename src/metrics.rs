//! The node's metrics in Prometheus form (`/metrics`): SIP messages by method
//! and direction, overlay lookups and their hops, stabilize rounds, items
//! and registrations, STUN answered on the SIP ports. Counters are shared
//! handles, bumped where things happen.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// The request method, "response", or "other" (an extension method).
    pub method: &'static str,
    /// "in" or "out".
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    /// "member", "super" (a member with clients) or "client".
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StunLabels {
    /// "answered" (Binding success), "refused" (420, 400), "ignored"
    /// (indications, responses) or "malformed" (dropped).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignupLabels {
    /// "claimed" (201), "taken" (409), "refused" (400, 403, 429) or
    /// "failed" (503: the ring did not answer).
    pub outcome: &'static str,
}

/// Every metric the node exports.
#[derive(Clone)]
pub struct Metrics {
    pub messages: Family<MessageLabels, Counter>,
    pub lookups: Counter,
    pub lookup_hops: Histogram,
    pub stabilize_rounds: Counter,
    pub items_primary: Gauge,
    pub items_replica: Gauge,
    pub registrations: Gauge,
    pub transactions: Gauge,
    /// Overlay messages refused: no or a bad MAC, or on another node's behalf.
    pub overlay_refused: Counter,
    /// Stores and removes refused: not the record's writer, nor allowed to take it over.
    pub records_refused: Counter,
    /// New items refused: their writer had `items_per_writer` items here.
    pub items_over_limit: Counter,
    /// Overlay requests refused with 503: their member was over its rate.
    pub overlay_rate_limited: Counter,
    /// Items and removes refused or not used: no valid signature of their
    /// writer or remover (certificate mode).
    pub bad_signatures: Counter,
    /// Signatures this node made over its items and removes (certificate mode).
    pub signatures_made: Counter,
    /// Signatures checked in full (a public-key operation).
    pub signatures_checked: Counter,
    /// Signature checks answered without one: the same bytes were checked
    /// (or signed here) before.
    pub signatures_remembered: Counter,
    /// STUN messages on the SIP ports, by what became of them.
    pub stun: Family<StunLabels, Counter>,
    /// 1 for the node's role in the ring, 0 for the others.
    pub role: Family<RoleLabels, Gauge>,
    /// Clients attached to this node as a super-node.
    pub clients: Gauge,
    /// Presence and message-summary subscriptions this node holds.
    pub presence_subscriptions: Gauge,
    /// NOTIFYs sent to watchers.
    pub presence_notifies: Counter,
    /// Sign-ups (`POST /signup`), by outcome.
    pub signups: Family<SignupLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            messages: Family::default(),
            lookups: Counter::default(),
            lookup_hops: Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0]),
            stabilize_rounds: Counter::default(),
            items_primary: Gauge::default(),
            items_replica: Gauge::default(),
            registrations: Gauge::default(),
            transactions: Gauge::default(),
            overlay_refused: Counter::default(),
            records_refused: Counter::default(),
            items_over_limit: Counter::default(),
            overlay_rate_limited: Counter::default(),
            bad_signatures: Counter::default(),
            signatures_made: Counter::default(),
            signatures_checked: Counter::default(),
            signatures_remembered: Counter::default(),
            stun: Family::default(),
            role: Family::default(),
            clients: Gauge::default(),
            presence_subscriptions: Gauge::default(),
            presence_notifies: Counter::default(),
            signups: Family::default(),
        }
    }
}

/// A method name as a label that needs no allocation.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 16] = [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "MESSAGE",
        "SUBSCRIBE",
        "NOTIFY",
        "INFO",
        "UPDATE",
        "REFER",
        "PRACK",
        "PUBLISH",
        "response",
        "stun",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// The label of a parsed method, without printing it.
pub fn label_of(method: &ezk_sip_types::Method) -> &'static str {
    use ezk_sip_types::Method;
    let known = [
        (Method::INVITE, "INVITE"),
        (Method::ACK, "ACK"),
        (Method::BYE, "BYE"),
        (Method::CANCEL, "CANCEL"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::REGISTER, "REGISTER"),
        (Method::MESSAGE, "MESSAGE"),
        (Method::SUBSCRIBE, "SUBSCRIBE"),
        (Method::NOTIFY, "NOTIFY"),
        (Method::INFO, "INFO"),
        (Method::UPDATE, "UPDATE"),
        (Method::REFER, "REFER"),
        (Method::PRACK, "PRACK"),
        (Method::PUBLISH, "PUBLISH"),
    ];
    known
        .iter()
        .find(|(m, _)| m == method)
        .map(|(_, name)| *name)
        .unwrap_or("other")
}

/// The label of a message about to be sent, from its first word: the
/// method of a request, or "response".
pub fn label_of_bytes(bytes: &[u8]) -> &'static str {
    if crate::sip::stun::looks_like_stun(bytes) {
        return "stun";
    }
    let first = bytes.split(|b| *b == b' ').next().unwrap_or_default();
    if first.starts_with(b"SIP/") {
        return "response";
    }
    method_label(std::str::from_utf8(first).unwrap_or("?"))
}

impl Metrics {
    /// Counts one message. `method` is the method's name as written (or
    /// "response"); names outside RFC 3261 and its extensions count as "other".
    pub fn count(&self, method: &str, direction: &'static str) {
        self.messages
            .get_or_create(&MessageLabels {
                method: method_label(method),
                direction,
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut registry = Registry::with_prefix("p2psip");
        registry.register(
            "sip_messages",
            "SIP messages by method and direction",
            self.messages.clone(),
        );
        registry.register(
            "overlay_lookups",
            "Lookups this node started",
            self.lookups.clone(),
        );
        registry.register(
            "overlay_lookup_hops",
            "Hops per lookup",
            self.lookup_hops.clone(),
        );
        registry.register(
            "overlay_stabilize_rounds",
            "Stabilize rounds run",
            self.stabilize_rounds.clone(),
        );
        registry.register(
            "overlay_items_primary",
            "Items held as primary",
            self.items_primary.clone(),
        );
        registry.register(
            "overlay_items_replica",
            "Items held as replica",
            self.items_replica.clone(),
        );
        registry.register(
            "registrations",
            "Addresses-of-record registered through this node",
            self.registrations.clone(),
        );
        registry.register(
            "transactions",
            "Live SIP transactions",
            self.transactions.clone(),
        );
        registry.register(
            "overlay_refused",
            "Overlay messages refused (not from a member, or on another node's behalf)",
            self.overlay_refused.clone(),
        );
        registry.register(
            "overlay_records_refused",
            "Stores and removes refused: the sender may not change the record",
            self.records_refused.clone(),
        );
        registry.register(
            "overlay_items_over_limit",
            "New items refused: their writer had items_per_writer items here",
            self.items_over_limit.clone(),
        );
        registry.register(
            "overlay_rate_limited",
            "Overlay requests refused with 503: their member was over its rate",
            self.overlay_rate_limited.clone(),
        );
        registry.register(
            "overlay_bad_signatures",
            "Items and removes refused or not used: no valid signature of their writer or remover",
            self.bad_signatures.clone(),
        );
        registry.register(
            "overlay_signatures_made",
            "Signatures this node made over its items and removes (certificate mode)",
            self.signatures_made.clone(),
        );
        registry.register(
            "overlay_signatures_checked",
            "Signatures of items and removes checked in full",
            self.signatures_checked.clone(),
        );
        registry.register(
            "overlay_signatures_remembered",
            "Signature checks answered without one: the same bytes checked or signed here before",
            self.signatures_remembered.clone(),
        );
        registry.register(
            "ring_role",
            "1 for this node's role in the ring (member, super, client)",
            self.role.clone(),
        );
        registry.register(
            "ring_clients",
            "Clients attached to this node as a super-node",
            self.clients.clone(),
        );
        registry.register(
            "stun",
            "STUN messages on the SIP ports, by outcome",
            self.stun.clone(),
        );
        registry.register(
            "presence_subscriptions",
            "Presence and message-summary subscriptions held here",
            self.presence_subscriptions.clone(),
        );
        registry.register(
            "presence_notifies",
            "NOTIFYs sent to watchers",
            self.presence_notifies.clone(),
        );
        registry.register(
            "signups",
            "Sign-ups through the HTTP window, by outcome",
            self.signups.clone(),
        );
        let mut text = String::new();
        if encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_what_was_counted() {
        let metrics = Metrics::default();
        metrics.count("INVITE", "in");
        metrics.count("INVITE", "in");
        metrics.lookup_hops.observe(3.0);
        let text = metrics.encode();
        assert!(
            text.contains("p2psip_sip_messages_total{method=\"INVITE\",direction=\"in\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("p2psip_overlay_lookup_hops_count 1"),
            "{text}"
        );
    }
}
