//! The resolver against real bind9 `named` serving the interop zones
//! (copies of shared/interop/dns/{legacy,overlay}.test.zone and named.conf.in
//! in tests/data). A missing `named` is a failure: the test install script
//! installs bind9.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{resolve, resolver_config, short};
use p2psip_dns::{SipDestination, SipResolver, Transport};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

struct Named {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    log: Vec<String>,
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

async fn start_named() -> Named {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let dir = std::env::temp_dir().join(format!("p2psip-dns-named-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut last_log = Vec::new();
    for _attempt in 0..5 {
        let port = free_port();
        let conf = std::fs::read_to_string(data.join("named.conf.in"))
            .unwrap()
            .replace("@TMP@", dir.to_str().unwrap())
            .replace("@ZONEDIR@", data.to_str().unwrap())
            .replace("@ADDR@", "127.0.0.1")
            .replace("@PORT@", &port.to_string());
        let conf_path = dir.join("named.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new("named")
            .arg("-g")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run bind9 `named` ({e}): install Debian package bind9 \
                     (shared/interop/install-tools.sh does) — this test must not be skipped"
                )
            });
        // named -g logs to stderr; "running" means the zones are loaded and it listens.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = Vec::new();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let running = line.ends_with(" running");
                log.push(line);
                if running {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if ready {
            // keep draining stderr so named never blocks on a full pipe
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Named {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir,
                log,
            };
        }
        let _ = child.kill().await;
        last_log = log;
    }
    let _ = std::fs::remove_dir_all(&dir);
    panic!("named did not start:\n{}", last_log.join("\n"));
}

#[tokio::test]
async fn resolver_against_bind9_named() {
    let named = start_named().await;
    assert!(!named.log.is_empty());
    let resolver = SipResolver::new(resolver_config(
        named.addr,
        &[Transport::Udp, Transport::Tcp],
    ))
    .unwrap();

    // legacy.test: NAPTR SIP+D2U -> _sip._udp SRV 0 0 5070 proxy -> 127.0.0.1
    let legacy = resolve(&resolver, "legacy.test").await;
    let got = short(&legacy);
    assert_eq!(
        got,
        vec![("127.0.0.1:5070".parse().unwrap(), Transport::Udp)]
    );

    // overlay.test stand-in: NAPTR 10 D2U, 20 D2T -> gw 127.0.0.1:5080 both
    let overlay = resolve(&resolver, "overlay.test").await;
    let got = short(&overlay);
    assert_eq!(
        got,
        vec![
            ("127.0.0.1:5080".parse().unwrap(), Transport::Udp),
            ("127.0.0.1:5080".parse().unwrap(), Transport::Tcp),
        ]
    );

    // TCP-only client: only the D2T chain; explicit port: A only
    let tcp_only = SipResolver::new(resolver_config(named.addr, &[Transport::Tcp])).unwrap();
    let t = resolve(&tcp_only, "overlay.test").await;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].transport, Transport::Tcp);
    let p = resolver
        .resolve(&SipDestination {
            port: Some(5999),
            ..SipDestination::new("proxy.legacy.test")
        })
        .await
        .unwrap();
    assert_eq!(p[0].addr, "127.0.0.1:5999".parse().unwrap());

    // NXDOMAIN from a real server
    assert!(
        resolver
            .resolve(&SipDestination::new("nobody.legacy.test"))
            .await
            .is_err()
    );
    drop(named);
}
