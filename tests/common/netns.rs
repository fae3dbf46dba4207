//! A private network namespace for one test, and the daemons that run inside
//! it: Kamailio, named, dig (`p2psip` nodes and SIPp start through the one
//! launcher of each in `common`, with `in_netns`). Inside, 127.0.0.0/8 is the namespace's
//! own loopback (lo has 127.0.0.1, .2 and .3), so fixed well-known ports (53, 5060, 5070) are free, and
//! `/etc/netns/NAME/resolv.conf` (`nameserver 127.0.0.1`) is what programs
//! started with `ip netns exec` see as `/etc/resolv.conf`.
//!
//! [`Netns`] deletes everything on drop, also on panic: it kills every
//! process left in the namespace (`ip netns pids`), deletes the namespace and
//! its `/etc/netns` directory. Every wait is bounded. Needs root and `ip`.

#![allow(dead_code)]

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{ChildGuard, bound_in, read_lossy, require_tool, tail, temp_dir, wait_until};

/// A network namespace that lives as long as this value.
pub struct Netns {
    pub name: String,
    /// Logs and generated files of this test.
    pub dir: PathBuf,
    ip: PathBuf,
}

impl Netns {
    /// Creates `p2g-TAG-PID-N` with `lo` up and a resolv.conf naming 127.0.0.1.
    pub fn new(tag: &str) -> Netns {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let ip = require_tool("ip", "iproute2");
        remove_orphans(&ip);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("p2g-{tag}-{}-{n}", std::process::id());
        let dir = temp_dir(&format!("netns-{tag}"));
        let status = Command::new(&ip)
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(
            status.success(),
            "cannot create network namespace {name} (these tests need root)"
        );
        // From here on, Drop cleans up.
        let ns = Netns { name, dir, ip };
        let etc = ns.etc_dir();
        fs::create_dir_all(&etc).expect("create /etc/netns dir");
        fs::write(
            etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n",
        )
        .expect("write resolv.conf");
        let out = ns.run(&["ip", "link", "set", "lo", "up"]);
        assert!(out.0.success(), "ip link set lo up: {}", out.2);
        // Linux lets programs bind any 127/8 address, but named listens only
        // on interface addresses: give lo 127.0.0.2 and 127.0.0.3 too.
        for addr in ["127.0.0.2/8", "127.0.0.3/8"] {
            let out = ns.run(&["ip", "addr", "add", addr, "dev", "lo"]);
            assert!(out.0.success(), "ip addr add {addr}: {}", out.2);
        }
        ns
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }

