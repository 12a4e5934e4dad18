//! foca's `Runtime` (queues only) and the one ordered timer queue.
//!
//! Job: foca hands its outputs to a `Runtime` while the core calls into it. [`QueueRuntime`]
//! does no I/O: it appends sends, timer requests and notifications to queues that the
//! `GossipCore` drains after each foca call. Timers, foca's and our own ([`TimerEvent`]), must
//! all arrive, in order: [`TimerQueue`] orders them by deadline then by submission sequence.
//! The actor's timer task and the simulator both use it (the simulator for every event).
//! Threads: none. May call: nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cluster::identity::NodeIdentity;

/// Every timer the core can ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerEvent {
    /// A foca timer, handed back to `Foca::handle_timer`.
    Foca(foca::Timer<NodeIdentity>),
    /// While alone: say hello to the seeds again.
    Rejoin,
    /// Metadata anti-entropy, once per probe period: pull missing records, exchange a digest.
    Sync,
    /// Membership anti-entropy: foca-announce to a random member. Carries the generation of
    /// its timer chain; a superseded chain stops when its timer fires.
    Announce(u32),
}

/// Collects foca's outputs for the core to drain.
#[derive(Debug, Default)]
pub struct QueueRuntime {
    pub sends: Vec<(NodeIdentity, Vec<u8>)>,
    pub timers: Vec<(Duration, TimerEvent)>,
    pub notifications: Vec<foca::OwnedNotification<NodeIdentity>>,
}

impl foca::Runtime<NodeIdentity> for QueueRuntime {
    fn notify(&mut self, notification: foca::Notification<'_, NodeIdentity>) {
        self.notifications.push(notification.to_owned());
    }

    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: foca::Timer<NodeIdentity>, after: Duration) {
        self.timers.push((after, TimerEvent::Foca(event)));
    }
}

/// Items ordered by deadline, then by the order they were pushed (FIFO among equal
/// deadlines). Generic over the instant type: `tokio::time::Instant` in the actor, virtual
/// microseconds in the simulator.
#[derive(Debug)]
pub struct TimerQueue<I: Ord + Copy, T> {
    items: BTreeMap<(I, u64), T>,
    seq: u64,
}

impl<I: Ord + Copy, T> Default for TimerQueue<I, T> {
    fn default() -> Self {
        Self {
            items: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<I: Ord + Copy, T> TimerQueue<I, T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, deadline: I, item: T) {
        self.items.insert((deadline, self.seq), item);
        self.seq += 1;
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<I> {
        self.items.keys().next().map(|(d, _)| *d)
    }

    /// Removes and returns the earliest item whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: I) -> Option<(I, T)> {
        let entry = self.items.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let ((deadline, _), item) = entry.remove_entry();
        Some((deadline, item))
    }

    /// Removes and returns the earliest item whatever its deadline.
    pub fn pop_next(&mut self) -> Option<(I, T)> {
        self.items.pop_first().map(|((d, _), item)| (d, item))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Runtime;
    use std::net::SocketAddr;

    #[test]
    fn timers_come_out_by_deadline_then_fifo() {
        let mut q = TimerQueue::new();
        q.push(30u64, "c");
        q.push(10, "a1");
        q.push(20, "b");
        q.push(10, "a2");
        assert_eq!(q.next_deadline(), Some(10));
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(10), Some((10, "a1")));
        assert_eq!(q.pop_due(10), Some((10, "a2")));
        assert_eq!(q.pop_due(25), Some((20, "b")));
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_next(), Some((30, "c")));
        assert!(q.is_empty());
    }

    #[test]
    fn runtime_only_queues() {
        let mut rt = QueueRuntime::default();
        let id = NodeIdentity::new("n", SocketAddr::from(([127, 0, 0, 1], 1)), 1);
        rt.send_to(id.clone(), b"x");
        rt.submit_after(foca::Timer::PeriodicGossip(0), Duration::from_millis(200));
        rt.notify(foca::Notification::MemberUp(&id));
        assert_eq!(rt.sends, vec![(id.clone(), b"x".to_vec())]);
        assert_eq!(rt.timers.len(), 1);
        assert_eq!(
            rt.notifications,
            vec![foca::OwnedNotification::MemberUp(id)]
        );
    }
}
