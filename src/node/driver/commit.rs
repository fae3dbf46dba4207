//! Group commit: the items changed by the wake-ups within a short window
//! are written to disk in one transaction (one fsync), and everything the
//! core sends after the first of them is held until that commit. So a 200
//! still leaves only after the binding it accepted is durable, and what is
//! sent keeps the core's order, but at a few thousand REGISTERs a second
//! one commit covers several of them instead of one each.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::ring::Change;
use crate::sip::transaction::Peer;

/// How long the first change of a group may wait for others: a phone
/// retransmits a REGISTER only after T1 (500 ms), and at 2,000/s this lets
/// about twenty REGISTERs share one commit.
pub(super) const WINDOW: Duration = Duration::from_millis(10);
/// A group this large is committed at once, whatever the window.
pub(super) const MAX_CHANGES: usize = 512;
/// Held transmits beyond this commit at once too (bounds the memory held).
const MAX_HELD: usize = 1024;

/// The changes not yet on disk and what waits for them.
pub(super) struct CommitWindow {
    window: Duration,
    changes: Vec<Change>,
    held: Vec<(Peer, Bytes)>,
    /// When the open group must be committed; `None`: no group open.
    due: Option<Instant>,
}

/// What a due commit writes, then sends.
pub(super) struct Group {
    pub changes: Vec<Change>,
    pub held: Vec<(Peer, Bytes)>,
}

impl CommitWindow {
    /// `window`: zero commits each wake-up's changes at its end.
    pub(super) fn new(window: Duration) -> CommitWindow {
        CommitWindow {
            window,
            changes: Vec::new(),
            held: Vec::new(),
            due: None,
        }
    }

    /// Changes to write: opens a group (due a window from `now`) if none is.
    pub(super) fn add(&mut self, changes: Vec<Change>, now: Instant) {
        if changes.is_empty() {
            return;
        }
        if self.due.is_none() {
            self.due = Some(now + self.window);
        }
        self.changes.extend(changes);
    }

    /// A transmit: held while a group is open, else handed back to be sent.
    pub(super) fn hold(&mut self, to: Peer, bytes: Bytes) -> Option<(Peer, Bytes)> {
        if self.due.is_none() {
            return Some((to, bytes));
        }
        self.held.push((to, bytes));
        None
    }

    /// When the open group is due, if one is.
    pub(super) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The open group, when its time has come (or it is full): to be
    /// committed, then its held transmits sent.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<Group> {
        let due = self.due?;
        let full = self.changes.len() >= MAX_CHANGES || self.held.len() >= MAX_HELD;
        if now < due && !full {
            return None;
        }
        self.take()
    }

    /// The open group whatever its time (at shutdown).
    pub(super) fn take(&mut self) -> Option<Group> {
        self.due.take()?;
        Some(Group {
            changes: std::mem::take(&mut self.changes),
            held: std::mem::take(&mut self.held),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::NodeId;
    use crate::sip::transaction::TransportKind;

    fn change(name: &str) -> Change {
        Change::Delete {
            key: NodeId::of_key("alice@overlay.test"),
            name: name.into(),
        }
    }

    fn peer() -> Peer {
        Peer {
            transport: TransportKind::Udp,
            addr: "127.0.0.1:5060".parse().expect("addr"),
        }
    }

    #[test]
    fn nothing_is_held_while_no_change_waits() {
        let mut window = CommitWindow::new(WINDOW);
        assert!(window.hold(peer(), Bytes::from_static(b"a")).is_some());
        window.add(Vec::new(), Instant::now());
        assert!(window.due().is_none());
        assert!(window.hold(peer(), Bytes::from_static(b"b")).is_some());
    }

    #[test]
    fn sends_after_a_change_wait_for_its_commit_in_order_and_groups_join() {
        let t0 = Instant::now();
        let mut window = CommitWindow::new(WINDOW);
        window.add(vec![change("a")], t0);
        assert!(window.hold(peer(), Bytes::from_static(b"200 a")).is_none());
        // A later wake-up within the window joins the group; the due time stays.
        let t1 = t0 + WINDOW / 2;
        window.add(vec![change("b")], t1);
        assert!(window.hold(peer(), Bytes::from_static(b"200 b")).is_none());
        assert_eq!(window.due(), Some(t0 + WINDOW));
        assert!(window.take_due(t1).is_none(), "not due yet");
        let group = window.take_due(t0 + WINDOW).expect("due");
        assert_eq!(group.changes, vec![change("a"), change("b")]);
        let sent: Vec<&[u8]> = group.held.iter().map(|(_, b)| b.as_ref()).collect();
        assert_eq!(sent, vec![&b"200 a"[..], &b"200 b"[..]]);
        // Closed again: the next transmit goes at once.
        assert!(window.due().is_none());
        assert!(window.hold(peer(), Bytes::from_static(b"c")).is_some());
    }

    #[test]
    fn a_full_group_is_due_at_once_and_a_zero_window_at_the_end_of_its_wake_up() {
        let t0 = Instant::now();
        let mut window = CommitWindow::new(WINDOW);
        window.add(
            (0..MAX_CHANGES).map(|i| change(&i.to_string())).collect(),
            t0,
        );
        assert_eq!(
            window.take_due(t0).map(|g| g.changes.len()),
            Some(MAX_CHANGES)
        );
        let mut at_once = CommitWindow::new(Duration::ZERO);
        at_once.add(vec![change("a")], t0);
        assert!(at_once.hold(peer(), Bytes::from_static(b"x")).is_none());
        assert!(at_once.take_due(t0).is_some());
    }

    #[test]
    fn shutdown_takes_an_open_group_before_its_time() {
        let t0 = Instant::now();
        let mut window = CommitWindow::new(WINDOW);
        assert!(window.take().is_none());
        window.add(vec![change("a")], t0);
        assert_eq!(window.take().map(|g| g.changes.len()), Some(1));
        assert!(window.take().is_none());
    }
}
