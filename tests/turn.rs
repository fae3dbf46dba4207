//! TURN (RFC 8656) in the node, with real processes over loopback: coturn's
//! `turnutils_uclient` allocates relays on the node's `--turn` port with a
//! user's SIP password (long-term credentials whose key is her digest HA1),
//! binds channels or sends indications, and relays RTP-sized packets between
//! its own allocations (`-y`); a wrong password gets no allocation; and a
//! node with no users file finds the credentials in the ring; and a node
//! without a TURN server finds one advertised in the ring (`GET /turn`,
//! `p2psip turn find`) and forgets it when its node leaves or dies.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    ChildGuard, Node, add_user, http_get, port_block, require_tool, temp_dir, wait_until,
};

/// How long a run that relays may take, and how long a refused one is given.
const RUN: Duration = Duration::from_secs(40);
const SILENCED: Duration = Duration::from_secs(5);

fn users_file(tag: &str) -> PathBuf {
    let file = temp_dir(tag).join("users");
    add_user(&file, "alice@example.test", "wonderland");
    file
}

/// What one `turnutils_uclient` run did.
struct Run {
    ok: bool,
    output: String,
}

impl Run {
    /// The totals of its last `start_mclient: tot_send_msgs=N, tot_recv_msgs=M` line.
    fn totals(&self) -> Option<(u64, u64)> {
        let line = self
            .output
            .lines()
            .rev()
            .find(|l| l.contains("start_mclient: tot_send_msgs="))?;
        let number = |key: &str| -> Option<u64> {
            let rest = line.split(key).nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        Some((number("tot_send_msgs=")?, number("tot_recv_msgs=")?))
    }
}

/// `turnutils_uclient -y` (its allocations are each other's peers) with
/// `password`, `messages` per client, and `extra` flags; killed after
/// `limit` (a client the node has silenced waits for ever).
fn uclient(
    turn: SocketAddr,
    password: &str,
    messages: u32,
    extra: &[&str],
    limit: Duration,
    tag: &str,
) -> Run {
    let tool = require_tool("turnutils_uclient", "coturn");
    let out = temp_dir(tag).join("uclient.log");
    let file = std::fs::File::create(&out).expect("log");
    let child = Command::new(tool)
        .args(extra)
        .args([
            "-y",
            "-u",
            "alice",
            "-w",
            password,
            "-n",
            &messages.to_string(),
        ])
        .args(["-p", &turn.port().to_string(), &turn.ip().to_string()])
        .stdout(Stdio::from(file.try_clone().expect("log")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("spawn turnutils_uclient");
    let mut guard = ChildGuard::new("turnutils_uclient", child);
    let deadline = Instant::now() + limit;
    let ok = loop {
        if let Some(status) = guard.try_wait() {
            break status.success();
        }
        if Instant::now() >= deadline {
            break false; // the guard kills it
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(guard);
    Run {
        ok,
        output: common::read_lossy(&out),
    }
}

fn allocations_in(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("TURN allocation client="))
        .count()
}

#[test]
fn uclient_relays_through_the_node_with_the_users_password_and_not_with_another() {
    let users = users_file("turn-local");
    let turn = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let mut node = Node::start(&[
        "--users",
        users.to_str().expect("path"),
        "--turn",
        &turn.to_string(),
        "--http",
        &http.to_string(),
    ]);

    // From 127.0.0.2: its failures get it blocked (the node's [limits]),
    // which must not silence alice on 127.0.0.1.
    let refused = uclient(
        turn,
        "guess",
        5,
        &["-L", "127.0.0.2"],
        SILENCED,
        "turn-wrong",
    );
    assert!(
        !refused.ok,
        "a wrong password allocates nothing:\n{}",
        refused.output
    );
    assert!(
        node.log()
            .contains("source blocked after failed authentications ip=127.0.0.2"),
        "{}",
        common::tail(&node.log(), 40)
    );
    assert_eq!(
        allocations_in(&node.log()),
        0,
        "{}",
        common::tail(&node.log(), 40)
    );

    // Channels (ChannelBind, ChannelData), the default.
    let channels = uclient(turn, "wonderland", 20, &[], RUN, "turn-channels");
    let totals = channels.totals();
    assert!(
        channels.ok,
        "{}\n{}",
        channels.output,
        common::tail(&node.log(), 40)
    );
    assert!(!channels.output.contains("ERROR"), "{}", channels.output);
    // -y: four clients (RTP and RTCP of two), 20 messages each, all back.
    assert_eq!(totals, Some((80, 80)), "{}", channels.output);
    assert!(
        allocations_in(&node.log()) >= 4,
        "{}",
        common::tail(&node.log(), 40)
    );

    // Send and Data indications (-s).
    let indications = uclient(turn, "wonderland", 20, &["-s"], RUN, "turn-send");
    assert!(indications.ok, "{}", indications.output);
    assert_eq!(
        indications.totals(),
        Some((80, 80)),
        "{}",
        indications.output
    );

    // The status page counts them.
    let status: serde_json::Value =
        serde_json::from_str(&http_get(http, "/status").expect("status")).expect("json");
    assert_eq!(status["turn"]["addr"], turn.to_string(), "{status}");
    assert!(
        status["turn"]["allocated_total"].as_u64() >= Some(8),
        "{status}"
    );
    assert!(
        status["turn"]["relayed_to_peers"].as_u64() >= Some(160),
        "{status}"
    );
    node.assert_alive();
}

#[test]
fn a_node_without_users_finds_the_turn_credentials_in_the_ring() {
    let users = users_file("turn-ring");
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let turn = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let a = Node::start(&["--users", users.to_str().expect("path")]);
    let b = Node::start(&[
        "--auth",
        "digest",
        "--join",
        &a.addr.to_string(),
        "--http",
        &http.to_string(),
        "--turn",
        &turn.to_string(),
    ]);
    wait_until(
        "b joined a",
        Duration::from_secs(15),
        || {
            http_get(http, "/status")
                .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                .is_some_and(|s| s["successors"][0]["id"].as_str() == Some(a.node_id.as_str()))
        },
        || b.log(),
    );
    // The credentials reach the ring at a's start or its next publication
    // (and b remembers an absence for 30 s): try until they are there, each
    // time from another source address, since failures get one blocked.
    let last = std::cell::RefCell::new(String::new());
    let attempt = std::cell::Cell::new(0u8);
    wait_until(
        "alice allocates at b with her password",
        Duration::from_secs(75),
        || {
            attempt.set(attempt.get() + 1);
            let source = format!("127.0.1.{}", attempt.get());
            let flags = ["-c", "-L", source.as_str()];
            let run = uclient(turn, "wonderland", 5, &flags, RUN, "turn-ring-run");
            *last.borrow_mut() = run.output.clone();
            run.ok
                && run
                    .totals()
                    .is_some_and(|(sent, got)| sent > 0 && sent == got)
        },
        || format!("{}\n{}", last.borrow(), common::tail(&b.log(), 40)),
    );
    let before = allocations_in(&b.log());
    let refused = uclient(
        turn,
        "guess",
        5,
        &["-c", "-L", "127.0.0.2"],
        SILENCED,
        "turn-ring-wrong",
    );
    assert!(!refused.ok, "{}", refused.output);
    assert_eq!(
        allocations_in(&b.log()),
        before,
        "{}",
        common::tail(&b.log(), 40)
    );
}

/// `GET /turn` on the node at `http`, as JSON (none while it cannot answer).
fn turn_at(http: SocketAddr) -> Option<serde_json::Value> {
    http_get(http, "/turn").and_then(|body| serde_json::from_str(&body).ok())
}

#[test]
fn the_ring_finds_turn_servers_and_forgets_them_when_their_nodes_leave_or_die() {
    let users = users_file("turn-service");
    let config = temp_dir("turn-service").join("node.toml");
    std::fs::write(&config, "[turn]\nadvertise_s = 1\n").expect("config");
    let config = config.to_str().expect("path");
    let turn = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let http_c = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let a = Node::start(&["--users", users.to_str().expect("path"), "--config", config]);
    let join = a.addr.to_string();
    let mut b = Node::start(&[
        "--join",
        &join,
        "--turn",
        &turn.to_string(),
        "--config",
        config,
    ]);
    let c = Node::start(&[
        "--join",
        &join,
        "--http",
        &http_c.to_string(),
        "--config",
        config,
    ]);

    // c has no TURN server of its own: it finds b's through the ring.
    let last = std::cell::RefCell::new(serde_json::Value::Null);
    wait_until(
        "c finds b's TURN server in the ring",
        Duration::from_secs(30),
        || {
            let found = turn_at(http_c).unwrap_or_default();
            let chosen = found["chosen"].clone();
            *last.borrow_mut() = found;
            chosen["turn"] == turn.to_string() && chosen["node"] == b.addr.to_string()
        },
        || format!("{}\n{}", last.borrow(), common::tail(&c.log(), 30)),
    );
    let found = last.borrow().clone();
    let chosen = &found["chosen"];
    assert_eq!(chosen["realm"], "example.test", "{found}");
    assert_eq!(chosen["allocations"], 0, "{found}");
    assert_eq!(chosen["max_allocations"], 1000, "{found}");
    assert_eq!(found["relays"].as_array().map(Vec::len), Some(1), "{found}");
    // b is c's neighbour in a ring of three: the ring has measured it.
    assert!(chosen["rtt_ms"].as_f64().is_some(), "{found}");
    // The operator's CLI says the same.
    let (ok, out) = turn_find(http_c);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("chosen: turn:{turn}")), "{out}");
    // /status lists what the last round found.
    let status: serde_json::Value =
        serde_json::from_str(&http_get(http_c, "/status").expect("status")).expect("json");
    assert_eq!(
        status["turn_relays"]["relays"][0]["turn"],
        turn.to_string(),
        "{status}"
    );
    b.assert_alive();

    // d advertises for 90 s at a time, and leaves gracefully: its
    // advertisement goes with it, long before it would lapse.
    let slow = temp_dir("turn-service-slow").join("node.toml");
    std::fs::write(&slow, "[turn]\nadvertise_s = 30\n").expect("config");
    let turn_d = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let mut d = Node::start(&[
        "--join",
        &join,
        "--turn",
        &turn_d.to_string(),
        "--config",
        slow.to_str().expect("path"),
    ]);
    let offered = |found: &serde_json::Value| -> Vec<String> {
        found["relays"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["turn"].as_str().map(str::to_string))
            .collect()
    };
    wait_until(
        "c finds d's TURN server beside b's",
        Duration::from_secs(30),
        || {
            let found = turn_at(http_c).unwrap_or_default();
            let both = offered(&found).len() == 2;
            *last.borrow_mut() = found;
            both
        },
        || format!("{}\n{}", last.borrow(), common::tail(&d.log(), 30)),
    );
    assert!(d.terminate().success(), "{}", common::tail(&d.log(), 30));
    wait_until(
        "c no longer offers d's TURN server once d left",
        Duration::from_secs(15),
        || {
            let found = turn_at(http_c).unwrap_or_default();
            let left = offered(&found) == vec![turn.to_string()];
            *last.borrow_mut() = found;
            left
        },
        || format!("{}\n{}", last.borrow(), common::tail(&d.log(), 30)),
    );

    // b dies without a word: its advertisement lapses within three periods.
    b.kill();
    wait_until(
        "c no longer offers b's TURN server",
        Duration::from_secs(20),
        || {
            let found = turn_at(http_c).unwrap_or_default();
            let gone =
                found["chosen"].is_null() && found["relays"].as_array().is_some_and(Vec::is_empty);
            *last.borrow_mut() = found;
            gone
        },
        || format!("{}\n{}", last.borrow(), common::tail(&c.log(), 30)),
    );
    let (ok, out) = turn_find(http_c);
    assert!(!ok && out.contains("chosen: none"), "{out}");
    drop(a);
}

/// `p2psip turn find --http ADDR`: whether it exited 0, and what it printed.
fn turn_find(http: SocketAddr) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_p2psip"))
        .args(["turn", "find", "--http", &http.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run p2psip turn find");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
