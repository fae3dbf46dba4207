//! ChannelData messages (RFC 8656 §12.4): a channel number, a length, and
//! the application data, padded to four bytes on streams (over UDP the
//! padding may be left out).
//!
//! RFC 8656 narrowed the channel numbers to 0x4000–0x4FFF; RFC 5766 allowed
//! 0x4000–0x7FFE, and clients of that time (coturn's own test client among
//! them) still pick numbers above 0x4FFF. Both are accepted: nothing else
//! on the TURN port starts with those bytes.

/// The channel numbers a client may bind (RFC 5766 §11, a superset of RFC 8656 §12's).
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFE;
/// ChannelData header: channel number and length.
pub const HEADER_LEN: usize = 4;

/// True when a datagram starts as ChannelData does (top bits 01), not STUN (00).
pub fn looks_like_channel_data(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| b & 0xC0 == 0x40)
}

/// The channel and the data of a ChannelData datagram; `None` when the
/// channel number is out of range or the length does not fit the bytes.
pub fn parse(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let header = bytes.get(..HEADER_LEN)?;
    let channel = u16::from_be_bytes([header[0], header[1]]);
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if !CHANNELS.contains(&channel) {
        return None;
    }
    let data = bytes.get(HEADER_LEN..HEADER_LEN + length)?;
    // What follows may be padding (at most three bytes), nothing else.
    (bytes.len() - HEADER_LEN - length < 4).then_some((channel, data))
}

/// A ChannelData message for `channel` carrying `data` (unpadded: UDP).
pub fn frame(channel: u16, data: &[u8]) -> Option<Vec<u8>> {
    let length = u16::try_from(data.len()).ok()?;
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(data);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_round_trips_and_bad_frames_are_refused() {
        let bytes = frame(0x4001, b"hello").expect("fits");
        assert!(looks_like_channel_data(&bytes));
        assert_eq!(parse(&bytes), Some((0x4001, &b"hello"[..])));
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(parse(&padded), Some((0x4001, &b"hello"[..])));
        padded.push(0);
        assert_eq!(parse(&padded), None, "more than padding after the data");
        assert_eq!(parse(&bytes[..6]), None, "shorter than its length");
        assert_eq!(parse(&frame(0x7FFF, b"x").expect("fits")), None, "reserved");
        assert_eq!(
            parse(&frame(0x5000, b"x").expect("fits")),
            Some((0x5000, &b"x"[..])),
            "RFC 5766's range"
        );
        assert_eq!(parse(&[0x40]), None);
        assert!(!looks_like_channel_data(&[0x00, 0x01]));
    }
}
