//! Property tests: the core never panics on arbitrary input, decoding garbage
//! fails cleanly, and the basic replica rules hold for any sequence of requests.

use mesos_operator::log::message::{PromiseOutcome, ReadReply, ReportedEntry};
use mesos_operator::log::replica::Replica;
use mesos_operator::log::{
    decode_sharing, Action, DurableState, Entry, Envelope, LogId, MemberId, Message, Metadata,
    Node, NodeConfig, Proposal, ReplicaStatus,
};
use proptest::prelude::*;

fn members() -> Vec<MemberId> {
    (1..=3)
        .map(|i| MemberId::new(format!("10.0.0.{i}:5050")))
        .collect()
}

fn member() -> impl Strategy<Value = MemberId> {
    prop_oneof![
        (1u8..=3).prop_map(|i| MemberId::new(format!("10.0.0.{i}:5050"))),
        Just(MemberId::new("10.9.9.9:1")),
    ]
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (0u64..6, member()).prop_map(|(round, proposer)| Proposal { round, proposer })
}

fn position() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..40, Just(u64::MAX), Just(u64::MAX - 1)]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Nop),
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(|v| Action::Append(v.into())),
        // Around the size from which a received value shares its frame's buffer.
        proptest::collection::vec(any::<u8>(), 1000..1100).prop_map(|v| Action::Append(v.into())),
        position().prop_map(|to| Action::Truncate { to }),
    ]
}

fn status() -> impl Strategy<Value = ReplicaStatus> {
    prop_oneof![
        Just(ReplicaStatus::Empty),
        Just(ReplicaStatus::Starting),
        Just(ReplicaStatus::Recovering),
        Just(ReplicaStatus::Voting),
    ]
}

fn entries() -> impl Strategy<Value = Vec<(u64, Action)>> {
    proptest::collection::vec((position(), action()), 0..40)
}

fn message() -> impl Strategy<Value = Message> {
    let reported = (position(), proposal(), action(), any::<bool>()).prop_map(
        |(position, accepted, action, learned)| ReportedEntry {
            position,
            accepted,
            action,
            learned,
        },
    );
    prop_oneof![
        (any::<u64>(), any::<u64>())
            .prop_map(|(nonce, incarnation)| Message::StatusRequest { nonce, incarnation }),
        (
            any::<u64>(),
            any::<u64>(),
            status(),
            proptest::option::of((0u64..3).prop_map(LogId)),
            proptest::option::of(proposal()),
            position(),
            position()
        )
            .prop_map(
                |(nonce, incarnation, status, log_id, promised, begin, end)| {
                    Message::StatusResponse {
                        nonce,
                        incarnation,
                        status,
                        log_id,
                        promised,
                        begin,
                        end,
                    }
                }
            ),
        (proposal(), any::<bool>())
            .prop_map(|(proposal, recovery)| Message::PromiseRequest { proposal, recovery }),
        (proposal(), position(), position()).prop_map(|(proposal, begin, end)| {
            Message::PromiseResponse {
                proposal,
                outcome: PromiseOutcome::Promised { begin, end },
            }
        }),
        (proposal(), proptest::option::of(proposal())).prop_map(|(proposal, promised)| {
            Message::PromiseResponse {
                proposal,
                outcome: PromiseOutcome::Rejected { promised },
            }
        }),
        (proposal(), position(), position())
            .prop_map(|(proposal, from, to)| Message::ReadRequest { proposal, from, to }),
        (
            proposal(),
            position(),
            position(),
            position(),
            proptest::collection::vec(reported, 0..10)
        )
            .prop_map(
                |(proposal, from, to, begin, entries)| Message::ReadResponse {
                    proposal,
                    from,
                    to,
                    result: Ok(ReadReply { begin, entries })
                }
            ),
        (proposal(), entries())
            .prop_map(|(proposal, entries)| Message::AcceptRequest { proposal, entries }),
        (
            proposal(),
            proptest::collection::vec(position(), 0..10),
            position()
        )
            .prop_map(|(proposal, p, begin)| Message::AcceptResponse {
                proposal,
                result: Ok(p),
                begin
            }),
        entries().prop_map(|entries| Message::Learned { entries }),
        (proposal(), any::<u64>(), position()).prop_map(|(proposal, seq, learned_end)| {
            Message::Heartbeat {
                proposal,
                seq,
                learned_end,
            }
        }),
        (proposal(), any::<u64>()).prop_map(|(proposal, seq)| Message::HeartbeatResponse {
            proposal,
            seq,
            result: Ok(())
        }),
        (position(), position()).prop_map(|(from, to)| Message::CatchupRequest { from, to }),
        (position(), entries())
            .prop_map(|(begin, entries)| Message::CatchupResponse { begin, entries }),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        member(),
        proptest::option::of((0u64..3).prop_map(LogId)),
        message(),
    )
        .prop_map(|(from, log_id, message)| Envelope {
            from,
            to: MemberId::new("10.0.0.1:5050"),
            log_id,
            message,
        })
}

