//! What the operator's control channel lists: the registrations and the
//! items a node holds, as JSON (read from the core, never changing it).

use std::time::Instant;

use serde_json::{Value, json};

use crate::core::Core;
use crate::overlay::store::KIND as BINDING;
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

/// The binding sets held here: AOR, contacts, expiry, primary or replica.
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
