//! The hybrid gateway against real legacy software: Kamailio 5.6 (the legacy
//! domain `legacy.test`'s registrar and proxy), bind9 `named` (the legacy
//! zones and ENUM), SIPp phones and `dig`. Each test runs in a network
//! namespace of its own (created and deleted by [`Netns`]; each test's
//! set-up is one [`GatewayTopology::start`]), so the well-known ports are
//! free: inside it
//!
//! | what | where |
//! |---|---|
//! | gateway G: `p2psip node --domain overlay.test --dns 127.0.0.1:53` | SIP 127.0.0.1:5060 |
//! | node N, joined to G | SIP 127.0.0.1:5062 |
//! | Kamailio, `legacy.test`, resolves through `/etc/netns/NS/resolv.conf` = G's DNS | 127.0.0.1:5070 |
//! | named: `legacy.test`, `legacy2.test`, `legacy3.test`, `e164.arpa` (tests/dns/) | 127.0.0.2:53 |
//! | a second gateway G2 (first test only) | SIP and DNS on 127.0.0.3 |
//! | SIPp phones | 127.0.0.1:509x |
//!
//! Needs root; a missing tool (ip, kamailio, kamcmd, sipp, dig, named) fails
//! the test with the package to install (scripts/test.sh installs them).

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::netns::{Kamailio, Netns, start_named};
use common::{ChildGuard, Node, SippBuilder, SippRun, Transport, tail, via_values, wait_until};
use serde_json::Value;

const G: &str = "127.0.0.1:5060";
const N: &str = "127.0.0.1:5062";
const KAMAILIO: &str = "127.0.0.1:5070";
const NAMED: &str = "127.0.0.2:53";
const G_HTTP: &str = "127.0.0.1:8060";
const N_HTTP: &str = "127.0.0.1:8062";

/// What runs in a test's namespace besides the gateway G (see the table above).
struct Options {
    /// G serves overlay.test's DNS on 127.0.0.1:53 (`--dns`).
    dns: bool,
    /// named on 127.0.0.2:53, G's `--nameserver`.
    named: bool,
    /// G's config file (`--config`), TOML.
    g_config: Option<&'static str>,
    /// Node N, joined to G.
    n: bool,
    /// N's `--nameserver` is named too.
    n_uses_named: bool,
    n_config: Option<&'static str>,
    /// G and N serve /status (`--http`); the set-up waits for their ring of two.
    http: bool,
    /// Kamailio, with these extra `-A` defines.
    kamailio: Option<&'static [&'static str]>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            dns: true,
            named: false,
            g_config: None,
            n: false,
            n_uses_named: false,
            n_config: None,
            http: false,
            kamailio: None,
        }
    }
}

/// The gateway tests' topology, started in a namespace of its own: named, G,
/// N, Kamailio, in that order, as `Options` asks. Everything in it stops and
/// the namespace is deleted when this is dropped (`ns` goes last).
struct GatewayTopology {
    g: Node,
    n: Option<Node>,
    kamailio: Option<Kamailio>,
    named: Option<ChildGuard>,
    ns: Netns,
}

impl GatewayTopology {
    fn start(tag: &str, options: Options) -> GatewayTopology {
        let ns = Netns::new(tag);
        let named = options.named.then(|| start_named(&ns, "127.0.0.2"));
        let mut g_args = vec!["--sip", G, "--domain", "overlay.test"];
        if options.dns {
            g_args.extend(["--dns", "127.0.0.1:53"]);
        }
        if options.named {
            g_args.extend(["--nameserver", NAMED]);
        }
        // With N, both serve /status: the test waits for their ring (a
        // node answers phones 503 until it has joined).
        let http = options.http || options.n;
        if http {
            g_args.extend(["--http", G_HTTP]);
        }
        let g_config = options.g_config.map(|toml| config(&ns, "g.toml", toml));
        if let Some(path) = &g_config {
            g_args.extend(["--config", path]);
        }
        let g = node(&ns, "g", &g_args);
        let n = options.n.then(|| {
            let mut n_args = vec!["--sip", N, "--domain", "overlay.test", "--join", G];
            if options.n_uses_named {
                n_args.extend(["--nameserver", NAMED]);
            }
            if http {
                n_args.extend(["--http", N_HTTP]);
            }
            let n_config = options.n_config.map(|toml| config(&ns, "n.toml", toml));
            if let Some(path) = &n_config {
                n_args.extend(["--config", path]);
            }
            node(&ns, "n", &n_args)
        });
        let kamailio = options
            .kamailio
            .map(|defines| Kamailio::start_with(&ns, defines));
        if let Some(n) = &n {
            wait_ring_of_two(&ns, &g, n);
        }
        GatewayTopology {
            g,
            n,
            kamailio,
            named,
            ns,
        }
    }

