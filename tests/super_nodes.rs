//! Super-nodes and clients through real NAT (issue 13, item 5): a ring of
//! three members on the "public" side of `tests/common/nat.rs`; a node in
//! a home behind a MASQUERADE router, started with `[ring] role = "auto"`,
//! finds itself unreachable and stays a client of the member it joined
//! (no member names it); its SIPp phone registers at it (the binding goes
//! into the ring through the super-node) and calls a SIPp phone registered
//! at a member; killed with SIGKILL, it loses nothing (the binding is held
//! by members). A node on the public side started with `--client` is
//! promoted after a short promotion time and then holds keys.
//! Needs root, iproute2, iptables and SIPp.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use common::nat::{HOME, Nat};
use common::netns::Netns;
use common::{DOMAIN, Node, SippBuilder, Transport, tail, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// A node and its HTTP address, in its namespace.
struct At<'a> {
    node: Node,
    http: SocketAddr,
    ns: &'a Netns,
}

impl At<'_> {
    fn status(&self) -> Value {
        self.ns
            .http_get(self.http, "/status")
            .and_then(|body| serde_json::from_str(&body).ok())
            .unwrap_or_default()
    }

    fn metrics(&self) -> String {
        self.ns.http_get(self.http, "/metrics").unwrap_or_default()
    }
}

fn start<'a>(ns: &'a Netns, name: &str, ip: &str, port: u16, extra: &[&str]) -> At<'a> {
    let sip = format!("{ip}:{port}");
    let http: SocketAddr = format!("{ip}:{}", port + 1000).parse().expect("http");
    let node = Node::builder()
        .name(name)
        .in_netns(ns)
        .args(["--sip", &sip, "--http", &http.to_string()])
        .args(["--domain", DOMAIN, "--auth", "open"])
        .args(extra)
        .spawn();
    At { node, http, ns }
}

/// Every address a `/status` names: predecessor, successors, fingers.
fn known(s: &Value) -> Vec<String> {
    let mut out: Vec<String> = s["predecessor"]["addr"]
        .as_str()
        .map(String::from)
        .into_iter()
        .collect();
    for list in ["successors", "fingers"] {
        for p in s[list].as_array().into_iter().flatten() {
            out.extend(p["addr"].as_str().map(String::from));
        }
    }
    out
}

fn logs(nodes: &[&At]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {}:\n{}", n.node.name, tail(&n.node.log(), 30)))
        .collect()
}

fn holds(s: &Value, aor: &str) -> bool {
    s["users"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|u| u["aor"].as_str() == Some(aor))
}

