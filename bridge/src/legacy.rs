//! Legacy → overlay: phones of the legacy domain use the gateway as outbound
//! proxy. Their REGISTERs are forwarded to the legacy registrar and, on 2xx,
//! the bindings the registrar accepted are stored in the ring as well, so
//! overlay callers find legacy users without DNS. The node does the I/O;
//! these are the decisions.

use crate::config::GatewayConfig;

/// What to do with a REGISTER whose To (AoR) is in `aor_domain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterRoute {
    /// An overlay domain: the node's own registrar (the ring).
    Overlay,
    /// The legacy domain: forward to `registrar` (`host[:port]`); on 2xx
    /// apply [`mirror_bindings`] to the ring.
    Upstream { registrar: String },
    /// Neither: not ours (403, or proxy it like any request).
    Foreign,
}

/// Where a REGISTER for `aor_domain` goes.
pub fn register_route(
    aor_domain: &str,
    overlay_domains: &[String],
    config: &GatewayConfig,
) -> RegisterRoute {
    let d = aor_domain.trim().trim_end_matches('.');
    let same = |x: &str| x.trim().trim_end_matches('.').eq_ignore_ascii_case(d);
    if overlay_domains.iter().any(|o| same(o)) || config.serves(d) {
        return RegisterRoute::Overlay;
    }
    match &config.upstream {
        Some(up) if same(&up.domain) => RegisterRoute::Upstream {
            registrar: up.registrar.trim().to_string(),
        },
        _ => RegisterRoute::Foreign,
    }
}

/// One Contact of a REGISTER or of its 2xx: the URI (with or without `<>`)
/// and its `expires` parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactEntry {
    pub uri: String,
    pub expires: Option<u32>,
}

/// A change to the ring's copy of a legacy AoR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MirrorOp {
    /// Store (or refresh) `contact` for `expires` seconds.
    Store { contact: String, expires: u32 },
    /// Remove `contact`.
    Remove { contact: String },
    /// `Contact: *` with `Expires: 0`: remove every binding of the AoR.
    RemoveAll,
}

fn bare(uri: &str) -> &str {
    let u = uri.trim();
    u.strip_prefix('<')
        .and_then(|u| u.strip_suffix('>'))
        .unwrap_or(u)
        .trim()
}

/// Two contact URIs name the same binding. A plain comparison: scheme and
/// host case-insensitively, the rest as written (parameters in the same order).
pub fn same_contact(a: &str, b: &str) -> bool {
    let (a, b) = (bare(a), bare(b));
    if a == b {
        return true;
    }
    let split = |u: &str| -> (String, String, String) {
        let (scheme, rest) = u.split_once(':').unwrap_or(("", u));
        let (user, hostrest) = match rest.rsplit_once('@') {
            Some((u, h)) => (u.to_string(), h),
            None => (String::new(), rest),
        };
        let cut = hostrest.find([';', '?']).unwrap_or(hostrest.len());
        let host = hostrest[..cut].to_ascii_lowercase();
        (
            scheme.to_ascii_lowercase(),
            user,
            format!("{host}{}", &hostrest[cut..]),
        )
    };
    split(a) == split(b)
}

/// The expiry the registrar granted `contact`: its `expires` parameter in
/// the 2xx, else the 2xx's `Expires` header. `None` when the 2xx does not
/// list the contact or gives no expiry for it.
pub fn granted_expires(
    contact: &str,
    response_contacts: &[ContactEntry],
    response_expires: Option<u32>,
) -> Option<u32> {
    response_contacts
        .iter()
        .find(|c| same_contact(&c.uri, contact))
        .and_then(|c| c.expires.or(response_expires))
}

/// Registrars choose 3600 s when nobody says (RFC 3261 §10.2.1.1).
const DEFAULT_EXPIRES: u32 = 3600;

