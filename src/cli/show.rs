//! The operator commands (`status`, `users`, `ring`, `lookup`, `items`):
//! ask the node, print a table for people or JSON for scripts (`--json`).
//! Exit 0 when all went well, 1 when the node could not be asked or the
//! ring walk found a problem, 2 for a bad argument.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::control::NodeAt;
use super::walk::{self, Visitor};
use p2psip::registrar::record;
use p2psip::ring::NodeId;

/// `println!` that ignores a closed pipe (`p2psip ring | head`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The node's answer at `path` for a table; `Err` with the exit code when
/// it failed or was printed whole (`--json`).
fn fetch(at: &NodeAt, path: &str) -> Result<Value, ExitCode> {
    let answer = at.find().and_then(|f| f.get(path)).map_err(fail)?;
    if at.json {
        print_json(&answer);
        return Err(ExitCode::SUCCESS);
    }
    Ok(answer)
}

fn fail(message: String) -> ExitCode {
    eprintln!("p2psip: {message}");
    ExitCode::FAILURE
}

fn print_json(value: &Value) {
    say!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `p2psip status`: the node's /status.
pub fn status(at: &NodeAt) -> ExitCode {
    let status = match fetch(at, "/status") {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    for key in [
        "addr",
        "node_id",
        "joined",
        "joining",
        "uptime_s",
        "domains",
        "registrations",
        "transactions",
        "forks",
        "items_primary",
        "items_replica",
        "pending_requests",
    ] {
        say!("{key:<18} {}", text(&status[key]));
    }
    say!(
        "{:<18} {}",
        "predecessor",
        text(&status["predecessor"]["addr"])
    );
    let list = |key: &str| -> String {
        status[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| text(&p["addr"]))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    say!("{:<18} {}", "successors", list("successors"));
    say!("{:<18} {}", "fingers", list("fingers"));
    ExitCode::SUCCESS
}

/// `p2psip users`: the registrations the node holds.
pub fn users(at: &NodeAt) -> ExitCode {
    let answer = match fetch(at, "/control/registrations") {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    say!(
        "{:<32} {:<8} {:>8}  {:<40} FROM",
        "AOR",
        "HELD AS",
        "EXPIRES",
        "CONTACT"
    );
    for row in answer["registrations"].as_array().into_iter().flatten() {
        for c in row["contacts"].as_array().into_iter().flatten() {
            say!(
                "{:<32} {:<8} {:>7}s  {:<40} {}",
                text(&row["aor"]),
                text(&row["held_as"]),
                text(&c["expires_in"]),
                text(&c["contact"]),
                text(&c["source"])
            );
        }
    }
    ExitCode::SUCCESS
}

/// `p2psip items`: every item the node holds.
pub fn items(at: &NodeAt) -> ExitCode {
    let answer = match fetch(at, "/control/items") {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    say!(
        "{:<12} {:<8} {:<9} {:>6} {:>8}  NAME",
        "KEY",
        "KIND",
        "HELD AS",
        "BYTES",
        "EXPIRES"
    );
    for row in answer["items"].as_array().into_iter().flatten() {
        let key = text(&row["key"]);
        say!(
            "{:<12} {:<8} {:<9} {:>6} {:>7}s  {}",
            key.get(..10).unwrap_or(&key),
            text(&row["kind"]),
            text(&row["held_as"]),
            text(&row["bytes"]),
            text(&row["expires_in"]),
            text(&row["name"])
        );
    }
    ExitCode::SUCCESS
}

/// `p2psip ring`: walks the ring and prints every node in order.
pub fn ring(at: &NodeAt) -> ExitCode {
    let start = match at.find().and_then(|f| f.sip_addr()) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let walked = Visitor::new(start).and_then(|mut v| walk::walk(&mut v, start));
    let walked = match walked {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    if at.json {
        print_json(&json!(walked));
    } else {
        say!(
            "{:>4}  {:<12} {:<24} {:<7} {:>7}",
            "#",
            "NODE-ID",
            "ADDRESS",
            "ROLE",
            "SHARE"
        );
        for (i, n) in walked.nodes.iter().enumerate() {
            let role = if n.addr == start { "asked" } else { "member" };
            say!(
                "{:>4}  {:<12} {:<24} {:<7} {:>6.2}%",
                i + 1,
                n.id.get(..10).unwrap_or(&n.id),
                n.addr.to_string(),
                role,
                n.share
            );
        }
        say!("{} nodes", walked.nodes.len());
        for p in &walked.problems {
            say!("{p}");
        }
    }
    if walked.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `p2psip lookup USER@DOMAIN`: the key, its holders, the hops, the bindings.
pub fn lookup(at: &NodeAt, aor: &str) -> ExitCode {
    if !aor
        .split_once('@')
        .is_some_and(|(u, d)| !u.is_empty() && !d.is_empty())
    {
        eprintln!("p2psip: {aor:?} is not USER@DOMAIN");
        return ExitCode::from(2);
    }
    let aor = aor.to_ascii_lowercase();
    let start = match at.find().and_then(|f| f.sip_addr()) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let key = NodeId::of_key(&aor);
    let found = Visitor::new(start).and_then(|mut v| walk::lookup(&mut v, start, key));
    let found = match found {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let now = std::time::Instant::now();
    let bindings: Vec<Value> = found
        .items
        .iter()
        .filter(|i| i.kind == "binding" && i.name == aor)
        .flat_map(|i| record::decode(&i.value, now).unwrap_or_default())
        .map(|b| json!({ "contact": b.contact, "expires_in": b.remaining(now).as_secs() }))
        .collect();
    let holders: Vec<String> = std::iter::once(found.holder)
        .chain(found.replicas.iter().copied())
        .map(|p| p.addr.to_string())
        .collect();
    let value = json!({
        "aor": aor,
        "key": found.key.to_string(),
        "holders": holders,
        "hops": found.hops,
        "bindings": bindings,
    });
    if at.json {
        print_json(&value);
        return ExitCode::SUCCESS;
    }
    say!("{:<10} {aor}", "aor");
    say!("{:<10} {}", "key", found.key);
    say!(
        "{:<10} {} (primary) {}",
        "holders",
        holders[0],
        holders[1..].join(" ")
    );
    say!("{:<10} {}", "hops", found.hops);
    if bindings.is_empty() {
        say!("{:<10} none", "bindings");
    }
    for b in &bindings {
        say!(
            "{:<10} {} (expires in {}s)",
            "binding",
            text(&b["contact"]),
            text(&b["expires_in"])
        );
    }
    ExitCode::SUCCESS
}
