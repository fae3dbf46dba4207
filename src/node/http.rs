//! The node's HTTP window: `/` (the status page), `/status` (JSON view of
//! the node and its place in the ring), `/metrics` (Prometheus text), and
//! `/turn` (the TURN servers of the ring and the one chosen), and
//! the operator's control channel under `/control/` (registrations, items),
//! which needs the token the node keeps in its data directory; users'
//! `/signup` and `/buddies` (`accounts.rs`); the same over TLS with
//! `https` (`https.rs`); users' voicemail under
//! `/voicemail/USER@DOMAIN[/N.wav]`, which needs her digest credentials
//! (RFC 7616, checked by the core). Handlers ask
//! the driver, which owns the state, through a channel; they never touch it.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{mpsc, oneshot};

/// The file in the data directory that tells the operator CLI where the
/// node's HTTP server is and the token of its control channel (mode 0600).
pub const CONTROL_FILE: &str = "control.json";

/// Prometheus text exposition format 0.0.4.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A question for the driver.
pub enum Query {
    Status(oneshot::Sender<serde_json::Value>),
    Metrics(oneshot::Sender<String>),
    /// The TURN servers of the ring, ranked, and the one chosen (`/turn`).
    Turn(oneshot::Sender<serde_json::Value>),
    /// The registrations held here (control channel).
    Registrations(oneshot::Sender<serde_json::Value>),
    /// Every item held here (control channel).
    Items(oneshot::Sender<serde_json::Value>),
    /// Walk the ring from here, as a member (control channel).
    Ring(oneshot::Sender<serde_json::Value>),
    /// Look an AOR up through the ring, as a member (control channel):
    /// the answer, or why there is none.
    Lookup(String, oneshot::Sender<Result<serde_json::Value, String>>),
    /// A user's sign-up or buddy list (`/signup`, `/buddies`).
    Account(
        crate::core::AccountRequest,
        oneshot::Sender<crate::core::AccountAnswer>,
    ),
    /// A user's voicemail: recording `number` (1 the newest) as WAV, or
    /// the listing; checked against her digest credentials by the core.
    Voicemail {
        aor: String,
        number: Option<usize>,
        authorization: Option<String>,
        uri: String,
        reply: oneshot::Sender<crate::core::Downloaded>,
    },
}

#[derive(Clone)]
pub(super) struct Shared {
    queries: mpsc::Sender<Query>,
    /// The control channel's token; `None`: no control channel (no data directory).
    token: Option<String>,
    /// Nobody can read what travels to this listener: it is on loopback
    /// (or speaks HTTPS). Only then are passwords taken (`accounts.rs`).
    pub(super) private: bool,
}

/// A new control token: 32 random bytes in hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes [`CONTROL_FILE`] into `dir`, readable by its owner only.
pub fn write_control(dir: &Path, http: SocketAddr, sip: SocketAddr, token: &str) -> io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(CONTROL_FILE);
    let tmp = dir.join(format!("{CONTROL_FILE}.tmp"));
    let text =
        serde_json::json!({ "http": http.to_string(), "sip": sip.to_string(), "token": token });
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let written = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.to_string().as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    written.map_err(|e| io::Error::new(e.kind(), format!("control file {}: {e}", path.display())))
}

/// Binds `addr` and serves until the runtime stops; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    queries: mpsc::Sender<Query>,
    token: Option<String>,
) -> io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(Shared {
        queries,
        token,
        private: local.ip().is_loopback(),
    });
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let _ = axum::serve(listener, service).await;
    });
    Ok(local)
}

/// The same window over TLS (`https`): binds `addr`, serves until the
/// runtime stops; returns the bound address. Passwords are taken here
/// whatever the address.
pub async fn serve_tls(
    addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    queries: mpsc::Sender<Query>,
    token: Option<String>,
) -> io::Result<SocketAddr> {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(Shared {
        queries,
        token,
        private: true,
    });
    // `tap_io` makes the peer's address available as ConnectInfo.
    let listener = super::https::TlsListener::new(listener, acceptor)?.tap_io(|_| {});
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let _ = axum::serve(listener, service).await;
    });
    Ok(local)
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/turn", get(turn))
        .route("/control/registrations", get(registrations))
        .route("/control/items", get(items))
        .route("/control/ring", get(ring))
        .route("/control/lookup/{aor}", get(lookup))
        .route("/signup", axum::routing::post(super::accounts::signup))
        .route(
            "/buddies",
            get(super::accounts::get_buddies).put(super::accounts::put_buddies),
        )
        .route("/voicemail/{aor}", get(voicemail_listing))
        .route("/voicemail/{aor}/{file}", get(voicemail_file))
        .layer(axum::extract::DefaultBodyLimit::max(
            super::accounts::MAX_BODY,
        ))
        .with_state(shared)
}

async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        super::status_page::HTML,
    )
}

/// Asks the driver and waits for its answer.
pub(super) async fn ask<T>(
    shared: &Shared,
    query: impl FnOnce(oneshot::Sender<T>) -> Query,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    shared.queries.send(query(tx)).await.ok()?;
    rx.await.ok()
}

pub(super) fn stopping() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "node stopping").into_response()
}

async fn status(State(shared): State<Shared>) -> Response {
    match ask(&shared, Query::Status).await {
        Some(value) => axum::Json(value).into_response(),
        None => stopping(),
    }
}

/// `/turn`: the TURN servers advertised in the ring, ranked from this
/// node, and the one to use (`chosen`, null when none is known).
async fn turn(State(shared): State<Shared>) -> Response {
    match ask(&shared, Query::Turn).await {
        Some(value) => axum::Json(value).into_response(),
        None => stopping(),
    }
}