#[test]
fn a_node_behind_nat_is_a_client_its_phones_call_and_a_reachable_client_is_promoted() {
    let nat = Nat::new(1);
    let public = nat.public_ip().to_string();
    let home = HOME.to_string();
    let first = start(&nat.public, "member-0", &public, 5060, &[]);
    let boot = first.node.addr.to_string();
    let members = vec![
        first,
        start(&nat.public, "member-1", &public, 5070, &["--join", &boot]),
        start(&nat.public, "member-2", &public, 5080, &["--join", &boot]),
    ];
    let all: Vec<&At> = members.iter().collect();
    wait_until(
        "three members in one ring",
        WAIT,
        || {
            members.iter().all(|m| {
                m.status()["successors"]
                    .as_array()
                    .is_some_and(|s| s.len() == 2)
            })
        },
        || logs(&all),
    );

    // The node behind NAT: unreachable, so a client of member-0.
    let config = nat.home(1).dir.join("client.toml");
    std::fs::write(&config, "[ring]\nrole = \"auto\"\nclient_refresh_s = 1\n").expect("config");
    let mut client = start(
        nat.home(1),
        "client",
        &home,
        5060,
        &["--join", &boot, "--config", &config.display().to_string()],
    );
    let client_addr = client.node.addr.to_string();
    wait_until(
        "the node behind NAT is a client of member-0",
        WAIT,
        || {
            let s = client.status();
            s["role"] == "client" && s["super_node"]["addr"].as_str() == Some(boot.as_str())
        },
        || format!("{}\n{}", client.status(), logs(&[&client, &members[0]])),
    );
    assert!(
        client
            .node
            .log()
            .contains("not reachable from the ring: staying a client")
    );
    let s0 = members[0].status();
    assert_eq!(s0["role"], "super", "{s0}");
    assert_eq!(s0["clients"], 1, "{s0}");
    assert!(
        members[0]
            .metrics()
            .contains("p2psip_ring_role{role=\"super\"} 1")
    );
    assert!(
        client
            .metrics()
            .contains("p2psip_ring_role{role=\"client\"} 1")
    );

    // Bob: a SIPp phone on the public side, registered at member-2.
    let bob = SippBuilder::new("bob", "uas_call.xml", Transport::Udp)
        .in_netns(&nat.public)
        .ip(&public)
        .port(5090)
        .timeout(Duration::from_secs(120))
        .spawn();
    wait_until(
        "bob's SIPp listening",
        WAIT,
        || {
            let (_, out, _) = nat.public.run(&["ss", "-Hlun"]);
            out.contains(&format!("{public}:5090"))
        },
        String::new,
    );
    SippBuilder::new("register-bob", "register.xml", Transport::Udp)
        .in_netns(&nat.public)
        .ip(&public)
        .to(members[2].node.addr)
        .key("user", "bob")
        .key("domain", DOMAIN)
        .key("contact", &format!("sip:bob@{public}:5090"))
        .key("expires", "3600")
        .spawn()
        .expect_success(1);

    // Alice: a SIPp phone in the home, registered at the client.
    SippBuilder::new("register-alice", "register.xml", Transport::Udp)
        .in_netns(nat.home(1))
        .ip(&home)
        .to(client.node.addr)
        .key("user", "alice")
        .key("domain", DOMAIN)
        .key("contact", &format!("sip:alice@{home}:5095"))
        .key("expires", "3600")
        .spawn()
        .expect_success_with(1, || logs(&[&client, &members[0]]));
    let alice_aor = format!("alice@{DOMAIN}");
    wait_until(
        "alice's binding held by members",
        WAIT,
        || {
            members
                .iter()
                .filter(|m| holds(&m.status(), &alice_aor))
                .count()
                >= 2
        },
        || logs(&all),
    );
    assert!(
        !holds(&client.status(), &alice_aor),
        "a client holds nothing"
    );
    let cs = client.status();
    assert_eq!(cs["items_primary"], 0, "{cs}");
    assert_eq!(cs["items_replica"], 0, "{cs}");

    // Alice calls bob: through the client, which looks bob up through its
    // super-node and proxies the call out through the NAT.
    SippBuilder::new("alice-calls", "uac_call.xml", Transport::Udp)
        .in_netns(nat.home(1))
        .ip(&home)
        .port(5096)
        .to(client.node.addr)
        .service("bob")
        .key("domain", DOMAIN)
        .spawn()
        .expect_success_with(1, || logs(&[&client, &members[0], &members[2]]));
    bob.expect_success(1);

    // No member names the client anywhere in its tables.
    for m in &members {
        let s = m.status();
        assert!(
            !known(&s).contains(&client_addr),
            "{} names the client: {s}",
            m.node.name
        );
    }

    // The client dies without a word: alice's binding stays in the ring.
    client.node.kill();
    let still_held = |when: &str| {
        let held = members
            .iter()
            .filter(|m| holds(&m.status(), &alice_aor))
            .count();
        assert!(
            held >= 2,
            "alice's binding lost {when}: held by {held} members"
        );
    };
    still_held("at once after the client's crash");

    // A node on the public side started as a client with a short
    // promotion time: reachable, so a member after it, holding keys.
    let config = nat.public.dir.join("promote.toml");
    std::fs::write(
        &config,
        "[ring]\npromote_after_s = 3\nclient_refresh_s = 1\n",
    )
    .expect("config");
    let late = start(
        &nat.public,
        "promoted",
        &public,
        5100,
        &[
            "--client",
            "--join",
            &boot,
            "--config",
            &config.display().to_string(),
        ],
    );
    wait_until(
        "the --client node starts as a client",
        WAIT,
        || late.status()["role"] == "client",
        || logs(&[&late]),
    );
    wait_until(
        "the reachable client is promoted and holds keys",
        WAIT,
        || {
            let s = late.status();
            s["role"] == "member"
                && s["joined"] == true
                && s["items_primary"].as_u64().unwrap_or(0)
                    + s["items_replica"].as_u64().unwrap_or(0)
                    > 0
        },
        || format!("{}\n{}", late.status(), logs(&[&late, &members[0]])),
    );
    assert!(late.node.log().contains("reachable for the promotion time"));
    // Seconds after the crash, with a member more: still there.
    still_held("after the promotion");
}
