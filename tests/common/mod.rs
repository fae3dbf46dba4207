//! Shared helpers for the integration tests: one launcher for `p2psip` node
//! processes ([`Node::builder`]) and one for SIPp ([`SippBuilder`]), each on
//! the host or inside a network namespace ([`Host`], [`netns`]), free ports,
//! and raw-socket SIP helpers. Every child process is
//! killed when its guard is dropped (also on panic); every wait is bounded.

#![allow(dead_code)]

pub mod call;
pub mod certs;
pub mod members;
pub mod nat;
pub mod netns;
pub mod phone;

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netns::Netns;

/// Upper bound for any single wait (node start-up, a SIPp run).
pub const WAIT: Duration = Duration::from_secs(30);

/// The domain every test node serves.
pub const DOMAIN: &str = "example.test";

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard {
    pub name: String,
    child: Child,
}

impl ChildGuard {
    pub fn new(name: impl Into<String>, child: Child) -> ChildGuard {
        ChildGuard {
            name: name.into(),
            child,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the process to exit, at most `limit`; kills it and panics after that.
    pub fn wait_bounded(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not exit within {limit:?}; killed", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A fresh directory under the tests' temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Where a process of a test runs: on the host, its loopback shared with
/// every other test, or inside a test's own network namespace.
#[derive(Clone, Copy)]
pub enum Host<'a> {
    Loopback,
    Namespace(&'a Netns),
}

impl Host<'_> {
    /// A command that runs `program` there (stdin closed).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self {
            Host::Loopback => {
                let mut cmd = Command::new(program);
                cmd.stdin(Stdio::null());
                cmd
            }
            Host::Namespace(ns) => ns.command(program),
        }
    }

    /// A fresh directory for a process's files: under the tests' temporary
    /// directory on the host, under the namespace's directory inside one
    /// (deleted with the namespace).
    pub fn fresh_dir(&self, tag: &str) -> PathBuf {
        match self {
            Host::Loopback => temp_dir(tag),
            Host::Namespace(ns) => {
                let dir = ns.dir.join(tag);
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir).expect("create dir");
                dir
            }
        }
    }
}

/// A running `p2psip node`, on the host or in a namespace (see [`NodeBuilder`]).
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    /// The SIP over TLS address, with `--sips`.
    pub sips: Option<SocketAddr>,
    pub node_id: String,
    /// Its working directory; its log (stderr) is `DIR/NAME.log`.
    pub dir: PathBuf,
    /// Whether `dir` is the node's own (deleted on drop unless the test failed).
    owns_dir: bool,
    guard: ChildGuard,
}

/// How to start a node: `p2psip node ARGS`, on the host or in a namespace.
pub struct NodeBuilder<'a> {
    name: String,
    args: Vec<String>,
    host: Host<'a>,
}

impl Node {
    /// `p2psip node` with no arguments yet, on the host's loopback, named "node".
    pub fn builder<'a>() -> NodeBuilder<'a> {
        NodeBuilder {
            name: "node".to_string(),
            args: Vec::new(),
            host: Host::Loopback,
        }
    }

    /// Starts `p2psip node --sip 127.0.0.1:0 --domain example.test EXTRA...`
    /// on the host and waits (bounded) for its "listening" line.
    pub fn start(extra: &[&str]) -> Node {
        let node = Node::builder()
            .args(["--sip", "127.0.0.1:0", "--domain", DOMAIN])
            .args(extra)
            .spawn();
        assert_eq!(node.addr.ip().to_string(), "127.0.0.1", "{}", node.addr);
        node
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The node's log (stderr), for failure messages.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.join(format!("{}.log", self.name)))
    }

    /// Kills the node at once (SIGKILL): no goodbye to the ring.
    pub fn kill(&mut self) {
        let _ = self.guard.child.kill();
        let _ = self.guard.child.wait();
    }

