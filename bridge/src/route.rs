//! Where a request goes: the ring, DNS (RFC 3263), or the telephone
//! network (ENUM, then the PSTN gateway). Pure functions over the target URI
//! and the configuration.

use std::net::IpAddr;

use ezk_sip_types::host::Host;
use ezk_sip_types::uri::{SipUri, SipUriUserPart};

use crate::config::{GatewayConfig, PstnConfig};

/// E.164 normalisation is the DNS crate's (ENUM needs it there too).
pub use p2psip_dns::normalize_e164;

/// The parts of a Request-URI the routing decision looks at.
///
/// For `sip:`/`sips:` URIs `user` is the user part and `host` the host
/// (IPv6 in brackets, no port). For `tel:` URIs `user` is everything after
/// `tel:` (number and parameters, e.g. `5551234;phone-context=+1212`) and
/// `host` is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetUri {
    /// Lower case: `sip`, `sips`, `tel`, …
    pub scheme: String,
    pub user: Option<String>,
    pub host: String,
    /// The URI has the `user=phone` parameter.
    pub user_is_phone: bool,
}

impl TargetUri {
    /// From a parsed SIP URI (the proxy's Request-URI).
    pub fn from_sip_uri(uri: &SipUri) -> TargetUri {
        let user = match &uri.user_part {
            SipUriUserPart::Empty => None,
            SipUriUserPart::User(u) => Some(u.to_string()),
            SipUriUserPart::UserPw(up) => Some(up.user.to_string()),
        };
        let host = match &uri.host_port.host {
            Host::Name(n) => n.to_string(),
            other => other.to_string(),
        };
        let user_is_phone = uri
            .uri_params
            .get_val("user")
            .is_some_and(|v| v.eq_ignore_ascii_case("phone"));
        TargetUri {
            scheme: if uri.sips { "sips" } else { "sip" }.to_string(),
            user,
            host,
            user_is_phone,
        }
    }

    /// From URI text (`sip:alice@example.com:5060;user=phone`, `tel:+1…`,
    /// optionally in `<…>`). `None` when there is no scheme.
    pub fn parse(text: &str) -> Option<TargetUri> {
        let text = text.trim();
        let text = text
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or(text);
        let (scheme, rest) = text.split_once(':')?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return Some(TargetUri {
                scheme,
                user: Some(rest.to_string()),
                host: String::new(),
                user_is_phone: false,
            });
        }
        // A user part has no unescaped '@', so the first one ends it; headers
        // (`?…`) are not part of the routing decision.
        let (userinfo, hostpart) = match rest.split_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let hostpart = hostpart.split('?').next().unwrap_or("");
        let user = userinfo.map(|u| u.split(':').next().unwrap_or("").to_string());
        let mut pieces = hostpart.split(';');
        let hostport = pieces.next().unwrap_or("");
        let user_is_phone = pieces.any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("user") && v.trim().eq_ignore_ascii_case("phone")
            })
        });
        let host = if hostport.starts_with('[') {
            match hostport.find(']') {
                Some(end) => hostport[..=end].to_string(),
                None => return None,
            }
        } else {
            hostport.split(':').next().unwrap_or("").to_string()
        };
        Some(TargetUri {
            scheme,
            user,
            host,
            user_is_phone,
        })
    }

    /// The host as an IP address, if it is one.
    pub fn host_ip(&self) -> Option<IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }
}

/// What to do with a request for a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// An overlay domain: look the AoR up in the ring (no DNS).
    Overlay,
    /// A foreign domain with `locate_in_overlay`: the ring first; when it has
    /// no binding, RFC 3263.
    OverlayThenDns,
    /// A foreign domain: RFC 3263 only.
    Dns,
    /// A telephone number: ENUM under `enum_suffix`, then the PSTN gateway
    /// (see [`telephone_route`]).
    Telephone { e164: String },
    /// Not routable: answer with `status` (416 unsupported scheme, 484 a
    /// telephone number that is not E.164, 400 no host).
    Reject { status: u16, reason: String },
}