    fn kamailio(&self) -> &Kamailio {
        self.kamailio
            .as_ref()
            .expect("this topology has no Kamailio")
    }

    /// Another node in the namespace: `p2psip node ARGS`, its log `NAME.log`.
    fn node(&self, name: &str, args: &[&str]) -> Node {
        node(&self.ns, name, args)
    }

    /// The logs of what runs here (nodes, Kamailio, named), for a failure message.
    fn logs(&self) -> String {
        let mut names = vec!["g.log"];
        if self.n.is_some() {
            names.push("n.log");
        }
        if self.kamailio.is_some() {
            names.push("kamailio.log");
        }
        if self.named.is_some() {
            names.push("named.log");
        }
        logs(&self.ns, &names)
    }
}

fn node(ns: &Netns, name: &str, args: &[&str]) -> Node {
    Node::builder().name(name).args(args).in_netns(ns).spawn()
}

/// A SIPp (UDP) in `ns` on 127.0.0.1:`port`.
fn sipp<'a>(ns: &'a Netns, name: &str, scenario: &str, port: u16) -> SippBuilder<'a> {
    SippBuilder::new(name, scenario, Transport::Udp)
        .port(port)
        .in_netns(ns)
}

/// A SIPp UAC in `ns` on `port` sending `scenario` to `to`, addressed to
/// `aor` (`user@domain`: `[service]` and `[domain]`).
fn uac<'a>(
    ns: &'a Netns,
    name: &str,
    scenario: &str,
    port: u16,
    to: &str,
    aor: &str,
) -> SippBuilder<'a> {
    let (user, domain) = aor.split_once('@').expect("user@domain");
    sipp(ns, name, scenario, port)
        .to(to)
        .service(user)
        .key("domain", domain)
}

/// Writes a node config file into the namespace's directory.
fn config(ns: &Netns, name: &str, toml: &str) -> String {
    let path = ns.dir.join(name);
    fs::write(&path, toml).expect("write config");
    path.display().to_string()
}

fn status(ns: &Netns, http: &str) -> Option<Value> {
    let body = ns.http_get(http.parse().expect("http addr"), "/status")?;
    serde_json::from_str(&body).ok()
}

/// Waits until G and N are each other's successor and predecessor.
fn wait_ring_of_two(ns: &Netns, g: &Node, n: &Node) {
    wait_until(
        "G and N form a ring of two",
        Duration::from_secs(15),
        || {
            let (Some(gs), Some(nstat)) = (status(ns, G_HTTP), status(ns, N_HTTP)) else {
                return false;
            };
            gs["successors"][0]["id"].as_str() == Some(n.node_id.as_str())
                && gs["predecessor"]["id"].as_str() == Some(n.node_id.as_str())
                && nstat["successors"][0]["id"].as_str() == Some(g.node_id.as_str())
                && nstat["predecessor"]["id"].as_str() == Some(g.node_id.as_str())
        },
        || format!("G: {:?}\nN: {:?}", status(ns, G_HTTP), status(ns, N_HTTP)),
    );
}

/// REGISTERs `aor` (`user@domain`) with `contact` at `registrar` (SIPp on `port`).
fn register(ns: &Netns, registrar: &str, aor: &str, contact: &str, port: u16) {
    register_for(ns, registrar, aor, contact, port, 3600);
}

/// The same with `Expires: expires` (0 removes the binding).
fn register_for(ns: &Netns, registrar: &str, aor: &str, contact: &str, port: u16, expires: u32) {
    let (user, domain) = aor.split_once('@').expect("user@domain");
    sipp(ns, &format!("register-{user}"), "register.xml", port)
        .to(registrar)
        .key("user", user)
        .key("domain", domain)
        .key("contact", contact)
        .key("expires", &expires.to_string())
        .spawn()
        .expect_success(1);
}

/// The requests a UAS received (their text), in order.
fn received_requests(run: &SippRun) -> Vec<String> {
    run.messages
        .iter()
        .filter(|(received, text)| *received && !text.starts_with("SIP/2.0"))
        .map(|(_, text)| text.clone())
        .collect()
}

fn request_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Node logs for a failure message.
fn logs(ns: &Netns, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("--- {n}:\n{}\n", tail(&ns.log(n), 40)))
        .collect()
}