    /// Asks the node to stop (SIGTERM) and waits, bounded, for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.guard.id().to_string()])
            .status();
        self.guard.wait_bounded(WAIT)
    }

    /// Panics when the node process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.guard.try_wait() {
            panic!(
                "{} exited ({status}); log:\n{}",
                self.name,
                tail(&self.log(), 60)
            );
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Keep the log of a failed test; drop the rest.
        if self.owns_dir && !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl<'a> NodeBuilder<'a> {
    /// The node's name in messages and its log's name (`NAME.log`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Runs the node inside `ns`; its log is then `NS_DIR/NAME.log`.
    pub fn in_netns(self, ns: &'a Netns) -> Self {
        self.on(Host::Namespace(ns))
    }

    pub fn on(mut self, host: Host<'a>) -> Self {
        self.host = host;
        self
    }

    /// Spawns the node and waits (bounded by [`WAIT`]) for its "listening"
    /// line on stdout.
    pub fn spawn(self) -> Node {
        let (dir, owns_dir) = match self.host {
            Host::Loopback => (temp_dir(&self.name), true),
            Host::Namespace(ns) => (ns.dir.clone(), false),
        };
        let log = dir.join(format!("{}.log", self.name));
        let child = self
            .host
            .command(env!("CARGO_BIN_EXE_p2psip"))
            .arg("node")
            .args(&self.args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).expect("node log"))
            .current_dir(&dir)
            .spawn()
            .expect("spawn p2psip");
        let mut guard = ChildGuard::new(self.name.clone(), child);
        let stdout = guard.child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        let name = &self.name;
        let line = match rx.recv_timeout(WAIT) {
            Ok(Some(Ok(line))) => line,
            Ok(other) => panic!(
                "{name}: p2psip exited or failed before listening: {other:?}; log:\n{}",
                tail(&read_lossy(&log), 60)
            ),
            Err(_) => panic!("{name}: p2psip printed no listening line within {WAIT:?}"),
        };
        let (addr, sips, node_id) = parse_listening_line(&line)
            .unwrap_or_else(|| panic!("{name}: unexpected first line from p2psip: {line:?}"));
        assert_ne!(addr.port(), 0, "{line}");
        Node {
            name: self.name,
            addr,
            sips,
            node_id,
            dir,
            owns_dir,
            guard,
        }
    }
}

/// `p2psip listening on 127.0.0.1:PORT (udp, tcp) [127.0.0.1:PORT (tls)] node-id <40 hex>`
pub fn parse_listening_line(line: &str) -> Option<(SocketAddr, Option<SocketAddr>, String)> {
    let rest = line.strip_prefix("p2psip listening on ")?;
    let (addr, rest) = rest.split_once(' ')?;
    let mut rest = rest.strip_prefix("(udp, tcp) ")?;
    let mut sips = None;
    if let Some((tls, after)) = rest.split_once(" (tls) ") {
        sips = Some(tls.parse().ok()?);
        rest = after;
    }
    let id = rest.strip_prefix("node-id ")?.trim();
    if id.len() != 40 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some((addr.parse().ok()?, sips, id.to_string()))
}

pub fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------- ports

/// Ports handed out in this process; never handed out twice.
static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A block of `len` consecutive ports, free for UDP and TCP on 127.0.0.1 now.
/// Taken from 20000-31999 (below Linux's ephemeral range, so the kernel does
/// not hand them to the node or to outgoing connections), spread by process
/// id so that concurrent test binaries rarely probe the same ones.
pub fn port_block(len: u16) -> u16 {
    const LOW: u32 = 20000;
    const HIGH: u32 = 32000;
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let slots = (HIGH - LOW) / 16;
    let start = (std::process::id().wrapping_mul(2654435761) % slots) as u32;
    for i in 0..slots {
        let base = (LOW + ((start + i) % slots) * 16) as u16;
        let ports: Vec<u16> = (base..base + len).collect();
        if ports.iter().any(|p| taken.contains(p)) {
            continue;
        }
        let free = ports.iter().all(|p| {
            UdpSocket::bind(("127.0.0.1", *p)).is_ok()
                && TcpListener::bind(("127.0.0.1", *p)).is_ok()
        });
        if free {
            taken.extend(base..base + 16);
            return base;
        }
    }
    panic!("no free block of {len} ports in {LOW}-{HIGH}");
}

/// Whether something is bound on 127.0.0.1:`port` (UDP) or listening (TCP)
/// on the host, read from /proc/net without touching the port.
pub fn port_bound(port: u16, tcp: bool) -> bool {
    bound_in(Path::new("/proc/net"), port, tcp)
}

/// The same, read from the socket tables in `net` (`/proc/net`, or
/// `/proc/PID/net` for the network namespace of process PID).
pub fn bound_in(net: &Path, port: u16, tcp: bool) -> bool {
    let want = format!("0100007F:{port:04X}");
    let file = net.join(if tcp { "tcp" } else { "udp" });
    let text = fs::read_to_string(file).unwrap_or_default();
    text.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() > 3 && cols[1] == want && (!tcp || cols[3] == "0A")
    })
}

