//! The simulation's event trace: every delivered message (virtual time,
//! sender, receiver, first line) and every outcome a phone or the scripted
//! registrar sees, folded into a stable 64-bit FNV-1a hash as it goes.
//! Two runs with the same seed and script give the same hash; the lines
//! themselves are kept only when asked (they run to hundreds of thousands
//! in a big run).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The trace of one run.
#[derive(Clone, Debug)]
pub struct Trace {
    hash: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Outcomes recorded (phones, registrar, node outputs of note).
    pub outcomes: Vec<String>,
    /// Every line, when [`Trace::keep_lines`] is set.
    pub lines: Vec<String>,
    pub keep_lines: bool,
    scratch: String,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hash: FNV_OFFSET,
            messages: 0,
            outcomes: Vec::new(),
            lines: Vec::new(),
            keep_lines: false,
            scratch: String::new(),
        }
    }
}

impl Trace {
    /// The hash of everything traced so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    fn fold(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
        // A line separator, so that "ab"+"c" and "a"+"bc" differ.
        self.hash ^= 0x0a;
        self.hash = self.hash.wrapping_mul(FNV_PRIME);
    }

    /// A message delivered at `at` from `from` to `to`.
    pub fn message(&mut self, at: Duration, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.messages += 1;
        let first = first_line(bytes);
        self.scratch.clear();
        let _ = write!(self.scratch, "{} {from} > {to} {first}", at.as_micros());
        let line = std::mem::take(&mut self.scratch);
        self.fold(line.as_bytes());
        if self.keep_lines {
            self.lines.push(line.clone());
        }
        self.scratch = line;
    }

    /// Something a participant saw, e.g. `alice call 3 -> 200`.
    pub fn outcome(&mut self, at: Duration, what: &str) {
        let line = format!("{} ! {what}", at.as_micros());
        self.fold(line.as_bytes());
        if self.keep_lines {
            self.lines.push(line.clone());
        }
        self.outcomes.push(line);
    }
}

/// The start line of a SIP message, lossily decoded.
pub fn first_line(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_order_sensitive() {
        let a: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:5060".parse().unwrap();
        let mut one = Trace::default();
        one.message(
            Duration::from_millis(1),
            a,
            b,
            b"INVITE sip:x SIP/2.0\r\n\r\n",
        );
        one.outcome(Duration::from_millis(2), "x");
        let mut two = Trace::default();
        two.outcome(Duration::from_millis(2), "x");
        two.message(
            Duration::from_millis(1),
            a,
            b,
            b"INVITE sip:x SIP/2.0\r\n\r\n",
        );
        assert_ne!(one.hash(), two.hash());
        let mut three = Trace::default();
        three.message(
            Duration::from_millis(1),
            a,
            b,
            b"INVITE sip:x SIP/2.0\r\n\r\n",
        );
        three.outcome(Duration::from_millis(2), "x");
        assert_eq!(one.hash(), three.hash());
        // FNV-1a of the empty trace is the offset basis: a fixed value.
        assert_eq!(Trace::default().hash(), 0xcbf2_9ce4_8422_2325);
    }
}
