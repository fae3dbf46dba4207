//! Real NAT between network namespaces, for the NAT tests: a "public"
//! namespace, and homes behind routers that masquerade (iptables
//! MASQUERADE, Linux conntrack: a port-restricted cone NAT in practice).
//! Every home has the same private address, as home networks do:
//!
//! ```text
//! home i (10.201.1.2) -- router i (10.201.1.1 | 10.202.i.1, MASQUERADE) -- public (10.202.i.2)
//! ```
//!
//! Addresses exist only inside the test's namespaces; each [`Netns`]
//! deletes itself (and its links) on drop, also on panic.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};

use super::netns::Netns;
use super::require_tool;

/// The private address of every home.
pub const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 201, 1, 2));

/// The public side and the homes behind NAT.
pub struct Nat {
    pub public: Netns,
    /// `(router, home)` per home, in order.
    pub homes: Vec<(Netns, Netns)>,
}

impl Nat {
    /// `homes` homes (1 to 9), each behind its own masquerading router.
    pub fn new(homes: u8) -> Nat {
        assert!((1..=9).contains(&homes));
        require_tool("iptables", "iptables");
        let public = Netns::new("pub");
        let mut all = Vec::new();
        for i in 1..=homes {
            let router = Netns::new(&format!("rtr{i}"));
            let home = Netns::new(&format!("home{i}"));
            // Links are made inside the namespaces, so nothing is left on
            // the host if the test dies.
            link(&home, "eth0", &router, "in0");
            link(&router, "out0", &public, &format!("h{i}"));
            ip(&home, &["addr", "add", "10.201.1.2/24", "dev", "eth0"]);
            ip(&home, &["route", "add", "default", "via", "10.201.1.1"]);
            ip(&router, &["addr", "add", "10.201.1.1/24", "dev", "in0"]);
            ip(
                &router,
                &["addr", "add", &format!("10.202.{i}.1/24"), "dev", "out0"],
            );
            ip(
                &router,
                &["route", "add", "default", "via", &format!("10.202.{i}.2")],
            );
            ip(
                &public,
                &[
                    "addr",
                    "add",
                    &format!("10.202.{i}.2/24"),
                    "dev",
                    &format!("h{i}"),
                ],
            );
            run(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            run(
                &router,
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "out0",
                    "-j",
                    "MASQUERADE",
                ],
            );
            all.push((router, home));
        }
        Nat { public, homes: all }
    }

    /// The public address of the node's side facing home 1 (`10.202.1.2`).
    pub fn public_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 202, 1, 2))
    }

    /// Home `i` (from 1).
    pub fn home(&self, i: usize) -> &Netns {
        &self.homes[i - 1].1
    }

    /// Router `i`'s public address.
    pub fn router_ip(&self, i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 202, i, 1))
    }
}

/// A veth pair from `a` (named `a_if`) to `b` (named `b_if`), both up.
fn link(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    // Made in `a` with a temporary peer name, then the peer moved to `b`.
    let peer = format!("{a_if}p");
    ip(
        a,
        &["link", "add", a_if, "type", "veth", "peer", "name", &peer],
    );
    ip(a, &["link", "set", &peer, "netns", &b.name]);
    ip(b, &["link", "set", &peer, "name", b_if]);
    ip(a, &["link", "set", a_if, "up"]);
    ip(b, &["link", "set", b_if, "up"]);
}

fn ip(ns: &Netns, args: &[&str]) {
    let mut all = vec!["ip"];
    all.extend_from_slice(args);
    run(ns, &all);
}

fn run(ns: &Netns, args: &[&str]) {
    let (status, out, err) = ns.run(args);
    assert!(status.success(), "in {}: {args:?}: {out}{err}", ns.name);
}
