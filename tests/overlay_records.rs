//! Who may change a record, with real processes (docs/security.md
//! "Records"): three members with one secret and one users file; alice
//! registers at one of them, which becomes her binding's writer. A test
//! socket that holds the secret (a member, as a compromised node would be)
//! tries to overwrite and remove her binding at every node — as a store to
//! the holder, as a replica's copy, in another node's name, with a forged
//! digest — and is refused each time, by holder and replicas alike; her
//! binding still routes a MESSAGE. Registering at another member with her
//! password moves the record to that writer. A member past its item limit
//! is refused.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::members::*;
use common::phone::{Challenge, Phone};
use common::*;
use p2psip::overlay::admission::Admission;
use p2psip::sip::message::Message;
use serde_json::Value;

const NOT_WRITER: &str = "not the record's writer";
const TOO_MANY: &str = "too many items from this writer";
/// `[overlay_limits] items_per_writer` of the members.
const ITEM_LIMIT: usize = 30;

fn write_private(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn start(name: &str, files: &[&Path; 3], join: Option<SocketAddr>) -> Member {
    let [secret, users, config] = files.map(|p| p.display().to_string());
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let mut builder = Node::builder()
        .name(name)
        .args(["--sip", "127.0.0.1:0", "--domain", DOMAIN])
        .args(["--http", &http.to_string()])
        .args(["--overlay-secret", &secret, "--users", &users])
        .args(["--config", &config]);
    if let Some(join) = join {
        builder = builder.args(["--join", &join.to_string()]);
    }
    Member {
        node: builder.spawn(),
        http,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A member that is no node: a socket with the secret, signing what it sends.
struct Rogue {
    socket: UdpSocket,
    local: SocketAddr,
    admission: Admission,
}

impl Rogue {
    fn new(secret: &Path) -> Rogue {
        let config = p2psip::config::Config {
            overlay_secret: Some(secret.to_path_buf()),
            ..p2psip::config::Config::default()
        };
        let secret = config.overlay_secret().expect("secret").expect("some");
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Rogue {
            local: socket.local_addr().expect("local"),
            socket,
            admission: Admission::new(secret, wall, Instant::now()),
        }
    }

    /// Our Node-ID as the members compute it from our address.
    fn id(&self) -> String {
        sha1_hex(&self.local.to_string())
    }

    /// Sends a signed overlay request to `to` and gives the final response.
    fn ask(&self, to: SocketAddr, op: &str, to_uri: &str, body: &str) -> RawResponse {
        let t = token();
        let local = self.local;
        let me = format!("<sip:{}@{local}>", self.id());
        let text = format!(
            "REGISTER sip:{to} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{t}\r\n\
             P2P-Overlay: chord;op={op}\r\n\
             From: {me};tag={t}\r\n\
             To: <{to_uri}>\r\n\
             Contact: {me}\r\n\
             Content-Type: application/json\r\n\
             Max-Forwards: 70\r\n\
             Call-ID: {t}@{local}\r\n\
             CSeq: 1 REGISTER\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let Ok(Message::Request(mut request)) = Message::parse(bytes::Bytes::from(text)) else {
            panic!("our own request does not parse")
        };
        self.admission.sign_request(&mut request, Instant::now());
        self.socket.send_to(&request.to_bytes(), to).expect("send");
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, _) = self
                .socket
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("no answer from {to} to {op}: {e}"));
            if let Some(r) = RawResponse::parse(&buf[..n])
                && r.status >= 200
            {
                return r;
            }
        }
    }

    /// The items a node itself holds under `key` (a fetch sent to it).
    fn items_at(&self, node: SocketAddr, key: &str) -> Vec<Value> {
        let answer = self.ask(node, "fetch", &format!("sip:{key}@overlay.invalid"), "");
        let body = answer.text.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }
}

/// Alice's binding item as `node` holds it.
fn alice_at(rogue: &Rogue, node: SocketAddr) -> Option<Value> {
    let aor = format!("alice@{DOMAIN}");
    rogue
        .items_at(node, &sha1_hex(&aor))
        .into_iter()
        .find(|i| i["kind"] == "binding" && i["name"] == aor.as_str())
}

