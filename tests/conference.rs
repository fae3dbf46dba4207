//! Conferences with real node processes: a ring of three nodes, and
//! callers driven by the test (SIP over UDP from `common::phone`, RTP
//! from sockets of their own, each sending a pure tone of its own as
//! PCMU every 20 ms). Three callers join `sip:conf-team@…` through three
//! different nodes and meet at one focus, the responsible node of the
//! room's key (every answer's RTP port is from that node's range); each
//! hears the other two tones and not her own (Goertzel); a fourth joins
//! through another node and is heard by all and hears all three; a fifth
//! gets 486 (`max_participants = 4`); the fourth leaves and is heard no
//! more while the three still hear each other; the last BYE closes the
//! room. In a room of the config with a PIN, two callers are neither
//! heard nor hear anyone until each keys the PIN in (RFC 4733 events).

mod common;

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::call::{
    answered_rtp, in_dialog, invite, pcmu_offer, pcmu_samples, power_at, tone_packet, tone_power,
};
use common::members::{Member, consistent, logs, sha1_hex};
use common::phone::Phone;
use common::*;

const ROOM: &str = "conf-team";
const AMPLITUDE: f64 = 6000.0;
/// Samples each check looks at: half a second.
const WINDOW: usize = 4000;
/// RTP ports per node.
const PORTS: u16 = 12;

/// A node of the ring and the first port of its RTP range.
struct RingNode {
    member: Member,
    ports: u16,
}