    /// `ip netns exec NAME PROGRAM`: runs inside the namespace (ip execs the
    /// program, so the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `args` inside and waits (at most 20 s): status, stdout, stderr.
    pub fn run(&self, args: &[&str]) -> (ExitStatus, String, String) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let out_path = self.dir.join(format!("run-{n}.out"));
        let err_path = self.dir.join(format!("run-{n}.err"));
        let child = self
            .command(args[0])
            .args(&args[1..])
            .stdout(fs::File::create(&out_path).expect("out file"))
            .stderr(fs::File::create(&err_path).expect("err file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
        let mut guard = ChildGuard::new(args.join(" "), child);
        let status = guard.wait_bounded(Duration::from_secs(20));
        let out = read_lossy(&out_path);
        let err = read_lossy(&err_path);
        let _ = fs::remove_file(out_path);
        let _ = fs::remove_file(err_path);
        (status, out, err)
    }

    /// Spawns a long-running program inside, its stdout and stderr in
    /// `DIR/LOG.out` and `DIR/LOG.log`.
    pub fn spawn(&self, log: &str, args: &[&str]) -> ChildGuard {
        let child = self
            .command(args[0])
            .args(&args[1..])
            .stdout(fs::File::create(self.dir.join(format!("{log}.out"))).expect("out"))
            .stderr(fs::File::create(self.dir.join(format!("{log}.log"))).expect("log"))
            .current_dir(&self.dir)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {args:?}: {e}"));
        ChildGuard::new(log, child)
    }

    pub fn log(&self, name: &str) -> String {
        read_lossy(&self.dir.join(name))
    }

    /// `dig +short` inside the namespace against `server` (UDP, 1 s, 2 tries);
    /// panics when dig fails (no answer at all).
    pub fn dig(&self, server: &str, qtype: &str, name: &str) -> Vec<String> {
        self.try_dig(server, qtype, name)
            .unwrap_or_else(|why| panic!("dig {qtype} {name} @{server}: {why}"))
    }

    /// `dig +short`; Err with its output when dig failed.
    pub fn try_dig(&self, server: &str, qtype: &str, name: &str) -> Result<Vec<String>, String> {
        let (host, port) = server.rsplit_once(':').unwrap_or((server, "53"));
        let (status, out, err) = self.run(&[
            "dig",
            &format!("@{host}"),
            "-p",
            port,
            "+short",
            "+time=1",
            "+tries=2",
            qtype,
            name,
        ]);
        if !status.success() {
            return Err(format!("{status}: {out}{err}"));
        }
        Ok(out
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .collect())
    }

    /// An HTTP GET inside the namespace (bash's /dev/tcp; no curl needed).
    pub fn http_get(&self, addr: SocketAddr, path: &str) -> Option<String> {
        let script = format!(
            "exec 3<>/dev/tcp/{}/{} || exit 1; printf 'GET {path} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; timeout 5 cat <&3",
            addr.ip(),
            addr.port()
        );
        let (status, out, _) = self.run(&["bash", "-c", &script]);
        if !status.success() {
            return None;
        }
        let (head, body) = out.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.").then(|| body.to_string())
    }

    /// A TCP connection to `addr` from inside the namespace (a thread enters
    /// it with setns, connects, and leaves; the socket stays inside), within
    /// `limit`; None when it cannot be made.
    pub fn tcp_connect(&self, addr: SocketAddr, limit: Duration) -> Option<std::net::TcpStream> {
        use std::os::fd::AsRawFd;
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = fs::File::open(&path).ok()?;
                    // SAFETY: setns on a file descriptor we own, for this thread only.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return None;
                    }
                    std::net::TcpStream::connect_timeout(&addr, limit).ok()
                })
                .join()
                .ok()
                .flatten()
        })
    }

    /// An HTTP GET inside the namespace without a helper process (see
    /// [`Netns::tcp_connect`]): the body, or None.
    pub fn http_get_direct(&self, addr: SocketAddr, path: &str) -> Option<String> {
        let stream = self.tcp_connect(addr, Duration::from_secs(2))?;
        super::http_get_over(stream, addr, path)
    }

    /// A UDP socket bound to `addr` inside the namespace: a thread enters
    /// it (setns), binds, and leaves; the socket stays in the namespace and
    /// is used from the test's own threads.
    pub fn udp_socket(&self, addr: SocketAddr) -> std::net::UdpSocket {
        use std::os::fd::AsRawFd;
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = fs::File::open(&path)
                        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                    // SAFETY: setns on a file descriptor we own, for this thread only.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(
                        rc,
                        0,
                        "setns {}: {}",
                        path.display(),
                        std::io::Error::last_os_error()
                    );
                    std::net::UdpSocket::bind(addr)
                        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", self.name))
                })
                .join()
                .expect("the setns thread")
        })
    }

    /// Pids of the processes inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        let out = Command::new(&self.ip)
            .args(["netns", "pids", &self.name])
            .output();
        match out {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Deletes namespaces of earlier test runs that were killed before their
/// guard ran (`p2g-TAG-PID-N` whose PID is gone), with what runs inside.
fn remove_orphans(ip: &Path) {
    let Ok(out) = Command::new(ip).args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let parts: Vec<&str> = name.split('-').collect();
        let pid = match parts.as_slice() {
            ["p2g", .., pid, _n] => pid.parse::<u32>().ok(),
            _ => None,
        };
        let Some(pid) = pid else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Dropping a guard for it kills what is inside and deletes it.
        drop(Netns {
            name: name.to_string(),
            dir: std::env::temp_dir().join(format!("{name}-orphan")),
            ip: ip.to_path_buf(),
        });
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Everything still inside was started by this test.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new(&self.ip)
            .args(["netns", "del", &self.name])
            .status();
        // /etc/netns itself stays: other namespaces may be adding theirs.
        let _ = fs::remove_dir_all(self.etc_dir());
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs of {} kept in {}", self.name, self.dir.display());
        }
    }
}

// ---------------------------------------------------------------- daemons

/// bind9 `named` inside `ns` on `addr`:53 with the zones of tests/dns/;
/// returns when it answers the SOA of legacy.test.
pub fn start_named(ns: &Netns, addr: &str) -> ChildGuard {
    let named = require_tool("named", "bind9");
    require_tool("dig", "bind9-dnsutils");
    let zones = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dns");
    let work = ns.dir.join("named");
    fs::create_dir_all(&work).expect("named dir");
    let conf = read_lossy(&zones.join("named.conf.in"))
        .replace("@TMP@", &work.display().to_string())
        .replace("@ZONEDIR@", &zones.display().to_string())
        .replace("@ADDR@", addr)
        .replace("@PORT@", "53");
    let conf_path = work.join("named.conf");
    fs::write(&conf_path, conf).expect("named.conf");
    let named = named.display().to_string();
    let conf_arg = conf_path.display().to_string();
    let guard = ns.spawn("named", &[&named, "-g", "-c", &conf_arg]);
    let server = format!("{addr}:53");
    wait_until(
        "named answers SOA legacy.test",
        Duration::from_secs(15),
        || {
            ns.try_dig(&server, "SOA", "legacy.test")
                .is_ok_and(|a| !a.is_empty())
        },
        || tail(&ns.log("named.log"), 30),
    );
    guard
}