/// After the legacy registrar answered a forwarded REGISTER: what to change
/// in the ring. Nothing unless 2xx. `Contact: *` removes everything; each
/// request contact the 2xx lists with a non-zero expiry is stored for that
/// time; the others are removed.
pub fn mirror_bindings(
    request_contacts: &[ContactEntry],
    request_expires: Option<u32>,
    status: u16,
    response_contacts: &[ContactEntry],
    response_expires: Option<u32>,
) -> Vec<MirrorOp> {
    if !(200..300).contains(&status) {
        return Vec::new();
    }
    if request_contacts.iter().any(|c| bare(&c.uri) == "*") {
        return if request_expires == Some(0) {
            vec![MirrorOp::RemoveAll]
        } else {
            Vec::new()
        };
    }
    request_contacts
        .iter()
        .map(|c| {
            let contact = bare(&c.uri).to_string();
            let listed = response_contacts
                .iter()
                .find(|r| same_contact(&r.uri, &c.uri));
            // Listed without any expiry (a registrar that breaks §10.3 step 8):
            // what was asked, else the default.
            let expires = listed.map(|r| {
                r.expires
                    .or(response_expires)
                    .or(c.expires)
                    .or(request_expires)
                    .unwrap_or(DEFAULT_EXPIRES)
            });
            match expires {
                Some(expires) if expires > 0 => MirrorOp::Store { contact, expires },
                _ => MirrorOp::Remove { contact },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;

    fn c(uri: &str, expires: Option<u32>) -> ContactEntry {
        ContactEntry {
            uri: uri.into(),
            expires,
        }
    }

    #[test]
    fn routes() {
        let mut config = GatewayConfig::default();
        let ov = vec!["overlay.test".to_string()];
        assert_eq!(
            register_route("Overlay.Test", &ov, &config),
            RegisterRoute::Overlay
        );
        assert_eq!(
            register_route("legacy.test", &ov, &config),
            RegisterRoute::Foreign
        );
        config.upstream = Some(UpstreamConfig {
            registrar: "127.0.0.1:5080".into(),
            domain: "legacy.test".into(),
            ..Default::default()
        });
        assert_eq!(
            register_route("LEGACY.test.", &ov, &config),
            RegisterRoute::Upstream {
                registrar: "127.0.0.1:5080".into()
            }
        );
        assert_eq!(
            register_route("else.test", &ov, &config),
            RegisterRoute::Foreign
        );
    }

    #[test]
    fn mirror() {
        let req = [c("<sip:bob@10.0.0.5:5062;transport=udp>", None)];
        // The registrar lists every binding of the AoR, ours among them.
        let resp = [
            c("<sip:bob@10.0.0.9>", Some(500)),
            c("<sip:bob@10.0.0.5:5062;transport=udp>", Some(120)),
        ];
        assert_eq!(
            mirror_bindings(&req, Some(3600), 200, &resp, Some(3600)),
            vec![MirrorOp::Store {
                contact: "sip:bob@10.0.0.5:5062;transport=udp".into(),
                expires: 120
            }]
        );
        // Expires header when the contact has no parameter.
        let resp = [c("sip:bob@10.0.0.5:5062;transport=udp", None)];
        assert_eq!(
            mirror_bindings(&req, None, 200, &resp, Some(60)),
            vec![MirrorOp::Store {
                contact: "sip:bob@10.0.0.5:5062;transport=udp".into(),
                expires: 60
            }]
        );
        // Not listed (de-registered) → removed; failures change nothing.
        assert_eq!(
            mirror_bindings(&req, Some(0), 200, &[], None),
            vec![MirrorOp::Remove {
                contact: "sip:bob@10.0.0.5:5062;transport=udp".into()
            }]
        );
        assert!(mirror_bindings(&req, None, 401, &[], None).is_empty());
        assert_eq!(
            mirror_bindings(&[c("*", None)], Some(0), 200, &[], None),
            vec![MirrorOp::RemoveAll]
        );
        assert!(same_contact(
            "sip:bob@HOST.test:5060",
            "<SIP:bob@host.test:5060>"
        ));
        assert!(!same_contact("sip:Bob@host.test", "sip:bob@host.test"));
        assert_eq!(granted_expires("sip:x@y", &[], Some(5)), None);
        assert_eq!(
            granted_expires("sip:x@y", &[c("sip:x@y", None)], None),
            None
        );
        assert_eq!(
            granted_expires("sip:x@y", &[c("sip:x@y", None)], Some(5)),
            Some(5)
        );
        // Listed without any expiry: what the request asked for.
        assert_eq!(
            mirror_bindings(
                &[c("sip:x@y", Some(90))],
                None,
                200,
                &[c("sip:x@y", None)],
                None
            ),
            vec![MirrorOp::Store {
                contact: "sip:x@y".into(),
                expires: 90
            }]
        );
    }
}
