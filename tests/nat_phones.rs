//! Real phones behind real NAT (issue 13): SIPp and baresip, each in a home
//! behind its own masquerading router (`tests/common/nat.rs`, both homes
//! with the same private address), register with a node on the "public"
//! side and call each other through it. The SDP each phone receives names
//! the node's relay, RTP flows both ways through the relay, and the ACK and
//! the BYE reach the phones through their NATs (the Contact aliases,
//! `src/proxy/alias.rs`). And the `stun` client (Debian `stun-client`)
//! behind NAT learns the router's public address from the node, not its
//! private one. Needs root, iproute2, iptables, sip-tester, baresip-core and
//! stun-client.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::nat::{HOME, Nat};
use common::netns::Netns;
use common::{
    ChildGuard, DOMAIN, Node, SippBuilder, Transport, read_lossy, require_tool, tail, wait_until,
};

/// Generous bounds: the machine is shared with other builds.
const WAIT: Duration = Duration::from_secs(30);
/// RTP packets each way the relay must have carried (20 ms each: a second).
const PACKETS: u64 = 50;
/// The G.711 A-law RTP SIPp plays (Debian sip-tester).
const PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

/// A baresip phone inside `home` on its private address, registering
/// `account` with the node; it answers calls by itself.
fn baresip(home: &Netns, user: &str, node: SocketAddr) -> (ChildGuard, PathBuf) {
    let baresip = require_tool("baresip", "baresip-core");
    let conf = home.dir.join(format!("baresip-{user}"));
    std::fs::create_dir_all(&conf).expect("phone dir");
    std::fs::write(
        conf.join("config"),
        format!(
            "poll_method epoll\n\
             sip_listen {HOME}:5062\n\
             rtp_ports 40000-40099\n\
             module_path /usr/lib/baresip/modules\n\
             module_app account.so\n\
             module_app menu.so\n\
             module g711.so\n\
             module ausine.so\n\
             module aufile.so\n\
             audio_player aufile,/dev/null\n\
             audio_source aufile,{}\n\
             audio_alert aufile,/dev/null\n",
            common::call::tone_wav(&conf, 440.0).display()
        ),
    )
    .expect("config");
    std::fs::write(
        conf.join("accounts"),
        format!(
            "<sip:{user}@{DOMAIN}>;regint=300;answermode=auto;audio_codecs=PCMA;outbound=\"sip:{node}\"\n"
        ),
    )
    .expect("accounts");
    let out = home.dir.join(format!("baresip-{user}.out"));
    let child = home
        .command(baresip)
        .arg("-f")
        .arg(&conf)
        .args(["-t", "60"])
        .stdout(std::fs::File::create(&out).expect("output"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn baresip");
    (ChildGuard::new(format!("baresip {user}"), child), out)
}

/// The value of `field=` in a log line (tracing's `key=value`).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

/// The RTP address the SDP body of `message` names (c= and m=audio).
fn sdp_address(message: &str) -> Option<SocketAddr> {
    let body = message
        .split("\r\n\r\n")
        .nth(1)
        .or_else(|| message.split("\n\n").nth(1))?;
    let ip = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))?
        .trim();
    let port = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))?
        .split(' ')
        .next()?;
    format!("{ip}:{port}").parse().ok()
}

