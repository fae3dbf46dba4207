//! `p2psip turn find`: the TURN servers a node finds in the ring (its
//! `/turn`), ranked from that node, and the one to use. Exit 0 when one is
//! chosen, 1 when none is known (or the node could not be asked).

use std::process::ExitCode;

use serde_json::Value;

use super::control::NodeAt;

pub fn find(at: &NodeAt) -> ExitCode {
    let answer = match at.find().and_then(|f| f.get("/turn")) {
        Ok(answer) => answer,
        Err(message) => {
            eprintln!("p2psip: {message}");
            return ExitCode::FAILURE;
        }
    };
    let chosen = answer["chosen"]["turn"].as_str().map(str::to_string);
    let mut out = String::new();
    if at.json {
        out = serde_json::to_string_pretty(&answer).unwrap_or_default();
    } else {
        out.push_str("TURN ADDRESS           NODE                   REALM            RTT ms  LOAD  ALLOCATIONS\n");
        for relay in answer["relays"].as_array().into_iter().flatten() {
            out.push_str(&row(relay));
        }
        match &chosen {
            Some(turn) => out.push_str(&format!("chosen: turn:{turn}")),
            None => {
                out.push_str("chosen: none (no TURN server with room is advertised in the ring)")
            }
        }
    }
    {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{out}");
    }
    if chosen.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn row(relay: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let rtt = relay["rtt_ms"]
        .as_f64()
        .map(|ms| format!("{ms:.1}"))
        .unwrap_or_else(|| "-".into());
    let load = relay["load"].as_f64().unwrap_or(1.0);
    format!(
        "{:<22} {:<22} {:<16} {:>6}  {:>3.0}%  {}/{}\n",
        text(&relay["turn"]),
        text(&relay["node"]),
        text(&relay["realm"]),
        rtt,
        load * 100.0,
        relay["allocations"],
        relay["max_allocations"],
    )
}
