//! Cutting SIP messages out of a byte stream (TCP, TLS).
//!
//! Two steps, as in mini-redis: [`check`] says whether a whole message is in
//! the buffer and how long it is (head up to the blank line, then exactly
//! Content-Length bytes of body); the caller then splits those bytes off and
//! hands them to [`Message::parse`](super::message::Message::parse).
//! CRLF keep-alives between messages (RFC 5626 §3.5.1) are reported apart so
//! the transport can answer a double-CRLF ping with a single CRLF pong.
//! A STUN message (RFC 8489 §6.2.2: STUN and SIP share the connection) is
//! told from SIP by its first byte and cookie and framed by its own length
//! ([`super::stun::frame_len`]), at most 1,500 bytes.

use super::message::{MAX_MESSAGE_SIZE, find_head_end};
use super::stun;

/// What the front of a stream buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not enough bytes yet.
    Incomplete,
    /// `n` bytes of CRLF keep-alive; `ping` when they include a double CRLF.
    KeepAlive { len: usize, ping: bool },
    /// A whole message of `len` bytes.
    Message { len: usize },
    /// A whole STUN message of `len` bytes.
    Stun { len: usize },
}

/// Why a stream can no longer be framed; the connection should be closed
/// (after a 400 when the head was readable).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message head larger than {MAX_MESSAGE_SIZE} bytes")]
    HeadTooLarge,
    #[error("Content-Length {0} exceeds the {MAX_MESSAGE_SIZE}-byte limit")]
    BodyTooLarge(usize),
    #[error("bad Content-Length")]
    BadContentLength,
    #[error("bad STUN message: {0}")]
    Stun(stun::Malformed),
}

/// Looks at the front of `buf` and tells what is there.
pub fn check(buf: &[u8]) -> Result<Frame, FrameError> {
    let crlf = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if crlf > 0 {
        let ping = buf[..crlf].windows(4).any(|w| w == b"\r\n\r\n");
        if crlf < buf.len() || ping || crlf >= 4 {
            return Ok(Frame::KeepAlive { len: crlf, ping });
        }
        return Ok(Frame::Incomplete);
    }
    if stun::looks_like_stun(buf) {
        return match stun::frame_len(buf).map_err(FrameError::Stun)? {
            Some(len) => Ok(Frame::Stun { len }),
            None => Ok(Frame::Incomplete),
        };
    }
    let Some(head_len) = find_head_end(buf) else {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(FrameError::HeadTooLarge);
        }
        return Ok(Frame::Incomplete);
    };
    if head_len > MAX_MESSAGE_SIZE {
        return Err(FrameError::HeadTooLarge);
    }
    let body_len = content_length(&buf[..head_len])?;
    let total = head_len.saturating_add(body_len);
    if total > MAX_MESSAGE_SIZE {
        return Err(FrameError::BodyTooLarge(body_len));
    }
    if buf.len() < total {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Message { len: total })
}

/// The Content-Length (or compact `l`) of a message head; 0 when absent.
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = std::str::from_utf8(line[colon + 1..].trim_ascii())
                .map_err(|_| FrameError::BadContentLength)?;
            return value.parse().map_err(|_| FrameError::BadContentLength);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_messages_in_one_read_are_two_frames() {
        let one = b"MESSAGE sip:a@b SIP/2.0\r\nl: 5\r\n\r\nhello";
        let mut buf = one.to_vec();
        buf.extend_from_slice(b"OPTIONS sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(check(&buf), Ok(Frame::Message { len: one.len() }));
        assert_eq!(
            check(&buf[one.len()..]),
            Ok(Frame::Message {
                len: buf.len() - one.len()
            })
        );
    }

    #[test]
    fn waits_for_the_body() {
        let partial = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nhel";
        assert_eq!(check(partial), Ok(Frame::Incomplete));
        assert_eq!(
            check(b"OPTIONS sip:b SIP/2.0\r\nVia: x"),
            Ok(Frame::Incomplete)
        );
    }

    #[test]
    fn keepalives_and_limits() {
        assert_eq!(
            check(b"\r\n\r\n"),
            Ok(Frame::KeepAlive { len: 4, ping: true })
        );
        assert_eq!(
            check(b"\r\nOPTIONS"),
            Ok(Frame::KeepAlive {
                len: 2,
                ping: false
            })
        );
        assert_eq!(
            check(b"A sip:b SIP/2.0\r\nContent-Length: 99999999\r\n\r\n"),
            Err(FrameError::BodyTooLarge(99999999))
        );
        assert_eq!(
            check(b"A sip:b SIP/2.0\r\nContent-Length: x\r\n\r\n"),
            Err(FrameError::BadContentLength)
        );
        let huge = vec![b'a'; MAX_MESSAGE_SIZE + 1];
        assert_eq!(check(&huge), Err(FrameError::HeadTooLarge));
        let max = format!("OPTIONS sip:x SIP/2.0\r\nl: {}\r\n\r\n", usize::MAX);
        assert!(
            matches!(check(max.as_bytes()), Err(FrameError::BodyTooLarge(_))),
            "a Content-Length near usize::MAX must not overflow"
        );
    }

    #[test]
    fn stun_then_sip_in_one_read_are_two_frames() {
        let binding = stun::binding_request([9; 12], true);
        let mut buf = binding.clone();
        buf.extend_from_slice(b"OPTIONS sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(check(&buf), Ok(Frame::Stun { len: binding.len() }));
        assert!(matches!(
            check(&buf[binding.len()..]),
            Ok(Frame::Message { .. })
        ));
        assert_eq!(check(&binding[..10]), Ok(Frame::Incomplete));
        let mut classic = binding.clone();
        classic[4] = 0;
        assert_eq!(
            check(&classic),
            Err(FrameError::Stun(stun::Malformed::NoCookie))
        );
    }
}
