//! Sending envelopes between members, behind a trait. The in-memory impl is a
//! shared mailbox per member, for tests and examples; the simulator has its own
//! faulty network, and the TCP transport comes later.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::message::Envelope;
use super::types::MemberId;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("member {0} is unknown to the transport")]
    UnknownMember(MemberId),
    #[error("transport is closed")]
    Closed,
}

pub trait Transport {
    /// Hands one envelope to the network (best effort: Paxos tolerates loss).
    fn send(&mut self, envelope: Envelope) -> Result<(), TransportError>;
    /// The next envelope addressed to this member, if any.
    fn receive(&mut self) -> Option<Envelope>;
}

/// Bound on one mailbox; older messages are dropped beyond it (loss is allowed).
pub const MAX_MAILBOX_MESSAGES: usize = 10_000;

type Mailboxes = Arc<Mutex<BTreeMap<MemberId, VecDeque<Envelope>>>>;

/// One member's endpoint on an in-memory hub.
#[derive(Clone, Debug)]
pub struct MemTransport {
    me: MemberId,
    hub: Mailboxes,
}

/// Creates connected endpoints, one per member.
pub fn mem_transports(members: &[MemberId]) -> Vec<MemTransport> {
    let hub: Mailboxes = Arc::new(Mutex::new(
        members
            .iter()
            .map(|m| (m.clone(), VecDeque::new()))
            .collect(),
    ));
    members
        .iter()
        .map(|m| MemTransport {
            me: m.clone(),
            hub: hub.clone(),
        })
        .collect()
}

impl Transport for MemTransport {
    fn send(&mut self, envelope: Envelope) -> Result<(), TransportError> {
        let mut hub = self.hub.lock().map_err(|_| TransportError::Closed)?;
        let q = hub
            .get_mut(&envelope.to)
            .ok_or_else(|| TransportError::UnknownMember(envelope.to.clone()))?;
        if q.len() >= MAX_MAILBOX_MESSAGES {
            q.pop_front();
        }
        q.push_back(envelope);
        Ok(())
    }

    fn receive(&mut self) -> Option<Envelope> {
        let mut hub = self.hub.lock().ok()?;
        hub.get_mut(&self.me)?.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::message::Message;

    #[test]
    fn mem_transport_delivers_to_the_addressee_only() {
        let ids = vec![MemberId::new("a:1"), MemberId::new("b:1")];
        let mut t = mem_transports(&ids);
        let env = Envelope {
            from: ids[0].clone(),
            to: ids[1].clone(),
            log_id: None,
            message: Message::StatusRequest {
                nonce: 1,
                incarnation: 2,
            },
        };
        t[0].send(env.clone()).unwrap();
        assert!(t[0].receive().is_none());
        assert_eq!(t[1].receive(), Some(env.clone()));
        let mut bad = env;
        bad.to = MemberId::new("zz:1");
        assert!(t[0].send(bad).is_err());
    }
}
