//! Load for a media relay, for `scripts/bench-relay.sh`: sets up N calls
//! through a relay and streams RTP both ways at 50 packets a second per
//! direction (G.711, 20 ms), then prints the one-way latency of the
//! packets (send to receive, one clock) and the loss.
//!
//! Relays: a p2psip node with `[relay] mode = "always"` (calls set up by
//! SIP: an INVITE to this program's own callee socket, forwarded as
//! addressed), rtpengine (its ng control protocol: offer and answer), or
//! none (`direct`: the same streams sent straight to each other, the
//! baseline the relays' added latency is measured against).
//!
//!     relay-load p2psip|rtpengine|direct SERVER STREAMS SECONDS

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

const PACKET: usize = 172;
const INTERVAL: Duration = Duration::from_millis(20);

fn usage() -> ! {
    eprintln!("usage: relay-load p2psip|rtpengine|direct SERVER STREAMS SECONDS");
    std::process::exit(2);
}

/// One stream's two ends: where each sends.
struct Stream {
    a: Arc<UdpSocket>,
    b: Arc<UdpSocket>,
    /// Where `a` sends (the relay's port towards a, or b itself).
    a_to: SocketAddr,
    b_to: SocketAddr,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, kind, server, streams, seconds] = &args[..] else {
        usage()
    };
    let server: SocketAddr = server.parse().unwrap_or_else(|_| usage());
    let streams: usize = streams.parse().unwrap_or_else(|_| usage());
    let seconds: u64 = seconds.parse().unwrap_or_else(|_| usage());
    let mut all = Vec::with_capacity(streams);
    let sip = Signalling::new().await;
    for i in 0..streams {
        let a = Arc::new(bind().await);
        let b = Arc::new(bind().await);
        let (a_at, b_at) = (addr(&a), addr(&b));
        let (a_to, b_to) = match kind.as_str() {
            "direct" => (b_at, a_at),
            "p2psip" => sip.call(server, i, a_at, b_at).await,
            "rtpengine" => rtpengine(server, i, a_at, b_at).await,
            _ => usage(),
        };
        all.push(Stream { a, b, a_to, b_to });
    }
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut receivers = Vec::new();
    for s in &all {
        for socket in [s.a.clone(), s.b.clone()] {
            receivers.push(tokio::spawn(receive(socket, start, until)));
        }
    }
    // One sender paces every stream: both ends send each 20 ms.
    let mut tick = tokio::time::interval(INTERVAL);
    let mut sent = 0u64;
    let mut seq = 0u16;
    let mut buf = [0u8; PACKET];
    buf[0] = 0x80;
    while Instant::now() < until {
        tick.tick().await;
        seq = seq.wrapping_add(1);
        for s in &all {
            for (socket, to) in [(&s.a, s.a_to), (&s.b, s.b_to)] {
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                let at = start.elapsed().as_nanos() as u64;
                buf[12..20].copy_from_slice(&at.to_be_bytes());
                if socket.try_send_to(&buf, to).is_ok() {
                    sent += 1;
                }
            }
        }
    }
    let mut latencies: Vec<u32> = Vec::new();
    for r in receivers {
        if let Ok(mut l) = r.await {
            latencies.append(&mut l);
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let lost = sent.saturating_sub(latencies.len() as u64);
    println!(
        "{kind} streams={streams} sent={sent} received={} lost={lost} p50_us={} p99_us={} p999_us={}",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
}

async fn bind() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind")
}

fn addr(socket: &UdpSocket) -> SocketAddr {
    socket.local_addr().expect("local address")
}

/// Latencies (µs) of the packets `socket` receives until `until` (and a
/// little after, for the last ones in flight).
async fn receive(socket: Arc<UdpSocket>, start: Instant, until: Instant) -> Vec<u32> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    let end = tokio::time::Instant::from_std(until + Duration::from_millis(200));
    loop {
        let read = tokio::time::timeout_at(end, socket.recv_from(&mut buf)).await;
        let Ok(Ok((n, _))) = read else { break };
        if n < 20 {
            continue;
        }
        let mut at = [0u8; 8];
        at.copy_from_slice(&buf[12..20]);
        let sent = u64::from_be_bytes(at);
        let now = start.elapsed().as_nanos() as u64;
        out.push((now.saturating_sub(sent) / 1000) as u32);
    }
    out
}

/// The SDP of an end at `at`.
fn sdp(at: SocketAddr) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n",
        ip = at.ip(),
        port = at.port()
    )
}

