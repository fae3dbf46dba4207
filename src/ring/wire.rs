//! The SIP wire form of overlay messages (see `docs/protocol.md`).