/// Routing decision for one request. `overlay_domains` are the node's
/// domains (users live in the ring); `config.domains` count as overlay
/// domains too.
///
/// | target | decision |
/// |---|---|
/// | `tel:` with a global number, or a local one with a `+…` phone-context | `Telephone` |
/// | `sip(s):+digits@…;user=phone` | `Telephone` |
/// | host is an overlay domain | `Overlay` |
/// | host is an IP address | `Dns` |
/// | foreign host, listed in `locate_in_overlay` (or `"*"`) | `OverlayThenDns` |
/// | other foreign host | `Dns` |
pub fn decide(target: &TargetUri, overlay_domains: &[String], config: &GatewayConfig) -> Decision {
    match target.scheme.to_ascii_lowercase().as_str() {
        "tel" => {
            let body = target.user.as_deref().unwrap_or(&target.host);
            match tel_target(&format!("tel:{body}")) {
                Some(e164) => Decision::Telephone { e164 },
                None => Decision::Reject {
                    status: 484,
                    reason: format!("tel:{body} is not an E.164 number"),
                },
            }
        }
        "sip" | "sips" => {
            if target.user_is_phone
                && let Some(user) = target.user.as_deref()
            {
                // The user part may carry tel parameters: `+1212…;isub=…`.
                let number = user.split(';').next().unwrap_or("");
                if number.trim_start().starts_with('+') {
                    return match normalize_e164(number) {
                        Some(e164) => Decision::Telephone { e164 },
                        None => Decision::Reject {
                            status: 484,
                            reason: format!("{number} is not an E.164 number"),
                        },
                    };
                }
            }
            let host = target.host.trim().trim_end_matches('.');
            if host.is_empty() {
                return Decision::Reject {
                    status: 400,
                    reason: "no host in the Request-URI".into(),
                };
            }
            let overlay = overlay_domains
                .iter()
                .any(|d| d.trim().trim_end_matches('.').eq_ignore_ascii_case(host))
                || config.serves(host);
            if overlay {
                Decision::Overlay
            } else if target.host_ip().is_some() {
                Decision::Dns
            } else if config.locates_in_overlay(host) {
                Decision::OverlayThenDns
            } else {
                Decision::Dns
            }
        }
        other => Decision::Reject {
            status: 416,
            reason: format!("unsupported URI scheme {other:?}"),
        },
    }
}

/// A `tel:` URI (RFC 3966) to E.164. A global number (`tel:+1-212-555-1234`)
/// is normalised; a local number whose `phone-context` is a global number
/// prefix (`tel:555-1234;phone-context=+1-212`) is completed with it. Local
/// numbers with a domain phone-context, and anything else, give `None`.
pub fn tel_target(uri_text: &str) -> Option<String> {
    let text = uri_text.trim();
    let text = text
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(text);
    if text.len() < 4 || !text[..4].eq_ignore_ascii_case("tel:") {
        return None;
    }
    let body = &text[4..];
    let mut parts = body.split(';');
    let number = parts.next()?.trim();
    if number.starts_with('+') {
        return normalize_e164(number);
    }
    let context = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("phone-context")
            .then(|| v.trim().to_string())
    })?;
    if !context.starts_with('+') {
        return None;
    }
    let local: String = number
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    if local.is_empty() || !local.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let prefix = normalize_e164(&context)?;
    normalize_e164(&format!("{prefix}{local}"))
}

/// The Request-URI for sending `e164` to the PSTN gateway:
/// `sip:<number>@<address>;user=phone` (with `;transport=tcp` before
/// `;user=phone` when the transport is TCP).
///
/// With no prefix rules the number is passed as `+digits`. Otherwise the rule
/// with the longest `prefix` that the digits (after `+`) start with applies
/// (`""` matches every number): `strip` leading digits are removed and `add`
/// is put in front. `None` when no rule matches, when `e164` is not E.164, or
/// when nothing is left of the number.
pub fn pstn_request_uri(e164: &str, pstn: &PstnConfig) -> Option<String> {
    let number = normalize_e164(e164)?;
    let digits = &number[1..];
    let user = if pstn.prefixes.is_empty() {
        number.clone()
    } else {
        let rule = pstn
            .prefixes
            .iter()
            .filter(|r| digits.starts_with(r.prefix.as_str()))
            .max_by_key(|r| r.prefix.len())?;
        let rest = digits.get(rule.strip..)?;
        let user = format!("{}{}", rule.add, rest);
        if user.trim_start_matches('+').is_empty() {
            return None;
        }
        user
    };
    let address = pstn.address.trim();
    let transport = if pstn.is_tcp() { ";transport=tcp" } else { "" };
    Some(format!("sip:{user}@{address}{transport};user=phone"))
}

/// Where a telephone number goes once ENUM has been asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TelRoute {
    /// ENUM gave a SIP URI: route it like any other Request-URI (it may be
    /// an overlay user).
    Uri(String),
    /// No ENUM answer: this Request-URI at the PSTN gateway.
    Pstn(String),
    /// Neither: answer 404 (no rule for the number, or no PSTN gateway).
    NotFound,
}

