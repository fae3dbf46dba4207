//! The node against real SIPp user agents over real sockets on 127.0.0.1:
//! registration, a proxied call and MESSAGE, OPTIONS to the node, 404 for an
//! unknown user, 480 after the last binding is removed, and redirect mode.
//! SIPp is required: these tests fail (they do not skip) without it.

mod common;

use common::{DOMAIN, Node, Sipp, SippBuilder, Transport};

/// REGISTERs `contact` for `user@example.test` with `expires` through a SIPp
/// UAC, and asserts the node's 200 (SIPp exit 0, one successful call).
fn register(node: &Node, transport: Transport, user: &str, contact: &str, expires: u32) {
    SippBuilder::new(
        &format!("register-{user}-{expires}"),
        "register.xml",
        transport,
    )
    .to(node.addr)
    .key("user", user)
    .key("domain", DOMAIN)
    .key("contact", contact)
    .key("expires", &expires.to_string())
    .spawn()
    .expect_success(1);
}

/// A UAS playing `user` with `scenario` for one call, listening before it returns.
fn uas(name: &str, scenario: &str, transport: Transport) -> Sipp {
    let mut uas = SippBuilder::new(name, scenario, transport).calls(1).spawn();
    uas.wait_listening();
    uas
}

/// A UAC towards the node calling `sip:USER@example.test` with `scenario`.
fn uac(node: &Node, name: &str, scenario: &str, transport: Transport, user: &str) -> Sipp {
    SippBuilder::new(name, scenario, transport)
        .to(node.addr)
        .service(user)
        .key("domain", DOMAIN)
        .spawn()
}

/// Steps 1 to 5 of the node's behaviour towards phones, on one node, over one transport.
fn phones_through_the_node(transport: Transport) {
    let mut node = Node::start(&[]);

    // 1. alice (a SIPp UAS) registers; bob calls sip:alice@example.test through
    //    the node: INVITE/180/200/ACK/BYE/200 complete on both sides.
    let alice_call = uas("alice-call", "uas_call.xml", transport);
    let alice_call_contact = transport.contact("alice", alice_call.port);
    register(&node, transport, "alice", &alice_call_contact, 3600);
    uac(&node, "bob-call", "uac_call.xml", transport, "alice").expect_success(1);
    alice_call.expect_success(1);
    node.assert_alive();

    // 2. alice moves to a MESSAGE-answering UAS (old binding removed, new one
    //    added); bob's MESSAGE reaches her and her 200 reaches bob.
    register(&node, transport, "alice", &alice_call_contact, 0);
    let alice_message = uas("alice-message", "uas_message.xml", transport);
    let alice_message_contact = transport.contact("alice", alice_message.port);
    register(&node, transport, "alice", &alice_message_contact, 3600);
    uac(&node, "bob-message", "uac_message.xml", transport, "alice").expect_success(1);
    alice_message.expect_success(1);
    node.assert_alive();

    // 3. OPTIONS to the node itself: 200.
    SippBuilder::new("options", "options.xml", transport)
        .to(node.addr)
        .spawn()
        .expect_success(1);

    // 4. A call to a user never registered: 404 (then ACK).
    uac(
        &node,
        "bob-unknown",
        "uac_invite_404.xml",
        transport,
        "nobody",
    )
    .expect_success(1);

    // 5. REGISTER with Expires: 0 removes alice's last binding; the next call
    //    gets 480 (a user that had bindings), not 404.
    register(&node, transport, "alice", &alice_message_contact, 0);
    uac(&node, "bob-gone", "uac_invite_480.xml", transport, "alice").expect_success(1);
    node.assert_alive();
}

#[test]
fn phones_through_the_node_over_udp() {
    phones_through_the_node(Transport::Udp);
}

#[test]
fn phones_through_the_node_over_tcp() {
    phones_through_the_node(Transport::Tcp);
}

/// `--routing redirect`: an INVITE to a registered user gets 302 whose Contact
/// is exactly the contact alice registered.
#[test]
fn redirect_mode_answers_302_with_the_contact() {
    let mut node = Node::start(&["--routing", "redirect"]);
    let transport = Transport::Udp;
    let contact = transport.contact("alice", 5090);
    register(&node, transport, "alice", &contact, 3600);
    let logs = uac(
        &node,
        "bob-redirect",
        "uac_invite_302.xml",
        transport,
        "alice",
    )
    .expect_success(1)
    .logs;
    let expected = format!("302 Contact <{contact}>");
    assert!(
        logs.lines().any(|l| l.trim() == expected),
        "expected the log line {expected:?} from the 302's Contact, SIPp logged:\n{logs}"
    );
    node.assert_alive();
}

/// RFC 3261 §16.6 step 8 and §16.7 step 3 on the wire of a proxied call:
/// every request alice receives carries the node's Via on top (bob's below
/// it), and every response bob receives carries exactly his own Via.
fn via_order_in_a_proxied_call(transport: Transport) {
    let node = Node::start(&[]);
    let alice = uas("alice-via", "uas_call.xml", transport);
    register(
        &node,
        transport,
        "alice",
        &transport.contact("alice", alice.port),
        3600,
    );
    let bob = uac(&node, "bob-via", "uac_call.xml", transport, "alice");
    let bob_port = bob.port;
    let bob_messages = bob.expect_success(1).messages;
    let alice_messages = alice.expect_success(1).messages;

    let node_via = format!("SIP/2.0/{} {}", transport.name(), node.addr);
    let bob_via = format!("SIP/2.0/{} 127.0.0.1:{bob_port}", transport.name());
    let mut problems = Vec::new();
    for (received, text) in alice_messages {
        let first = text.lines().next().unwrap_or("").to_string();
        if !received || first.starts_with("SIP/2.0") {
            continue;
        }
        let vias = common::via_values(&text);
        let ok = vias.len() == 2 && vias[0].starts_with(&node_via) && vias[1].starts_with(&bob_via);
        if !ok {
            problems.push(format!("alice got {first:?} with Via {vias:?}"));
        }
    }
    for (received, text) in bob_messages {
        let first = text.lines().next().unwrap_or("").to_string();
        if !received || !first.starts_with("SIP/2.0") {
            continue;
        }
        let vias = common::via_values(&text);
        if !(vias.len() == 1 && vias[0].starts_with(&bob_via)) {
            problems.push(format!("bob got {first:?} with Via {vias:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "expected requests at alice with Via [{node_via}…, {bob_via}…] and responses at bob \
         with Via [{bob_via}…] only:\n{}",
        problems.join("\n")
    );
}

#[test]
fn via_order_in_a_proxied_call_over_udp() {
    via_order_in_a_proxied_call(Transport::Udp);
}

#[test]
fn via_order_in_a_proxied_call_over_tcp() {
    via_order_in_a_proxied_call(Transport::Tcp);
}