/// Acceptance 1: the gateway's DNS serves NAPTR, SRV and A for overlay.test;
/// a second gateway that joins adds its SRV target, and leaves it on SIGTERM.
#[test]
fn gateway_dns_tracks_the_live_gateways() {
    let t = GatewayTopology::start("dns", Options::default());
    let (ns, g) = (&t.ns, &t.g);
    let g_name = format!("gw-{}.overlay.test.", &g.node_id[..8]);
    // Served from the moment the node says it listens.
    let naptr = ns.dig("127.0.0.1:53", "NAPTR", "overlay.test");
    assert!(
        naptr
            .iter()
            .any(|r| r.contains("\"SIP+D2U\"") && r.ends_with("_sip._udp.overlay.test.")),
        "NAPTR overlay.test: {naptr:?}"
    );
    assert!(
        naptr
            .iter()
            .any(|r| r.contains("\"SIP+D2T\"") && r.ends_with("_sip._tcp.overlay.test.")),
        "NAPTR overlay.test: {naptr:?}"
    );
    let srv = ns.dig("127.0.0.1:53", "SRV", "_sip._udp.overlay.test");
    assert_eq!(
        srv,
        vec![format!("0 10 5060 {g_name}")],
        "SRV with one gateway"
    );
    let a = ns.dig("127.0.0.1:53", "A", &g_name);
    assert_eq!(a, vec!["127.0.0.1".to_string()], "A {g_name}");
    // Not our zone: REFUSED, so nothing.
    assert!(
        ns.dig("127.0.0.1:53", "SRV", "_sip._udp.legacy.test")
            .is_empty()
    );

    // A second gateway joins the ring, with its own DNS on 127.0.0.3.
    let mut g2 = t.node(
        "g2",
        &[
            "--sip",
            "127.0.0.3:5060",
            "--domain",
            "overlay.test",
            "--dns",
            "127.0.0.3:53",
            "--join",
            G,
        ],
    );
    let g2_name = format!("gw-{}.overlay.test.", &g2.node_id[..8]);
    let both = {
        let mut v = vec![
            format!("0 10 5060 {g_name}"),
            format!("0 10 5060 {g2_name}"),
        ];
        v.sort();
        v
    };
    let sorted_srv = |server: &str| {
        let mut v = ns.dig(server, "SRV", "_sip._udp.overlay.test");
        v.sort();
        v
    };
    wait_until(
        "G's DNS lists both gateways",
        Duration::from_secs(15),
        || sorted_srv("127.0.0.1:53") == both,
        || {
            format!(
                "{:?}\n{}",
                sorted_srv("127.0.0.1:53"),
                logs(ns, &["g.log", "g2.log"])
            )
        },
    );
    assert_eq!(
        ns.dig("127.0.0.1:53", "A", &g2_name),
        vec!["127.0.0.3".to_string()],
        "G serves the A record of G2"
    );
    wait_until(
        "G2's DNS lists both gateways",
        Duration::from_secs(15),
        || sorted_srv("127.0.0.3:53") == both,
        || format!("{:?}", sorted_srv("127.0.0.3:53")),
    );

    // G2 leaves: its advert lives 3 stabilize periods at most.
    let stopped = Instant::now();
    let exit = g2.terminate();
    assert!(exit.success(), "G2 exit status {exit}");
    wait_until(
        "G's DNS drops G2 after SIGTERM",
        Duration::from_secs(15),
        || {
            ns.dig("127.0.0.1:53", "SRV", "_sip._udp.overlay.test")
                == vec![format!("0 10 5060 {g_name}")]
        },
        || {
            format!(
                "{:?}\n{}",
                ns.dig("127.0.0.1:53", "SRV", "_sip._udp.overlay.test"),
                logs(ns, &["g.log"])
            )
        },
    );
    eprintln!("G2 gone from G's SRV {:?} after SIGTERM", stopped.elapsed());
}

