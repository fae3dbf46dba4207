//! Shared helpers for the integration tests: a `p2psip` node process, SIPp
//! processes, free ports, and raw-socket SIP helpers. Every child process is
//! killed when its guard is dropped (also on panic); every wait is bounded.

#![allow(dead_code)]

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

impl Drop for Node {
    fn drop(&mut self) {
        // Keep the log of a failed test; drop the rest.
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
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

/// A running `p2psip node`.
pub struct Node {
    pub addr: SocketAddr,
    pub node_id: String,
    pub dir: PathBuf,
    guard: ChildGuard,
}

impl Node {
    /// Starts `p2psip node --sip 127.0.0.1:0 --domain example.test EXTRA...`
    /// and waits (bounded) for its "listening" line.
    pub fn start(extra: &[&str]) -> Node {
        let dir = temp_dir("node");
        let stderr = fs::File::create(dir.join("node.log")).expect("node log");
        let child = Command::new(env!("CARGO_BIN_EXE_p2psip"))
            .args(["node", "--sip", "127.0.0.1:0", "--domain", DOMAIN])
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .current_dir(&dir)
            .spawn()
            .expect("spawn p2psip");
        let mut guard = ChildGuard::new("p2psip node", child);
        let stdout = guard.child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(WAIT) {
            Ok(Some(Ok(line))) => line,
            Ok(other) => panic!(
                "p2psip exited or failed before listening: {other:?}; log:\n{}",
                read_lossy(&dir.join("node.log"))
            ),
            Err(_) => panic!("p2psip printed no listening line within {WAIT:?}"),
        };
        let (addr, node_id) = parse_listening_line(&line)
            .unwrap_or_else(|| panic!("unexpected first line from p2psip: {line:?}"));
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "{line}");
        assert_ne!(addr.port(), 0, "{line}");
        Node {
            addr,
            node_id,
            dir,
            guard,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The node's log (stderr), for failure messages.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.join("node.log"))
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
            panic!("p2psip exited ({status}); log:\n{}", tail(&self.log(), 60));
        }
    }
}

/// `p2psip listening on 127.0.0.1:PORT (udp, tcp) node-id <40 hex>`
pub fn parse_listening_line(line: &str) -> Option<(SocketAddr, String)> {
    let rest = line.strip_prefix("p2psip listening on ")?;
    let (addr, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("(udp, tcp) node-id ")?;
    let id = rest.trim();
    if id.len() != 40 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some((addr.parse().ok()?, id.to_string()))
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

/// Whether something is bound on 127.0.0.1:`port` (UDP) or listening (TCP),
/// read from /proc/net without touching the port.
pub fn port_bound(port: u16, tcp: bool) -> bool {
    let want = format!("0100007F:{port:04X}");
    let file = if tcp {
        "/proc/net/tcp"
    } else {
        "/proc/net/udp"
    };
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

/// The `sipp` executable; panics (the test fails) when it is not on PATH.
pub fn sipp_path() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("sipp");
        if let Ok(meta) = fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return candidate;
            }
        }
    }
    panic!(
        "sipp is not on PATH: these tests need SIPp (Debian package sip-tester); \
         run scripts/test.sh, which installs it"
    );
}

/// One SIPp run: a UAS (no remote) or a UAC towards the node.
pub struct Sipp {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
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

pub struct SippBuilder {
    name: String,
    scenario: String,
    transport: Transport,
    remote: Option<SocketAddr>,
    calls: u32,
    args: Vec<String>,
}

impl SippBuilder {
    /// A SIPp running `scenario` (a file in tests/sipp/) for `calls` calls.
    pub fn new(name: &str, scenario: &str, transport: Transport) -> SippBuilder {
        SippBuilder {
            name: name.to_string(),
            scenario: scenario.to_string(),
            transport,
            remote: None,
            calls: 1,
            args: Vec::new(),
        }
    }

    /// Sends to (UAC) `remote`.
    pub fn to(mut self, remote: SocketAddr) -> Self {
        self.remote = Some(remote);
        self
    }

    pub fn calls(mut self, n: u32) -> Self {
        self.calls = n;
        self
    }

    /// `-key NAME VALUE`: fills `[NAME]` in the scenario.
    pub fn key(mut self, name: &str, value: &str) -> Self {
        self.args
            .extend(["-key".to_string(), name.to_string(), value.to_string()]);
        self
    }

    /// `-s SERVICE`: fills `[service]`.
    pub fn service(mut self, user: &str) -> Self {
        self.args.extend(["-s".to_string(), user.to_string()]);
        self
    }

    /// Spawns SIPp on a free port of its own (and a free media port block).
    pub fn spawn(self) -> Sipp {
        let sipp = sipp_path();
        let block = port_block(12);
        let port = block;
        let media = block + 4;
        let dir = temp_dir(&format!("sipp-{}", self.name));
        let mut cmd = Command::new(sipp);
        if let Some(remote) = self.remote {
            cmd.arg(remote.to_string());
        }
        let scenario = scenario(&self.scenario);
        assert!(
            scenario.is_file(),
            "missing scenario {}",
            scenario.display()
        );
        cmd.arg("-sf")
            .arg(&scenario)
            .args(["-t", self.transport.sipp_flag()])
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-mp", &media.to_string()])
            .args(["-m", &self.calls.to_string()])
            .args(["-nostdin", "-timeout", "20s", "-timeout_error"])
            .args(["-trace_stat", "-stf", "stat.csv"])
            .args(["-trace_err", "-error_file", "errors.log"])
            .args(["-trace_msg", "-message_file", "messages.log"])
            .args(["-trace_logs", "-log_file", "logs.log"])
            .args(&self.args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout.log")).expect("stdout log"))
            .stderr(fs::File::create(dir.join("stderr.log")).expect("stderr log"));
        let child = cmd.spawn().expect("spawn sipp");
        Sipp {
            name: self.name.clone(),
            port,
            dir,
            guard: ChildGuard::new(format!("sipp {}", self.name), child),
        }
    }
}

impl Sipp {
    /// Waits until the SIPp's main socket is bound (a UAS ready to receive),
    /// at most 10 s; panics when it exits first.
    pub fn wait_listening(&mut self, transport: Transport) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_bound(self.port, transport == Transport::Tcp) {
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
        let name = self.name.clone();
        let dir = self.dir.clone();
        let result = self.finish();
        let ok = result.code == Some(0) && result.successful == calls && result.failed == 0;
        assert!(
            ok,
            "{name}: expected exit 0 and {calls} successful call(s), got {result:?}\n{}",
            diagnostics_of(&dir)
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
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}
