//! The operator commands (`status`, `users`, `ring`, `lookup`, `items`):
//! ask the node, print a table for people or JSON for scripts (`--json`).
//! Exit 0 when all went well, 1 when the node could not be asked or the
//! ring walk found a problem, 2 for a bad argument.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::control::{self, NodeAt, SURVEY_TIMEOUT};
use super::walk::{self, Visitor};
use p2psip::node::http::is_aor;
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
        "{:<32} {:<8} {:>8}  {:<40} {:<24} FROM",
        "AOR",
        "HELD AS",
        "EXPIRES",
        "CONTACT",
        "ACCEPTED BY"
    );
    for row in answer["registrations"].as_array().into_iter().flatten() {
        // The accepting node's address when the node knows it, else its Node-ID.
        let accepted = match &row["accepted_by"] {
            Value::Null => {
                let id = text(&row["accepted_by_id"]);
                format!("id {}", id.get(..10).unwrap_or(&id))
            }
            other => text(other),
        };
        for c in row["contacts"].as_array().into_iter().flatten() {
            say!(
                "{:<32} {:<8} {:>7}s  {:<40} {:<24} {}",
                text(&row["aor"]),
                text(&row["held_as"]),
                text(&c["expires_in"]),
                text(&c["contact"]),
                accepted,
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

/// `p2psip ring`: walks the ring and prints every node in order. With the
/// control token (`--data`), the node walks it as a member and answers over
/// `/control/ring`; named only by `--sip` (or `--http` without a token),
/// the CLI walks it as a visitor (open rings only).
pub fn ring(at: &NodeAt) -> ExitCode {
    let found = match at.find() {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let walked = if found.token.is_some() {
        found.get_within("/control/ring", SURVEY_TIMEOUT)
    } else {
        found.sip_addr().and_then(|start| {
            let mut visitor = Visitor::new(start)?;
            Ok(json!(walk::walk(&mut visitor, start)))
        })
    };
    let walked = match walked {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let nodes = walked["nodes"].as_array().cloned().unwrap_or_default();
    let problems: Vec<String> = walked["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    if at.json {
        print_json(&walked);
    } else {
        say!(
            "{:>4}  {:<12} {:<24} {:<8} {:>7}  {:>13}  LOAD",
            "#",
            "NODE-ID",
            "ADDRESS",
            "ROLE",
            "SHARE",
            "ITEMS P/R"
        );
        for (i, n) in nodes.iter().enumerate() {
            let id = text(&n["id"]);
            let load = &n["load"];
            let (role, items, rate) = if load.is_object() {
                (
                    text(&load["role"]),
                    format!("{}/{}", text(&load["primary"]), text(&load["replica"])),
                    format!(
                        "{:.2} req/s, {} pending",
                        load["rps"].as_f64().unwrap_or(0.0),
                        text(&load["pending"])
                    ),
                )
            } else {
                ("-".into(), "-".into(), "-".into())
            };
            say!(
                "{:>4}  {:<12} {:<24} {:<8} {:>6.2}%  {:>13}  {}",
                i + 1,
                id.get(..10).unwrap_or(&id),
                text(&n["addr"]),
                role,
                n["share"].as_f64().unwrap_or(0.0),
                items,
                rate
            );
        }
        say!("{} nodes, walked from the first", nodes.len());
        for p in &problems {
            say!("{p}");
        }
    }
    if problems.is_empty() && !nodes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `p2psip lookup USER@DOMAIN`: the key, its holders, the hops, the
/// bindings; through the node's control channel when the token is known
/// (the node looks it up as a member), else as a visitor over SIP.
pub fn lookup(at: &NodeAt, aor: &str) -> ExitCode {
    if !is_aor(aor) {
        eprintln!("p2psip: {aor:?} is not USER@DOMAIN");
        return ExitCode::from(2);
    }
    let aor = aor.to_ascii_lowercase();
    let found = match at.find() {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let value = if found.token.is_some() {
        let path = format!("/control/lookup/{}", control::path_segment(&aor));
        found.get_within(&path, SURVEY_TIMEOUT)
    } else {
        found.sip_addr().and_then(|start| visit_lookup(start, &aor))
    };
    let value = match value {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if at.json {
        print_json(&value);
        return ExitCode::SUCCESS;
    }
    let holders: Vec<String> = value["holders"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    say!("{:<10} {aor}", "aor");
    say!("{:<10} {}", "key", text(&value["key"]));
    say!(
        "{:<10} {} (primary) {}",
        "holders",
        holders.first().map(String::as_str).unwrap_or("-"),
        holders.get(1..).unwrap_or_default().join(" ")
    );
    say!("{:<10} {}", "hops", text(&value["hops"]));
    let bindings = value["bindings"].as_array().cloned().unwrap_or_default();
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

/// The look-up as a visitor: FindSuccessor through `start`, Fetch at the holder.
fn visit_lookup(start: std::net::SocketAddr, aor: &str) -> Result<Value, String> {
    let key = NodeId::of_key(aor);
    let found = Visitor::new(start).and_then(|mut v| walk::lookup(&mut v, start, key))?;
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
    Ok(json!({
        "aor": aor,
        "key": found.key.to_string(),
        "holders": holders,
        "hops": found.hops,
        "bindings": bindings,
    }))
}
