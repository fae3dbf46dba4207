//! How the operator CLI finds a node and talks to its HTTP window: by its
//! data directory (the `control.json` the node writes there: the HTTP and
//! SIP addresses and the control token) or by `--http ADDR`; one bounded
//! HTTP/1.1 request over a plain TCP stream.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// Most bytes of one answer read.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a walk or look-up the node runs for us may take (each question
/// it asks waits a few seconds at most; a ring with gaps takes longer).
pub const SURVEY_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the node is, as the operator named it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NodeAt {
    /// The node's data directory (reads its control.json)
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The node's --http address
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// The node's SIP address (ring and lookup speak SIP to it)
    #[arg(long, value_name = "ADDR")]
    pub sip: Option<SocketAddr>,
    /// Print JSON rather than a table
    #[arg(long)]
    pub json: bool,
}

/// A node found: its HTTP address, SIP address and control token, as known.
pub struct Found {
    pub http: Option<SocketAddr>,
    pub sip: Option<SocketAddr>,
    pub token: Option<String>,
}

impl NodeAt {
    pub fn find(&self) -> Result<Found, String> {
        let mut found = Found {
            http: self.http,
            sip: self.sip,
            token: None,
        };
        if let Some(dir) = &self.data {
            let path = dir.join("control.json");
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "{}: {e} (is a node with --data {} and --http running?)",
                    path.display(),
                    dir.display()
                )
            })?;
            let control: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let addr = |key: &str| control[key].as_str().and_then(|a| a.parse().ok());
            found.http = found.http.or(addr("http"));
            found.sip = found.sip.or(addr("sip"));
            found.token = control["token"].as_str().map(str::to_string);
        }
        if found.http.is_none() && found.sip.is_none() {
            return Err(
                "name the node: --data DIR (its data directory), --http ADDR or --sip ADDR".into(),
            );
        }
        Ok(found)
    }
}

impl Found {
    /// GET `path` from the node's HTTP server, as JSON.
    pub fn get(&self, path: &str) -> Result<Value, String> {
        self.get_within(path, TIMEOUT)
    }

    /// GET `path`, waiting up to `timeout` for the answer.
    pub fn get_within(&self, path: &str, timeout: Duration) -> Result<Value, String> {
        let Some(addr) = self.http else {
            return Err("this needs the node's HTTP server: --data DIR or --http ADDR".into());
        };
        let (status, body) = get(addr, path, self.token.as_deref(), timeout)?;
        if status != 200 {
            return Err(format!("http://{addr}{path}: {status} {}", body.trim()));
        }
        serde_json::from_str(&body).map_err(|e| format!("http://{addr}{path}: not JSON: {e}"))
    }

    /// The node's SIP address: given, or from its `/status`.
    pub fn sip_addr(&self) -> Result<SocketAddr, String> {
        if let Some(sip) = self.sip {
            return Ok(sip);
        }
        let status = self.get("/status")?;
        status["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| "the node's /status names no SIP address".into())
    }
}

/// One HTTP/1.1 GET: the status code and the body.
pub fn get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    request(addr, "GET", path, token, None, timeout)
}

/// One HTTP/1.1 request, with a JSON `body` if given: the status code and
/// the body of the answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let fail = |e: std::io::Error| format!("http://{addr}{path}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .map_err(fail)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("http://{addr}{path}: no HTTP answer"))?;
    let status = head
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("http://{addr}{path}: bad status line"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The body of a chunked answer.
fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let (Some(chunk), Some(after)) = (rest.get(..n), rest.get(n..)) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(chunk);
        text = after.trim_start_matches("\r\n");
    }
    out
}

/// `text` for a URL path segment: unreserved characters and `@` as they
/// are, every other byte percent-encoded.
pub fn path_segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(super::path_segment("a+b@c.d/e"), "a%2Bb@c.d%2Fe");
    }

    #[test]
    fn chunked_bodies_join() {
        assert_eq!(super::dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