// ---------------------------------------------------------------- SIPp

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// SIPp's `-t` value.
    pub fn sipp_flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }

    /// The transport's name in a Via.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// A contact URI for `user` at 127.0.0.1:`port` over this transport.
    pub fn contact(self, user: &str, port: u16) -> String {
        match self {
            Transport::Udp => format!("sip:{user}@127.0.0.1:{port}"),
            Transport::Tcp => format!("sip:{user}@127.0.0.1:{port};transport=tcp"),
        }
    }
}

/// Path of a scenario in tests/sipp/.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sipp")
        .join(name)
}

/// Panics (the test fails) when `tool` is not an executable on PATH or in
/// /usr/sbin, naming the Debian package that has it.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(tool);
        if let Ok(meta) = fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return candidate;
            }
        }
    }
    panic!(
        "{tool} is not installed: this test needs it (Debian package {package}); \
         scripts/test.sh installs it"
    );
}

/// Polls `check` every 50 ms until it holds; panics after `limit` with `what`
/// and the text `context` gives at that moment.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + limit;
    while !check() {
        if Instant::now() >= deadline {
            panic!("not within {limit:?}: {what}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One SIPp run: a UAS (no remote) or a UAC, on the host or in a namespace.
pub struct Sipp {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
    transport: Transport,
    guard: ChildGuard,
}

/// What a successful SIPp run logged.
pub struct SippRun {
    /// `<log>` actions (`-trace_logs`).
    pub logs: String,
    /// Messages sent and received (`-trace_msg`): `(received, text)` in order.
    pub messages: Vec<(bool, String)>,
}

/// What a finished SIPp run reported.
#[derive(Debug)]
pub struct SippResult {
    pub code: Option<i32>,
    pub successful: u64,
    pub failed: u64,
}

pub struct SippBuilder<'a> {
    name: String,
    scenario: String,
    transport: Transport,
    host: Host<'a>,
    port: Option<u16>,
    remote: Option<String>,
    calls: u32,
    /// SIPp's own bound on its whole run (`-timeout`, with `-timeout_error`).
    timeout: Duration,
    /// The signalling and media address (`-i`, `-mi`).
    ip: String,
    args: Vec<String>,
}

impl<'a> SippBuilder<'a> {
    /// A SIPp running `scenario` (a file in tests/sipp/) for one call, on the
    /// host, on a free port of its own (and a free media port block).
    pub fn new(name: &str, scenario: &str, transport: Transport) -> SippBuilder<'a> {
        SippBuilder {
            name: name.to_string(),
            scenario: scenario.to_string(),
            transport,
            host: Host::Loopback,
            port: None,
            remote: None,
            calls: 1,
            timeout: Duration::from_secs(25),
            ip: "127.0.0.1".to_string(),
            args: Vec::new(),
        }
    }

    /// Runs inside `ns`.
    pub fn in_netns(self, ns: &'a Netns) -> Self {
        self.on(Host::Namespace(ns))
    }

    pub fn on(mut self, host: Host<'a>) -> Self {
        self.host = host;
        self
    }

    /// On 127.0.0.1:`port`, media on 30000 + 4·(`port` mod 1000) and the
    /// three ports above (for a namespace's fixed ports).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sends to (UAC) `remote`.
    pub fn to(mut self, remote: impl ToString) -> Self {
        self.remote = Some(remote.to_string());
        self
    }

    pub fn calls(mut self, n: u32) -> Self {
        self.calls = n;
        self
    }

    /// Bounds the whole run at `limit` instead of 25 s: a UAS that must
    /// outlive a slow step of its test (a ring healing) before it is called.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// Signalling and media on `ip` instead of 127.0.0.1 (a namespace's
    /// own address).
    pub fn ip(mut self, ip: impl ToString) -> Self {
        self.ip = ip.to_string();
        self
    }

    /// Any other SIPp option.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// `-r N`: new calls per second (SIPp's default is 10).
    pub fn rate(mut self, per_second: u32) -> Self {
        self.args.extend(["-r".to_string(), per_second.to_string()]);
        self
    }

    /// `-key NAME VALUE`: fills `[NAME]` in the scenario.
    pub fn key(mut self, name: &str, value: &str) -> Self {
        self.args
            .extend(["-key".to_string(), name.to_string(), value.to_string()]);
        self
    }

    /// Digest credentials for `[authentication]` (`-au USER -ap PASSWORD`).
    pub fn credentials(mut self, user: &str, password: &str) -> Self {
        self.args.extend([
            "-au".to_string(),
            user.to_string(),
            "-ap".to_string(),
            password.to_string(),
        ]);
        self
    }

    /// `-s SERVICE`: fills `[service]`.
    pub fn service(mut self, user: &str) -> Self {
        self.args.extend(["-s".to_string(), user.to_string()]);
        self
    }

    pub fn spawn(self) -> Sipp {
        let sipp = require_tool("sipp", "sip-tester");
        let (port, media) = match self.port {
            // SIPp binds four media ports from -mp up.
            Some(port) => (port, 30000 + (port % 1000) * 4),
            None => {
                let block = port_block(12);
                (block, block + 4)
            }
        };
        let scenario = scenario(&self.scenario);
        assert!(
            scenario.is_file(),
            "missing scenario {}",
            scenario.display()
        );
        let dir = self.host.fresh_dir(&format!("sipp-{}", self.name));
        let mut cmd = self.host.command(sipp);
        if let Some(remote) = &self.remote {
            cmd.arg(remote);
        }
        cmd.arg("-sf")
            .arg(&scenario)
            .args(["-t", self.transport.sipp_flag()])
            .args(["-i", &self.ip, "-mi", &self.ip])
            .args(["-p", &port.to_string(), "-mp", &media.to_string()])
            .args(["-m", &self.calls.to_string()])
            .args([
                "-nostdin",
                "-timeout",
                &format!("{}s", self.timeout.as_secs().max(1)),
            ])
            .arg("-timeout_error")
            .args(["-trace_stat", "-stf", "stat.csv"])
            .args(["-trace_err", "-error_file", "errors.log"])
            .args(["-trace_msg", "-message_file", "messages.log"])
            .args(["-trace_logs", "-log_file", "logs.log"])
            .args(&self.args)
            .current_dir(&dir)
            .stdout(fs::File::create(dir.join("stdout.log")).expect("stdout log"))
            .stderr(fs::File::create(dir.join("stderr.log")).expect("stderr log"));
        let child = cmd.spawn().expect("spawn sipp");
        Sipp {
            guard: ChildGuard::new(format!("sipp {}", self.name), child),
            name: self.name,
            port,
            dir,
            transport: self.transport,
        }
    }
}

impl Sipp {
    /// Waits until the SIPp's main socket is bound (a UAS ready to receive),
    /// at most 10 s; panics when it exits first. Reads the socket tables of
    /// SIPp's own network namespace (`/proc/PID/net`), host or not.
    pub fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let net = PathBuf::from(format!("/proc/{}/net", self.guard.id()));
        while !bound_in(&net, self.port, self.transport == Transport::Tcp) {
            if let Some(status) = self.guard.try_wait() {
                panic!(
                    "{} exited ({status}) before listening:\n{}",
                    self.name,
                    self.diagnostics()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening on {} after 10 s",
                self.name,
                self.port
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (bounded by [`WAIT`]) for SIPp to exit and reads its final stats.
    pub fn finish(mut self) -> SippResult {
        let status = self.guard.wait_bounded(WAIT);
        let stats = read_lossy(&self.dir.join("stat.csv"));
        let (successful, failed) = parse_stats(&stats).unwrap_or((0, 0));
        SippResult {
            code: status.code(),
            successful,
            failed,
        }
    }

    /// Waits for SIPp to exit and asserts exit code 0 with `calls` successful
    /// calls and no failed one in its statistics. Returns what it logged.
    pub fn expect_success(self, calls: u64) -> SippRun {
        self.expect_success_with(calls, String::new)
    }

    /// The same; `context` (node logs ...) is added to a failure message.
    pub fn expect_success_with(self, calls: u64, context: impl FnOnce() -> String) -> SippRun {
        let name = self.name.clone();
        let dir = self.dir.clone();
        let result = self.finish();
        let ok = result.code == Some(0) && result.successful == calls && result.failed == 0;
        assert!(
            ok,
            "{name}: expected exit 0 and {calls} successful call(s), got {result:?}\n{}\n{}",
            diagnostics_of(&dir),
            context()
        );
        let run = SippRun {
            logs: read_lossy(&dir.join("logs.log")),
            messages: sipp_messages(&dir),
        };
        let _ = fs::remove_dir_all(&dir);
        run
    }

    pub fn diagnostics(&self) -> String {
        diagnostics_of(&self.dir)
    }
}

fn diagnostics_of(dir: &Path) -> String {
    let mut out = String::new();
    for file in ["stderr.log", "errors.log", "messages.log"] {
        let text = read_lossy(&dir.join(file));
        if !text.trim().is_empty() {
            out.push_str(&format!("--- {file}:\n{}\n", tail(&text, 80)));
        }
    }
    out
}

/// `(SuccessfulCall(C), FailedCall(C))` from the last line of a `-trace_stat` file.
pub fn parse_stats(csv: &str) -> Option<(u64, u64)> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let col = |name: &str| -> Option<u64> {
        let i = header.iter().position(|h| *h == name)?;
        last.get(i)?.trim().parse().ok()
    };
    Some((col("SuccessfulCall(C)")?, col("FailedCall(C)")?))
}

// ---------------------------------------------------------------- raw SIP

/// A response read off a socket.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub text: String,
}

impl RawResponse {
    pub fn parse(bytes: &[u8]) -> Option<RawResponse> {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let first = text.lines().next()?;
        let status = first.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()?;
        Some(RawResponse { status, text })
    }

    /// Values of header `name` (case-insensitive; full names only).
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.text
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }
}

/// A unique token for branches, tags and Call-IDs.
pub fn token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}x{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        Instant::now().elapsed().as_nanos() % 1000
    )
}

