//! The operator's view of real nodes: `p2psip ring` walks a ten-node ring
//! from any node and lists every node in ring order, reports a gap after a
//! crash until stabilization closes it; `p2psip lookup` names the holders
//! the Node-IDs say (SHA-1 of the address); `p2psip users` lists a
//! registration; `p2psip check` validates a config. On rings with
//! `overlay_secret` and with certificates, `p2psip ring --data` and
//! `p2psip lookup --data` go through the node's control channel (the node
//! walks as a member): all members in order with role, items and load, the
//! holders the Node-IDs say, and `p2psip users` names the node that
//! accepted a registration. And what an operator
//! sees of a node: a dead `--join` warned about within 5 s with REGISTER
//! answered 503; JSON logs without colour; plain Prometheus `/metrics`;
//! SIGHUP reloads instead of killing; errors naming the failed socket or path.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::Value;
use sha1::{Digest, Sha1};

struct RingNode {
    node: Node,
    data: PathBuf,
}

fn start(join: Option<SocketAddr>) -> RingNode {
    start_with(join, &[])
}

/// A node with `--http` and `--data` (so a control channel) and `extra` flags.
fn start_with(join: Option<SocketAddr>, extra: &[&str]) -> RingNode {
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1))).to_string();
    let data = temp_dir("cli-data");
    let data_arg = data.display().to_string();
    let mut args = vec!["--http".to_string(), http, "--data".into(), data_arg];
    if let Some(j) = join {
        args.extend(["--join".into(), j.to_string()]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    RingNode {
        node: Node::start(&args),
        data,
    }
}

fn p2psip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2psip"))
        .args(args)
        .output()
        .expect("run p2psip")
}

fn json_of(out: &Output) -> Option<Value> {
    serde_json::from_slice(&out.stdout).ok()
}

