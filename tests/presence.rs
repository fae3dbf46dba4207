//! Presence and message-summary with real node processes and watchers on
//! raw UDP sockets: a SUBSCRIBE for `presence` gets 200 and a NOTIFY that
//! says closed; the presentity registers (open), publishes a note, removes
//! it, de-registers (closed); the watcher un-subscribes (terminated). Bad
//! subscriptions get 489 and 423. Through one node of a three-node ring a
//! watcher sees a user registered at another. A `message-summary`
//! subscription says how many offline messages wait, and none once they
//! are delivered. A subscription outlives the restart of its node.

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::members::{Member, consistent, logs};
use common::phone::Phone;
use common::*;

/// A watcher (or phone) on a UDP socket: sends requests, answers every
/// request it receives with 200 and keeps the NOTIFYs.
struct Watcher {
    socket: UdpSocket,
    node: SocketAddr,
    user: String,
    call_id: String,
    tag: String,
    to_tag: Option<String>,
    cseq: u32,
    /// NOTIFYs received and not yet looked at, oldest first.
    notifies: Vec<String>,
    /// Every NOTIFY received, for failure messages.
    seen: Vec<String>,
}

impl Watcher {
    fn new(user: &str, node: SocketAddr) -> Watcher {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the watcher");
        let call_id = format!("{}@watcher", token());
        Watcher {
            socket,
            node,
            user: user.to_string(),
            call_id,
            tag: token(),
            to_tag: None,
            cseq: 0,
            notifies: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local address")
    }

    /// A SUBSCRIBE in this watcher's dialog (initial until a 200 gave a To tag).
    fn subscribe(&mut self, target: &str, event: &str, expires: u32) -> RawResponse {
        self.cseq += 1;
        let me = self.addr();
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let uri = match &self.to_tag {
            Some(_) => format!("sip:{}", self.node),
            None => format!("sip:{target}@{DOMAIN}"),
        };
        let branch = format!("z9hG4bK{}", token());
        let request = format!(
            "SUBSCRIBE {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{DOMAIN}>;tag={tag}\r\n\
             To: <sip:{target}@{DOMAIN}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} SUBSCRIBE\r\n\
             Contact: <sip:{user}@{me}>\r\n\
             Event: {event}\r\n\
             Expires: {expires}\r\n\
             Content-Length: 0\r\n\r\n",
            user = self.user,
            tag = self.tag,
            call_id = self.call_id,
            cseq = self.cseq,
        );
        let response = self.ask(&request, &branch);
        if response.status == 200 && self.to_tag.is_none() {
            self.to_tag = response
                .header("To")
                .and_then(|to| to.split(";tag=").nth(1).map(|t| t.to_string()));
        }
        response
    }

    /// Sends `request` and gives its final response, answering and keeping
    /// NOTIFYs that arrive meanwhile; panics after 10 s without one.
    fn ask(&mut self, request: &str, branch: &str) -> RawResponse {
        self.socket
            .send_to(request.as_bytes(), self.node)
            .expect("send");
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(text) = self.receive(deadline) {
            if let Some(response) = RawResponse::parse(text.as_bytes())
                && response.status >= 200
                && response.text.contains(branch)
            {
                return response;
            }
        }
        panic!("no answer to:\n{request}");
    }

    /// The next message until `deadline`; requests are answered 200 and
    /// NOTIFYs kept.
    fn receive(&mut self, deadline: Instant) -> Option<String> {
        let mut buf = vec![0u8; 65_536];
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        self.socket.set_read_timeout(Some(left)).expect("timeout");
        let (n, from) = match self.socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) => panic!("receive failed: {e}"),
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 ") {
            return Some(text);
        }
        let answer = ok_for(&text);
        self.socket
            .send_to(answer.as_bytes(), from)
            .expect("answer");
        if text.starts_with("NOTIFY ") {
            self.notifies.push(text.clone());
            self.seen.push(text.clone());
        }
        Some(text)
    }

    /// Waits (up to 30 s) for a NOTIFY that satisfies `wanted`; the ones
    /// before it are dropped.
    fn notify_where(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            while !self.notifies.is_empty() {
                let notify = self.notifies.remove(0);
                if wanted(&notify) {
                    return notify;
                }
            }
            if self.receive(deadline).is_none() && Instant::now() >= deadline {
                panic!(
                    "no NOTIFY {what} within {WAIT:?}; received:\n{}",
                    self.seen.join("\n-----\n")
                );
            }
        }
    }
}