/// Acceptance 2: a legacy.test phone sends MESSAGE and INVITE to
/// sip:alice@overlay.test through Kamailio, which finds the gateway only by
/// DNS (NAPTR → SRV → A from G); alice is registered at another node, N.
#[test]
fn legacy_phone_reaches_overlay_user_through_kamailio() {
    let t = GatewayTopology::start(
        "in",
        Options {
            n: true,
            http: true,
            kamailio: Some(&[]),
            ..Options::default()
        },
    );
    let (ns, kamailio) = (&t.ns, t.kamailio());

    let mut alice = sipp(ns, "alice", "uas_message_call.xml", 5090)
        .calls(2)
        .spawn();
    alice.wait_listening();
    register(
        ns,
        N,
        "alice@overlay.test",
        "sip:alice@127.0.0.1:5090",
        5190,
    );
    // bob is a phone of legacy.test, registered at Kamailio.
    register(
        ns,
        KAMAILIO,
        "bob@legacy.test",
        "sip:bob@127.0.0.1:5091",
        5191,
    );
    assert_eq!(kamailio.contacts(ns, "bob"), vec!["sip:bob@127.0.0.1:5091"]);

    let context = || t.logs();
    uac(
        ns,
        "bob-message",
        "uac_message.xml",
        5091,
        KAMAILIO,
        "alice@overlay.test",
    )
    .spawn()
    .expect_success_with(1, context);
    uac(
        ns,
        "bob-call",
        "uac_call.xml",
        5091,
        KAMAILIO,
        "alice@overlay.test",
    )
    .spawn()
    .expect_success_with(1, context);
    let got = received_requests(&alice.expect_success_with(2, context));
    let message = got
        .iter()
        .find(|t| t.starts_with("MESSAGE "))
        .expect("alice got the MESSAGE");
    let invite = got
        .iter()
        .find(|t| t.starts_with("INVITE "))
        .expect("alice got the INVITE");
    for request in [message, invite] {
        assert!(
            request_line(request).contains("sip:alice@127.0.0.1:5090"),
            "retargeted to alice's contact: {}",
            request_line(request)
        );
        let vias = via_values(request);
        assert!(
            vias.len() >= 3
                && vias[0].contains("127.0.0.1:5060")
                && vias[1].contains("127.0.0.1:5070")
                && vias[2].contains("127.0.0.1:5091"),
            "path bob → Kamailio → G → alice: {vias:?}"
        );
    }
    // Kamailio found G by asking G's DNS for the NAPTR of overlay.test (the
    // SRV and A records come with it as additional data).
    assert!(
        ns.log("g.log").contains("query:overlay.test.:NAPTR:IN"),
        "G's DNS answered Kamailio's NAPTR query"
    );
}

/// Dialogs across Kamailio and the gateway beyond the happy path: a call from
/// legacy.test to an overlay user cancelled while ringing (CANCEL and the
/// 487 pass Kamailio, G and N's registration), and a call the overlay
/// callee hangs up (BYE along the Record-Route set: G, then Kamailio).
#[test]
fn legacy_calls_cancelled_and_hung_up_by_the_overlay_side() {
    let t = GatewayTopology::start(
        "dlg",
        Options {
            n: true,
            http: true,
            kamailio: Some(&[]),
            ..Options::default()
        },
    );
    let ns = &t.ns;
    let context = || t.logs();

    let mut erin = sipp(ns, "erin", "uas_cancel.xml", 5086).spawn();
    erin.wait_listening();
    register(ns, N, "erin@overlay.test", "sip:erin@127.0.0.1:5086", 5186);
    let mut frank = sipp(ns, "frank", "uas_call_hangs_up.xml", 5087).spawn();
    frank.wait_listening();
    register(
        ns,
        N,
        "frank@overlay.test",
        "sip:frank@127.0.0.1:5087",
        5187,
    );

    let bob = uac(
        ns,
        "bob-cancels",
        "uac_cancel.xml",
        5091,
        KAMAILIO,
        "erin@overlay.test",
    )
    .spawn()
    .expect_success_with(1, context);
    erin.expect_success_with(1, context);
    // (The scenario's own check: its CANCEL and ACK reuse the INVITE's branch.)
    let sent_vias: Vec<String> = bob
        .messages
        .iter()
        .filter(|(received, _)| !received)
        .map(|(_, t)| via_values(t).join(","))
        .collect();
    assert!(
        sent_vias.len() >= 3 && sent_vias.iter().all(|v| *v == sent_vias[0]),
        "INVITE, CANCEL and ACK on one branch: {sent_vias:?}"
    );

    let bob = uac(
        ns,
        "bob-hung-up-on",
        "uac_call_callee_bye.xml",
        5091,
        KAMAILIO,
        "frank@overlay.test",
    )
    .spawn()
    .expect_success_with(1, context);
    frank.expect_success_with(1, context);
    let bye = received_requests(&bob)
        .into_iter()
        .find(|t| t.starts_with("BYE "))
        .expect("bob got frank's BYE");
    let vias = via_values(&bye);
    assert!(
        vias.len() == 3
            && vias[0].contains("127.0.0.1:5070")
            && vias[1].contains("127.0.0.1:5060")
            && vias[2].contains("127.0.0.1:5087"),
        "BYE path frank → G → Kamailio → bob: {vias:?}"
    );
}