/// After the ENUM lookup for `e164` (its `sip:`/`sips:` result, or `None`
/// for no record or a failed lookup): the ENUM URI, else the PSTN gateway.
pub fn telephone_route(e164: &str, enum_result: Option<&str>, config: &GatewayConfig) -> TelRoute {
    if let Some(uri) = enum_result {
        let lower = uri.trim().to_ascii_lowercase();
        if lower.starts_with("sip:") || lower.starts_with("sips:") {
            return TelRoute::Uri(uri.trim().to_string());
        }
    }
    match config.pstn.as_ref().and_then(|p| pstn_request_uri(e164, p)) {
        Some(uri) => TelRoute::Pstn(uri),
        None => TelRoute::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PrefixRule;

    fn t(text: &str) -> TargetUri {
        TargetUri::parse(text).unwrap()
    }

    fn overlay() -> Vec<String> {
        vec!["overlay.test".to_string()]
    }

    #[test]
    fn parse_targets() {
        assert_eq!(
            t("sip:alice@Overlay.test:5070;transport=tcp"),
            TargetUri {
                scheme: "sip".into(),
                user: Some("alice".into()),
                host: "Overlay.test".into(),
                user_is_phone: false
            }
        );
        let p = t("<SIPS:+1212@gw.test;user=phone>");
        assert_eq!(p.scheme, "sips");
        assert!(p.user_is_phone);
        assert_eq!(t("sip:[::1]:5060").host, "[::1]");
        assert!(t("sip:[::1]:5060").host_ip().is_some());
        assert_eq!(t("sip:bob:pw@h.test").user.as_deref(), Some("bob"));
        let odd = t("sip:a?b@h.test;user=phone?subject=x@y");
        assert_eq!(
            (odd.user.as_deref(), odd.host.as_str()),
            (Some("a?b"), "h.test")
        );
        assert!(odd.user_is_phone);
        assert_eq!(t("tel:+1-212;x=y").user.as_deref(), Some("+1-212;x=y"));
        assert!(TargetUri::parse("nonsense").is_none());
    }

    #[test]
    fn from_ezk_uri() {
        let uri: SipUri = "sip:+12125551234@gw.test;user=phone".parse().unwrap();
        let target = TargetUri::from_sip_uri(&uri);
        assert_eq!(target.user.as_deref(), Some("+12125551234"));
        assert_eq!(target.host, "gw.test");
        assert!(target.user_is_phone);
        let uri: SipUri = "sips:alice@[2001:db8::1]:5061".parse().unwrap();
        let target = TargetUri::from_sip_uri(&uri);
        assert_eq!(target.scheme, "sips");
        assert_eq!(target.host, "[2001:db8::1]");
    }

    #[test]
    fn decision_table() {
        let mut config = GatewayConfig::default();
        let ov = overlay();
        assert_eq!(
            decide(&t("sip:alice@overlay.test"), &ov, &config),
            Decision::Overlay
        );
        assert_eq!(
            decide(&t("sip:alice@OVERLAY.TEST."), &ov, &config),
            Decision::Overlay
        );
        assert_eq!(
            decide(&t("sips:alice@overlay.test"), &ov, &config),
            Decision::Overlay
        );
        assert_eq!(
            decide(&t("sip:bob@legacy.test"), &ov, &config),
            Decision::Dns
        );
        // config.domains are overlay domains as well.
        config.domains = vec!["dns-only.test".into()];
        assert_eq!(
            decide(&t("sip:bob@dns-only.test"), &[], &config),
            Decision::Overlay
        );

        config.locate_in_overlay = vec!["legacy.test".into()];
        assert_eq!(
            decide(&t("sip:bob@legacy.test"), &ov, &config),
            Decision::OverlayThenDns
        );
        assert_eq!(
            decide(&t("sip:bob@other.test"), &ov, &config),
            Decision::Dns
        );
        config.locate_in_overlay = vec!["*".into()];
        assert_eq!(
            decide(&t("sip:bob@other.test"), &ov, &config),
            Decision::OverlayThenDns
        );
        // Still the overlay itself, and IP literals go straight to DNS.
        assert_eq!(
            decide(&t("sip:alice@overlay.test"), &ov, &config),
            Decision::Overlay
        );
        assert_eq!(
            decide(&t("sip:bob@192.0.2.1:5060"), &ov, &config),
            Decision::Dns
        );

        let tel = Decision::Telephone {
            e164: "+12125551234".into(),
        };
        assert_eq!(decide(&t("tel:+1-212-555-1234"), &ov, &config), tel);
        assert_eq!(
            decide(&t("tel:555-1234;phone-context=+1-212"), &ov, &config),
            tel
        );
        assert_eq!(
            decide(
                &t("sip:+1-212-555-1234@overlay.test;user=phone"),
                &ov,
                &config
            ),
            tel
        );
        assert_eq!(
            decide(&t("sip:+12125551234@legacy.test;user=phone"), &ov, &config),
            tel
        );
        // Without user=phone a '+' user is just a user name.
        assert_eq!(
            decide(&t("sip:+12125551234@overlay.test"), &ov, &config),
            Decision::Overlay
        );
        // A local number with user=phone is routed by its host.
        assert_eq!(
            decide(&t("sip:5551234@legacy.test;user=phone"), &ov, &config),
            Decision::OverlayThenDns
        );

        assert!(matches!(
            decide(&t("tel:555-1234;phone-context=example.com"), &ov, &config),
            Decision::Reject { status: 484, .. }
        ));
        assert!(matches!(
            decide(&t("sip:+12ab@x.test;user=phone"), &ov, &config),
            Decision::Reject { status: 484, .. }
        ));
        assert!(matches!(
            decide(&t("mailto:a@b.test"), &ov, &config),
            Decision::Reject { status: 416, .. }
        ));
    }

    #[test]
    fn tel_uris() {
        assert_eq!(
            tel_target("tel:+1-212-555-1234").as_deref(),
            Some("+12125551234")
        );
        assert_eq!(
            tel_target("<tel:+1-212-555-1234;ext=22>").as_deref(),
            Some("+12125551234")
        );
        assert_eq!(
            tel_target("tel:555-1234;phone-context=+1-212").as_deref(),
            Some("+12125551234")
        );
        assert_eq!(tel_target("tel:555-1234;phone-context=example.com"), None);
        assert_eq!(tel_target("tel:555-1234"), None);
        assert_eq!(tel_target("sip:+12125551234@x.test"), None);
    }

    fn pstn(rules: &[(&str, usize, &str)]) -> PstnConfig {
        PstnConfig {
            address: "pstn.test:5060".into(),
            prefixes: rules
                .iter()
                .map(|(p, s, a)| PrefixRule {
                    prefix: p.to_string(),
                    strip: *s,
                    add: a.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn pstn_prefix_rules() {
        // No rules: pass +digits.
        assert_eq!(
            pstn_request_uri("+1 212 555 1234", &pstn(&[])).as_deref(),
            Some("sip:+12125551234@pstn.test:5060;user=phone")
        );
        let p = pstn(&[("1", 1, ""), ("1212", 4, "9"), ("", 0, "00")]);
        // Longest prefix wins regardless of order.
        assert_eq!(
            pstn_request_uri("+12125551234", &p).as_deref(),
            Some("sip:95551234@pstn.test:5060;user=phone")
        );
        assert_eq!(
            pstn_request_uri("+13125551234", &p).as_deref(),
            Some("sip:3125551234@pstn.test:5060;user=phone")
        );
        // "" matches anything else.
        assert_eq!(
            pstn_request_uri("+442079460000", &p).as_deref(),
            Some("sip:00442079460000@pstn.test:5060;user=phone")
        );
        // Rules exist but none matches.
        let p = pstn(&[("1", 0, "+")]);
        assert_eq!(pstn_request_uri("+442079460000", &p), None);
        assert_eq!(
            pstn_request_uri("+12125551234", &p).as_deref(),
            Some("sip:+12125551234@pstn.test:5060;user=phone")
        );
        // Stripping everything leaves nothing to dial.
        assert_eq!(pstn_request_uri("+1", &pstn(&[("1", 1, "")])), None);
        assert_eq!(pstn_request_uri("+1", &pstn(&[("", 5, "")])), None);
        assert_eq!(pstn_request_uri("not a number", &pstn(&[])), None);
        let mut tcp = pstn(&[]);
        tcp.transport = "TCP".into();
        assert_eq!(
            pstn_request_uri("+1", &tcp).as_deref(),
            Some("sip:+1@pstn.test:5060;transport=tcp;user=phone")
        );
    }

    #[test]
    fn telephone_routes() {
        let mut config = GatewayConfig::default();
        assert_eq!(
            telephone_route("+12125551234", None, &config),
            TelRoute::NotFound
        );
        config.pstn = Some(pstn(&[]));
        assert_eq!(
            telephone_route("+12125551234", Some("sip:alice@overlay.test"), &config),
            TelRoute::Uri("sip:alice@overlay.test".into())
        );
        assert_eq!(
            telephone_route("+12125551234", Some("mailto:a@b"), &config),
            TelRoute::Pstn("sip:+12125551234@pstn.test:5060;user=phone".into())
        );
        assert_eq!(
            telephone_route("+12125551234", None, &config),
            TelRoute::Pstn("sip:+12125551234@pstn.test:5060;user=phone".into())
        );
    }
}
