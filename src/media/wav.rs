//! The WAV file of a recording: RIFF, one `fmt ` chunk (PCM, 8 kHz, mono,
//! 16-bit) and one `data` chunk. Written by hand (44 bytes of header) and
//! read back only as far as the node's own files need.

use super::SAMPLE_RATE;

/// Bytes before the samples.
pub const HEADER: usize = 44;

/// The WAV file of these samples.
pub fn write(samples: &[i16]) -> Vec<u8> {
    let data = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX - 36);
    let mut out = Vec::with_capacity(HEADER + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    out.extend_from_slice(&(SAMPLE_RATE * 2).to_le_bytes()); // bytes per second
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// The samples of a WAV file this module wrote; `None` for anything else.
pub fn read(bytes: &[u8]) -> Option<Vec<i16>> {
    let head = bytes.get(..HEADER)?;
    if &head[..4] != b"RIFF" || &head[8..16] != b"WAVEfmt " || &head[36..40] != b"data" {
        return None;
    }
    let data = u32::from_le_bytes([head[40], head[41], head[42], head[43]]) as usize;
    let body = bytes.get(HEADER..HEADER.checked_add(data)?)?;
    Some(
        body.chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_header_and_reads_back() {
        let samples = [0i16, 1, -1, i16::MAX, i16::MIN];
        let file = write(&samples);
        assert_eq!(file.len(), HEADER + 10);
        assert_eq!(&file[22..24], &[1, 0]);
        assert_eq!(&file[24..28], &8000u32.to_le_bytes());
        assert_eq!(read(&file).as_deref(), Some(&samples[..]));
        assert_eq!(read(&file[..50]), None);
        assert_eq!(read(b"RIFF"), None);
    }
}
