//! How long a node's signature and its check take, per key algorithm
//! (ECDSA P-256, the node keys before, and Ed25519, the node keys now),
//! with the same code the node uses (`NodeKey::sign`, `verify`) over a
//! message the size of a binding's signed bytes. A benchmark: it prints
//! figures (docs/BENCHMARKS.md "Signed items").
//!
//!     cargo run --release -p p2psip-certs --example signature_speed [N]

use std::time::Instant;

use p2psip_certs::{KeyKind, NodeKey, new_ca, new_node, parse_node};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let message = vec![0x5a_u8; 260];
    let ca = new_ca().expect("CA");
    let ed = new_node(
        &ca,
        "127.0.0.1:5060".parse().expect("addr"),
        &"0".repeat(40),
    )
    .expect("node");
    let ed_cert = parse_node(&p2psip_certs::first_cert_der(ed.cert_pem.as_bytes()).expect("der"))
        .expect("cert");
    let ed_key = NodeKey::from_pem(&ed.key_pem).expect("key");
    // A P-256 key as node certificates had before (the CA's key is one).
    let p256_key = NodeKey::from_pem(&ca.key_pem).expect("CA key");
    for (name, kind, key, public) in [
        (
            "ECDSA P-256",
            KeyKind::EcdsaP256,
            &p256_key,
            p256_key.public_key(),
        ),
        (
            "Ed25519",
            KeyKind::Ed25519,
            &ed_key,
            ed_cert.public_key.clone(),
        ),
    ] {
        let t = Instant::now();
        let mut signature = Vec::new();
        for _ in 0..n {
            signature = key.sign(&message).expect("sign");
        }
        let sign_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        let t = Instant::now();
        for _ in 0..n {
            assert!(p2psip_certs::verify(kind, &public, &message, &signature));
        }
        let verify_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        println!(
            "{name:<12} sign {sign_us:6.1} us   verify {verify_us:6.1} us   signature {} B   ({n} each)",
            signature.len()
        );
    }
}
