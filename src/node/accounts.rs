//! The HTTP routes of users' own accounts: `POST /signup` (claim a name
//! with a password) and `GET`/`PUT /buddies` (her buddy list, with her
//! password as HTTP Basic credentials). They carry passwords, so they are
//! served only where nobody can read them on the way: over HTTPS, or on a
//! loopback listener (`docs/security.md`, "Sign-up"); elsewhere 403. The
//! decisions are the core's (`core/accounts.rs`); this file reads and
//! writes HTTP.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;

use super::http::{Query, Shared, ask, stopping};
use crate::core::{AccountAnswer, AccountRequest};

/// Longest body these routes read.
pub const MAX_BODY: usize = 16 * 1024;

/// What `POST /signup` reads: `user` as `name@domain` (or `name` with
/// `domain`), or only `domain` for a name the node picks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    user: Option<String>,
    domain: Option<String>,
    password: String,
}

/// What `PUT /buddies` reads.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuddiesBody {
    buddies: Vec<String>,
}

fn refused_in_clear() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({
            "error": "passwords travel only over HTTPS or to a loopback listener"
        })),
    )
        .into_response()
}

fn answered(answer: Option<AccountAnswer>) -> Response {
    let Some(answer) = answer else {
        return stopping();
    };
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(answer.body)).into_response();
    if let Some(seconds) = answer.retry_after
        && let Ok(value) = seconds.to_string().parse()
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    if answer.status == 401 {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"p2psip\", charset=\"UTF-8\""),
        );
    }
    response
}

fn bad(why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

pub async fn signup(
    State(shared): State<Shared>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    if !shared.private {
        return refused_in_clear();
    }
    let Ok(body) = serde_json::from_slice::<SignupBody>(&body) else {
        return bad("a JSON object with user (name@domain) and password wanted");
    };
    let (user, domain) = match (body.user, body.domain) {
        (Some(user), domain) => match user.split_once('@') {
            Some((name, host)) if domain.is_none() => (Some(name.to_string()), host.to_string()),
            None if domain.is_some() => (Some(user), domain.unwrap_or_default()),
            _ => return bad("user is name@domain, or name with domain"),
        },
        (None, Some(domain)) => (None, domain),
        (None, None) => return bad("user (name@domain) or domain wanted"),
    };
    let request = AccountRequest::Signup {
        from: from.ip(),
        user,
        domain,
        password: body.password,
    };
    answered(ask(&shared, |tx| Query::Account(request, tx)).await).into_response()
}

/// `Authorization: Basic base64(user@domain:password)`.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 1024 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn unauthorized() -> Response {
    answered(Some(AccountAnswer {
        status: 401,
        body: serde_json::json!({ "error": "Basic credentials (user@domain, password) wanted" }),
        retry_after: None,
    }))
}

pub async fn get_buddies(
    State(shared): State<Shared>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !shared.private {
        return refused_in_clear();
    }
    let Some((aor, password)) = basic(&headers) else {
        return unauthorized();
    };
    let request = AccountRequest::Buddies {
        from: from.ip(),
        aor,
        password,
        set: None,
    };
    answered(ask(&shared, |tx| Query::Account(request, tx)).await)
}

pub async fn put_buddies(
    State(shared): State<Shared>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !shared.private {
        return refused_in_clear();
    }
    let Some((aor, password)) = basic(&headers) else {
        return unauthorized();
    };
    let Ok(body) = serde_json::from_slice::<BuddiesBody>(&body) else {
        return bad("a JSON object with buddies (a list of sip: URIs) wanted");
    };
    let request = AccountRequest::Buddies {
        from: from.ip(),
        aor,
        password,
        set: Some(body.buddies),
    };
    answered(ask(&shared, |tx| Query::Account(request, tx)).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read_and_junk_is_not() {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("carol@example.test:pa:ss");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {encoded}").parse().expect("value"),
        );
        assert_eq!(
            basic(&headers),
            Some(("carol@example.test".into(), "pa:ss".into()))
        );
        for junk in ["Bearer abc", "Basic !!!", "Basic", "Basic Y2Fyb2w="] {
            headers.insert(header::AUTHORIZATION, junk.parse().expect("value"));
            assert_eq!(basic(&headers), None, "{junk}");
        }
    }
}