/// Kamailio (tests/kamailio/legacy.cfg, domain legacy.test) inside `ns` on
/// 127.0.0.1:5070, with its ctl socket for kamcmd; returns when kamcmd answers.
pub struct Kamailio {
    pub ctl: String,
    socket: PathBuf,
    guard: ChildGuard,
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.socket);
    }
}

impl Kamailio {
    pub fn start(ns: &Netns) -> Kamailio {
        Kamailio::start_with(ns, &[])
    }

    /// The same with extra `-A` defines (e.g. `WITH_GW_AUTH`).
    pub fn start_with(ns: &Netns, defines: &[&str]) -> Kamailio {
        let kamailio = require_tool("kamailio", "kamailio");
        require_tool("kamcmd", "kamailio");
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kamailio/legacy.cfg");
        let run = ns.dir.join("kamailio");
        fs::create_dir_all(&run).expect("kamailio dir");
        // A unix socket path must stay short (108 bytes): not under target/.
        let socket = std::env::temp_dir().join(format!("{}.kamctl", ns.name));
        let ctl = format!("unix:{}", socket.display());
        let args = [
            kamailio.display().to_string(),
            "-DD".into(),
            "-E".into(),
            "-f".into(),
            cfg.display().to_string(),
            "-Y".into(),
            run.display().to_string(),
            "-P".into(),
            run.join("kamailio.pid").display().to_string(),
            "-m".into(),
            "64".into(),
            "-M".into(),
            "8".into(),
            "-A".into(),
            "LISTEN_SOCK=udp:127.0.0.1:5070".into(),
            "-A".into(),
            "KAM_CHILDREN=2".into(),
            "-A".into(),
            "KAM_DEBUG=2".into(),
            "-A".into(),
            format!("CTL_SOCK=\"{ctl}\""),
        ];
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        for define in defines {
            args.extend(["-A", define]);
        }
        let guard = ns.spawn("kamailio", &args);
        // The socket tables of Kamailio's namespace, seen through its pid.
        let net = PathBuf::from(format!("/proc/{}/net", guard.id()));
        let k = Kamailio { ctl, socket, guard };
        wait_until(
            "kamailio answers kamcmd and listens on 127.0.0.1:5070",
            Duration::from_secs(15),
            || bound_in(&net, 5070, false) && k.kamcmd(ns, &["core.version"]).is_some(),
            || tail(&ns.log("kamailio.log"), 30),
        );
        k
    }

    /// `kamcmd -s CTL ARGS`: its output, None when it failed.
    pub fn kamcmd(&self, ns: &Netns, args: &[&str]) -> Option<String> {
        let mut all = vec!["kamcmd", "-s", self.ctl.as_str()];
        all.extend_from_slice(args);
        let (status, out, _) = ns.run(&all);
        status.success().then_some(out)
    }

    /// The location table (`ul.dump`).
    pub fn ul_dump(&self, ns: &Netns) -> String {
        self.kamcmd(ns, &["ul.dump"]).unwrap_or_default()
    }

    /// The contacts of `user` in the location table (usrloc keeps the user
    /// part only: the config does not set `use_domain`).
    pub fn contacts(&self, ns: &Netns, user: &str) -> Vec<String> {
        self.contact_fields(ns, user)
            .iter()
            .filter_map(|fields| fields.get("Address").cloned())
            .collect()
    }

    /// Every field (`Address`, `Expires`, `CSeq`, `Call-ID` ...) of each
    /// contact of `user` in `ul.dump`.
    pub fn contact_fields(
        &self,
        ns: &Netns,
        user: &str,
    ) -> Vec<std::collections::HashMap<String, String>> {
        let mut current = false;
        let mut out: Vec<std::collections::HashMap<String, String>> = Vec::new();
        for line in self.ul_dump(ns).lines() {
            let line = line.trim();
            if let Some(aor) = line.strip_prefix("AoR: ") {
                current = aor == user;
            } else if line == "Contact: {" && current {
                out.push(Default::default());
            } else if let Some((key, value)) = line.split_once(": ")
                && current
                && let Some(fields) = out.last_mut()
            {
                fields.insert(key.to_string(), value.to_string());
            }
        }
        out
    }
}
