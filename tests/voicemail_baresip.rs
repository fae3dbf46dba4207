//! Message waiting on a real phone: Alice registered once and is offline;
//! Bob (the test, over UDP with PCMU RTP) leaves her a voicemail at the
//! node. Then her baresip phone (Debian `baresip-core`, module `mwi`)
//! starts and registers: it subscribes to her `message-summary`, and
//! shows the waiting message — its `menu` module prints "MWI for
//! sip:alice@example.test" with the NOTIFY's body, which says
//! `Messages-Waiting: yes` and `Voice-Message: 1/0`.
//!
//! baresip 1.0's `mwi` subscribes again for every account it knows from a
//! timer 1 ms after it loads, appending to the list it walks: with an
//! account registered by then it subscribes without end. So the phone
//! starts with no account, and the account is added (`uanew`, through
//! `ctrl_tcp`) once its control port answers, long after that timer.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::call::leave_tone;
use common::phone::Phone;
use common::*;

/// A node with voicemail on.
fn start_node(dir: &Path) -> Node {
    let low = port_block(10);
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nmode = \"off\"\n[voicemail]\nenabled = true\nmax_seconds = 30\nport_range = \"{low}-{}\"\n",
            low + 9
        ),
    )
    .expect("write the config");
    Node::start(&["--config", config.to_str().expect("path")])
}

/// Runs a baresip command with `params` through `ctrl_tcp` (a netstring
/// of JSON); true when the phone said it was done. The control port may
/// not be open yet: the caller polls.
fn command(ctrl: SocketAddr, command: &str, params: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&ctrl, Duration::from_secs(2)) else {
        return false;
    };
    let params = params.replace('\\', "\\\\").replace('"', "\\\"");
    let json = format!("{{\"command\":\"{command}\",\"params\":\"{params}\",\"token\":\"t\"}}");
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

/// Alice's baresip phone with module `mwi` and no account yet, its
/// control port at `ctrl`.
fn phone(dir: &Path, ctrl: SocketAddr) -> (ChildGuard, std::path::PathBuf) {
    let baresip = require_tool("baresip", "baresip-core");
    let conf = dir.join("alice");
    std::fs::create_dir_all(&conf).expect("phone dir");
    std::fs::write(
        conf.join("config"),
        format!(
            "poll_method epoll\n\
         sip_listen 127.0.0.1:0\n\
         module_path /usr/lib/baresip/modules\n\
         module_app account.so\n\
         module_app menu.so\n\
         module_app mwi.so\n\
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
    std::fs::write(conf.join("accounts"), "").expect("accounts");
    let out = dir.join("alice.out");
    let file = std::fs::File::create(&out).expect("output");
    // baresip's menu prints received MESSAGEs on standard error.
    let child = Command::new(baresip)
        .arg("-f")
        .arg(&conf)
        .args(["-t", "60"])
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("output"))
        .stderr(file)
        .spawn()
        .expect("spawn baresip");
    (ChildGuard::new("baresip alice", child), out)
}

#[test]
fn baresip_shows_the_waiting_voicemail() {
    let dir = temp_dir("voicemail-baresip");
    let node = start_node(&dir);

    // Alice is known (she registered once) and offline.
    let alice = Phone::new("127.0.0.1", node.addr);
    let contact = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let at = contact.local_addr().expect("addr");
    let register = |expires: u32| {
        alice
            .register("alice", DOMAIN, "")
            .replace(
                &format!("<sip:alice@{}>", alice.addr()),
                &format!("<sip:alice@{at}>"),
            )
            .replace("Expires: 600", &format!("Expires: {expires}"))
    };
    for expires in [600, 0] {
        let ok = alice.ask(&register(expires)).expect("an answer");
        assert_eq!(ok.status, 200, "{}", ok.text);
    }

    let to = format!("alice@{DOMAIN}");
    leave_tone(node.addr, &to, 1000.0, 50, || tail(&node.log(), 30));
    wait_until(
        "the recording stored",
        WAIT,
        || node.log().contains("voicemail recorded"),
        || tail(&node.log(), 30),
    );

    let ctrl = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let (_guard, out) = phone(&dir, ctrl);
    let limit = Duration::from_secs(30);
    let account = format!(
        "<sip:alice@{DOMAIN}>;regint=300;mwi=yes;outbound=\"sip:{}\"",
        node.addr
    );
    wait_until(
        "her account added to the phone",
        limit,
        || command(ctrl, "uanew", &account),
        || tail(&read_lossy(&out), 40),
    );
    wait_until(
        "a first message-summary NOTIFY shown",
        limit,
        || read_lossy(&out).contains("MWI for"),
        || tail(&read_lossy(&out), 40),
    );
    let subscribed = read_lossy(&out).matches("mwi: subscribing").count();
    assert!(subscribed <= 2, "{subscribed} subscriptions");
    wait_until(
        "baresip shows one voice message waiting",
        limit,
        || {
            let text = read_lossy(&out);
            text.contains("MWI for sip:alice@example.test")
                && text.contains("Messages-Waiting: yes")
                && text.contains("Voice-Message: 1/0")
        },
        || format!("{}\n{}", tail(&read_lossy(&out), 40), tail(&node.log(), 30)),
    );
}