/// The 200 a UA answers a request with.
fn ok_for(request: &str) -> String {
    let head = request.split("\r\n\r\n").next().unwrap_or("");
    let mut answer = String::from("SIP/2.0 200 OK\r\n");
    for line in head.lines().skip(1) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
            answer.push_str(line);
            answer.push_str("\r\n");
        }
    }
    answer.push_str("Content-Length: 0\r\n\r\n");
    answer
}

fn basic(notify: &str) -> Option<&str> {
    let start = notify.find("<basic>")? + "<basic>".len();
    let end = notify[start..].find("</basic>")? + start;
    Some(&notify[start..end])
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message
        .split("\r\n\r\n")
        .next()?
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// REGISTER `user` at `node` with `contact` for `expires` seconds: the status.
fn register(node: SocketAddr, user: &str, contact: &str, expires: u32) -> u16 {
    let phone = Phone::new("127.0.0.1", node);
    let request = phone
        .register(user, DOMAIN, "")
        .replace("Expires: 600", &format!("Expires: {expires}"))
        .replace(
            &format!("<sip:{user}@{}>", phone.addr()),
            &format!("<{contact}>"),
        );
    phone.ask(&request).map(|r| r.status).unwrap_or(0)
}

/// A PUBLISH for `user` of `body` (none: a refresh or removal) with `extra` headers.
fn publish(node: SocketAddr, user: &str, body: Option<&str>, extra: &str) -> RawResponse {
    publish_as(node, user, user, body, extra)
}

/// A PUBLISH for `user` sent by `from`.
fn publish_as(
    node: SocketAddr,
    from: &str,
    user: &str,
    body: Option<&str>,
    extra: &str,
) -> RawResponse {
    let phone = Phone::new("127.0.0.1", node);
    let me = phone.addr();
    let branch = format!("z9hG4bK{}", token());
    let body = body.unwrap_or("");
    let content_type = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/pidf+xml\r\n".to_string()
    };
    let request = format!(
        "PUBLISH sip:{user}@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from}@{DOMAIN}>;tag={branch}\r\n\
         To: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: {branch}@phone\r\n\
         CSeq: 1 PUBLISH\r\n\
         Event: presence\r\n\
         {extra}{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    phone.ask(&request).expect("an answer to PUBLISH")
}

fn pidf(user: &str, basic: &str, note: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:{user}@{DOMAIN}\">\
         <tuple id=\"t1\"><status><basic>{basic}</basic></status></tuple>\
         <note>{note}</note></presence>\r\n"
    )
}

/// A lone node with an HTTP server and a data directory, at `sip`.
fn lone_node(sip: SocketAddr, http: SocketAddr, data: &Path) -> Node {
    Node::builder()
        .args(["--sip", &sip.to_string(), "--domain", DOMAIN])
        .args([
            "--http",
            &http.to_string(),
            "--data",
            &data.display().to_string(),
        ])
        .spawn()
}

