//! Media for the calls the node answers itself (issue 12, first slice:
//! voicemail recording). Everything here is sans-I/O: RTP packets
//! ([`rtp`]), G.711 ([`g711`]), RFC 4733 key events ([`event`]), the SDP
//! offer/answer ([`sdp`]), the WAV file ([`wav`]) and one recording call as
//! a state machine fed packets and time ([`recording`]), and one listening
//! call playing recordings back ([`playback`]); the tokio side
//! (`node/media.rs`) only moves datagrams.

pub mod event;
pub mod g711;
pub mod playback;
pub mod recording;
pub mod rtp;
pub mod sdp;
pub mod wav;

/// G.711's sample rate, and so of every recording (samples per second).
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms packet at [`SAMPLE_RATE`].
pub const SAMPLES_PER_PACKET: usize = 160;