/// The first audio address an SDP (inside a message or alone) names.
fn sdp_address(text: &str) -> Option<SocketAddr> {
    let ip = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))?;
    let port = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))?
        .split(' ')
        .next()?;
    format!("{}:{port}", ip.trim()).parse().ok()
}

/// The caller's and the callee's SIP sockets.
struct Signalling {
    caller: UdpSocket,
    callee: UdpSocket,
}

impl Signalling {
    async fn new() -> Signalling {
        Signalling {
            caller: bind().await,
            callee: bind().await,
        }
    }

    /// One call through the node: the relay's ports towards a and b.
    async fn call(
        &self,
        node: SocketAddr,
        i: usize,
        a: SocketAddr,
        b: SocketAddr,
    ) -> (SocketAddr, SocketAddr) {
        let me = addr(&self.caller);
        let callee = addr(&self.callee);
        let offer = sdp(a);
        let call_id = format!("load-{}-{i}", std::process::id());
        let invite = format!(
            "INVITE sip:b{i}@{callee} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKload{i}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a{i}@example.test>;tag=a{i}\r\nTo: <sip:b{i}@{callee}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:a{i}@{me}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
            offer.len()
        );
        self.caller
            .send_to(invite.as_bytes(), node)
            .await
            .expect("send");
        let got = read_until(&self.callee, |t| t.starts_with("INVITE ")).await;
        let to_b = sdp_address(&got).expect("an offer with the relay's address");
        let head = got.split("\r\n\r\n").next().unwrap_or_default();
        let mut ok = String::from("SIP/2.0 200 OK\r\n");
        for line in head.lines().skip(1) {
            let name = line
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if matches!(
                name.as_str(),
                "via" | "from" | "call-id" | "cseq" | "record-route"
            ) {
                ok.push_str(line);
                ok.push_str("\r\n");
            } else if name == "to" {
                ok.push_str(&format!("{line};tag=b{i}\r\n"));
            }
        }
        let answer = sdp(b);
        ok.push_str(&format!(
            "Contact: <sip:b{i}@{callee}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        ));
        self.callee
            .send_to(ok.as_bytes(), node)
            .await
            .expect("send");
        let ok = read_until(&self.caller, |t| {
            t.starts_with("SIP/2.0 200") && t.contains(&call_id)
        })
        .await;
        let to_a = sdp_address(&ok).expect("an answer with the relay's address");
        (to_a, to_b)
    }
}

async fn read_until(socket: &UdpSocket, want: impl Fn(&str) -> bool) -> String {
    let mut buf = vec![0u8; 65535];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf)).await;
        let Ok(Ok((n, _))) = read else {
            eprintln!("relay-load: no answer within 5 s");
            std::process::exit(1);
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if want(&text) {
            return text;
        }
    }
}

/// One call through rtpengine (ng protocol, bencode over UDP): offer with
/// a's SDP, answer with b's; the ports it gives towards a and b.
async fn rtpengine(
    server: SocketAddr,
    i: usize,
    a: SocketAddr,
    b: SocketAddr,
) -> (SocketAddr, SocketAddr) {
    let socket = bind().await;
    let call_id = format!("load-{}-{i}", std::process::id());
    let ask = |command: &str, body: String, to_tag: Option<String>| {
        let mut dict = vec![
            ("call-id", call_id.clone()),
            ("command", command.to_string()),
            ("from-tag", format!("a{i}")),
            ("sdp", body),
        ];
        if let Some(tag) = to_tag {
            dict.push(("to-tag", tag));
        }
        let mut out = format!("c{i} d");
        for (k, v) in dict {
            out.push_str(&format!("{}:{k}{}:{v}", k.len(), v.len()));
        }
        out.push('e');
        out
    };
    let mut answers = Vec::new();
    for (command, body, to_tag) in [
        ("offer", sdp(a), None),
        ("answer", sdp(b), Some(format!("b{i}"))),
    ] {
        let message = ask(command, body, to_tag);
        socket
            .send_to(message.as_bytes(), server)
            .await
            .expect("send");
        let text = read_until(&socket, |t| t.starts_with(&format!("c{i} "))).await;
        let Some(at) = sdp_address(&text.replace("\\r\\n", "\r\n")) else {
            eprintln!("relay-load: rtpengine said {text}");
            std::process::exit(1);
        };
        answers.push(at);
    }
    // The offer's SDP goes to b (the port towards b), the answer's to a.
    (answers[1], answers[0])
}
