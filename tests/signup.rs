//! Sign-up and buddy lists with real processes over loopback: a ring of
//! three nodes with `[signup] enabled = true` and no users file; two
//! clients claim one name at once through two nodes (concurrent `POST
//! /signup`): exactly one gets 201, the other 409; the winner registers at
//! the third node with her password (digest, MD5 and SHA-256), the loser's
//! password is refused. `p2psip users signup` claims names too. Bad names
//! get 400, a name the node picks 201, an attempt beyond the limit per
//! source 429 with Retry-After. Her buddy list is set at one node and read
//! at another with her password (401 without). A node with sign-up off
//! answers 403, and sign-up on an open node does not start.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use base64::Engine;
use common::members::{Member, consistent, logs, metric};
use common::phone::Phone;
use common::{DOMAIN, HttpAnswer, Node, http_request, port_block, temp_dir, wait_until};

/// Sign-ups per source per window on the test nodes (node b sees at most
/// four from the test: the claim, its repeat, a foreign domain, a chosen name).
const PER_SOURCE: u32 = 5;

fn config(tag: &str, enabled: bool) -> PathBuf {
    let file = temp_dir(tag).join("p2psip.toml");
    std::fs::write(
        &file,
        format!("[signup]\nenabled = {enabled}\nper_source = {PER_SOURCE}\nwindow_s = 600\n"),
    )
    .expect("write config");
    file
}

fn start(name: &str, config: &std::path::Path, join: Option<SocketAddr>) -> Member {
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let mut node = Node::builder()
        .name(name)
        .args([
            "--sip",
            "127.0.0.1:0",
            "--domain",
            DOMAIN,
            "--auth",
            "digest",
        ])
        .args(["--http", &http.to_string()])
        .args(["--config", config.to_str().expect("utf-8 path")]);
    if let Some(join) = join {
        node = node.args(["--join", &join.to_string()]);
    }
    Member {
        node: node.spawn(),
        http,
    }
}

fn signup(member: &Member, body: &serde_json::Value) -> HttpAnswer {
    http_request(member.http, "POST", "/signup", "", &body.to_string()).expect("an HTTP answer")
}

