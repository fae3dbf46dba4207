//! Two baresip phones doing ICE with TURN relay candidates from the node's
//! TURN server (issue 13): each phone in a home behind its own
//! masquerading router (`tests/common/nat.rs`; both homes have the same
//! private address, and the public side does not route between the
//! routers, so no direct or server-reflexive pair can work), the node on
//! the public side with `--turn` and the users' passwords. The phones
//! allocate with their SIP accounts, call each other, ICE picks a pair
//! through the node's relay ports, and the tone each phone plays (440 Hz
//! and 620 Hz) arrives at the other, decoded. The node's TURN counters show the
//! media went through it, and its own media relay stayed out (ICE SDP).
//! Needs root, iproute2, iptables and baresip-core.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::call::{power_at, tone_wav};
use common::nat::{HOME, Nat};
use common::netns::Netns;
use common::{ChildGuard, DOMAIN, Node, add_user, read_lossy, require_tool, tail, wait_until};

/// Generous bounds: the machine is shared with other builds.
const WAIT: Duration = Duration::from_secs(40);
/// Datagrams the TURN server must have relayed each way (20 ms of audio
/// each: two seconds).
const PACKETS: u64 = 100;
/// The tones alice and bob play.
const ALICE_HZ: f64 = 440.0;
const BOB_HZ: f64 = 620.0;

