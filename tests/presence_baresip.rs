//! Presence with real phones: two baresip phones (Debian `baresip-core`,
//! module `presence`), each the other's buddy (a contact with
//! `;presence=p2p`: the phone subscribes to it through its outbound proxy,
//! the node), register at a node. Alice sees bob come online, go away (a
//! PUBLISH of `closed` while he stays registered: baresip 1.0's
//! `presence_offline`, it knows no "away" of its own), come back (a PUBLISH
//! of `open`) and leave (un-PUBLISH and de-REGISTER); bob sees alice go
//! away. The phones are driven through baresip's `ctrl_tcp` module, so
//! every step waits for the one before it.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    ChildGuard, DOMAIN, Node, port_block, read_lossy, require_tool, tail, temp_dir, wait_until,
};

/// A baresip phone for `user` whose buddy is `buddy`, with `ctrl_tcp` on `ctrl`.
struct Phone {
    _guard: ChildGuard,
    out: PathBuf,
    ctrl: SocketAddr,
}

fn phone(dir: &Path, user: &str, buddy: &str, node: SocketAddr) -> Phone {
    let baresip = require_tool("baresip", "baresip-core");
    let ctrl = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let conf = dir.join(user);
    std::fs::create_dir_all(&conf).expect("phone dir");
    std::fs::write(
        conf.join("config"),
        format!(
            "poll_method epoll\n\
             sip_listen 127.0.0.1:0\n\
             module_path /usr/lib/baresip/modules\n\
             module_app account.so\n\
             module_app contact.so\n\
             module_app menu.so\n\
             module_app presence.so\n\
             module_app ctrl_tcp.so\n\
             ctrl_tcp_listen {ctrl}\n\
             module g711.so\n\
             module ausine.so\n\
             module aufile.so\n\
             audio_player aufile,/dev/null\n\
             audio_source ausine,440\n\
             audio_alert aufile,/dev/null\n"
        ),
    )
    .expect("config");
    std::fs::write(
        conf.join("accounts"),
        format!("<sip:{user}@{DOMAIN}>;regint=300;pubint=300;outbound=\"sip:{node}\"\n"),
    )
    .expect("accounts");
    std::fs::write(
        conf.join("contacts"),
        format!("\"{buddy}\" <sip:{buddy}@{DOMAIN}>;presence=p2p\n"),
    )
    .expect("contacts");
    let out = dir.join(format!("{user}.out"));
    let child = Command::new(baresip)
        .arg("-f")
        .arg(&conf)
        .args(["-t", "120"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("output"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn baresip");
    Phone {
        _guard: ChildGuard::new(user, child),
        out,
        ctrl,
    }
}

impl Phone {
    /// The phone's output without colour codes.
    fn output(&self) -> String {
        let raw = read_lossy(&self.out);
        let mut text = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                text.push(c);
            }
        }
        text
    }

    /// How often the phone printed that `buddy` changed `from` → `to`.
    fn changes(&self, buddy: &str, from: &str, to: &str) -> usize {
        let line = format!("<sip:{buddy}@{DOMAIN}> changed status from {from} to {to}");
        self.output().matches(&line).count()
    }

    /// Runs a baresip command through `ctrl_tcp` (a netstring of JSON);
    /// true when the phone said it was done. The control port may not be
    /// open yet: the caller polls.
    fn command(&self, command: &str) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.ctrl, Duration::from_secs(2)) else {
            return false;
        };
        let json = format!("{{\"command\":\"{command}\",\"params\":\"\",\"token\":\"t\"}}");
        let netstring = format!("{}:{json},", json.len());
        if stream.write_all(netstring.as_bytes()).is_err() {
            return false;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = [0u8; 4096];
        let mut got = String::new();
        while !got.contains("\"response\":true") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        got.contains("\"ok\":true")
    }
}

#[test]
fn two_baresip_buddies_see_each_other_online_away_and_offline() {
    let dir = temp_dir("presence-baresip");
    let node = Node::start(&[]);
    let context = |phones: &[&Phone]| {
        let mut text = String::new();
        for p in phones {
            text.push_str(&format!(
                "--- {}:\n{}\n",
                p.out.display(),
                tail(&p.output(), 25)
            ));
        }
        text + &tail(&node.log(), 30)
    };
    let limit = Duration::from_secs(30);

    let alice = phone(&dir, "alice", "bob", node.addr);
    wait_until(
        "alice registered and subscribed to bob",
        limit,
        || {
            alice
                .output()
                .contains("alice@example.test: {0/UDP/v4} 200 OK")
                && node
                    .log()
                    .contains("subscription accepted presentity=bob@example.test")
        },
        || context(&[&alice]),
    );
    let bob = phone(&dir, "bob", "alice", node.addr);
    wait_until(
        "alice sees bob online",
        limit,
        || alice.changes("bob", "Offline", "Online") == 1,
        || context(&[&alice, &bob]),
    );
    wait_until(
        "bob's control port answers",
        limit,
        || bob.command("presence_offline"),
        || context(&[&alice, &bob]),
    );
    wait_until(
        "alice sees bob away (his PUBLISH), while he stays registered",
        limit,
        || alice.changes("bob", "Online", "Offline") == 1,
        || context(&[&alice, &bob]),
    );
    assert!(bob.command("presence_online"), "{}", context(&[&bob]));
    wait_until(
        "alice sees bob back",
        limit,
        || alice.changes("bob", "Offline", "Online") == 2,
        || context(&[&alice, &bob]),
    );
    // Bob watches alice as well.
    wait_until(
        "bob subscribed to alice",
        limit,
        || {
            node.log()
                .contains("subscription accepted presentity=alice@example.test")
        },
        || context(&[&alice, &bob]),
    );
    assert!(alice.command("presence_offline"), "{}", context(&[&alice]));
    wait_until(
        "bob sees alice away",
        limit,
        || bob.changes("alice", "Online", "Offline") == 1,
        || context(&[&alice, &bob]),
    );
    assert!(bob.command("quit"), "{}", context(&[&bob]));
    wait_until(
        "alice sees bob leave",
        limit,
        || alice.changes("bob", "Online", "Offline") == 2,
        || context(&[&alice, &bob]),
    );
}
