//! The tokio side of the calls the node answers itself: binds one RTP UDP
//! socket per call from the configured port range, and runs each call's
//! sans-I/O [`Recording`] on it in a task of its own (datagrams and time
//! in, greeting packets out) until the core ends it or it ends itself;
//! the caller's audio then goes back to the core as `Input::Recorded`.
//! A listening call's [`Playback`] runs the same way, its events (a
//! recording deleted, the end) going back as `Input::Playback`. It makes
//! no protocol decision.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::media::playback::{Playback, PlaybackEvent};
use crate::media::recording::Recording;
use crate::voicemail::MediaCall;

/// The calls' sockets and their tasks.
pub struct MediaSockets {
    ip: IpAddr,
    /// Where the search for a free port starts next.
    next: u16,
    /// Sockets bound, waiting for their call's media to start.
    bound: HashMap<MediaCall, std::net::UdpSocket>,
    /// A running call's stop signal.
    running: HashMap<MediaCall, oneshot::Sender<()>>,
    done: mpsc::Sender<(MediaCall, Vec<i16>)>,
    /// Listening calls' events, and their receiver until the driver takes it.
    events: mpsc::Sender<(MediaCall, PlaybackEvent)>,
    events_rx: Option<mpsc::Receiver<(MediaCall, PlaybackEvent)>>,
}

impl MediaSockets {
    /// Sockets on `ip`; ended calls' audio is sent on `done`.
    pub fn new(ip: IpAddr, done: mpsc::Sender<(MediaCall, Vec<i16>)>) -> MediaSockets {
        let (events, events_rx) = mpsc::channel(64);
        MediaSockets {
            ip,
            next: 0,
            bound: HashMap::new(),
            running: HashMap::new(),
            done,
            events,
            events_rx: Some(events_rx),
        }
    }

    /// The listening calls' events (once: the driver keeps the receiver).
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<(MediaCall, PlaybackEvent)>> {
        self.events_rx.take()
    }

    /// Runs `playback` on the socket bound for `call`.
    pub fn start_playback(&mut self, call: MediaCall, playback: Playback) {
        if let Some((socket, stopped)) = self.runnable(call) {
            tokio::spawn(play(call, socket, playback, stopped, self.events.clone()));
        }
    }

    /// The socket bound for `call` as a tokio socket, and the signal that
    /// stops the task about to run on it ([`MediaSockets::end`]).
    fn runnable(
        &mut self,
        call: MediaCall,
    ) -> Option<(tokio::net::UdpSocket, oneshot::Receiver<()>)> {
        let socket = self.bound.remove(&call)?;
        let socket = match tokio::net::UdpSocket::from_std(socket) {
            Ok(s) => s,
            Err(error) => {
                warn!(%error, "RTP socket not usable");
                return None;
            }
        };
        let (stop, stopped) = oneshot::channel();
        self.running.insert(call, stop);
        Some((socket, stopped))
    }

    /// Binds a socket from `low..=high` for `call`: the first free port
    /// after the one taken last.
    pub fn open(&mut self, call: MediaCall, (low, high): (u16, u16)) -> Option<SocketAddr> {
        let span = u32::from(high - low) + 1;
        for step in 0..span {
            let offset = (u32::from(self.next) + step) % span;
            let port = low + offset as u16;
            let Ok(socket) = std::net::UdpSocket::bind((self.ip, port)) else {
                continue;
            };
            if socket.set_nonblocking(true).is_err() {
                continue;
            }
            let local = socket.local_addr().ok()?;
            self.next = ((offset + 1) % span) as u16;
            self.bound.insert(call, socket);
            return Some(local);
        }
        warn!(low, high, "no RTP port free in the range");
        None
    }

    /// The socket bound for `call`, for media run elsewhere (a conference).
    pub fn take(&mut self, call: MediaCall) -> Option<std::net::UdpSocket> {
        self.bound.remove(&call)
    }

    /// Runs `recording` on the socket bound for `call`.
    pub fn start(&mut self, call: MediaCall, recording: Recording) {
        if let Some((socket, stopped)) = self.runnable(call) {
            tokio::spawn(run(call, socket, recording, stopped, self.done.clone()));
        }
    }

    /// Ends the media of `call` (its audio comes back on `done`).
    pub fn end(&mut self, call: MediaCall) {
        self.bound.remove(&call);
        if let Some(stop) = self.running.remove(&call) {
            let _ = stop.send(());
        }
    }

    /// A call whose audio came back is over.
    pub fn finished(&mut self, call: MediaCall) {
        self.running.remove(&call);
    }
}

/// One call's media: pump the recording until it ends.
async fn run(
    call: MediaCall,
    socket: tokio::net::UdpSocket,
    mut recording: Recording,
    mut stopped: oneshot::Receiver<()>,
    done: mpsc::Sender<(MediaCall, Vec<i16>)>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        recording.handle_timeout(now);
        while let Some(packet) = recording.poll_transmit(now) {
            if let Err(error) = socket.send_to(&packet, recording.remote()).await {
                debug!(%error, "RTP send failed");
            }
        }
        if recording.is_ended() {
            break;
        }
        let wake = tokio::time::Instant::from_std(recording.poll_timeout());
        tokio::select! {
            read = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = read {
                    recording.handle_datagram(&buf[..n], from);
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = &mut stopped => recording.end(),
        }
    }
    let late = recording.lateness;
    info!(
        call = call.0,
        greeting_packets = late.packets,
        late_packets = late.over,
        max_late_us = late.max.as_micros() as u64,
        "voicemail media ended"
    );
    let _ = done.send((call, recording.into_samples())).await;
}

/// One listening call's media: pump the playback until it ends, handing
/// its events to the core.
async fn play(
    call: MediaCall,
    socket: tokio::net::UdpSocket,
    mut playback: Playback,
    mut stopped: oneshot::Receiver<()>,
    events: mpsc::Sender<(MediaCall, PlaybackEvent)>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        playback.handle_timeout(now);
        while let Some(packet) = playback.poll_transmit(now) {
            if let Err(error) = socket.send_to(&packet, playback.remote()).await {
                debug!(%error, "RTP send failed");
            }
        }
        let ended = playback.is_ended();
        while let Some(event) = playback.poll_event() {
            let _ = events.send((call, event)).await;
        }
        if ended {
            break;
        }
        let wake = tokio::time::Instant::from_std(playback.poll_timeout());
        tokio::select! {
            read = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = read {
                    playback.handle_datagram(&buf[..n], from, Instant::now());
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = &mut stopped => playback.end(),
        }
    }
}