fn metric(http: SocketAddr, name: &str) -> f64 {
    http_get(http, "/metrics")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[test]
fn a_watcher_follows_registration_publication_and_unsubscribes() {
    let sip = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let data = temp_dir("presence-data");
    let node = lone_node(sip, http, &data);
    let log = || tail(&node.log(), 40);

    let mut alice = Watcher::new("alice", node.addr);
    // Unsupported packages and too short subscriptions are refused.
    let refused = alice.subscribe("bob", "dialog", 600);
    assert_eq!(refused.status, 489, "{}", refused.text);
    assert!(
        refused
            .header("Allow-Events")
            .is_some_and(|v| v.contains("presence"))
    );
    let mut short = Watcher::new("alice", node.addr);
    let refused = short.subscribe("bob", "presence", 10);
    assert_eq!(refused.status, 423, "{}", refused.text);
    assert_eq!(refused.header("Min-Expires").as_deref(), Some("60"));

    let mut alice = Watcher::new("alice", node.addr);
    let ok = alice.subscribe("bob", "presence", 600);
    assert_eq!(ok.status, 200, "{}\n{}", ok.text, log());
    assert_eq!(ok.header("Expires").as_deref(), Some("600"));
    assert!(alice.to_tag.is_some(), "{}", ok.text);
    let first = alice.notify_where("saying closed", |n| basic(n) == Some("closed"));
    assert!(
        header(&first, "Subscription-State").is_some_and(|s| s.starts_with("active")),
        "{first}"
    );
    assert_eq!(header(&first, "Event"), Some("presence"));
    assert_eq!(header(&first, "Content-Type"), Some("application/pidf+xml"));

    // She registers: open.
    let bob_contact = "sip:bob@127.0.0.1:9";
    assert_eq!(register(node.addr, "bob", bob_contact, 600), 200);
    alice.notify_where("saying open", |n| basic(n) == Some("open"));

    // She publishes a note, then removes her publication.
    let published = publish(
        node.addr,
        "bob",
        Some(&pidf("bob", "open", "In a meeting")),
        "Expires: 600\r\n",
    );
    assert_eq!(published.status, 200, "{}\n{}", published.text, log());
    let etag = published.header("SIP-ETag").expect("a SIP-ETag");
    alice.notify_where("with the note", |n| n.contains("<note>In a meeting</note>"));
    let wrong = publish(
        node.addr,
        "bob",
        None,
        "SIP-If-Match: nonsense\r\nExpires: 600\r\n",
    );
    assert_eq!(wrong.status, 412, "{}", wrong.text);
    let refreshed = publish(
        node.addr,
        "bob",
        None,
        &format!("SIP-If-Match: {etag}\r\nExpires: 600\r\n"),
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    let etag = refreshed.header("SIP-ETag").expect("a new SIP-ETag");
    // Alice may not publish for bob.
    let note = pidf("bob", "closed", "Forged");
    let forged = publish_as(node.addr, "alice", "bob", Some(&note), "Expires: 600\r\n");
    assert_eq!(forged.status, 403, "{}", forged.text);
    let removed = publish(
        node.addr,
        "bob",
        None,
        &format!("SIP-If-Match: {etag}\r\nExpires: 0\r\n"),
    );
    assert_eq!(removed.status, 200, "{}", removed.text);
    alice.notify_where("open without the note", |n| {
        basic(n) == Some("open") && !n.contains("<note>")
    });

    // She unregisters: closed.
    assert_eq!(register(node.addr, "bob", bob_contact, 0), 200);
    alice.notify_where("saying closed again", |n| basic(n) == Some("closed"));

    // The node holds one subscription and counted its NOTIFYs.
    assert_eq!(
        metric(http, "p2psip_presence_subscriptions "),
        1.0,
        "{}",
        log()
    );
    assert!(metric(http, "p2psip_presence_notifies_total") >= 5.0);

    // Un-subscribe: 200 and a final NOTIFY.
    let bye = alice.subscribe("bob", "presence", 0);
    assert_eq!(bye.status, 200, "{}", bye.text);
    let last = alice.notify_where("terminated", |n| {
        header(n, "Subscription-State").is_some_and(|s| s.starts_with("terminated"))
    });
    assert_eq!(basic(&last), Some("closed"), "{last}");
    wait_until(
        "no subscription held",
        WAIT,
        || metric(http, "p2psip_presence_subscriptions ") == 0.0,
        log,
    );
    // A refresh of the ended dialog: 481.
    let gone = alice.subscribe("bob", "presence", 600);
    assert_eq!(gone.status, 481, "{}", gone.text);
}

#[test]
fn a_subscription_outlives_the_restart_of_its_node() {
    let sip = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let data = temp_dir("presence-restart");
    let mut node = lone_node(sip, http, &data);
    let mut alice = Watcher::new("alice", node.addr);
    assert_eq!(alice.subscribe("bob", "presence", 600).status, 200);
    alice.notify_where("saying closed", |n| basic(n) == Some("closed"));
    assert!(node.terminate().success(), "the node did not stop");
    drop(node);

    let node = lone_node(sip, http, &data);
    // After the restart she gets the state again, and bob coming online.
    alice.notify_where("after the restart", |n| basic(n) == Some("closed"));
    assert_eq!(register(node.addr, "bob", "sip:bob@127.0.0.1:9", 600), 200);
    let open = alice.notify_where("saying open", |n| basic(n) == Some("open"));
    assert!(open.contains(&format!("tag={}", alice.tag)), "{open}");
}

#[test]
fn message_summary_counts_the_messages_waiting() {
    let node = Node::start(&[]);
    let log = || tail(&node.log(), 40);
    let mut alice = Watcher::new("alice", node.addr);
    // She is known (registered once), then offline.
    assert_eq!(
        register(node.addr, "alice", "sip:alice@127.0.0.1:9", 600),
        200
    );
    assert_eq!(
        register(node.addr, "alice", "sip:alice@127.0.0.1:9", 0),
        200
    );
    // Only her own messages.
    let mut carol = Watcher::new("carol", node.addr);
    assert_eq!(carol.subscribe("alice", "message-summary", 600).status, 403);

    let ok = alice.subscribe("alice", "message-summary", 600);
    assert_eq!(ok.status, 200, "{}\n{}", ok.text, log());
    let none = alice.notify_where("with no message", |n| n.contains("Messages-Waiting: no"));
    assert_eq!(
        header(&none, "Content-Type"),
        Some("application/simple-message-summary")
    );

    let phone = Phone::new("127.0.0.1", node.addr);
    let message = phone.request(
        "MESSAGE",
        &format!("bob@{DOMAIN}"),
        &format!("alice@{DOMAIN}"),
        "",
    );
    assert_eq!(
        phone.ask(&message).map(|r| r.status),
        Some(202),
        "{}",
        log()
    );
    let waiting = alice.notify_where("with one message", |n| n.contains("Messages-Waiting: yes"));
    assert!(waiting.contains("Text-Message: 1/0"), "{waiting}");

    // She registers with the watcher's socket: the message is delivered
    // there (answered 200), and nothing waits any more.
    let contact = format!("sip:alice@{}", alice.addr());
    assert_eq!(register(node.addr, "alice", &contact, 600), 200);
    alice.notify_where("with no message after delivery", |n| {
        n.contains("Messages-Waiting: no")
    });
}

/// A ring member with its HTTP server, joining through `join`.
fn member(join: Option<SocketAddr>) -> Member {
    let http = SocketAddr::from(([127, 0, 0, 1], port_block(1)));
    let http_arg = http.to_string();
    let join_arg = join.map(|j| j.to_string());
    let mut args = vec!["--http", http_arg.as_str()];
    if let Some(j) = &join_arg {
        args.extend(["--join", j.as_str()]);
    }
    Member {
        node: Node::start(&args),
        http,
    }
}

#[test]
fn through_one_node_of_a_ring_a_watcher_sees_a_user_registered_at_another() {
    let first = member(None);
    let join = Some(first.node.addr);
    let members = [first, member(join), member(join)];
    wait_until(
        "a consistent ring",
        WAIT,
        || consistent(&members),
        || logs(&members),
    );
    let [first, second, third] = &members;
    // Bob registers at the third node; alice watches him through the first.
    let contact = "sip:bob@127.0.0.1:9";
    assert_eq!(register(third.node.addr, "bob", contact, 600), 200);
    let mut alice = Watcher::new("alice", first.node.addr);
    let ok = alice.subscribe("bob", "presence", 600);
    assert_eq!(ok.status, 200, "{}\n{}", ok.text, logs(&members));
    alice.notify_where("saying open", |n| basic(n) == Some("open"));
    // He leaves through the second node: closed, told by the first.
    assert_eq!(register(second.node.addr, "bob", contact, 0), 200);
    alice.notify_where("saying closed", |n| basic(n) == Some("closed"));
}

#[test]
fn a_subscription_outlives_the_crash_of_its_notifier() {
    let first = member(None);
    let join = Some(first.node.addr);
    let mut members = vec![first, member(join), member(join), member(join)];
    wait_until(
        "a consistent ring of four",
        WAIT,
        || consistent(&members),
        || logs(&members),
    );
    // Alice subscribes through the second node, which then crashes.
    let notifier = members[1].node.addr;
    let mut alice = Watcher::new("alice", notifier);
    let ok = alice.subscribe("bob", "presence", 600);
    assert_eq!(ok.status, 200, "{}\n{}", ok.text, logs(&members));
    alice.notify_where("saying closed", |n| basic(n) == Some("closed"));
    let mut gone = members.remove(1);
    gone.node.kill();
    drop(gone);
    wait_until(
        "a consistent ring of three",
        WAIT,
        || consistent(&members),
        || logs(&members),
    );
    // Bob registers elsewhere: the node that took the subscription over
    // tells alice, in her dialog, and names itself as the new target.
    assert_eq!(
        register(members[2].node.addr, "bob", "sip:bob@127.0.0.1:9", 600),
        200
    );
    let open = alice.notify_where("saying open, from another node", |n| {
        basic(n) == Some("open")
    });
    assert!(open.contains(&format!("tag={}", alice.tag)), "{open}");
    let contact = header(&open, "Contact").unwrap_or_default().to_string();
    assert!(!contact.contains(&notifier.to_string()), "{contact}");
    // Her refresh goes to the new notifier and is accepted there.
    let new: SocketAddr = contact
        .trim_start_matches("<sip:")
        .trim_end_matches('>')
        .parse()
        .expect("the new notifier's address");
    alice.node = new;
    assert_eq!(
        alice.subscribe("bob", "presence", 600).status,
        200,
        "{}",
        logs(&members)
    );
}