async fn metrics(State(shared): State<Shared>) -> Response {
    match ask(&shared, Query::Metrics).await {
        Some(text) => (
            [(header::CONTENT_TYPE, METRICS_TYPE)],
            prometheus_text(text),
        )
            .into_response(),
        None => stopping(),
    }
}

/// The encoder writes OpenMetrics; Prometheus' 0.0.4 text has no `# EOF`.
fn prometheus_text(text: String) -> String {
    match text.strip_suffix("# EOF\n") {
        Some(body) => body.to_string(),
        None => text,
    }
}

/// `Authorization: Bearer TOKEN` matches the node's token; else the refusal.
fn refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &shared.token else {
        return Some(
            (
                StatusCode::NOT_FOUND,
                "no control channel: the node runs without a data directory (--data)",
            )
                .into_response(),
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        None
    } else {
        Some(
            (
                StatusCode::UNAUTHORIZED,
                "control channel: missing or wrong token",
            )
                .into_response(),
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn registrations(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&shared, &headers) {
        return refused;
    }
    match ask(&shared, Query::Registrations).await {
        Some(value) => axum::Json(value).into_response(),
        None => stopping(),
    }
}

async fn items(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&shared, &headers) {
        return refused;
    }
    match ask(&shared, Query::Items).await {
        Some(value) => axum::Json(value).into_response(),
        None => stopping(),
    }
}

async fn ring(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&shared, &headers) {
        return refused;
    }
    match ask(&shared, Query::Ring).await {
        Some(value) => axum::Json(value).into_response(),
        None => stopping(),
    }
}

/// `/control/lookup/USER@DOMAIN` (percent-encoded).
async fn lookup(
    State(shared): State<Shared>,
    headers: HeaderMap,
    axum::extract::Path(aor): axum::extract::Path<String>,
) -> Response {
    if let Some(refused) = refusal(&shared, &headers) {
        return refused;
    }
    if !is_aor(&aor) {
        return (
            StatusCode::BAD_REQUEST,
            "/control/lookup/USER@DOMAIN wanted",
        )
            .into_response();
    }
    let aor = aor.to_ascii_lowercase();
    match ask(&shared, |tx| Query::Lookup(aor, tx)).await {
        Some(Ok(value)) => axum::Json(value).into_response(),
        Some(Err(why)) => (StatusCode::BAD_GATEWAY, why).into_response(),
        None => stopping(),
    }
}

/// `/voicemail/USER@DOMAIN`: her recordings, newest first, as JSON.
async fn voicemail_listing(
    State(shared): State<Shared>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    axum::extract::Path(aor): axum::extract::Path<String>,
) -> Response {
    voicemail(&shared, &headers, &uri, aor, None).await
}

/// `/voicemail/USER@DOMAIN/N.wav`: recording N (1 the newest) as WAV.
async fn voicemail_file(
    State(shared): State<Shared>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    axum::extract::Path((aor, file)): axum::extract::Path<(String, String)>,
) -> Response {
    let number = file
        .strip_suffix(".wav")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| (1..=1000).contains(n));
    let Some(number) = number else {
        return (StatusCode::NOT_FOUND, "/voicemail/USER@DOMAIN/N.wav wanted").into_response();
    };
    voicemail(&shared, &headers, &uri, aor, Some(number)).await
}

async fn voicemail(
    shared: &Shared,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    aor: String,
    number: Option<usize>,
) -> Response {
    use crate::core::Downloaded;
    if !is_aor(&aor) {
        return (StatusCode::NOT_FOUND, "/voicemail/USER@DOMAIN wanted").into_response();
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 4096)
        .map(str::to_string);
    let query = |reply| Query::Voicemail {
        aor: aor.to_ascii_lowercase(),
        number,
        authorization,
        uri: uri.path().to_string(),
        reply,
    };
    match ask(shared, query).await {
        Some(Downloaded::Wav(wav)) => ([(header::CONTENT_TYPE, "audio/wav")], wav).into_response(),
        Some(Downloaded::Listing(json)) => {
            ([(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        Some(Downloaded::Challenge(values)) => {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                "voicemail: her digest credentials wanted",
            )
                .into_response();
            for value in values {
                if let Ok(value) = header::HeaderValue::from_str(&value) {
                    response
                        .headers_mut()
                        .append(header::WWW_AUTHENTICATE, value);
                }
            }
            response
        }
        Some(Downloaded::NotFound(why)) => (StatusCode::NOT_FOUND, why).into_response(),
        Some(Downloaded::Unavailable) | None => stopping(),
    }
}

/// `USER@DOMAIN`, both parts there, short enough to be an address.
pub fn is_aor(text: &str) -> bool {
    text.len() <= 512
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        && text
            .split_once('@')
            .is_some_and(|(u, d)| !u.is_empty() && !d.is_empty() && !d.contains('@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lose_the_openmetrics_eof() {
        let text = "# TYPE a counter\na_total 1\n# EOF\n".to_string();
        assert_eq!(prometheus_text(text), "# TYPE a counter\na_total 1\n");
        assert_eq!(prometheus_text("x 1\n".into()), "x 1\n");
    }

    #[test]
    fn lookups_want_an_address_of_record() {
        assert!(is_aor("alice@example.com"));
        for bad in ["alice", "@example.com", "alice@", "a@b@c", "a b@c", "a\n@b"] {
            assert!(!is_aor(bad), "{bad:?}");
        }
        assert!(!is_aor(&format!("{}@b", "a".repeat(600))));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert_eq!(new_token().len(), 64);
    }
}
