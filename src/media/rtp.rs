//! RTP packets (RFC 3550 §5.1): the fixed header parsed with every length
//! checked, CSRCs and a header extension skipped, padding removed; and the
//! plain packet the node sends (no CSRC, no extension).

/// A parsed RTP packet; `payload` borrows the datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

/// Why a datagram is not an RTP packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtpError {
    #[error("shorter than the 12-byte RTP header")]
    Short,
    #[error("RTP version {0}, not 2")]
    Version(u8),
    #[error("CSRC list, extension or padding past the end")]
    Truncated,
}

/// The fixed header's length.
pub const HEADER: usize = 12;

impl<'a> Packet<'a> {
    /// Parses one datagram.
    pub fn parse(bytes: &'a [u8]) -> Result<Packet<'a>, RtpError> {
        if bytes.len() < HEADER {
            return Err(RtpError::Short);
        }
        let version = bytes[0] >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        let padding = bytes[0] & 0x20 != 0;
        let extension = bytes[0] & 0x10 != 0;
        let csrcs = usize::from(bytes[0] & 0x0f);
        let mut start = HEADER + 4 * csrcs;
        if extension {
            let words = bytes.get(start + 2..start + 4).ok_or(RtpError::Truncated)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
        }
        let mut end = bytes.len();
        if padding {
            let pad = usize::from(*bytes.last().ok_or(RtpError::Truncated)?);
            end = end.checked_sub(pad).ok_or(RtpError::Truncated)?;
        }
        if start > end || pad_zero(padding, bytes) {
            return Err(RtpError::Truncated);
        }
        Ok(Packet {
            marker: bytes[1] & 0x80 != 0,
            payload_type: bytes[1] & 0x7f,
            sequence: u16::from_be_bytes([bytes[2], bytes[3]]),
            timestamp: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            ssrc: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            payload: &bytes[start..end],
        })
    }

    /// The packet as bytes: version 2, no padding, CSRC or extension.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.push(0x80);
        out.push(u8::from(self.marker) << 7 | (self.payload_type & 0x7f));
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(self.payload);
        out
    }
}

/// RFC 3550 §5.1: a padding count of zero is invalid.
fn pad_zero(padding: bool, bytes: &[u8]) -> bool {
    padding && bytes.last() == Some(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_back() {
        let payload = [1u8, 2, 3];
        let packet = Packet {
            marker: true,
            payload_type: 8,
            sequence: 65535,
            timestamp: 0xdead_beef,
            ssrc: 42,
            payload: &payload,
        };
        let bytes = packet.build();
        assert_eq!(Packet::parse(&bytes), Ok(packet));
    }

    #[test]
    fn skips_csrcs_extension_and_padding() {
        let mut bytes = vec![0x80 | 0x20 | 0x10 | 2, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend_from_slice(&[0; 8]); // two CSRCs
        bytes.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // one-word extension
        bytes.extend_from_slice(&[7, 7]);
        bytes.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let packet = Packet::parse(&bytes).expect("valid");
        assert_eq!(packet.payload, &[7, 7]);
        assert_eq!(packet.sequence, 1);
    }

    #[test]
    fn refuses_hostile_lengths() {
        assert_eq!(Packet::parse(&[0x80; 11]), Err(RtpError::Short));
        assert_eq!(Packet::parse(&[0x40; 12]), Err(RtpError::Version(1)));
        // 15 CSRCs announced, none there.
        assert_eq!(Packet::parse(&[0x8f; 12]), Err(RtpError::Truncated));
        // An extension of 65535 words.
        let mut ext = vec![0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[0, 0, 0xff, 0xff]);
        assert_eq!(Packet::parse(&ext), Err(RtpError::Truncated));
        // Padding longer than the packet, and a padding count of zero.
        let mut pad = vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200];
        assert_eq!(Packet::parse(&pad), Err(RtpError::Truncated));
        pad[12] = 0;
        assert_eq!(Packet::parse(&pad), Err(RtpError::Truncated));
        // Every short prefix of a valid packet is handled without panic.
        let good = Packet {
            marker: false,
            payload_type: 0,
            sequence: 1,
            timestamp: 2,
            ssrc: 3,
            payload: &[1, 2, 3],
        }
        .build();
        for n in 0..good.len() {
            let _ = Packet::parse(&good[..n]);
        }
    }
}