/// A baresip phone in `home` on its private address, doing ICE with the
/// node's TURN server `turn` and its SIP account; it answers by itself,
/// plays a tone of `hz` and writes what it hears to `DIR/dump-*-dec.wav`.
fn phone(
    home: &Netns,
    user: &str,
    hz: f64,
    (node, turn): (SocketAddr, SocketAddr),
    commands: &[&str],
) -> (ChildGuard, PathBuf, PathBuf) {
    let baresip = require_tool("baresip", "baresip-core");
    let conf = home.dir.join(format!("baresip-{user}"));
    let dumps = conf.join("heard");
    std::fs::create_dir_all(&dumps).expect("phone dir");
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
             module aufile.so\n\
             module ice.so\n\
             module turn.so\n\
             module sndfile.so\n\
             snd_path {}\n\
             audio_player aufile,/dev/null\n\
             audio_source aufile,{}\n\
             audio_alert aufile,/dev/null\n",
            dumps.display(),
            tone_wav(&conf, hz).display()
        ),
    )
    .expect("config");
    std::fs::write(
        conf.join("accounts"),
        format!(
            "<sip:{user}@{DOMAIN}>;auth_pass={user}-pw;regint=300;answermode=auto;audio_codecs=PCMU;\
             medianat=ice;stunserver=\"turn:{turn}\";stunuser={user};stunpass={user}-pw;\
             outbound=\"sip:{node}\"\n"
        ),
    )
    .expect("accounts");
    let out = home.dir.join(format!("baresip-{user}.out"));
    let mut command = home.command(baresip);
    command.arg("-f").arg(&conf).args(["-v", "-t", "60"]);
    for c in commands {
        command.args(["-e", c]);
    }
    let child = command
        .stdout(std::fs::File::create(&out).expect("output"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn baresip");
    (
        ChildGuard::new(format!("baresip {user}"), child),
        out,
        dumps,
    )
}

/// The samples of the decoded (received) audio a phone dumped, if any.
fn heard(dumps: &Path) -> Vec<i16> {
    let Ok(entries) = std::fs::read_dir(dumps) else {
        return Vec::new();
    };
    let Some(file) = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
    else {
        return Vec::new();
    };
    let bytes = std::fs::read(file).unwrap_or_default();
    bytes
        .get(44..)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The last second heard is the tone of `hz`, with far more power there
/// than at `other` (the phone's own tone) or at 1 kHz.
fn hears(samples: &[i16], hz: f64, other: f64) -> bool {
    let Some(window) = samples.get(samples.len().saturating_sub(8000)..) else {
        return false;
    };
    if window.len() < 8000 {
        return false;
    }
    let power = power_at(window, hz);
    power > 100.0 * power_at(window, other).max(1.0)
        && power > 100.0 * power_at(window, 1000.0).max(1.0)
}

/// The TURN server the node at `http` chooses from the ring (bounded wait:
/// its first advertisement is stored at start).
fn wait_for_turn(public: &Netns, http: SocketAddr) -> SocketAddr {
    let mut chosen = None;
    wait_until(
        "the node offers a TURN server from the ring",
        WAIT,
        || {
            chosen = public
                .http_get_direct(http, "/turn")
                .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                .and_then(|v| v["chosen"]["turn"].as_str().and_then(|t| t.parse().ok()));
            chosen.is_some()
        },
        String::new,
    );
    chosen.expect("waited for it")
}

fn turn_counter(status: &serde_json::Value, name: &str) -> u64 {
    status["turn"][name].as_u64().unwrap_or(0)
}

#[test]
fn two_baresip_phones_behind_nat_talk_through_the_nodes_turn_server() {
    let nat = Nat::new(2);
    // ICE takes every address but 127.0.0.1 for a host candidate: the
    // homes' extra loopback addresses would only add pairs to time out.
    for i in 1..=2 {
        for addr in ["127.0.0.2/8", "127.0.0.3/8"] {
            let (status, _, err) = nat.home(i).run(&["ip", "addr", "del", addr, "dev", "lo"]);
            assert!(status.success(), "ip addr del {addr}: {err}");
        }
    }
    let ip = nat.public_ip();
    let node_addr = SocketAddr::new(ip, 5060);
    let turn = SocketAddr::new(ip, 3478);
    let http = SocketAddr::new(ip, 8080);
    let users = nat.public.dir.join("users");
    add_user(&users, "alice@example.test", "alice-pw");
    add_user(&users, "bob@example.test", "bob-pw");
    let config = nat.public.dir.join("node.toml");
    // baresip 1.0 answers MD5 challenges only (docs/security.md).
    std::fs::write(
        &config,
        "auth_algorithms = [\"MD5\"]\n[turn]\nports = \"49200-49299\"\nadvertise_s = 1\n",
    )
    .expect("config");
    let node = Node::builder()
        .in_netns(&nat.public)
        .args(["--sip", &node_addr.to_string(), "--domain", DOMAIN])
        .args(["--users", users.to_str().expect("path")])
        .args(["--turn", &turn.to_string(), "--http", &http.to_string()])
        .args(["--config", config.to_str().expect("path")])
        .spawn();
    let status = || {
        nat.public
            .http_get_direct(http, "/status")
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
            .unwrap_or_default()
    };

    // The phones' TURN server is the one the ring offers (`/turn`).
    let found = wait_for_turn(&nat.public, http);
    assert_eq!(found, turn);

    let (_bob, bob_out, bob_heard) = phone(nat.home(2), "bob", BOB_HZ, (node_addr, turn), &[]);
    let logs = |alice: &Path| {
        format!(
            "alice:\n{}\nbob:\n{}\nnode:\n{}",
            tail(&read_lossy(alice), 40),
            tail(&read_lossy(&bob_out), 40),
            tail(&node.log(), 40)
        )
    };
    wait_until(
        "bob registered from behind NAT 2",
        WAIT,
        || read_lossy(&bob_out).contains("{0/UDP/v4} 200 OK"),
        || logs(Path::new("/nonexistent")),
    );
    let dial = format!("/dial sip:bob@{DOMAIN}");
    let (_alice, alice_out, alice_heard) =
        phone(nat.home(1), "alice", ALICE_HZ, (node_addr, turn), &[&dial]);
    wait_until(
        "bob answers alice's call",
        WAIT,
        || read_lossy(&bob_out).contains("answering call"),
        || logs(&alice_out),
    );
    wait_until(
        "ICE completes on both phones",
        WAIT,
        || {
            read_lossy(&alice_out).contains("connectivity check is complete")
                && read_lossy(&bob_out).contains("connectivity check is complete")
        },
        || logs(&alice_out),
    );

    let last = std::cell::RefCell::new(serde_json::Value::Null);
    // The node's advertisement in the ring carries its load: the phones'
    // allocations (baresip ends the RTCP ones once ICE is done, the RTP
    // ones live as long as the call).
    wait_until(
        "the ring's advertisement counts the call's allocations",
        WAIT,
        || {
            let advertised: serde_json::Value = nat
                .public
                .http_get_direct(http, "/turn")
                .and_then(|body| serde_json::from_str(&body).ok())
                .unwrap_or_default();
            let counted = advertised["chosen"]["allocations"].as_u64() >= Some(2);
            *last.borrow_mut() = advertised;
            counted
        },
        || format!("{}", last.borrow()),
    );
    // The media goes through the node's TURN server: each phone sends
    // its RTP and RTCP through its own allocations (RTP and RTCP: two
    // each), and the pair ICE chose is the other phone's NAT mapping
    // (learnt as peer-reflexive from its checks); so every packet either
    // way left a relay port of the node.
    wait_until(
        "the node's TURN server relays the call's media both ways",
        WAIT,
        || {
            let s = status();
            let done = turn_counter(&s, "allocated_total") >= 4
                && turn_counter(&s, "relayed_to_peers") >= 2 * PACKETS;
            *last.borrow_mut() = s;
            done
        },
        || format!("{}\n{}", last.borrow()["turn"], logs(&alice_out)),
    );
    // And the audio arrived: each phone decoded the other's tone.
    wait_until(
        "each phone hears the other's tone",
        WAIT,
        || {
            hears(&heard(&alice_heard), BOB_HZ, ALICE_HZ)
                && hears(&heard(&bob_heard), ALICE_HZ, BOB_HZ)
        },
        || {
            format!(
                "alice heard {} samples, bob {}\n{}",
                heard(&alice_heard).len(),
                heard(&bob_heard).len(),
                logs(&alice_out)
            )
        },
    );
    // ICE SDP: the node's own media relay stayed out of it.
    assert!(
        !node.log().contains("relaying a call's media"),
        "{}",
        tail(&node.log(), 40)
    );
    let mut node = node;
    node.assert_alive();
}
