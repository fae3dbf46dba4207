//! Attack tools against a node in authentication mode, as an attacker on the
//! network would run them (SIPVicious, Debian package `sipvicious`):
//! `svwar` cannot tell existing extensions from others, `svcrack` does not
//! find a password that sits near the end of its dictionary. Each is run
//! beside a control that shows the test could fail: `svwar` against an open
//! node lists the registered extension, `svcrack` against a node with the
//! failure block turned off finds the password.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::phone::Phone;
use common::{Node, add_user, port_block, require_tool, temp_dir};

/// `svwar` (or `svcrack`) from 127.0.0.1 against `node`, bounded in time;
/// gives what it printed.
fn sipvicious(tool: &str, node: &Node, args: &[&str]) -> String {
    let path = require_tool(tool, "sipvicious");
    let local = port_block(1).to_string();
    let port = node.addr.port().to_string();
    let out = Command::new("timeout")
        .arg("90")
        .arg(path)
        .args(args)
        .args(["--domain", "example.test", "-x", "127.0.0.1", "-P", &local])
        .args(["-p", &port, "127.0.0.1"])
        .stdin(Stdio::null())
        .output()
        .expect("run sipvicious");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Answers requests on `socket` with 200 (a phone that is there), until
/// `limit` messages or 2 s of silence.
fn answer_requests(socket: &std::net::UdpSocket, limit: usize) {
    let mut buf = vec![0u8; 70_000];
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    for _ in 0..limit {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            return;
        };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if text.starts_with("SIP/2.0") {
            continue;
        }
        let keep: Vec<&str> = text
            .lines()
            .filter(|l| {
                let name = l
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str())
            })
            .collect();
        let reply = format!(
            "SIP/2.0 200 OK\r\n{}\r\nContent-Length: 0\r\n\r\n",
            keep.join("\r\n")
        );
        let _ = socket.send_to(reply.as_bytes(), from);
    }
}

/// A results table row of svwar/svcrack naming `who`.
fn listed(output: &str, who: &str) -> bool {
    output
        .lines()
        .any(|l| l.starts_with('|') && l.contains(&format!(" {who} ")))
}

#[test]
fn svwar_cannot_tell_extensions_apart() {
    let dir = temp_dir("abuse-svwar");
    let users = dir.join("users");
    add_user(&users, "1005@example.test", "s3cret-1005");
    let node = Node::start(&["--users", users.to_str().expect("path")]);
    for method in ["REGISTER", "OPTIONS", "INVITE"] {
        let out = sipvicious(
            "svwar",
            &node,
            &["--force", "-m", method, "-e", "1000-1010"],
        );
        assert!(
            !listed(&out, "1005"),
            "{method}: svwar told 1005 apart:\n{out}"
        );
        assert!(
            out.contains("found nothing") || (1000..=1010).all(|e| listed(&out, &e.to_string())),
            "{method}: every extension must look the same:\n{out}"
        );
    }

    // Control: an open node with 1005 registered gives it away.
    let open = Node::start(&[]);
    let phone = Phone::new("127.0.0.1", open.addr);
    let registered = phone
        .ask(&phone.register("1005", "example.test", ""))
        .expect("answer");
    assert_eq!(registered.status, 200);
    // The phone answers what the node forwards to it (bounded: 200 reads).
    let socket = phone.socket.try_clone().expect("clone");
    let answering = std::thread::spawn(move || answer_requests(&socket, 200));
    let out = sipvicious("svwar", &open, &["-m", "OPTIONS", "-e", "1000-1010"]);
    drop(answering);
    assert!(
        listed(&out, "1005"),
        "svwar finds 1005 on an open node:\n{out}"
    );
}

#[test]
fn svcrack_does_not_find_a_password_late_in_its_dictionary() {
    let dir = temp_dir("abuse-svcrack");
    let users = dir.join("users");
    add_user(&users, "alice@example.test", "wonderland");
    // 500 words, the right one at 481.
    let mut words: Vec<String> = (1..=480).map(|i| format!("guess{i}")).collect();
    words.push("wonderland".into());
    words.extend((1..=19).map(|i| format!("after{i}")));
    let dictionary = dir.join("dictionary.txt");
    std::fs::write(&dictionary, words.join("\n") + "\n").expect("dictionary");
    let dict = dictionary.to_str().expect("path");
    let args = ["-u", "alice", "-d", dict, "--maximumtime=5"];

    let node = Node::start(&["--users", users.to_str().expect("path")]);
    let started = std::time::Instant::now();
    let out = sipvicious("svcrack", &node, &args);
    assert!(
        !out.contains("wonderland"),
        "svcrack found the password:\n{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(85),
        "svcrack stopped by itself"
    );
    assert!(
        node.log()
            .contains("source blocked after failed authentications"),
        "{}",
        node.log()
    );

    // Control: with the block off, the same run finds it.
    let config = dir.join("unblocked.toml");
    std::fs::write(
        &config,
        format!(
            "users = {:?}\n[limits]\nauth_failures = 0\n",
            users.to_str().expect("path")
        ),
    )
    .expect("config");
    let unblocked = Node::start(&["--config", config.to_str().expect("path")]);
    let out = sipvicious("svcrack", &unblocked, &args);
    assert!(
        out.contains("wonderland"),
        "without the block svcrack finds it:\n{out}"
    );
}
