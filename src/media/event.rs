//! RFC 4733 telephone-events: the 4-byte payload of a key press (event,
//! end bit, volume, duration), its payload type negotiated in SDP.

/// One telephone-event payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyEvent {
    /// 0–9 digits, 10 `*`, 11 `#`, 12–15 A–D (RFC 4733 §3.2).
    pub event: u8,
    /// The last packets of the event carry the end bit.
    pub end: bool,
    pub volume: u8,
    /// In timestamp units (samples at 8 kHz).
    pub duration: u16,
}

impl KeyEvent {
    /// Parses the first event of a payload; `None` when it is too short.
    pub fn parse(payload: &[u8]) -> Option<KeyEvent> {
        let bytes = payload.get(..4)?;
        Some(KeyEvent {
            event: bytes[0],
            end: bytes[1] & 0x80 != 0,
            volume: bytes[1] & 0x3f,
            duration: u16::from_be_bytes([bytes[2], bytes[3]]),
        })
    }

    /// The key as a character (`None` for events that are not keys).
    pub fn key(&self) -> Option<char> {
        match self.event {
            0..=9 => Some(char::from(b'0' + self.event)),
            10 => Some('*'),
            11 => Some('#'),
            12..=15 => Some(char::from(b'A' + self.event - 12)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_key_and_refuses_short_payloads() {
        let event = KeyEvent::parse(&[11, 0x80 | 10, 0x03, 0x20]).expect("four bytes");
        assert_eq!(event.key(), Some('#'));
        assert!(event.end);
        assert_eq!(event.volume, 10);
        assert_eq!(event.duration, 800);
        assert_eq!(KeyEvent::parse(&[7, 0, 0]), None);
        assert_eq!(
            KeyEvent::parse(&[7, 0, 0, 0]).and_then(|e| e.key()),
            Some('7')
        );
        assert_eq!(KeyEvent::parse(&[200, 0, 0, 0]).and_then(|e| e.key()), None);
    }
}