/// Acceptance 3 and 5: an overlay phone messages sip:carol@legacy.test
/// through a node of the ring and calls her through the gateway; both find
/// Kamailio by NAPTR/SRV at named (`--nameserver`); a number ENUM maps to
/// carol reaches her too; and a domain whose first SRV target is dead
/// (legacy2.test) is reached at its second target after the failover delay.
#[test]
fn overlay_phone_reaches_legacy_domains_by_rfc3263() {
    let t = GatewayTopology::start(
        "out",
        Options {
            named: true,
            // N: an ordinary node of the ring, with the same name server.
            n: true,
            n_uses_named: true,
            kamailio: Some(&[]),
            ..Options::default()
        },
    );
    let (ns, kamailio) = (&t.ns, t.kamailio());
    let mut carol = sipp(ns, "carol", "uas_message_call.xml", 5092)
        .calls(3)
        .spawn();
    carol.wait_listening();
    register(
        ns,
        KAMAILIO,
        "carol@legacy.test",
        "sip:carol@127.0.0.1:5092",
        5192,
    );
    assert_eq!(
        kamailio.contacts(ns, "carol"),
        vec!["sip:carol@127.0.0.1:5092"]
    );

    let context = || t.logs();
    uac(
        ns,
        "alice-message",
        "uac_message.xml",
        5093,
        N,
        "carol@legacy.test",
    )
    .spawn()
    .expect_success_with(1, context);
    uac(
        ns,
        "alice-call",
        "uac_call.xml",
        5093,
        G,
        "carol@legacy.test",
    )
    .spawn()
    .expect_success_with(1, context);
    // A number whose ENUM record names carol@legacy.test.
    sipp(ns, "alice-dials-carol", "uac_message_uri.xml", 5093)
        .to(G)
        .key("ruri", "tel:+12125550002")
        .spawn()
        .expect_success_with(1, context);
    let got = received_requests(&carol.expect_success_with(3, context));
    assert_eq!(
        got.iter()
            .filter(|t| request_line(t).starts_with("MESSAGE sip:carol@127.0.0.1:5092"))
            .count(),
        2,
        "carol got the MESSAGE to her name and the one to her number: {got:?}"
    );
    // The MESSAGE went through N, the call through G.
    for (method, node) in [("MESSAGE", "127.0.0.1:5062"), ("INVITE", "127.0.0.1:5060")] {
        let request = got
            .iter()
            .find(|t| t.starts_with(method))
            .unwrap_or_else(|| panic!("carol got no {method}"));
        let vias = via_values(request);
        assert!(
            vias.len() >= 3
                && vias[0].contains("127.0.0.1:5070")
                && vias[1].contains(node)
                && vias[2].contains("127.0.0.1:5093"),
            "{method}: path alice → {node} → Kamailio → carol: {vias:?}"
        );
    }
    let queries = ns.log("named.log");
    assert!(
        queries.contains("query: legacy.test IN NAPTR")
            && queries.contains("query: _sip._udp.legacy.test IN SRV"),
        "G asked named NAPTR then SRV:\n{}",
        tail(&queries, 20)
    );

    // Failover: _sip._udp.legacy2.test has priority 0 on a dead port.
    let mut live = sipp(ns, "legacy2-live", "uas_message.xml", 5096)
        .calls(2)
        .spawn();
    live.wait_listening();
    let started = Instant::now();
    uac(
        ns,
        "to-legacy2",
        "uac_message.xml",
        5093,
        G,
        "x@legacy2.test",
    )
    .spawn()
    .expect_success_with(1, context);
    let took = started.elapsed();
    // The dead target is remembered: the next request goes to the live one at once.
    let started = Instant::now();
    uac(
        ns,
        "to-legacy2-again",
        "uac_message.xml",
        5093,
        G,
        "y@legacy2.test",
    )
    .spawn()
    .expect_success_with(1, context);
    let again = started.elapsed();
    let got = received_requests(&live.expect_success_with(2, context));
    assert!(
        got.iter()
            .any(|t| request_line(t).starts_with("MESSAGE sip:x@legacy2.test"))
            && got
                .iter()
                .any(|t| request_line(t).starts_with("MESSAGE sip:y@legacy2.test")),
        "the live target got both MESSAGEs: {got:?}"
    );
    assert!(
        took >= Duration::from_millis(1900),
        "the dead target was tried first (2 s failover), took {took:?}"
    );
    assert!(
        again < Duration::from_millis(1500),
        "the dead target is tried last for a while, but the second MESSAGE took {again:?}"
    );

    // The same for a call: legacy3.test's first SRV target is dead too.
    let mut live3 = sipp(ns, "legacy3-live", "uas_call.xml", 5097).spawn();
    live3.wait_listening();
    let started = Instant::now();
    uac(
        ns,
        "call-legacy3",
        "uac_call.xml",
        5093,
        G,
        "z@legacy3.test",
    )
    .spawn()
    .expect_success_with(1, context);
    let took = started.elapsed();
    live3.expect_success_with(1, context);
    assert!(
        took >= Duration::from_millis(1900),
        "the call went to the dead target first (2 s failover), took {took:?}"
    );
}

