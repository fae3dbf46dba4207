//! The `[gateway]` example in docs/gateway.md parses, validates and routes as
//! the document says.

use p2psip_bridge::route::TelRoute;
use p2psip_bridge::{
    CrossUsers, Decision, GatewayConfig, TargetUri, decide, pstn_request_uri, telephone_route,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    gateway: GatewayConfig,
}

fn example() -> GatewayConfig {
    let doc = include_str!("../../docs/gateway.md");
    let start = doc.find("```toml\n").expect("toml block") + "```toml\n".len();
    let len = doc[start..].find("```").expect("end of block");
    toml::from_str::<File>(&doc[start..start + len])
        .expect("example parses")
        .gateway
}

#[test]
fn example_validates_and_routes() {
    let config = example();
    config.validate().expect("example validates");
    let node = vec!["overlay.test".to_string()];
    let d = |uri: &str| decide(&TargetUri::parse(uri).unwrap(), &node, &config);
    assert_eq!(d("sip:alice@overlay.test"), Decision::Overlay);
    assert_eq!(d("sip:bob@legacy.test"), Decision::OverlayThenDns);
    assert_eq!(d("sip:carol@example.org"), Decision::Dns);
    assert_eq!(
        d("tel:+1-212-555-1234"),
        Decision::Telephone {
            e164: "+12125551234".into()
        }
    );

    let pstn = config.pstn.as_ref().unwrap();
    let uri = |n: &str| pstn_request_uri(n, pstn).unwrap();
    assert_eq!(
        uri("+12125551234"),
        "sip:95551234@pstn.legacy.test:5060;user=phone"
    );
    assert_eq!(
        uri("+13125551234"),
        "sip:3125551234@pstn.legacy.test:5060;user=phone"
    );
    assert_eq!(
        uri("+442079460000"),
        "sip:00442079460000@pstn.legacy.test:5060;user=phone"
    );
    assert_eq!(
        telephone_route("+12125551234", None, &config),
        TelRoute::Pstn("sip:95551234@pstn.legacy.test:5060;user=phone".into())
    );

    let up = config.upstream.as_ref().unwrap();
    assert_eq!(
        up.users,
        CrossUsers::List(vec!["alice".into(), "bob".into()])
    );
    assert!(up.covers("alice", "overlay.test") && !up.covers("alice", "other.test"));
}
