//! What the operator's control channel lists: the registrations and the
//! items a node holds (read from the core, never changing it), and the
//! reports of the ring walks and look-ups it ran, as JSON.

use std::time::Instant;

use serde_json::{Value, json};

use crate::core::Core;
use crate::overlay::store::KIND as BINDING;
use crate::overlay::walk::Report;
use crate::registrar::record;
use crate::ring::Item;

/// Whether this node is the key's primary holder (its successor).
fn primary(core: &Core, item: &Item) -> bool {
    let Some(overlay) = core.overlay() else {
        return true;
    };
    let ring = overlay.ring();
    match ring.predecessor() {
        Some(pred) => item.key.in_open_closed(pred.id, ring.me().id),
        None => ring.successors().is_empty(),
    }
}

/// The address of the node with Node-ID `writer`, when it is this node or
/// one it knows (Node-IDs are SHA-1 of the address); else `None`.
fn node_at(core: &Core, writer: crate::ring::NodeId) -> Option<String> {
    let ring = core.overlay()?.ring();
    if ring.me().id == writer {
        return Some(ring.me().addr.to_string());
    }
    ring.known_peers()
        .into_iter()
        .find(|addr| crate::ring::NodeId::of_addr(*addr) == writer)
        .map(|addr| addr.to_string())
}

/// The binding sets held here: AOR, contacts, expiry, primary or replica,
/// and the node that accepted the REGISTER (the binding's writer: its
/// Node-ID, and its address when this node knows it).
pub fn registrations(core: &Core, now: Instant) -> Value {
    let node = core.config().local.to_string();
    let Some(overlay) = core.overlay() else {
        return json!({ "node": node, "registrations": [] });
    };
    let mut rows: Vec<Value> = overlay
        .ring()
        .all_items()
        .filter(|i| i.kind == BINDING && i.expires > now)
        .map(|item| {
            let bindings = record::decode(&item.value, now).unwrap_or_default();
            let contacts: Vec<Value> = bindings
                .iter()
                .map(|b| json!({ "contact": b.contact, "expires_in": b.remaining(now).as_secs(), "source": b.source.map(|p| format!("{}:{}", p.transport, p.addr)) }))
                .collect();
            json!({
                "aor": item.name,
                "key": item.key.to_string(),
                "contacts": contacts,
                "expires_in": item.expires.saturating_duration_since(now).as_secs(),
                "held_as": if primary(core, item) { "primary" } else { "replica" },
                "accepted_by": node_at(core, item.writer),
                "accepted_by_id": item.writer.to_string(),
            })
        })
        .collect();
    rows.sort_by(|a, b| a["aor"].as_str().cmp(&b["aor"].as_str()));
    json!({ "node": node, "registrations": rows })
}

/// Every item held here: key, name, kind, size, expiry, primary or replica.
pub fn items(core: &Core, now: Instant) -> Value {
    let node = core.config().local.to_string();
    let Some(overlay) = core.overlay() else {
        return json!({ "node": node, "items": [] });
    };
    let mut rows: Vec<Value> = overlay
        .ring()
        .all_items()
        .map(|item| {
            json!({
                "key": item.key.to_string(),
                "name": item.name,
                "kind": item.kind,
                "bytes": item.value.len(),
                "version": item.version,
                "expires_in": item.expires.saturating_duration_since(now).as_secs(),
                "held_as": if primary(core, item) { "primary" } else { "replica" },
            })
        })
        .collect();
    rows.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    json!({ "node": node, "items": rows })
}

/// Most users listed in `/status` (for the page).
const MAX_USERS: usize = 500;

/// The AORs whose bindings this node holds, primary or replica, at most
/// [`MAX_USERS`] (for `/status` and the page).
pub fn users_held(core: &Core, now: Instant) -> Value {
    let Some(overlay) = core.overlay() else {
        return json!([]);
    };
    let mut rows: Vec<(String, &'static str)> = overlay
        .ring()
        .all_items()
        .filter(|i| i.kind == BINDING && i.expires > now)
        .map(|i| {
            let held = if primary(core, i) {
                "primary"
            } else {
                "replica"
            };
            (i.name.clone(), held)
        })
        .collect();
    rows.sort();
    rows.dedup();
    rows.truncate(MAX_USERS);
    json!(
        rows.into_iter()
            .map(|(aor, held)| json!({ "aor": aor, "held_as": held }))
            .collect::<Vec<_>>()
    )
}

/// On a gateway: each domain's live gateways, whose NAPTR, SRV and A
/// records its DNS server publishes.
pub fn gateways(core: &Core) -> Value {
    let sets = core.overlay().map(|o| o.gateway_sets()).unwrap_or_default();
    json!(
        sets.into_iter()
            .map(|(domain, set)| json!({ "domain": domain, "gateways": set }))
            .collect::<Vec<_>>()
    )
}

/// A walk's report: the nodes in ring order and the problems.
pub fn walk(report: Report) -> Value {
    match report {
        Report::Walk(walk) => json!(walk),
        Report::Busy => {
            json!({ "nodes": [], "problems": ["busy: too many walks and look-ups running on this node"] })
        }
        Report::Lookup(_) => json!({ "nodes": [], "problems": ["not a walk"] }),
    }
}

/// A look-up's report: the key, its holders, the hops, the bindings of `aor`.
pub fn lookup(aor: &str, report: Report, now: Instant) -> Result<Value, String> {
    let found = match report {
        Report::Lookup(found) => found?,
        Report::Busy => return Err("busy: too many walks and look-ups running on this node".into()),
        Report::Walk(_) => return Err("not a look-up".into()),
    };
    let bindings: Vec<Value> = found
        .items
        .iter()
        .filter(|i| i.kind == BINDING && i.name == aor && i.expires > now)
        .flat_map(|i| record::decode(&i.value, now).unwrap_or_default())
        .map(|b| json!({ "contact": b.contact, "expires_in": b.remaining(now).as_secs() }))
        .collect();
    let holders: Vec<String> = found.holders.iter().map(|p| p.addr.to_string()).collect();
    Ok(json!({
        "aor": aor,
        "key": found.key.to_string(),
        "holders": holders,
        "hops": found.hops,
        "bindings": bindings,
    }))
}
