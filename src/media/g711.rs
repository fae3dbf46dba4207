//! G.711 (ITU-T G.711, RFC 3551 §4.5.14): µ-law (PCMU, payload type 0)
//! and A-law (PCMA, payload type 8), one byte per 16-bit linear sample.

/// One of the two G.711 laws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Law {
    /// µ-law, RTP payload type 0.
    Pcmu,
    /// A-law, RTP payload type 8.
    Pcma,
}

impl Law {
    /// The static RTP payload type (RFC 3551 table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Law::Pcmu => 0,
            Law::Pcma => 8,
        }
    }

    /// The SDP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Law::Pcmu => "PCMU",
            Law::Pcma => "PCMA",
        }
    }

    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Pcmu => ulaw_encode(sample),
            Law::Pcma => alaw_encode(sample),
        }
    }

    pub fn decode(self, byte: u8) -> i16 {
        match self {
            Law::Pcmu => ulaw_decode(byte),
            Law::Pcma => alaw_decode(byte),
        }
    }
}

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// µ-law of a linear sample.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut value = i32::from(sample);
    let sign = if value < 0 {
        value = -value;
        0x80
    } else {
        0
    };
    value = value.min(CLIP) + BIAS;
    let exponent = (7 - (value << 17).leading_zeros().min(7)) as i32;
    let mantissa = (value >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// The linear sample of a µ-law byte.
pub fn ulaw_decode(byte: u8) -> i16 {
    let byte = !byte;
    let exponent = i32::from((byte >> 4) & 0x07);
    let mantissa = i32::from(byte & 0x0f);
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if byte & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }) as i16
}

/// A-law of a linear sample.
pub fn alaw_encode(sample: i16) -> u8 {
    let mut value = i32::from(sample) >> 3; // 13-bit
    let sign = if value >= 0 {
        0x80
    } else {
        value = -value - 1;
        0
    };
    let value = value.min(0x0fff);
    let byte = if value < 32 {
        (value >> 1) as u8
    } else {
        let exponent = 31 - (value as u32).leading_zeros() - 4; // 1..=7
        let mantissa = (value >> exponent) & 0x0f;
        ((exponent << 4) as u8) | mantissa as u8
    };
    (byte | sign) ^ 0x55
}

/// The linear sample of an A-law byte.
pub fn alaw_decode(byte: u8) -> i16 {
    let byte = byte ^ 0x55;
    let exponent = i32::from((byte >> 4) & 0x07);
    let mantissa = i32::from(byte & 0x0f);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if byte & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Silence and the extremes, as in the G.711 tables.
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_decode(0xaa), 32256);
        assert_eq!(alaw_decode(0x2a), -32256);
    }

    #[test]
    fn every_byte_decodes_and_encodes_back() {
        for law in [Law::Pcmu, Law::Pcma] {
            for byte in 0..=255u8 {
                let sample = law.decode(byte);
                let again = law.encode(sample);
                // µ-law has two zeros (0x7f and 0xff): both decode to 0.
                assert!(
                    again == byte || law.decode(again) == sample,
                    "{law:?} {byte:#x} → {sample} → {again:#x}"
                );
            }
        }
    }

    #[test]
    fn error_stays_within_the_step() {
        for law in [Law::Pcmu, Law::Pcma] {
            for sample in (i16::MIN..=i16::MAX).step_by(7) {
                let back = i32::from(law.decode(law.encode(sample)));
                let error = (back - i32::from(sample)).abs();
                // The largest quantisation step of either law is 1024 (µ) / 1024 (A).
                assert!(error <= 1100, "{law:?} {sample} → {back}");
            }
        }
    }
}