/// A valid OPTIONS to the node itself from `local` over `transport`.
pub fn options_request(
    node: SocketAddr,
    local: SocketAddr,
    transport: &str,
    branch: &str,
) -> String {
    format!(
        "OPTIONS sip:{node} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{local}>;tag={branch}\r\n\
         To: <sip:{node}>\r\n\
         Call-ID: {branch}@test\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Reads one SIP message (head and Content-Length body) from a stream.
/// `Ok(None)` on a clean end of stream before any byte.
pub fn read_stream_message(stream: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = stream.read(&mut byte)?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "stream ended inside a message: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        // CRLF keep-alives between messages are skipped.
        if buf.is_empty() && (byte[0] == b'\r' || byte[0] == b'\n') {
            continue;
        }
        buf.push(byte[0]);
        if buf.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| {
            n.trim().eq_ignore_ascii_case("content-length") || n.trim().eq_ignore_ascii_case("l")
        })
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    buf.extend_from_slice(&body);
    Ok(Some(buf))
}

/// The messages a SIPp run logged with `-trace_msg`: `(received, text)` in order.
pub fn sipp_messages(dir: &Path) -> Vec<(bool, String)> {
    let log = read_lossy(&dir.join("messages.log"));
    let mut out = Vec::new();
    for entry in log
        .split("-----------------------------------------------")
        .skip(1)
    {
        let mut lines = entry.lines();
        let _date = lines.next();
        let Some(kind) = lines.next() else { continue };
        let received = kind.contains("message received");
        if !received && !kind.contains("message sent") {
            continue;
        }
        let text: Vec<&str> = lines.skip_while(|l| l.trim().is_empty()).collect();
        out.push((received, text.join("\r\n")));
    }
    out
}

/// The Via values of a message head, top first (comma-separated values split).
pub fn via_values(message: &str) -> Vec<String> {
    message
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("via") || n.trim().eq_ignore_ascii_case("v"))
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

// ---------------------------------------------------------------- HTTP

/// GET `path` from `addr` over plain HTTP/1.0; the body, or None when the
/// server cannot be reached. Bounded by short socket timeouts.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    http_get_over(stream, addr, path)
}

/// The same GET over a connection already made to `addr`.
pub fn http_get_over(
    mut stream: std::net::TcpStream,
    addr: SocketAddr,
    path: &str,
) -> Option<String> {
    use std::io::Write;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

/// An HTTP answer: status, the head's lines, the body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpAnswer {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// `METHOD path` to `addr` over plain HTTP/1.0 with `headers` (lines
/// ending in CRLF) and a JSON `body`; None when the server cannot be
/// reached. Bounded by short socket timeouts.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Option<HttpAnswer> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    Some(HttpAnswer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// Runs `p2psip ARGS` to completion with `stdin` as its standard input (a
/// password for `users add`), and asserts it succeeded.
pub fn p2psip(args: &[&str], stdin: &str) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2psip"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run p2psip");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("stdin");
    drop(input);
    assert!(child.wait().expect("wait").success(), "p2psip {args:?}");
}

/// `p2psip users add --file FILE AOR` with `password` on standard input.
pub fn add_user(file: &Path, aor: &str, password: &str) {
    let file = file.to_str().expect("utf-8 path");
    p2psip(
        &["users", "add", "--file", file, aor],
        &format!("{password}\n"),
    );
}