fn start(join: Option<SocketAddr>) -> RingNode {
    let dir = temp_dir("conference");
    let ports = port_block(PORTS);
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nmode = \"off\"\n[conference]\nmax_participants = 4\nport_range = \"{ports}-{}\"\n\
             [[conference.room]]\nname = \"standup\"\npin = \"42\"\n",
            ports + PORTS - 1
        ),
    )
    .expect("write the config");
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let mut args = vec![
        "--http".to_string(),
        http.to_string(),
        "--config".to_string(),
        config.display().to_string(),
    ];
    if let Some(join) = join {
        args.extend(["--join".to_string(), join.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    RingNode {
        member: Member {
            node: Node::start(&args),
            http,
        },
        ports,
    }
}

/// Sends a tone every 20 ms from its RTP socket (and the keys it is
/// given as RFC 4733 events, payload type 101) and keeps what it hears.
struct Talker {
    hz: f64,
    keys: Arc<Mutex<VecDeque<u8>>>,
    stop: Arc<AtomicBool>,
    heard: Arc<Mutex<VecDeque<i16>>>,
    thread: Option<JoinHandle<()>>,
}

impl Talker {
    fn start(rtp: UdpSocket, to: SocketAddr, hz: f64, ssrc: u32) -> Talker {
        let stop = Arc::new(AtomicBool::new(false));
        let heard = Arc::new(Mutex::new(VecDeque::new()));
        let keys: Arc<Mutex<VecDeque<u8>>> = Arc::default();
        let (stop_flag, kept, to_press) = (stop.clone(), heard.clone(), keys.clone());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut buf = [0u8; 2048];
            let mut n = 0u32;
            while !stop_flag.load(Ordering::Relaxed) {
                rtp.send_to(&tone_packet(n, hz, AMPLITUDE, ssrc), to)
                    .expect("send RTP");
                if n.is_multiple_of(5)
                    && let Some(key) = to_press.lock().expect("lock").pop_front()
                {
                    // One event per 100 ms: two packets, then the end (sent twice).
                    for flags in [0x0a, 0x0a, 0x8a, 0x8a] {
                        let mut event = vec![0x80, 101];
                        event.extend_from_slice(&(n as u16).to_be_bytes());
                        event.extend_from_slice(&(n * 160).to_be_bytes());
                        event.extend_from_slice(&ssrc.to_be_bytes());
                        event.extend_from_slice(&[key, flags, 0x01, 0x40]);
                        rtp.send_to(&event, to).expect("send an RTP event");
                    }
                }
                n += 1;
                let due = start + Duration::from_millis(20) * n;
                loop {
                    let left = due.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    rtp.set_read_timeout(Some(left)).expect("timeout");
                    match rtp.recv_from(&mut buf) {
                        Ok((len, _)) => {
                            if let Some(samples) = pcmu_samples(&buf[..len]) {
                                let mut kept = kept.lock().expect("lock");
                                kept.extend(samples);
                                while kept.len() > 2 * WINDOW {
                                    kept.pop_front();
                                }
                            }
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(e) => panic!("RTP receive failed: {e}"),
                    }
                }
            }
        });
        Talker {
            hz,
            keys,
            stop,
            heard,
            thread: Some(thread),
        }
    }

    /// The last half second heard.
    fn last(&self) -> Vec<i16> {
        let kept = self.heard.lock().expect("lock");
        kept.iter()
            .skip(kept.len().saturating_sub(WINDOW))
            .copied()
            .collect()
    }
}

impl Drop for Talker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A participant: her phone, her dialog and her RTP.
struct Caller {
    name: &'static str,
    phone: Phone,
    invite: String,
    ok: RawResponse,
    rtp: SocketAddr,
    talker: Talker,
}

/// `name` calls the room through `node` and starts talking at `hz`.
fn join(node: &RingNode, name: &'static str, hz: f64) -> Caller {
    join_room(node, ROOM, name, hz)
}

fn join_room(node: &RingNode, room: &str, name: &'static str, hz: f64) -> Caller {
    let phone = Phone::new("127.0.0.1", node.member.node.addr);
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind RTP");
    let sdp = pcmu_offer(rtp.local_addr().expect("addr"));
    let call = invite(
        &phone,
        &format!("{name}@{DOMAIN}"),
        &format!("{room}@{DOMAIN}"),
        &sdp,
        "",
    );
    let ok = phone.ask(&call).expect("an answer to the INVITE");
    assert_eq!(ok.status, 200, "{name}: {}", ok.text);
    phone.send(&in_dialog(&phone, "ACK", 1, &call, &ok));
    let to = answered_rtp(&ok);
    let ssrc = u32::from_be_bytes(*b"tone") ^ hz as u32;
    Caller {
        name,
        phone,
        invite: call,
        ok,
        rtp: to,
        talker: Talker::start(rtp, to, hz, ssrc),
    }
}

fn leave(caller: Caller) {
    let bye = in_dialog(&caller.phone, "BYE", 2, &caller.invite, &caller.ok);
    let answer = caller.phone.ask(&bye).expect("an answer to the BYE");
    assert_eq!(answer.status, 200, "{}: {}", caller.name, answer.text);
}

/// Whether `caller` hears every tone of `present` loud and none of
/// `absent` (her own among them); the powers for a failure's message.
fn hears(caller: &Caller, present: &[f64], absent: &[f64]) -> (bool, String) {
    let samples = caller.talker.last();
    if samples.len() < WINDOW {
        return (
            false,
            format!("{}: {} samples heard", caller.name, samples.len()),
        );
    }
    let full = tone_power(AMPLITUDE, WINDOW);
    let level = |hz: f64| power_at(&samples, hz) / full;
    let loud = present.iter().all(|hz| level(*hz) > 0.25);
    let quiet = absent.iter().all(|hz| level(*hz) < 0.001);
    let report = present
        .iter()
        .chain(absent)
        .map(|hz| format!("{hz} Hz: {:.4}", level(*hz)))
        .collect::<Vec<_>>()
        .join(", ");
    (loud && quiet, format!("{} hears {report}", caller.name))
}

/// Waits (bounded) until each caller hears every other one of `room` and
/// neither herself nor any of `gone`.
fn wait_mix(room: &[&Caller], gone: &[f64], nodes: &[RingNode]) {
    let check = || {
        room.iter()
            .map(|c| {
                let others: Vec<f64> = room
                    .iter()
                    .filter(|o| o.name != c.name)
                    .map(|o| o.talker.hz)
                    .collect();
                let mut absent = vec![c.talker.hz];
                absent.extend(gone);
                hears(c, &others, &absent)
            })
            .collect::<Vec<_>>()
    };
    let members: Vec<&Member> = nodes.iter().map(|n| &n.member).collect();
    wait_until(
        "each participant hears the others and not herself",
        Duration::from_secs(10),
        || check().iter().all(|(ok, _)| *ok),
        || {
            let report: Vec<String> = check().into_iter().map(|(_, r)| r).collect();
            format!("{}\n{}", report.join("\n"), logs(&members))
        },
    );
    for (_, report) in check() {
        eprintln!("{report}");
    }
}

#[test]
fn three_callers_through_three_nodes_meet_at_one_focus() {
    let first = start(None);
    let join_at = first.member.node.addr;
    let mut nodes = vec![first, start(Some(join_at)), start(Some(join_at))];
    let members: Vec<&Member> = nodes.iter().map(|n| &n.member).collect();
    wait_until(
        "a consistent ring",
        WAIT,
        || consistent(&members),
        || logs(&members),
    );

    // The focus: the responsible node (successor) of the room's key.
    let key = sha1_hex(&format!("{ROOM}@{DOMAIN}"));
    let mut ids: Vec<(String, usize)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.member.node.node_id.clone(), i))
        .collect();
    ids.sort();
    let focus = ids
        .iter()
        .find(|(id, _)| *id >= key)
        .or(ids.first())
        .map(|(_, i)| *i)
        .expect("a node");
    let focus_ports = nodes[focus].ports..nodes[focus].ports + PORTS;

    let alice = join(&nodes[0], "alice", 500.0);
    let bob = join(&nodes[1], "bob", 800.0);
    let carol = join(&nodes[2], "carol", 1250.0);
    for c in [&alice, &bob, &carol] {
        assert!(
            focus_ports.contains(&c.rtp.port()),
            "{}'s RTP at {} is not the focus's (node {focus}, ports {focus_ports:?})",
            c.name,
            c.rtp
        );
    }
    wait_mix(&[&alice, &bob, &carol], &[1900.0], &nodes);
    // The two who entered elsewhere were forwarded to the focus by their node.
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != focus) {
        assert!(
            n.member
                .node
                .log()
                .contains("INVITE forwarded to the room's focus"),
            "node {i} did not forward to the focus (node {focus}):\n{}",
            tail(&n.member.node.log(), 40)
        );
    }

    // A fourth joins through a node other than the focus.
    let dave_node = (focus + 1) % nodes.len();
    let dave = join(&nodes[dave_node], "dave", 1900.0);
    assert!(focus_ports.contains(&dave.rtp.port()), "{}", dave.rtp);
    wait_mix(&[&alice, &bob, &carol, &dave], &[], &nodes);

    // The room is full: the fifth is refused.
    let erin = Phone::new("127.0.0.1", nodes[(focus + 2) % 3].member.node.addr);
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind RTP");
    let sdp = pcmu_offer(rtp.local_addr().expect("addr"));
    let full = erin
        .ask(&invite(
            &erin,
            &format!("erin@{DOMAIN}"),
            &format!("{ROOM}@{DOMAIN}"),
            &sdp,
            "",
        ))
        .expect("an answer");
    assert_eq!(full.status, 486, "{}", full.text);

    // Dave leaves: the three still hear each other, and not him.
    leave(dave);
    wait_mix(&[&alice, &bob, &carol], &[1900.0], &nodes);

    for c in [alice, bob, carol] {
        leave(c);
    }
    let focus_node = &nodes[focus].member.node;
    wait_until(
        "the room closed at the focus",
        Duration::from_secs(5),
        || focus_node.log().contains("conference room closed"),
        || tail(&focus_node.log(), 40),
    );

    // A room of the config with a PIN: neither is heard, nor hears, before
    // keying 4 2 in (RFC 4733); then each hears the other.
    let frank = join_room(&nodes[0], "standup", "frank", 500.0);
    let grace = join_room(&nodes[1], "standup", "grace", 800.0);
    wait_until(
        "half a second heard in the PIN room",
        Duration::from_secs(5),
        || frank.talker.last().len() == WINDOW && grace.talker.last().len() == WINDOW,
        String::new,
    );
    for (c, other) in [(&frank, 800.0), (&grace, 500.0)] {
        let (silent, report) = hears(c, &[], &[other, c.talker.hz]);
        assert!(silent, "heard before the PIN: {report}");
    }
    for c in [&frank, &grace] {
        c.talker.keys.lock().expect("lock").extend([4, 2]);
    }
    wait_mix(&[&frank, &grace], &[], &nodes);
    leave(frank);
    leave(grace);

    for n in nodes.iter_mut() {
        n.member.node.assert_alive();
    }
}