/// Acceptance 4: cross-registration. An overlay user shows in Kamailio's
/// location table with the gateway as contact (the gateway answers
/// Kamailio's Digest challenge) and is called through Kamailio; a legacy phone registering through the gateway is registered at
/// Kamailio and found in the ring by a node that has no DNS for legacy.test.
#[test]
fn cross_registration_both_ways() {
    let t = GatewayTopology::start(
        "xreg",
        Options {
            g_config: Some(
                "[gateway.upstream]\n\
                 registrar = \"127.0.0.1:5070\"\n\
                 domain = \"legacy.test\"\n\
                 username = \"gateway\"\n\
                 password = \"secret\"\n\
                 users = \"all\"\n\
                 expires = 10\n\
                 overlay_domain = \"overlay.test\"\n",
            ),
            n: true,
            n_config: Some("[gateway]\nlocate_in_overlay = [\"legacy.test\"]\n"),
            http: true,
            // Kamailio challenges REGISTERs whose Contact is the gateway's.
            kamailio: Some(&["WITH_GW_AUTH"]),
            ..Options::default()
        },
    );
    let (ns, kamailio) = (&t.ns, t.kamailio());
    let context = || t.logs();

    // Overlay → legacy: alice registers at N; G registers her at Kamailio.
    let mut alice = sipp(ns, "alice", "uas_message_call.xml", 5090).spawn();
    alice.wait_listening();
    register(
        ns,
        N,
        "alice@overlay.test",
        "sip:alice@127.0.0.1:5090",
        5190,
    );
    wait_until(
        "Kamailio's location table has alice@legacy.test → the gateway",
        Duration::from_secs(15),
        || kamailio.contacts(ns, "alice") == vec!["sip:alice@127.0.0.1:5060"],
        || format!("{}\n{}", kamailio.ul_dump(ns), context()),
    );
    uac(
        ns,
        "bob-call",
        "uac_call.xml",
        5091,
        KAMAILIO,
        "alice@legacy.test",
    )
    .spawn()
    .expect_success_with(1, context);
    let got = received_requests(&alice.expect_success_with(1, context));
    let invite = got
        .iter()
        .find(|t| t.starts_with("INVITE "))
        .expect("alice got the INVITE");
    let vias = via_values(invite);
    assert!(
        vias.len() >= 3 && vias[0].contains("127.0.0.1:5060") && vias[1].contains("127.0.0.1:5070"),
        "path bob → Kamailio → G → alice: {vias:?}"
    );

    // G refreshes the registration before it expires (10 s asked, refresh
    // at half): same Call-ID, next CSeq.
    let first = kamailio.contact_fields(ns, "alice");
    wait_until(
        "G refreshes alice's registration at Kamailio",
        Duration::from_secs(10),
        || {
            let now = kamailio.contact_fields(ns, "alice");
            now.len() == 1
                && now[0].get("Call-ID") == first[0].get("Call-ID")
                && now[0]
                    .get("CSeq")
                    .and_then(|c| c.parse::<u32>().ok())
                    .is_some_and(|c| c >= 2)
        },
        || format!("{}\n{}", kamailio.ul_dump(ns), context()),
    );

    // Legacy → overlay: carol2@legacy.test registers with G as outbound proxy.
    let mut carol2 = sipp(ns, "carol2", "uas_message.xml", 5094).spawn();
    carol2.wait_listening();
    register(
        ns,
        G,
        "carol2@legacy.test",
        "sip:carol2@127.0.0.1:5094",
        5194,
    );
    assert_eq!(
        kamailio.contacts(ns, "carol2"),
        vec!["sip:carol2@127.0.0.1:5094"],
        "carol2 registered at Kamailio through G"
    );
    // N: locate_in_overlay = legacy.test, no name server that knows legacy.test.
    uac(
        ns,
        "to-carol2",
        "uac_message.xml",
        5095,
        N,
        "carol2@legacy.test",
    )
    .spawn()
    .expect_success_with(1, context);
    let got = received_requests(&carol2.expect_success_with(1, context));
    let message = got.first().expect("carol2 got the MESSAGE");
    let vias = via_values(message);
    assert!(
        vias.len() == 2 && vias[0].contains("127.0.0.1:5062") && vias[1].contains("127.0.0.1:5095"),
        "found in the ring by N, not through Kamailio: {vias:?}"
    );

    // A legacy phone configured with the gateway's address as registrar
    // (Request-URI sip:127.0.0.1:5060): registered at Kamailio all the same.
    sipp(ns, "register-carol3", "register_at_server.xml", 5196)
        .to(G)
        .key("user", "carol3")
        .key("domain", "legacy.test")
        .key("contact", "sip:carol3@127.0.0.1:5096")
        .key("expires", "3600")
        .spawn()
        .expect_success_with(1, context);
    assert_eq!(
        kamailio.contacts(ns, "carol3"),
        vec!["sip:carol3@127.0.0.1:5096"],
        "carol3 registered at Kamailio through G"
    );

    // alice leaves the ring: G de-registers her at Kamailio.
    register_for(
        ns,
        N,
        "alice@overlay.test",
        "sip:alice@127.0.0.1:5090",
        5190,
        0,
    );
    wait_until(
        "alice gone from Kamailio's location table",
        Duration::from_secs(15),
        || kamailio.contacts(ns, "alice").is_empty(),
        || format!("{}\n{}", kamailio.ul_dump(ns), context()),
    );
    // carol2 de-registers through G: gone from Kamailio.
    register_for(
        ns,
        G,
        "carol2@legacy.test",
        "sip:carol2@127.0.0.1:5094",
        5194,
        0,
    );
    assert!(
        kamailio.contacts(ns, "carol2").is_empty(),
        "carol2 de-registered at Kamailio through G:\n{}",
        kamailio.ul_dump(ns)
    );
}