/// `p2psip users signup AOR --http ADDR` with `password` on standard
/// input: the exit code, standard output and standard error.
fn cli_signup(member: &Member, aor: &str, password: &str) -> (Option<i32>, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2psip"))
        .args(["users", "signup", aor, "--http", &member.http.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run p2psip users signup");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(format!("{password}\n").as_bytes())
        .expect("stdin");
    drop(input);
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn basic(aor: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{aor}:{password}"));
    format!("Authorization: Basic {encoded}\r\n")
}

#[test]
fn one_name_claimed_at_once_through_two_nodes_goes_to_one_who_registers_at_the_third() {
    let config = config("signup-on", true);
    let a = start("signup-a", &config, None);
    let join = a.node.addr;
    let b = start("signup-b", &config, Some(join));
    let c = start("signup-c", &config, Some(join));
    let ring = [a, b, c];
    wait_until(
        "a consistent ring of three",
        Duration::from_secs(30),
        || consistent(&ring),
        || logs(&ring),
    );
    let [a, b, c] = &ring;

    // Two clients, one name, two nodes, at the same moment.
    let aor = format!("carol@{DOMAIN}");
    let passwords = ["first-password", "second-password"];
    let start_line = Arc::new(Barrier::new(2));
    let claims: Vec<_> = [(a.http, passwords[0]), (b.http, passwords[1])]
        .into_iter()
        .map(|(http, password)| {
            let start_line = Arc::clone(&start_line);
            let body = serde_json::json!({ "user": aor, "password": password }).to_string();
            std::thread::spawn(move || {
                start_line.wait();
                http_request(http, "POST", "/signup", "", &body)
            })
        })
        .collect();
    let answers: Vec<HttpAnswer> = claims
        .into_iter()
        .map(|t| t.join().expect("client thread").expect("an HTTP answer"))
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, [201, 409], "{answers:?}\n{}", logs(&ring));
    let won = statuses.iter().position(|s| *s == 201).expect("a winner");
    assert_eq!(answers[won].json()["aor"], aor.as_str());
    assert_eq!(answers[1 - won].json()["error"], "name taken");
    let (winner, loser) = (passwords[won], passwords[1 - won]);
    let count = |m: &Member, outcome: &str| {
        metric(m, &format!("p2psip_signups_total{{outcome=\"{outcome}\"}}"))
    };
    let claimants = [a, b];
    assert_eq!(count(claimants[won], "claimed"), 1);
    assert_eq!(count(claimants[1 - won], "taken"), 1);

    // The winner registers at the third node, which has no users file and
    // took no part in the claim; the loser's password does not work there.
    let phone = Phone::new("127.0.0.1", c.node.addr);
    for algorithm in ["MD5", "SHA-256"] {
        let ok = phone.register_with("carol", winner, algorithm);
        assert_eq!(ok.status, 200, "{algorithm}: {}\n{}", ok.text, logs(&ring));
    }
    assert_eq!(phone.register_with("carol", loser, "MD5").status, 401);

    // The name stays taken, whichever node is asked: the winner's own node
    // too, whose plain store would have replaced its own record.
    let winners_node = [a, b][won];
    for node in [c, winners_node] {
        let again = signup(
            node,
            &serde_json::json!({ "user": aor, "password": "third-password" }),
        );
        assert_eq!(again.status, 409, "{again:?}");
    }
    let (code, _, stderr) = cli_signup(c, &aor, "third-password");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("409 name taken"), "{stderr}");
    let frank = format!("frank@{DOMAIN}");
    let (code, stdout, stderr) = cli_signup(c, &frank, "frank-password");
    assert_eq!((code, stdout.trim()), (Some(0), frank.as_str()), "{stderr}");
    assert_eq!(phone.register_with("carol", winner, "MD5").status, 200);
    // Sign-ups from this source at node a so far (the claim, and maybe the
    // repeat through the winner's node).
    let mut at_a = if won == 0 { 2 } else { 1 };

    // Names are checked before the ring is asked; a name the node picks.
    let bad = signup(
        a,
        &serde_json::json!({ "user": format!("Bad Name@{DOMAIN}"), "password": "whatever-pass" }),
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    at_a += 1;
    let foreign = signup(
        b,
        &serde_json::json!({ "user": "dave@elsewhere.test", "password": "whatever-pass" }),
    );
    assert_eq!(foreign.status, 400, "{foreign:?}");
    let chosen = signup(
        b,
        &serde_json::json!({ "domain": DOMAIN, "password": "chosen-password" }),
    );
    assert_eq!(chosen.status, 201, "{chosen:?}");
    let chosen_aor = chosen.json()["aor"].as_str().expect("an aor").to_string();
    let (chosen_user, _) = chosen_aor.split_once('@').expect("user@domain");
    assert!(chosen_user.starts_with("user"), "{chosen_aor}");
    let chosen_phone = Phone::new("127.0.0.1", a.node.addr);
    assert_eq!(
        chosen_phone
            .register_with(chosen_user, "chosen-password", "MD5")
            .status,
        200
    );

    // Up to PER_SOURCE attempts from one source at one node, then 429
    // with Retry-After.
    // The last ones through the CLI, `p2psip users signup`.
    for n in at_a..PER_SOURCE {
        let name = format!("dave{n}@{DOMAIN}");
        let (code, stdout, stderr) = cli_signup(a, &name, "dave-password");
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert_eq!(stdout.trim(), name);
    }
    let limited = signup(
        a,
        &serde_json::json!({ "user": format!("erin@{DOMAIN}"), "password": "erin-password" }),
    );
    assert_eq!(limited.status, 429, "{limited:?}");
    let wait: u64 = limited
        .header("Retry-After")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=600).contains(&wait), "{wait}");

    // Her buddy list: set through a, read through c, with her password.
    let list = serde_json::json!({ "buddies": [format!("sip:bob@{DOMAIN}"), format!("sip:dave@{DOMAIN}")] });
    let set = http_request(
        a.http,
        "PUT",
        "/buddies",
        &basic(&aor, winner),
        &list.to_string(),
    )
    .expect("an HTTP answer");
    assert_eq!(set.status, 200, "{set:?}");
    let read =
        http_request(c.http, "GET", "/buddies", &basic(&aor, winner), "").expect("an HTTP answer");
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.json(), list);
    for creds in [
        basic(&aor, loser),
        basic(&format!("nobody@{DOMAIN}"), winner),
        String::new(),
    ] {
        let refused = http_request(c.http, "GET", "/buddies", &creds, "").expect("an HTTP answer");
        assert_eq!(refused.status, 401, "{creds:?}: {refused:?}");
        assert!(refused.header("WWW-Authenticate").is_some(), "{refused:?}");
    }
    let junk = serde_json::json!({ "buddies": ["not a uri"] });
    let refused = http_request(
        b.http,
        "PUT",
        "/buddies",
        &basic(&aor, winner),
        &junk.to_string(),
    )
    .expect("an HTTP answer");
    assert_eq!(refused.status, 400, "{refused:?}");
    // A later change through another node replaces the list.
    let shorter = serde_json::json!({ "buddies": [format!("sip:bob@{DOMAIN}")] });
    let set = http_request(
        b.http,
        "PUT",
        "/buddies",
        &basic(&aor, winner),
        &shorter.to_string(),
    )
    .expect("an HTTP answer");
    assert_eq!(set.status, 200, "{set:?}\n{}", logs(&ring));
    let read =
        http_request(a.http, "GET", "/buddies", &basic(&aor, winner), "").expect("an HTTP answer");
    assert_eq!(read.json(), shorter, "{read:?}");
}