/// REGISTERs alice from `phone` with her password; the final status.
fn register(phone: &Phone, password: &str) -> u16 {
    let first = phone
        .ask(&phone.register("alice", DOMAIN, ""))
        .expect("an answer to REGISTER");
    if first.status != 401 {
        return first.status;
    }
    let challenge = Challenge::all_of(&first).remove(0);
    let answer = challenge.answer("alice", password, "REGISTER", &format!("sip:{DOMAIN}"), 1);
    phone
        .ask(&phone.register("alice", DOMAIN, &format!("Authorization: {answer}\r\n")))
        .map_or(0, |r| r.status)
}

/// Every member holds alice's binding, written by `writer`.
fn all_hold_alice_by(rogue: &Rogue, members: &[Member], writer: &str) -> bool {
    members
        .iter()
        .all(|m| alice_at(rogue, m.node.addr).is_some_and(|i| i["writer"].as_str() == Some(writer)))
}

#[test]
fn only_the_writer_or_whoever_authenticated_the_user_changes_her_binding() {
    let dir = temp_dir("records");
    let secret = write_private(
        &dir,
        "secret",
        "c2VjcmV0IHNoYXJlZCBieSB0aGUgbWVtYmVycyBvZiB0aGlzIHJpbmc=\n",
    );
    let users = dir.join("users");
    add_user(&users, &format!("alice@{DOMAIN}"), "wonderland");
    let config = write_private(
        &dir,
        "node.toml",
        &format!("[overlay_limits]\nitems_per_writer = {ITEM_LIMIT}\n"),
    );
    let files = [secret.as_path(), users.as_path(), config.as_path()];
    let first = start("member-0", &files, None);
    let boot = first.node.addr;
    let members = vec![
        first,
        start("member-1", &files, Some(boot)),
        start("member-2", &files, Some(boot)),
    ];
    wait_until(
        "three members agree on one ring",
        Duration::from_secs(60),
        || consistent(&members),
        || logs(&members),
    );
    let rogue = Rogue::new(&secret);

    // Alice registers at member-1, which becomes the writer of her binding
    // at the holder and both replicas.
    let alice = Phone::new("127.0.0.1", members[1].node.addr);
    assert_eq!(register(&alice, "wonderland"), 200, "{}", logs(&members));
    let writer = members[1].node.node_id.clone();
    wait_until(
        "every member holds alice's binding, written by member-1",
        Duration::from_secs(30),
        || all_hold_alice_by(&rogue, &members, &writer),
        || logs(&members),
    );
    let before: Vec<Value> = members
        .iter()
        .filter_map(|m| alice_at(&rogue, m.node.addr))
        .collect();

    // The rogue member tries to take alice's calls and to remove her.
    let aor = format!("alice@{DOMAIN}");
    let key = sha1_hex(&aor);
    let key_uri = format!("sip:{key}@overlay.invalid");
    let stolen = format!(
        "[{{\"contact\":\"sip:alice@{}\",\"expires_in\":3600,\"call_id\":\"x\",\"cseq\":1}}]",
        rogue.local
    );
    let item = |writer: &str, proof: Option<&str>| {
        let proof = proof.map_or(String::new(), |p| {
            format!(",\"proof\":{}", Value::String(p.into()))
        });
        format!(
            "{{\"items\":[{{\"key\":\"{key}\",\"name\":\"{aor}\",\"kind\":\"binding\",\"value\":\"{}\",\"version\":999999,\"expires_ms\":3600000,\"writer\":\"{writer}\"{proof}}}]}}",
            hex(stolen.as_bytes())
        )
    };
    let forged_digest = format!(
        "Digest username=\"alice\", realm=\"{DOMAIN}\", nonce=\"0011\", uri=\"sip:{DOMAIN}\", \
         response=\"{}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"ab\"",
        "0".repeat(32)
    );
    let me = rogue.id();
    let attempts = [
        ("store", item(&me, None), "in its own name"),
        ("store;replica", item(&me, None), "as a replica's copy"),
        ("store", item(&writer, None), "in the writer's name"),
        (
            "store",
            item(&me, Some(&forged_digest)),
            "with a forged digest",
        ),
        ("remove", format!("{{\"name\":\"{aor}\"}}"), "removal"),
        (
            "remove;replica",
            format!("{{\"name\":\"{aor}\",\"by\":\"{me}\"}}"),
            "a replica's removal",
        ),
    ];
    for m in &members {
        let node = m.node.addr;
        for (op, body, what) in &attempts {
            let to = if op.starts_with("remove") {
                key_uri.clone()
            } else {
                format!("sip:{node}")
            };
            let answer = rogue.ask(node, op, &to, body);
            assert_eq!(
                answer.status, 403,
                "{what} at {}:\n{}",
                m.node.name, answer.text
            );
            assert!(answer.text.contains(NOT_WRITER), "{what}: {}", answer.text);
        }
    }
    // Nothing changed anywhere, and the refusals were counted.
    let after: Vec<Value> = members
        .iter()
        .filter_map(|m| alice_at(&rogue, m.node.addr))
        .collect();
    let unchanged = |items: &[Value]| -> Vec<(Value, Value, Value)> {
        items
            .iter()
            .map(|i| {
                (
                    i["writer"].clone(),
                    i["version"].clone(),
                    i["value"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(unchanged(&after), unchanged(&before));
    assert_eq!(after.len(), 3);
    for m in &members {
        assert!(
            metric(m, "p2psip_overlay_records_refused_total") >= attempts.len() as u64,
            "{}",
            m.node.name
        );
    }

    // Her binding still routes: a MESSAGE from outside, through member-2.
    let stranger = Phone::new("127.0.0.3", members[2].node.addr);
    let message = stranger.request("MESSAGE", "eve@elsewhere.test", &aor, "");
    stranger
        .socket
        .send_to(message.as_bytes(), members[2].node.addr)
        .expect("send");
    alice
        .socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = vec![0u8; 65_536];
    let reached = (0..20).any(|_| {
        alice.socket.recv_from(&mut buf).is_ok_and(|(n, _)| {
            let text = String::from_utf8_lossy(&buf[..n]);
            text.starts_with("MESSAGE") && text.contains("eve@elsewhere.test")
        })
    });
    assert!(reached, "alice got the MESSAGE\n{}", logs(&members));

    // Alice registers at member-2 with her password: member-2 proves it
    // authenticated her, and every copy changes hands.
    let moved = Phone::new("127.0.0.1", members[2].node.addr);
    assert_eq!(register(&moved, "wonderland"), 200, "{}", logs(&members));
    let new_writer = members[2].node.node_id.clone();
    wait_until(
        "every member holds alice's binding, written by member-2",
        Duration::from_secs(30),
        || all_hold_alice_by(&rogue, &members, &new_writer),
        || logs(&members),
    );

    // The rogue fills a member with junk until the limit stops it.
    let target = members[0].node.addr;
    let mut stored = 0;
    let mut refused = None;
    for n in 0..ITEM_LIMIT * 2 {
        let name = format!("junk-{n}@{DOMAIN}");
        let body = format!(
            "{{\"items\":[{{\"key\":\"{}\",\"name\":\"{name}\",\"kind\":\"junk\",\"value\":\"00\",\"version\":1,\"expires_ms\":3600000,\"writer\":\"{me}\"}}]}}",
            sha1_hex(&name)
        );
        let answer = rogue.ask(target, "store", &format!("sip:{target}"), &body);
        match answer.status {
            200 => stored += 1,
            _ => {
                refused = Some(answer);
                break;
            }
        }
    }
    let refused = refused.expect("the limit refused a store");
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.text.contains(TOO_MANY), "{}", refused.text);
    assert!((1..=ITEM_LIMIT).contains(&stored), "stored {stored}");
    assert!(metric(&members[0], "p2psip_overlay_items_over_limit_total") >= 1);
    // The ring still serves alice.
    assert!(alice_at(&rogue, members[0].node.addr).is_some());
}