fn said(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The live nodes' addresses in ring order (by Node-ID), starting at `from`.
fn ring_order(nodes: &[Option<RingNode>], from: SocketAddr) -> Vec<String> {
    let mut live: Vec<(String, SocketAddr)> = nodes
        .iter()
        .flatten()
        .map(|n| {
            (
                hex(&Sha1::digest(n.node.addr.to_string().as_bytes())),
                n.node.addr,
            )
        })
        .collect();
    for (id, addr) in &live {
        let node = nodes
            .iter()
            .flatten()
            .find(|n| n.node.addr == *addr)
            .expect("node");
        assert_eq!(*id, node.node.node_id, "Node-ID is SHA-1 of the address");
    }
    live.sort();
    let at = live
        .iter()
        .position(|(_, a)| *a == from)
        .expect("from is live");
    live.rotate_left(at);
    live.into_iter().map(|(_, a)| a.to_string()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn walked(out: &Output) -> Vec<String> {
    json_of(out)
        .and_then(|v| {
            v["nodes"].as_array().map(|a| {
                a.iter()
                    .filter_map(|n| n["addr"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Polls `p2psip ring --data DATA` until it succeeds and lists `want`.
fn wait_walk(what: &str, data: &str, want: &[String]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = p2psip(&["ring", "--data", data, "--json"]);
        if out.status.success() && walked(&out) == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not within 60 s: {what}\nwant {want:?}\n{}",
            said(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn data_arg(node: &RingNode) -> String {
    node.data.display().to_string()
}

#[test]
fn ring_walk_and_lookup_on_ten_nodes() {
    let mut nodes: Vec<Option<RingNode>> = vec![Some(start(None))];
    let first = nodes[0].as_ref().expect("first").node.addr;
    for _ in 1..10 {
        nodes.push(Some(start(Some(first))));
    }
    // Walked from any node: all ten in ring order, no problem reported.
    for i in [0, 4, 9] {
        let node = nodes[i].as_ref().expect("live");
        let from = node.node.addr;
        let data = data_arg(node);
        let want = ring_order(&nodes, from);
        wait_walk(
            "p2psip ring lists the ten nodes in ring order",
            &data,
            &want,
        );
    }
    // The table for people says the same.
    let node = nodes[4].as_ref().expect("live");
    let table = p2psip(&["ring", "--sip", &node.node.addr.to_string()]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("10 nodes"), "{}", said(&table));

    // A registration, and where the ring keeps it.
    let user = "carol";
    let aor = format!("{user}@{DOMAIN}");
    let contact = "sip:carol@127.0.0.1:5999";
    SippBuilder::new("register-carol", "register.xml", Transport::Udp)
        .to(nodes[2].as_ref().expect("live").node.addr)
        .key("user", user)
        .key("domain", DOMAIN)
        .key("contact", contact)
        .key("expires", "3600")
        .spawn()
        .expect_success(1);
    let key = hex(&Sha1::digest(aor.as_bytes()));
    let mut ids: Vec<(String, SocketAddr)> = nodes
        .iter()
        .flatten()
        .map(|n| (n.node.node_id.clone(), n.node.addr))
        .collect();
    ids.sort();
    let at = ids.iter().position(|(id, _)| *id >= key).unwrap_or(0);
    ids.rotate_left(at);
    let holders: Vec<String> = ids.iter().take(3).map(|(_, a)| a.to_string()).collect();
    // The holders a lookup names: the key's successor, then its successors
    // (the replicas), which stabilization may still be settling.
    for i in [1, 7] {
        let via = nodes[i].as_ref().expect("live").node.addr.to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = p2psip(&["lookup", &aor, "--sip", &via, "--json"]);
            let value = json_of(&out).unwrap_or_else(|| panic!("{}", said(&out)));
            let named: Vec<String> = value["holders"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect();
            let right = value["key"].as_str() == Some(key.as_str())
                && named.first() == holders.first()
                && named.len() >= 2
                && holders.starts_with(&named[..named.len().min(3)])
                && value["bindings"][0]["contact"].as_str() == Some(contact);
            if right {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "lookup through node {i}: holders {named:?}, want {holders:?} (key {key}, contact {contact})\n{}",
                said(&out)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // The primary holder lists the registration over the control channel.
    let primary = nodes
        .iter()
        .flatten()
        .find(|n| n.node.addr.to_string() == holders[0])
        .expect("holder");
    let out = p2psip(&["users", "--data", &data_arg(primary), "--json"]);
    let value = json_of(&out).unwrap_or_else(|| panic!("{}", said(&out)));
    let row = value["registrations"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["aor"].as_str() == Some(aor.as_str()))
        })
        .unwrap_or_else(|| panic!("no {aor} in {value}"));
    assert_eq!(row["held_as"].as_str(), Some("primary"), "{row}");
    assert_eq!(
        row["contacts"][0]["contact"].as_str(),
        Some(contact),
        "{row}"
    );
    // Without the token, the control channel refuses.
    let http = serde_json::from_str::<Value>(
        &std::fs::read_to_string(primary.data.join("control.json")).expect("control.json"),
    )
    .expect("control.json is JSON")["http"]
        .as_str()
        .expect("http")
        .to_string();
    let out = p2psip(&["users", "--http", &http]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        said(&out)
    );
    let items = p2psip(&["items", "--data", &data_arg(primary), "--json"]);
    assert!(
        json_of(&items).is_some_and(|v| v["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["name"].as_str() == Some(aor.as_str())))),
        "{}",
        said(&items)
    );

    // A crash: the walk reports the gap, then, once stabilization closed
    // it, lists the nine in order again.
    let victim = 6;
    nodes[victim].as_mut().expect("live").node.kill();
    nodes[victim] = None;
    let from = nodes[5].as_ref().expect("live");
    let data = data_arg(from);
    let gap = p2psip(&["ring", "--data", &data, "--json"]);
    let problems = json_of(&gap)
        .map(|v| v["problems"].clone())
        .unwrap_or_default();
    assert!(
        !gap.status.success() && problems.as_array().is_some_and(|p| !p.is_empty()),
        "a crash right now is a gap: {}",
        said(&gap)
    );
    let want = ring_order(&nodes, from.node.addr);
    wait_walk(
        "p2psip ring lists the nine survivors in order, no problem",
        &data,
        &want,
    );
}

/// The holders of `aor` the Node-IDs say: the key's successor, then the next two.
fn holders_of(nodes: &[&RingNode], aor: &str) -> Vec<String> {
    let key = hex(&Sha1::digest(aor.as_bytes()));
    let mut ids: Vec<(String, SocketAddr)> = nodes
        .iter()
        .map(|n| (n.node.node_id.clone(), n.node.addr))
        .collect();
    ids.sort();
    let at = ids.iter().position(|(id, _)| *id >= key).unwrap_or(0);
    ids.rotate_left(at);
    ids.iter().take(3).map(|(_, a)| a.to_string()).collect()
}

/// Polls `p2psip ARGS --json` until `right` holds of its JSON (30 s at most).
fn wait_json(what: &str, args: &[&str], right: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = args.to_vec();
        all.push("--json");
        let out = p2psip(&all);
        if let Some(value) = json_of(&out)
            && out.status.success()
            && right(&value)
        {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not within 30 s: {what}\n{}",
            said(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_secret_ring_is_walked_and_looked_up_through_the_nodes_control_channel() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("cli-secret");
    let secret = dir.join("secret");
    std::fs::write(
        &secret,
        "c2VjcmV0IHNoYXJlZCBieSB0aGUgbWVtYmVycyBvZiB0aGlzIHJpbmc=\n",
    )
    .expect("write secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let secret = secret.display().to_string();
    let dns = SocketAddr::from(([127, 0, 0, 1], port_block(1))).to_string();
    // The first node is also a gateway (it serves the domain's DNS).
    let gateway = start_with(None, &["--overlay-secret", &secret, "--dns", &dns]);
    let boot = gateway.node.addr;
    let others = [
        start_with(Some(boot), &["--overlay-secret", &secret]),
        start_with(Some(boot), &["--overlay-secret", &secret]),
    ];
    let nodes: Vec<&RingNode> = std::iter::once(&gateway).chain(others.iter()).collect();
    // The walk from any node lists all three in ring order, as members see them.
    let mut order: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.node.node_id.clone(), n.node.addr.to_string()))
        .collect();
    order.sort();
    for from in &nodes {
        let mut want: Vec<String> = order.iter().map(|(_, a)| a.clone()).collect();
        let at = want
            .iter()
            .position(|a| *a == from.node.addr.to_string())
            .expect("in order");
        want.rotate_left(at);
        wait_walk(
            "p2psip ring --data lists the three members of a secret ring",
            &data_arg(from),
            &want,
        );
    }
    // A visitor from outside the ring is refused: the walk must go through a member.
    let outside = p2psip(&["ring", "--sip", &boot.to_string(), "--json"]);
    assert!(!outside.status.success(), "{}", said(&outside));

    // A registration through the second node.
    let user = "erin";
    let aor = format!("{user}@{DOMAIN}");
    let contact = "sip:erin@127.0.0.1:5998";
    let accepting = &others[0];
    SippBuilder::new("register-erin", "register.xml", Transport::Udp)
        .to(accepting.node.addr)
        .key("user", user)
        .key("domain", DOMAIN)
        .key("contact", contact)
        .key("expires", "3600")
        .spawn()
        .expect_success(1);

    // Every node reports its role, items and load on the walk; the gateway
    // says it is one; the registration shows in the items held.
    let data = data_arg(&others[1]);
    let walked = wait_json(
        "every node's load on the walk, with the registration among the items",
        &["ring", "--data", &data],
        |v| {
            let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
            let loads: Vec<&Value> = nodes.iter().map(|n| &n["load"]).collect();
            let primary: u64 = loads.iter().filter_map(|l| l["primary"].as_u64()).sum();
            let replica: u64 = loads.iter().filter_map(|l| l["replica"].as_u64()).sum();
            nodes.len() == 3
                && loads
                    .iter()
                    .all(|l| l["rps"].as_f64().is_some() && l["pending"].as_u64().is_some())
                && primary >= 1
                && replica >= 2
        },
    );
    for n in walked["nodes"].as_array().into_iter().flatten() {
        let role = if n["addr"].as_str() == Some(boot.to_string().as_str()) {
            "gateway"
        } else {
            "node"
        };
        assert_eq!(n["load"]["role"].as_str(), Some(role), "{walked}");
    }
    let table = p2psip(&["ring", "--data", &data]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success()
            && text.contains("ITEMS")
            && text.contains("LOAD")
            && text.contains("gateway")
            && text.contains("req/s")
            && text.contains("3 nodes"),
        "{}",
        said(&table)
    );

    // The look-up through a member names the holders the Node-IDs say and the binding.
    let holders = holders_of(&nodes, &aor);
    for asked in &nodes {
        let value = wait_json(
            "p2psip lookup --data names the holders and the binding",
            &["lookup", &aor, "--data", &data_arg(asked)],
            |v| {
                let named: Vec<String> = v["holders"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|h| h.as_str().map(str::to_string))
                    .collect();
                named == holders && v["bindings"][0]["contact"].as_str() == Some(contact)
            },
        );
        assert_eq!(
            value["key"].as_str(),
            Some(hex(&Sha1::digest(aor.as_bytes())).as_str())
        );
    }

    // Every holder says which node accepted the registration.
    for holder in &holders {
        let node = nodes
            .iter()
            .find(|n| n.node.addr.to_string() == *holder)
            .expect("holder");
        wait_json(
            "p2psip users names the node that accepted the REGISTER",
            &["users", "--data", &data_arg(node)],
            |v| {
                v["registrations"].as_array().is_some_and(|rows| {
                    rows.iter().any(|r| {
                        r["aor"].as_str() == Some(aor.as_str())
                            && r["accepted_by"].as_str()
                                == Some(accepting.node.addr.to_string().as_str())
                            && r["accepted_by_id"].as_str() == Some(accepting.node.node_id.as_str())
                    })
                })
            },
        );
    }
    let table = p2psip(&["users", "--data", &data_arg(&others[1])]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("ACCEPTED BY") && text.contains(&accepting.node.addr.to_string()),
        "{}",
        said(&table)
    );
}

/// `p2psip certs ARGS` (must succeed).
fn certs(args: &[&str]) {
    let mut all = vec!["certs"];
    all.extend_from_slice(args);
    let out = p2psip(&all);
    assert!(out.status.success(), "certs {args:?}: {}", said(&out));
}

#[test]
fn a_certificate_ring_is_walked_and_looked_up_through_the_nodes_control_channel() {
    let dir = temp_dir("cli-certs");
    let ca = dir.join("ca");
    certs(&["ca", "--out", &ca.display().to_string()]);
    let mut nodes: Vec<RingNode> = Vec::new();
    for i in 0..3 {
        let base = port_block(2);
        let sip = SocketAddr::from(([127, 0, 0, 1], base));
        let http = SocketAddr::from(([127, 0, 0, 1], base + 1));
        let enrolled = dir.join(format!("m{i}"));
        certs(&[
            "node",
            "--ca",
            &ca.display().to_string(),
            "--sip",
            &sip.to_string(),
            "--out",
            &enrolled.display().to_string(),
        ]);
        let data = temp_dir("cli-certs-data");
        let mut builder = Node::builder()
            .name(&format!("m{i}"))
            .args(["--sip", &sip.to_string(), "--domain", DOMAIN])
            .args(["--http", &http.to_string()])
            .args(["--data", &data.display().to_string()])
            .args(["--overlay-ca", &ca.join("ca.pem").display().to_string()])
            .args([
                "--node-cert",
                &enrolled.join("node.pem").display().to_string(),
            ])
            .args([
                "--node-key",
                &enrolled.join("node-key.pem").display().to_string(),
            ]);
        if let Some(first) = nodes.first() {
            builder = builder.args(["--join", &first.node.addr.to_string()]);
        }
        nodes.push(RingNode {
            node: builder.spawn(),
            data,
        });
    }
    let mut order: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.node.node_id.clone(), n.node.addr.to_string()))
        .collect();
    order.sort();
    let from = &nodes[2];
    let mut want: Vec<String> = order.iter().map(|(_, a)| a.clone()).collect();
    let at = want
        .iter()
        .position(|a| *a == from.node.addr.to_string())
        .expect("in order");
    want.rotate_left(at);
    wait_walk(
        "p2psip ring --data lists the three members of a certificate ring",
        &data_arg(from),
        &want,
    );
    // A key nobody registered: its holders, no binding.
    let aor = format!("nobody@{DOMAIN}");
    let refs: Vec<&RingNode> = nodes.iter().collect();
    let holders = holders_of(&refs, &aor);
    wait_json(
        "p2psip lookup --data names the holders on a certificate ring",
        &["lookup", &aor, "--data", &data_arg(&nodes[1])],
        |v| {
            let named: Vec<String> = v["holders"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect();
            named == holders && v["bindings"].as_array().is_some_and(|b| b.is_empty())
        },
    );
}

/// A REGISTER for `domain` from a socket of ours; the answer.
fn register(node: SocketAddr, domain: &str) -> Option<RawResponse> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let local = socket.local_addr().expect("local");
    let branch = format!("z9hG4bK{}", token());
    let request = format!(
        "REGISTER sip:{domain} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:dave@{domain}>;tag={branch}\r\n\
         To: <sip:dave@{domain}>\r\n\
         Call-ID: {branch}@test\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:dave@{local}>\r\n\
         Expires: 60\r\n\
         Content-Length: 0\r\n\r\n"
    );
    socket.send_to(request.as_bytes(), node).expect("send");
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        let response = RawResponse::parse(&buf[..n])?;
        if response.status >= 200 {
            return Some(response);
        }
    }
}

#[test]
fn a_dead_join_is_warned_about_and_phones_get_503() {
    // A port nothing listens on: bound, then closed.
    let dead = UdpSocket::bind("127.0.0.1:0")
        .expect("udp")
        .local_addr()
        .expect("addr");
    let node = Node::start(&["--join", &dead.to_string()]);
    wait_until(
        "a warning naming the dead bootstrap node within 5 s",
        Duration::from_secs(5),
        || {
            let log = node.log();
            log.contains("cannot reach any bootstrap node") && log.contains(&dead.to_string())
        },
        || tail(&node.log(), 30),
    );
    let answer = register(node.addr, DOMAIN).expect("an answer to REGISTER");
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert!(answer.header("Retry-After").is_some(), "{}", answer.text);
    // A node started as the first one serves at once.
    let first = Node::start(&[]);
    let answer = register(first.addr, DOMAIN).expect("an answer to REGISTER");
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(!first.log().contains("cannot reach any bootstrap node"));
}

#[test]
fn a_register_for_a_foreign_domain_is_refused_with_a_reason_and_logged() {
    let node = Node::start(&[]);
    let answer = register(node.addr, "elsewhere.invalid").expect("an answer");
    assert_eq!(answer.status, 403, "{}", answer.text);
    let status_line = answer.text.lines().next().unwrap_or_default();
    assert!(status_line.contains("Not A Domain"), "{status_line}");
    wait_until(
        "a log line for the refusal",
        Duration::from_secs(5),
        || node.log().contains("registration refused"),
        || tail(&node.log(), 20),
    );
}

#[test]
fn a_target_dns_cannot_resolve_gets_503_not_500() {
    // A name server that does not answer: every look-up fails.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let nameserver = silent.local_addr().expect("addr").to_string();
    let node = Node::start(&["--nameserver", &nameserver]);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let local = socket.local_addr().expect("local");
    let branch = format!("z9hG4bK{}", token());
    let request = format!(
        "MESSAGE sip:someone@nowhere.invalid SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:dave@{DOMAIN}>;tag={branch}\r\n\
         To: <sip:someone@nowhere.invalid>\r\n\
         Call-ID: {branch}@test\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 2\r\n\r\nhi"
    );
    socket.send_to(request.as_bytes(), node.addr).expect("send");
    let mut buf = [0u8; 4096];
    let answer = loop {
        let (n, _) = socket.recv_from(&mut buf).expect("an answer");
        let response = RawResponse::parse(&buf[..n]).expect("a response");
        if response.status >= 200 {
            break response;
        }
    };
    assert!(matches!(answer.status, 404 | 503), "{}", answer.text);
}

#[test]
fn logs_are_json_or_plain_text_never_colour_codes() {
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let node = Node::start(&["--log-format", "json", "--http", &http.to_string()]);
    let answer = register(node.addr, DOMAIN).expect("an answer");
    assert_eq!(answer.status, 200, "{}", answer.text);
    wait_until(
        "a registration line in the log",
        Duration::from_secs(5),
        || node.log().contains("\"registration\""),
        || tail(&node.log(), 20),
    );
    let log = node.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string(), "{line}");
    }
    let registration = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "registration")
        .expect("registration line");
    assert_eq!(
        registration["fields"]["aor"].as_str(),
        Some("dave@example.test")
    );
    assert!(!log.contains('\u{1b}'), "no ANSI escape in a file");
    let text = Node::start(&[]);
    assert!(!text.log().is_empty() && !text.log().contains('\u{1b}'));

    // /metrics: Prometheus text, no OpenMetrics EOF.
    let metrics = http_get(http, "/metrics").expect("metrics");
    assert!(metrics.contains("# TYPE"), "{metrics}");
    assert!(!metrics.contains("# EOF"), "{metrics}");
}

#[test]
fn sighup_rereads_the_users_file_and_keeps_running() {
    let dir = temp_dir("sighup");
    let users = dir.join("users");
    add_user(&users, "erin@example.test", "first");
    let config = dir.join("p2psip.toml");
    std::fs::write(&config, "log_level = \"info\"\n").expect("config");
    let mut node = Node::start(&[
        "--users",
        &users.display().to_string(),
        "--config",
        &config.display().to_string(),
    ]);
    add_user(&users, "frank@example.test", "second");
    let pid = node_pid(&node);
    let sent = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    wait_until(
        "the node says it re-read the users file",
        Duration::from_secs(5),
        || node.log().contains("SIGHUP: re-reading the users file"),
        || tail(&node.log(), 20),
    );
    node.assert_alive();
}

fn add_user(file: &Path, aor: &str, password: &str) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2psip"))
        .args(["users", "add", "--file", &file.display().to_string(), aor])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("users add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password");
    assert!(child.wait().expect("wait").success());
}

/// The node's process id, from the processes whose working directory is its own.
fn node_pid(node: &Node) -> String {
    let out = Command::new("pgrep")
        .args(["-f", "p2psip node"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == node.dir))
        .expect("the node's pid")
        .to_string()
}

#[test]
fn check_validates_a_config() {
    let dir = temp_dir("check");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "sip = \"127.0.0.1:5070\"\ndomains = [\"example.test\"]\n",
    )
    .expect("write");
    let out = p2psip(&["check", "--config", &good.display().to_string()]);
    assert!(out.status.success(), "{}", said(&out));
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "log_format = \"xml\"\n").expect("write");
    let out = p2psip(&["check", "--config", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("log_format"), "{err}");
}

#[test]
fn errors_name_the_socket_or_path_that_failed() {
    let busy = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let busy_addr = busy.local_addr().expect("addr").to_string();
    let dir = temp_dir("errors");
    let run = |args: &[&str]| {
        let mut all = vec!["node", "--sip", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let out = p2psip(&all);
        assert!(!out.status.success(), "{}", said(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["--dns", &busy_addr, "--domain", DOMAIN]);
    assert!(err.contains("DNS on") && err.contains(&busy_addr), "{err}");
    assert!(!err.contains("Some("), "{err}");
    let file = dir.join("a-file");
    std::fs::write(&file, "").expect("write");
    let data = file.join("data");
    let err = run(&["--data", &data.display().to_string()]);
    assert!(
        err.contains("data directory") && err.contains("a-file"),
        "{err}"
    );
    let err = {
        let out = p2psip(&["node", "--sip", &busy_addr]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(err.contains("SIP on") && err.contains(&busy_addr), "{err}");
}

#[test]
fn advertise_names_the_node_by_the_mapped_address() {
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let mapped = "127.0.0.2:5999";
    let node = Node::start(&["--advertise", mapped, "--http", &http.to_string()]);
    let status: Value = http_get(http, "/status")
        .and_then(|b| serde_json::from_str(&b).ok())
        .expect("status");
    assert_eq!(status["addr"].as_str(), Some(mapped), "{status}");
    assert_eq!(
        status["node_id"].as_str(),
        Some(hex(&Sha1::digest(mapped.as_bytes())).as_str()),
        "the Node-ID is SHA-1 of the advertised address"
    );
    assert!(
        node.log().contains("advertised=127.0.0.2:5999"),
        "{}",
        tail(&node.log(), 10)
    );
}