#[test]
fn sign_up_is_refused_when_off_and_needs_digest() {
    let off = config("signup-off", false);
    let node = start("signup-off", &off, None);
    let answer = signup(
        &node,
        &serde_json::json!({ "user": format!("carol@{DOMAIN}"), "password": "first-password" }),
    );
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.json()["error"], "sign-up is off on this node");

    // Sign-up on a node that authenticates nobody: refused at start.
    let on = config("signup-open", true);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_p2psip"))
        .args([
            "node",
            "--sip",
            "127.0.0.1:0",
            "--domain",
            DOMAIN,
            "--auth",
            "open",
        ])
        .args(["--config", on.to_str().expect("utf-8 path")])
        .output()
        .expect("run p2psip");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signup.enabled"), "{stderr}");
}

/// `METHOD path` with a JSON `body` over TLS to `addr`, trusting `ca` only.
fn https_request(
    ca: &std::path::Path,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> HttpAnswer {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca.pem") {
        roots.add(cert.expect("a CA certificate")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::IpAddress(addr.ip().into());
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).expect("client connection");
    let socket = std::net::TcpStream::connect(addr).expect("connect to the HTTPS port");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(connection, socket);
    write!(
        tls,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write the request");
    let mut raw = Vec::new();
    // The server may close without close_notify: what came is the answer.
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("an HTTP answer over TLS");
    HttpAnswer {
        status: head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .expect("a status"),
        head: head.to_string(),
        body: body.to_string(),
    }
}

#[test]
fn sign_up_over_https() {
    let dir = temp_dir("signup-https");
    let ca = dir.join("ca");
    let server = dir.join("server");
    for args in [
        vec!["certs", "ca", "--out", ca.to_str().expect("path")],
        vec![
            "certs",
            "server",
            "--ca",
            ca.to_str().expect("path"),
            "--name",
            "127.0.0.1",
            "--out",
            server.to_str().expect("path"),
        ],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_p2psip"))
            .args(&args)
            .output()
            .expect("run p2psip certs");
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let https = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let config = config("signup-https", true);
    let file = |f: &str| server.join(f).to_str().expect("utf-8 path").to_string();
    let node = Node::builder()
        .name("signup-https")
        .args([
            "--sip",
            "127.0.0.1:0",
            "--domain",
            DOMAIN,
            "--auth",
            "digest",
        ])
        .args(["--https", &https.to_string()])
        .args([
            "--tls-cert",
            &file("cert.pem"),
            "--tls-key",
            &file("key.pem"),
        ])
        .args(["--config", config.to_str().expect("utf-8 path")])
        .spawn();
    let ca_pem = ca.join("ca.pem");
    let aor = format!("grace@{DOMAIN}");
    let body = serde_json::json!({ "user": aor, "password": "grace-password" }).to_string();
    let mut claimed = None;
    wait_until(
        "the HTTPS window answers",
        Duration::from_secs(10),
        || {
            if std::net::TcpStream::connect(https).is_err() {
                return false;
            }
            claimed = Some(https_request(&ca_pem, https, "POST", "/signup", "", &body));
            true
        },
        || node.log(),
    );
    let claimed = claimed.expect("an answer");
    assert_eq!(claimed.status, 201, "{claimed:?}");
    let phone = Phone::new("127.0.0.1", node.addr);
    assert_eq!(
        phone
            .register_with("grace", "grace-password", "SHA-256")
            .status,
        200
    );
    let list = https_request(
        &ca_pem,
        https,
        "GET",
        "/buddies",
        &basic(&aor, "grace-password"),
        "",
    );
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.json(), serde_json::json!({ "buddies": [] }));
}