fn durable(status: ReplicaStatus, n: u64) -> DurableState {
    DurableState {
        metadata: Metadata {
            status,
            log_id: if status == ReplicaStatus::Voting || status == ReplicaStatus::Recovering {
                Some(LogId(1))
            } else {
                None
            },
            promised: None,
            begin: 0,
            learned_below: 0,
        },
        entries: (0..n)
            .map(|p| Entry {
                position: p,
                accepted: Proposal {
                    round: 1,
                    proposer: MemberId::new("10.0.0.2:5050"),
                },
                action: Action::Nop,
                learned: p % 2 == 0,
            })
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary messages, ticks and proposals never panic a node, whatever its
    /// status, and every message it sends is well-addressed.
    #[test]
    fn a_node_never_panics_on_arbitrary_input(
        st in status(),
        held in 0u64..6,
        seed in any::<u64>(),
        inputs in proptest::collection::vec(prop_oneof![
            envelope().prop_map(Some),
            Just(None),
        ], 0..60),
    ) {
        let cfg = NodeConfig::new(MemberId::new("10.0.0.1:5050"), members(), 2, seed);
        let mut node = Node::new(cfg, durable(st, held)).expect("valid config");
        for input in inputs {
            match input {
                Some(env) => node.step(env),
                None => {
                    node.tick();
                    node.propose(vec![1]);
                }
            }
            let ready = node.ready();
            for m in ready.send_now.iter().chain(&ready.messages) {
                prop_assert!(members().contains(&m.to));
                prop_assert!(m.to != *node.id());
                if m.message.is_vote() {
                    prop_assert_eq!(node.status(), ReplicaStatus::Voting);
                }
            }
        }
    }

    /// Decoding garbage fails cleanly; encoding then decoding is the identity.
    #[test]
    fn decoding_is_robust(bytes in proptest::collection::vec(any::<u8>(), 0..200), env in envelope()) {
        let _ = serde_json::from_slice::<Envelope>(&bytes);
        let text = serde_json::to_vec(&env).expect("encodes");
        let back: Envelope = serde_json::from_slice(&text).expect("decodes");
        prop_assert_eq!(back, env);
    }

    /// How the driver decodes a received payload: values that share its buffer
    /// decode to exactly what was sent, and garbage or a cut payload still fails
    /// cleanly.
    #[test]
    fn decoding_received_payloads_with_shared_values_is_exact(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        env in envelope(),
    ) {
        let _ = decode_sharing::<Envelope>(&bytes::Bytes::from(bytes));
        let encoded = bytes::Bytes::from(postcard::to_allocvec(&env).expect("encodes"));
        let received: Envelope = decode_sharing(&encoded).expect("decodes");
        prop_assert_eq!(received, env);
        let cut = encoded.slice(..encoded.len() - 1);
        prop_assert!(decode_sharing::<Envelope>(&cut).is_err());
    }

    /// Replica rules under any sequence of promises and accepts: the promise never
    /// goes down, nothing is accepted below it, a learned value never changes.
    #[test]
    fn replica_rules_hold(ops in proptest::collection::vec((0u8..4, proposal(), 0u64..8, action()), 0..80)) {
        let mut r = Replica::from_durable(durable(ReplicaStatus::Voting, 0));
        let mut learned: std::collections::BTreeMap<u64, Action> = Default::default();
        for (kind, p, pos, a) in ops {
            let before = r.promised().cloned();
            match kind {
                0 => { let _ = r.promise(&p); }
                1 | 2 => {
                    let res = r.accept(&p, pos, &a);
                    if before.as_ref() > Some(&p) {
                        prop_assert!(res.is_err());
                    }
                }
                _ => {
                    r.learn(pos, &a, None);
                    learned.entry(pos).or_insert(a);
                }
            }
            prop_assert!(r.promised() >= before.as_ref());
            for (pos, a) in &learned {
                let e = r.entry(*pos).expect("learned entry kept");
                prop_assert!(e.learned);
                prop_assert_eq!(&e.action, a);
            }
        }
        let _ = r.take_pending();
    }
}