/// Acceptance 6: a telephone number goes to the PSTN gateway unless ENUM
/// (named) maps it to a SIP URI, here the overlay user dave.
#[test]
fn telephone_numbers_take_enum_then_the_pstn() {
    let t = GatewayTopology::start(
        "tel",
        Options {
            named: true,
            g_config: Some("[gateway.pstn]\naddress = \"127.0.0.1:5098\"\n"),
            n: true,
            http: true,
            ..Options::default()
        },
    );
    let ns = &t.ns;
    let context = || t.logs();

    let mut pstn = sipp(ns, "pstn", "uas_message_call.xml", 5098)
        .calls(4)
        .spawn();
    pstn.wait_listening();
    let mut dave = sipp(ns, "dave", "uas_message.xml", 5097).spawn();
    dave.wait_listening();
    register(ns, N, "dave@overlay.test", "sip:dave@127.0.0.1:5097", 5197);

    for ruri in [
        "tel:+1-212-555-0000",
        "sip:+12125559876@overlay.test;user=phone",
        "tel:+12125551234",
        // ENUM maps it to sip:+12125557777@overlay.test;user=phone: a
        // number again, which must not be looked up again.
        "tel:+12125557777",
    ] {
        sipp(ns, "caller", "uac_message_uri.xml", 5099)
            .to(G)
            .key("ruri", ruri)
            .spawn()
            .expect_success_with(1, context);
    }
    // A call to a number without ENUM record: to the PSTN gateway, and the
    // gateway stays in the dialog (Record-Route) although To is a tel: URI.
    let call = sipp(ns, "caller-call", "uac_call_uri.xml", 5099)
        .to(G)
        .key("ruri", "tel:+12125550000")
        .spawn()
        .expect_success_with(1, context);
    let ok = call
        .messages
        .iter()
        .find(|(received, t)| *received && t.starts_with("SIP/2.0 200") && t.contains("INVITE"))
        .map(|(_, t)| t.clone())
        .expect("the caller got a 200 to its INVITE");
    assert!(
        ok.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("record-route:")
                && l.contains("127.0.0.1:5060")),
        "G record-routes the call to tel:+12125550000:\n{ok}"
    );

    let to_pstn = received_requests(&pstn.expect_success_with(4, context));
    let lines: Vec<&str> = to_pstn
        .iter()
        .map(|t| request_line(t))
        .filter(|l| l.starts_with("MESSAGE") || l.starts_with("INVITE"))
        .collect();
    assert_eq!(
        lines,
        vec![
            "MESSAGE sip:+12125550000@127.0.0.1:5098;user=phone SIP/2.0",
            "MESSAGE sip:+12125559876@127.0.0.1:5098;user=phone SIP/2.0",
            "MESSAGE sip:+12125557777@127.0.0.1:5098;user=phone SIP/2.0",
            "INVITE sip:+12125550000@127.0.0.1:5098;user=phone SIP/2.0",
        ],
        "numbers without ENUM go to the PSTN gateway"
    );
    let to_dave = received_requests(&dave.expect_success_with(1, context));
    assert_eq!(
        to_dave.iter().map(|t| request_line(t)).collect::<Vec<_>>(),
        vec!["MESSAGE sip:dave@127.0.0.1:5097 SIP/2.0"],
        "ENUM maps +12125551234 to dave@overlay.test"
    );
    let queries = ns.log("named.log");
    assert!(
        queries.contains("query: 4.3.2.1.5.5.5.2.1.2.1.e164.arpa IN NAPTR"),
        "G asked ENUM:\n{}",
        tail(&queries, 20)
    );
}

