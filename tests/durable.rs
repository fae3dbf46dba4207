//! Durable storage (`--data`): a lone node that answered 200 to 1,000
//! REGISTERs, killed with SIGKILL and started again on the same data
//! directory, serves every one of them at once (302 in redirect mode with
//! the registered contact), before any phone has refreshed.

mod common;

use common::{DOMAIN, Node, SippBuilder, Transport, temp_dir};

const USERS: u32 = 1_000;

fn lone_node(data: &std::path::Path) -> Node {
    Node::builder()
        .name("durable")
        .args(["--sip", "127.0.0.1:0", "--domain", DOMAIN])
        .args(["--routing", "redirect", "--data"])
        .arg(data.display().to_string())
        .spawn()
}

#[test]
fn a_killed_lone_node_serves_every_registration_it_accepted() {
    let data = temp_dir("durable-data");
    let mut node = lone_node(&data);
    SippBuilder::new("register-many", "register_many.xml", Transport::Udp)
        .to(node.addr)
        .key("domain", DOMAIN)
        .calls(USERS)
        .rate(250)
        .spawn()
        .expect_success_with(u64::from(USERS), || common::tail(&node.log(), 40));
    node.kill();

    let mut again = lone_node(&data);
    SippBuilder::new("invite-many", "uac_invite_302_many.xml", Transport::Udp)
        .to(again.addr)
        .key("domain", DOMAIN)
        .calls(USERS)
        .rate(250)
        .spawn()
        .expect_success_with(u64::from(USERS), || common::tail(&again.log(), 40));
    again.assert_alive();
    // A user that never registered is still unknown: the 302s above are
    // not what the node answers anyone.
    SippBuilder::new("invite-unknown", "uac_invite_404.xml", Transport::Udp)
        .to(again.addr)
        .key("domain", DOMAIN)
        .service("nobody")
        .spawn()
        .expect_success_with(1, || common::tail(&again.log(), 40));
    drop(again);
    let _ = std::fs::remove_dir_all(&data);
}
