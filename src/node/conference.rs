//! The tokio side of conferences: one task per room runs the room's
//! sans-I/O [`Mixer`] (datagrams and time in, mixed packets out); each
//! participant's RTP socket (bound from the port range by
//! [`MediaSockets`](super::media::MediaSockets), as for voicemail) has a
//! reader task that hands her datagrams to the room's task. The core says
//! who joins and leaves (`Output::JoinConference`, `LeaveConference`);
//! the room's task ends when the core says the last one left. It makes no
//! protocol decision.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::conference::mixer::Mixer;
use crate::media::sdp::Offer;
use crate::voicemail::MediaCall;

/// Datagrams waiting for a room's task at most (beyond: dropped).
const QUEUE: usize = 4096;
/// A datagram's bytes read at most.
const MAX_DATAGRAM: usize = 2048;

/// What the driver tells a room's task.
enum Command {
    Join {
        call: MediaCall,
        socket: std::net::UdpSocket,
        offer: Offer,
        ssrc: u32,
        pin: Option<String>,
    },
    Leave {
        call: MediaCall,
    },
}

/// The rooms this node mixes, by room address.
#[derive(Default)]
pub struct ConferenceRooms {
    rooms: HashMap<String, mpsc::UnboundedSender<Command>>,
}

impl ConferenceRooms {
    /// `call` joins `room` on `socket` (the room's task starts with the first).
    pub fn join(
        &mut self,
        room: String,
        call: MediaCall,
        socket: std::net::UdpSocket,
        offer: Offer,
        ssrc: u32,
        pin: Option<String>,
    ) {
        let command = Command::Join {
            call,
            socket,
            offer,
            ssrc,
            pin,
        };
        let sender = self.rooms.entry(room.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            info!(%room, "conference room opened");
            tokio::spawn(run(room, rx));
            tx
        });
        if sender.send(command).is_err() {
            warn!(call = call.0, "the room's mixer is gone");
        }
    }

    /// `call` leaves `room`; `last`: the room ends.
    pub fn leave(&mut self, room: &str, call: MediaCall, last: bool) {
        if let Some(sender) = self.rooms.get(room) {
            let _ = sender.send(Command::Leave { call });
        }
        if last {
            // Dropping the sender ends the task once it has read the rest.
            self.rooms.remove(room);
        }
    }
}

/// A participant's socket and the task reading it.
struct Seat {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

/// One room: the mixer, pumped until the driver drops the room.
async fn run(room: String, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut mixer = Mixer::new();
    let mut seats: HashMap<MediaCall, Seat> = HashMap::new();
    let (heard_tx, mut heard) = mpsc::channel::<(MediaCall, Vec<u8>, SocketAddr)>(QUEUE);
    loop {
        mixer.handle_timeout(Instant::now());
        for out in mixer.drain_transmits() {
            if let Some(seat) = seats.get(&out.call)
                && let Err(error) = seat.socket.try_send_to(&out.bytes, out.to)
            {
                debug!(%error, "RTP send failed");
            }
        }
        let wake = mixer.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            command = commands.recv() => match command {
                None => break,
                Some(Command::Join { call, socket, offer, ssrc, pin }) => {
                    let socket = match UdpSocket::from_std(socket) {
                        Ok(s) => Arc::new(s),
                        Err(error) => {
                            warn!(%error, "RTP socket not usable");
                            continue;
                        }
                    };
                    let reader = tokio::spawn(read(call, socket.clone(), heard_tx.clone()));
                    seats.insert(call, Seat { socket, reader });
                    mixer.join(call, offer, ssrc, pin, Instant::now());
                }
                Some(Command::Leave { call }) => {
                    if let Some(seat) = seats.remove(&call) {
                        seat.reader.abort();
                    }
                    mixer.leave(call);
                }
            },
            Some((call, bytes, from)) = heard.recv() => mixer.handle_datagram(call, &bytes, from),
            _ = sleep_until(wake) => {}
        }
    }
    for seat in seats.into_values() {
        seat.reader.abort();
    }
    let late = mixer.lateness;
    info!(
        %room,
        ticks = late.ticks,
        late_ticks = late.over,
        skipped = late.skipped,
        max_late_us = late.max.as_micros() as u64,
        "conference room closed"
    );
}

/// Sleeps until `wake`, or for ever without one.
async fn sleep_until(wake: Option<tokio::time::Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Hands every datagram on one participant's socket to the room.
async fn read(
    call: MediaCall,
    socket: Arc<UdpSocket>,
    heard: mpsc::Sender<(MediaCall, Vec<u8>, SocketAddr)>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if heard.try_send((call, buf[..n].to_vec(), from)).is_err() && heard.is_closed() {
                    return;
                }
            }
            Err(error) => {
                debug!(%error, "RTP receive failed");
                tokio::task::yield_now().await;
            }
        }
    }
}