#[test]
fn sipp_and_baresip_behind_two_nats_register_call_and_talk_through_the_relay() {
    assert!(
        Path::new(PCAP).is_file(),
        "{PCAP} is missing (Debian sip-tester)"
    );
    let nat = Nat::new(2);
    let node_addr = SocketAddr::new(nat.public_ip(), 5060);
    let node = Node::builder()
        .in_netns(&nat.public)
        .args([
            "--sip",
            &node_addr.to_string(),
            "--domain",
            DOMAIN,
            "--auth",
            "open",
        ])
        .spawn();

    // Bob: baresip in home 2, registered from behind his NAT.
    let (_bob, bob_out) = baresip(nat.home(2), "bob", node_addr);
    let bob_log = || tail(&read_lossy(&bob_out), 40);
    wait_until(
        "baresip (bob) registered from behind NAT 2",
        WAIT,
        || read_lossy(&bob_out).contains("{0/UDP/v4} 200 OK"),
        || format!("baresip:\n{}\nnode:\n{}", bob_log(), tail(&node.log(), 30)),
    );

    // Alice: SIPp in home 1 registers, calls bob, plays RTP (and echoes
    // what she hears) for 3 s and hangs up.
    let alice = SippBuilder::new("alice", "nat_register_call.xml", Transport::Udp)
        .in_netns(nat.home(1))
        .ip(HOME)
        .port(5060)
        .to(node_addr)
        .key("user", "alice")
        .key("domain", DOMAIN)
        .service("bob")
        .arg("-rtp_echo")
        .arg("-d")
        .arg("3000")
        .spawn();
    let run = alice.expect_success_with(1, || {
        format!("baresip:\n{}\nnode:\n{}", bob_log(), tail(&node.log(), 60))
    });

    // What SIPp received: the 200 to its REGISTER and to its INVITE, whose
    // answer names the relay and not bob's private address.
    let answer = run
        .messages
        .iter()
        .find(|(received, text)| {
            *received && text.contains("SIP/2.0 200") && text.contains("INVITE")
        })
        .map(|(_, text)| text.clone())
        .expect("SIPp received a 200 to its INVITE");
    let relay = sdp_address(&answer).unwrap_or_else(|| panic!("no SDP in:\n{answer}"));
    assert_eq!(
        relay.ip(),
        nat.public_ip(),
        "the answer names the relay:\n{answer}"
    );
    assert!((22000..26000).contains(&relay.port()), "{answer}");
    assert!(
        !answer.contains(&format!("c=IN IP4 {HOME}")),
        "bob's private address reached alice:\n{answer}"
    );
    // Bob's Contact came with the alias of his NAT's mapping, which the
    // ACK and the BYE went to (the BYE's 200 is in SIPp's success).
    assert!(
        answer.contains(&format!(";alias={}~", nat.router_ip(2))),
        "{answer}"
    );

    // Bob's phone answered and saw the BYE through his NAT.
    wait_until(
        "baresip answered and the call was closed by alice's BYE",
        WAIT,
        || {
            let out = read_lossy(&bob_out);
            out.contains("answering call") && out.contains("closed")
        },
        bob_log,
    );

    // The relay's own count: RTP both ways, latched at the two routers'
    // public addresses (each phone sent to the port its SDP named).
    wait_until(
        "the relay session ended with the call",
        WAIT,
        || node.log().contains("relay session over"),
        || tail(&node.log(), 40),
    );
    let log = node.log();
    let over = log
        .lines()
        .find(|l| l.contains("relay session over"))
        .unwrap_or_default();
    let count = |name| {
        field(over, name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {over:?}"))
    };
    let (from_caller, from_callee) = (count("from_caller"), count("from_callee"));
    assert!(
        from_caller >= PACKETS && from_callee >= PACKETS,
        "RTP through the relay: {from_caller} from alice (SIPp), {from_callee} from bob (baresip): {over}"
    );
    let latched = |name| field(over, name).unwrap_or_default().to_string();
    assert!(
        latched("caller").contains(&format!("{}:", nat.router_ip(1))),
        "{over}"
    );
    assert!(
        latched("callee").contains(&format!("{}:", nat.router_ip(2))),
        "{over}"
    );
    let mut node = node;
    node.assert_alive();
}

#[test]
fn the_stun_client_behind_nat_learns_the_routers_public_address() {
    let stun = require_tool("stun", "stun-client");
    let nat = Nat::new(1);
    let node_addr = SocketAddr::new(nat.public_ip(), 5060);
    let mut node = Node::builder()
        .in_netns(&nat.public)
        .args([
            "--sip",
            &node_addr.to_string(),
            "--domain",
            DOMAIN,
            "--auth",
            "open",
        ])
        .spawn();
    // Test 1 of RFC 3489 (a plain Binding request) from the home's private
    // address and port 40000: the router's mapping comes back.
    let (status, out, err) = nat.home(1).run(&[
        "timeout",
        "15",
        &stun.display().to_string(),
        &node_addr.to_string(),
        "1",
        "-v",
        "-p",
        "40000",
        "-i",
        &HOME.to_string(),
    ]);
    let all = format!("{status:?}\n{out}\n{err}");
    let mapped = all
        .split("mappedAddr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.trim_end_matches(',').parse::<SocketAddr>().ok())
        .unwrap_or_else(|| {
            panic!(
                "stun printed no mapped address:\n{all}\nnode:\n{}",
                tail(&node.log(), 30)
            )
        });
    assert_eq!(
        mapped.ip(),
        nat.router_ip(1),
        "the router's public address, not the home's {HOME}:\n{all}"
    );
    assert!(!all.contains(&format!("mappedAddr={HOME}")), "{all}");
    node.assert_alive();
}