/// The PSTN gateway asks for Digest credentials (`[gateway.pstn]` username
/// and password): the node answers the challenge and the number is reached,
/// by a MESSAGE and by a call.
#[test]
fn pstn_gateway_challenge_is_answered() {
    // G's own DNS answers the ENUM query (REFUSED): no ENUM, so the PSTN.
    let t = GatewayTopology::start(
        "pstnauth",
        Options {
            g_config: Some(
                "[gateway.pstn]\n\
                 address = \"127.0.0.1:5098\"\n\
                 username = \"gateway\"\n\
                 password = \"secret\"\n",
            ),
            ..Options::default()
        },
    );
    let ns = &t.ns;
    let context = || t.logs();
    let mut pstn = sipp(ns, "pstn", "uas_message_auth.xml", 5098)
        .key("user", "gateway")
        .spawn();
    pstn.wait_listening();
    sipp(ns, "caller", "uac_message_uri.xml", 5099)
        .to(G)
        .key("ruri", "tel:+12125550000")
        .spawn()
        .expect_success_with(1, || format!("{}{}", pstn.diagnostics(), context()));
    let got = received_requests(&pstn.expect_success_with(1, context));
    assert_eq!(got.len(), 2, "challenged, then authorised: {got:?}");
    assert!(
        got[1]
            .lines()
            .any(|l| l.starts_with("Authorization: Digest username=\"gateway\"")),
        "the second MESSAGE carries the credentials:\n{}",
        got[1]
    );

    // A call: the INVITE is challenged, answered, and the gateway stays in
    // the dialog with one Record-Route.
    let mut pstn = sipp(ns, "pstn-call", "uas_call_auth.xml", 5098)
        .key("user", "gateway")
        .spawn();
    pstn.wait_listening();
    sipp(ns, "caller-call", "uac_call_uri.xml", 5099)
        .to(G)
        .key("ruri", "tel:+12125550000")
        .spawn()
        .expect_success_with(1, || format!("{}{}", pstn.diagnostics(), context()));
    let got = received_requests(&pstn.expect_success_with(1, context));
    let invites: Vec<&String> = got.iter().filter(|t| t.starts_with("INVITE ")).collect();
    assert_eq!(invites.len(), 2, "challenged, then authorised: {got:?}");
    let record_routes: Vec<&str> = invites[1]
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
        .collect();
    assert_eq!(
        record_routes,
        vec!["Record-Route: <sip:127.0.0.1:5060;lr>"],
        "the authorised INVITE carries G's Record-Route once:\n{}",
        invites[1]
    );
}

/// Cross-registration of a user with two phones: refreshing both keeps the
/// user registered at Kamailio after the first registrations' expiry.
#[test]
fn cross_registration_of_a_user_with_two_phones() {
    let t = GatewayTopology::start(
        "xreg2",
        Options {
            dns: false,
            g_config: Some(
                "[gateway.upstream]\n\
                 registrar = \"127.0.0.1:5070\"\n\
                 domain = \"legacy.test\"\n\
                 users = \"all\"\n\
                 overlay_domain = \"overlay.test\"\n",
            ),
            n: true,
            // N accepts short registrations.
            n_config: Some("[registrar]\nmin_expires = 1\ndefault_expires = 60\n"),
            http: true,
            kamailio: Some(&[]),
            ..Options::default()
        },
    );
    let (ns, kamailio) = (&t.ns, t.kamailio());
    let context = || t.logs();

    // Two phones for 5 s, then both refreshed for 60 s (well before 5 s).
    let first = Instant::now();
    for (contact, port) in [
        ("sip:alice@127.0.0.1:5090", 5190),
        ("sip:alice@127.0.0.1:5091", 5191),
    ] {
        register_for(ns, N, "alice@overlay.test", contact, port, 5);
    }
    wait_until(
        "Kamailio's location table has alice → the gateway",
        Duration::from_secs(10),
        || kamailio.contacts(ns, "alice") == vec!["sip:alice@127.0.0.1:5060"],
        || format!("{}\n{}", kamailio.ul_dump(ns), context()),
    );
    for (contact, port) in [
        ("sip:alice@127.0.0.1:5090", 5190),
        ("sip:alice@127.0.0.1:5091", 5191),
    ] {
        register_for(ns, N, "alice@overlay.test", contact, port, 60);
    }
    assert!(
        first.elapsed() < Duration::from_secs(4),
        "set-up too slow for this test: {:?}",
        first.elapsed()
    );
    // The first registrations end at +5 s; the gateway reads the directory
    // every 2 s. Watch until well after that (an absence cannot be awaited
    // as an event): alice must stay.
    while first.elapsed() < Duration::from_secs(10) {
        assert_eq!(
            kamailio.contacts(ns, "alice"),
            vec!["sip:alice@127.0.0.1:5060"],
            "alice (two phones, refreshed for 60 s) was dropped at Kamailio after {:?}\n{}",
            first.elapsed(),
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
