//! Real phones with passwords: two baresip phones (Debian `baresip-core`)
//! register with digest credentials at a node in authentication mode, one
//! over UDP and one over TLS with the node's certificate made by `p2psip
//! certs` and the phone trusting that CA, and the UDP phone calls the TLS
//! phone, which answers. baresip 1.0 (libre 1.x) refuses a set of challenges
//! that holds an algorithm it does not know, so this node offers MD5 alone
//! (`auth_algorithms = ["MD5"]`, docs/security.md).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    ChildGuard, DOMAIN, Node, p2psip, read_lossy, require_tool, tail, temp_dir, wait_until,
};

/// A baresip phone with its own config directory; `commands` run at start.
fn phone(
    dir: &Path,
    name: &str,
    ip: &str,
    account: &str,
    ca: &Path,
    commands: &[&str],
) -> (ChildGuard, std::path::PathBuf) {
    let baresip = require_tool("baresip", "baresip-core");
    let conf = dir.join(name);
    std::fs::create_dir_all(&conf).expect("phone dir");
    std::fs::write(
        conf.join("config"),
        format!(
            "poll_method epoll\n\
             sip_listen {ip}:0\n\
             sip_cafile {}\n\
             module_path /usr/lib/baresip/modules\n\
             module_app account.so\n\
             module_app menu.so\n\
             module g711.so\n\
             module ausine.so\n\
             module aufile.so\n\
             audio_player aufile,/dev/null\n\
             audio_source ausine,440\n\
             audio_alert aufile,/dev/null\n",
            ca.display()
        ),
    )
    .expect("config");
    std::fs::write(conf.join("accounts"), format!("{account}\n")).expect("accounts");
    let out = dir.join(format!("{name}.out"));
    let mut cmd = Command::new(baresip);
    cmd.arg("-f").arg(&conf).args(["-t", "40"]);
    for c in commands {
        cmd.args(["-e", c]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("output"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn baresip");
    (ChildGuard::new(name, child), out)
}

#[test]
fn baresip_phones_with_passwords_register_over_udp_and_tls_and_call() {
    let dir = temp_dir("baresip-auth");
    let path = |p: &str| dir.join(p).to_str().expect("utf-8 path").to_string();
    p2psip(&["certs", "ca", "--out", &path("ca")], "");
    p2psip(
        &[
            "certs",
            "server",
            "--ca",
            &path("ca"),
            "--name",
            "127.0.0.1",
            "--out",
            &path("node"),
        ],
        "",
    );
    p2psip(
        &[
            "users",
            "add",
            "--file",
            &path("users"),
            "alice@example.test",
        ],
        "alice-pw\n",
    );
    p2psip(
        &["users", "add", "--file", &path("users"), "bob@example.test"],
        "bob-pw\n",
    );
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "users = {:?}\nauth_algorithms = [\"MD5\"]\ntls_cert = {:?}\ntls_key = {:?}\n",
            path("users"),
            path("node/cert.pem"),
            path("node/key.pem")
        ),
    )
    .expect("node config");
    let node = Node::builder()
        .name("baresip-auth-node")
        .args([
            "--sip",
            "127.0.0.1:0",
            "--sips",
            "127.0.0.1:0",
            "--domain",
            DOMAIN,
        ])
        .args(["--config", &path("node.toml")])
        .spawn();
    let sips = node.sips.expect("TLS address");
    let ca = dir.join("ca/ca.pem");

    let (_alice, alice_out) = phone(
        &dir,
        "alice",
        "127.0.0.1",
        &format!(
            "<sip:alice@{DOMAIN};transport=tls>;auth_pass=alice-pw;answermode=auto;regint=300;outbound=\"sip:{sips};transport=tls\""
        ),
        &ca,
        &[],
    );
    let context = |out: &Path| {
        format!(
            "phone:\n{}\nnode:\n{}",
            tail(&read_lossy(out), 30),
            tail(&node.log(), 20)
        )
    };
    wait_until(
        "alice registered over TLS with her password",
        Duration::from_secs(15),
        || read_lossy(&alice_out).contains("{0/TLS/v4} 200 OK"),
        || context(&alice_out),
    );
    let dial = format!("/dial sip:alice@{DOMAIN}");
    let (_bob, bob_out) = phone(
        &dir,
        "bob",
        "127.0.0.1",
        &format!(
            "<sip:bob@{DOMAIN}>;auth_pass=bob-pw;regint=300;outbound=\"sip:{}\"",
            node.addr
        ),
        &ca,
        &[&dial],
    );
    wait_until(
        "bob registered over UDP with his password",
        Duration::from_secs(15),
        || read_lossy(&bob_out).contains("{0/UDP/v4} 200 OK"),
        || context(&bob_out),
    );
    wait_until(
        "alice's phone answers bob's call (through the node's 407 and TLS to alice)",
        Duration::from_secs(20),
        || read_lossy(&alice_out).contains("answering call on line 1 from sip:bob@example.test"),
        || format!("{}\n{}", context(&alice_out), context(&bob_out)),
    );
}
