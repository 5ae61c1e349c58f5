use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

pub(crate) fn agent(id: &str) -> AgentRecord {
    AgentRecord {
        id: id.to_owned(),
        hostname: format!("{id}.example.com"),
        port: 5051,
        resources: vec![
            Resource::scalar("cpus", 8.0),
            Resource::scalar("mem", 32768.0),
            Resource {
                name: "ports".to_owned(),
                kind: ValueType::Ranges,
                scalar: None,
                ranges: Some(Ranges {
                    range: vec![ValueRange {
                        begin: 31000,
                        end: 32000,
                    }],
                }),
                set: None,
            },
        ],
        registered_time_ns: 1_700_000_000_000_000_000,
    }
}

fn admit(id: &str) -> Operation {
    Operation::AdmitAgent { agent: agent(id) }
}

fn window(hosts: &[&str]) -> MaintenanceWindow {
    MaintenanceWindow {
        machine_ids: hosts
            .iter()
            .map(|h| MachineId {
                hostname: Some((*h).to_owned()),
                ip: None,
            })
            .collect(),
        unavailability: Unavailability {
            start: TimeInfo { nanoseconds: 1 },
            duration: Some(DurationInfo {
                nanoseconds: 3_600_000_000_000,
            }),
        },
    }
}

#[test]
fn admitting_twice_or_after_gone_is_refused_and_leaves_the_registry_untouched() {
    let mut registry = Registry::default();
    registry.apply(&admit("a")).unwrap();
    let before = registry.clone();
    assert_eq!(
        registry.apply(&admit("a")),
        Err(OperationError::AgentAlreadyAdmitted("a".to_owned()))
    );
    registry
        .apply(&Operation::MarkAgentGone {
            id: "a".to_owned(),
            time_ns: 5,
        })
        .unwrap();
    assert_ne!(registry, before);
    let gone = registry.clone();
    assert_eq!(
        registry.apply(&admit("a")),
        Err(OperationError::AgentGone("a".to_owned()))
    );
    assert_eq!(registry, gone);
    // Marking gone again is a no-op, as in Mesos.
    registry
        .apply(&Operation::MarkAgentGone {
            id: "a".to_owned(),
            time_ns: 9,
        })
        .unwrap();
    assert_eq!(registry, gone);
}

#[test]
fn unreachable_agents_are_readmitted_and_unknown_ones_not_found() {
    let mut registry = Registry::default();
    registry.apply(&admit("a")).unwrap();
    registry
        .apply(&Operation::MarkAgentUnreachable {
            id: "a".to_owned(),
            time_ns: 3,
        })
        .unwrap();
    assert_eq!(registry.agent_location("a"), AgentLocation::Unreachable);
    registry.apply(&admit("a")).unwrap();
    assert_eq!(registry.agent_location("a"), AgentLocation::Admitted);
    assert_eq!(
        registry.apply(&Operation::MarkAgentGone {
            id: "zz".to_owned(),
            time_ns: 1
        }),
        Err(OperationError::AgentNotFound("zz".to_owned()))
    );
}

#[test]
fn validation_counts_pending_operations_of_the_same_batch() {
    let registry = Registry::default();
    let mut pending = Pending::default();
    registry.validate(&admit("a"), &pending).unwrap();
    pending.record(&admit("a"));
    assert_eq!(
        registry.validate(&admit("a"), &pending),
        Err(OperationError::AgentAlreadyAdmitted("a".to_owned()))
    );
    let gone = Operation::MarkAgentGone {
        id: "a".to_owned(),
        time_ns: 1,
    };
    registry.validate(&gone, &pending).unwrap();
    let quota = Operation::UpdateQuotas {
        configs: vec![QuotaConfig {
            role: "dev".to_owned(),
            guarantees: BTreeMap::from([("cpus".to_owned(), Scalar { value: 1.0 })]),
            limits: BTreeMap::new(),
        }],
    };
    let remove = Operation::RemoveQuota {
        role: "dev".to_owned(),
    };
    assert!(registry.validate(&remove, &pending).is_err());
    pending.record(&quota);
    registry.validate(&remove, &pending).unwrap();
}

#[test]
fn bad_content_is_refused() {
    let registry = Registry::default();
    let none = Pending::default();
    let bad_weights = [f64::NAN, -1.0, 0.0, f64::INFINITY];
    for weight in bad_weights {
        let op = Operation::UpdateWeights {
            weights: vec![WeightInfo {
                role: "dev".to_owned(),
                weight,
            }],
        };
        assert!(registry.validate(&op, &none).is_err(), "{weight}");
    }
    for role in ["", "-a", "a//b", "a/..", "a b", "/a"] {
        let op = Operation::UpdateWeights {
            weights: vec![WeightInfo {
                role: role.to_owned(),
                weight: 1.0,
            }],
        };
        assert!(registry.validate(&op, &none).is_err(), "{role:?}");
    }
    for id in ["", ".", "..", "a/b", "a\nb"] {
        assert!(registry.validate(&admit(id), &none).is_err(), "{id:?}");
    }
    let mut negative = agent("a");
    negative.resources[0].scalar = Some(Scalar { value: -1.0 });
    assert!(registry
        .validate(&Operation::AdmitAgent { agent: negative }, &none)
        .is_err());
    let twice = MaintenanceSchedule {
        windows: vec![window(&["h1"]), window(&["h1"])],
    };
    assert!(twice.validate().is_err());
    let empty = MaintenanceSchedule {
        windows: vec![window(&[])],
    };
    assert!(empty.validate().is_err());
    let over = QuotaConfig {
        role: "dev".to_owned(),
        guarantees: BTreeMap::from([("cpus".to_owned(), Scalar { value: 2.0 })]),
        limits: BTreeMap::from([("cpus".to_owned(), Scalar { value: 1.0 })]),
    };
    assert!(over.validate().is_err());
}

#[test]
fn entries_roundtrip_and_unknown_versions_are_corruption() {
    let bytes = encode_batch(7, 1, vec![admit("a")]);
    assert_eq!(bytes[0], ENTRY_VERSION);
    assert_eq!(
        decode_entry(3, &bytes).unwrap(),
        Entry::Batch {
            writer: 7,
            seq: 1,
            ops: vec![admit("a")]
        }
    );
    let mut registry = Registry::default();
    registry.apply(&admit("a")).unwrap();
    let snapshot = encode_snapshot(7, 2, Some(3), &registry);
    assert_eq!(
        decode_entry(4, &snapshot).unwrap(),
        Entry::Snapshot {
            writer: 7,
            seq: 2,
            base_position: Some(3),
            registry
        }
    );
    let mut future = bytes.clone();
    future[0] = ENTRY_VERSION + 1;
    assert!(decode_entry(5, &future)
        .unwrap_err()
        .reason
        .contains("version"));
    assert!(decode_entry(5, &[]).is_err());
    assert!(decode_entry(5, &bytes[..bytes.len() - 1]).is_err());
    let mut machine = RegistryMachine::default();
    assert!(machine.apply_entry(1, &[ENTRY_VERSION, b'{']).is_err());
}

#[test]
fn a_stale_snapshot_is_ignored_by_every_member() {
    let mut machine = RegistryMachine::default();
    machine
        .apply_entry(1, &encode_batch(1, 1, vec![admit("a")]))
        .unwrap();
    let stale = encode_snapshot(1, 2, Some(1), machine.registry());
    machine
        .apply_entry(2, &encode_batch(2, 1, vec![admit("b")]))
        .unwrap();
    let applied = machine.apply_entry(3, &stale).unwrap();
    assert_eq!(
        applied,
        Applied::Snapshot {
            writer: 1,
            seq: 2,
            accepted: false,
            first_position: 3,
        }
    );
    assert_eq!(machine.registry().agents.len(), 2);
}

/// A registry of `agents` agents behind a few batches, and the machine holding it.
fn filled(agents: usize) -> RegistryMachine {
    let mut machine = RegistryMachine::default();
    let ids: Vec<String> = (0..agents).map(|i| format!("agent-{i:06}")).collect();
    for (n, batch) in ids.chunks(1_000).enumerate() {
        let ops = batch.iter().map(|id| admit(id)).collect();
        machine
            .apply_entry(n as u64 + 1, &encode_batch(1, n as u64, ops))
            .unwrap();
    }
    machine
}

/// `machine`'s registry as chunk entries at positions from `from`.
fn chunked(machine: &RegistryMachine, from: u64, chunk_bytes: usize) -> Vec<(u64, Vec<u8>)> {
    let snapshot = encode_snapshot(1, 99, machine.last_entry_position(), machine.registry());
    encode_snapshot_chunks(1, 99, &snapshot, chunk_bytes)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| (from + i as u64, chunk))
        .collect()
}

#[test]
fn applying_an_own_snapshot_without_decoding_equals_decoding_it() {
    let mut decoded = filled(30);
    let mut own = decoded.clone();
    let snapshot = encode_snapshot(1, 99, Some(1), decoded.registry());
    let chunks = chunked(&decoded, 2, 1_000);
    assert!(chunks.len() > 3, "{} chunks", chunks.len());
    let mut by_decoding = Vec::new();
    let mut by_comparison = Vec::new();
    for (position, chunk) in &chunks {
        by_decoding.push(decoded.apply_entry(*position, chunk).unwrap());
        by_comparison.push(
            own.apply_entry_known(*position, chunk, Some(&snapshot))
                .unwrap(),
        );
    }
    assert_eq!(by_decoding, by_comparison);
    assert_eq!(
        by_decoding.last(),
        Some(&Applied::Snapshot {
            writer: 1,
            seq: 99,
            accepted: true,
            first_position: 2
        })
    );
    assert_eq!(decoded, own);
    assert_eq!(own.snapshot_position(), Some(2));
    assert_eq!(own.last_entry_position(), chunks.last().map(|c| c.0));
}

#[test]
fn a_chunked_snapshot_restores_a_member_that_starts_at_its_first_chunk() {
    let mut writer = filled(200);
    let chunks = chunked(&writer, 10, 4_096);
    assert!(chunks.len() >= 10, "{} chunks", chunks.len());
    for (position, chunk) in &chunks {
        assert!(chunk.len() <= 4_096 + 200, "{} bytes", chunk.len());
        writer.apply_entry(*position, chunk).unwrap();
    }
    let after = chunks.last().unwrap().0 + 1;
    let batch = encode_batch(1, 7, vec![admit("late")]);
    writer.apply_entry(after, &batch).unwrap();
    // A member whose log was truncated to the snapshot's first chunk.
    let mut log = chunks.clone();
    log.push((after, batch));
    let restored = replay(&log);
    assert_eq!(restored.registry(), writer.registry());
    assert_eq!(restored.registry().agents.len(), 201);
    assert_eq!(restored.snapshot_position(), Some(10));
}

#[test]
fn a_half_written_chunked_snapshot_is_never_applied() {
    let base = filled(100);
    let chunks = chunked(&base, 10, 2_048);
    let count = chunks.len();
    assert!(count >= 4);
    let later = encode_batch(2, 1, vec![admit("after-failover")]);
    // The writer lost the lead after some chunks; the next leader writes on.
    for cut in [1, count / 2, count - 1] {
        let mut machine = base.clone();
        for (position, chunk) in &chunks[..cut] {
            assert!(matches!(
                machine.apply_entry(*position, chunk).unwrap(),
                Applied::SnapshotChunk { .. }
            ));
        }
        machine.apply_entry(100, &later).unwrap();
        assert_eq!(machine.snapshot_position(), None, "cut {cut}");
        assert_eq!(machine.registry().agents.len(), 101);
        // Its remaining chunks, chosen later, are orphans and change nothing.
        for (position, chunk) in &chunks[cut..] {
            let applied = machine.apply_entry(200 + *position, chunk).unwrap();
            assert!(
                matches!(applied, Applied::SnapshotChunk { .. }),
                "{applied:?}"
            );
        }
        assert_eq!(machine.snapshot_position(), None);
        assert_eq!(machine.registry().agents.len(), 101);
    }
    // A chunk missing in the middle (a Nop where it should be) spoils it too.
    let mut machine = base.clone();
    for (position, chunk) in chunks.iter().filter(|(p, _)| *p != 11) {
        machine.apply_entry(*position, chunk).unwrap();
    }
    assert_eq!(machine.snapshot_position(), None);
    assert_eq!(machine.registry(), base.registry());
    // A log that begins past a snapshot's first chunk is corrupt, not restored.
    let mut empty = RegistryMachine::default();
    assert!(empty.apply_entry(chunks[1].0, &chunks[1].1).is_err());
}

#[test]
fn damaged_chunks_are_corruption() {
    let base = filled(20);
    let chunks = chunked(&base, 10, 1_024);
    let mut machine = base.clone();
    let (last, rest) = chunks.split_last().unwrap();
    for (position, chunk) in rest {
        machine.apply_entry(*position, chunk).unwrap();
    }
    let mut flipped = last.1.clone();
    let end = flipped.len() - 1;
    flipped[end] ^= 1;
    let err = machine.apply_entry(last.0, &flipped).unwrap_err();
    assert!(err.reason.contains("checksum"), "{err}");
    assert!(decode_chunk(1, &[SNAPSHOT_CHUNK_TAG, 0, 0]).is_err());
    assert!(decode_chunk(1, &[SNAPSHOT_CHUNK_TAG, 0, 0, 0, 9, b'{']).is_err());
    assert!(encode_snapshot_chunks(1, 1, b"x", 0).is_err());
    assert!(encode_snapshot_chunks(1, 1, b"x", SNAPSHOT_CHUNK_BYTES + 1).is_err());
    assert!(matches!(
        encode_snapshot_chunks(1, 1, &vec![0; MAX_SNAPSHOT_CHUNKS + 1], 1),
        Err(ChunkingError::TooManyChunks { .. })
    ));
}

/// At the real size: 50,000 agents (~16 MB encoded, as one entry beyond what
/// a frame carries) snapshot into chunks of the default size, each far under
/// the frame limit, and restore the same registry.
#[test]
fn a_fifty_thousand_agent_snapshot_chunks_within_frames_and_restores() {
    let writer = filled(50_000);
    let snapshot = encode_snapshot(1, 99, writer.last_entry_position(), writer.registry());
    let chunks = chunked(&writer, 100, SNAPSHOT_CHUNK_BYTES);
    let largest = chunks.iter().map(|c| c.1.len()).max().unwrap();
    eprintln!(
        "50,000 agents: snapshot {} bytes in {} chunks, largest chunk entry {largest} bytes",
        snapshot.len(),
        chunks.len()
    );
    assert!(snapshot.len() > 12 << 20, "{} bytes", snapshot.len());
    assert!(chunks.len() >= 100);
    assert!(largest <= SNAPSHOT_CHUNK_BYTES + 256);
    let restored = replay(&chunks);
    assert_eq!(restored.registry(), writer.registry());
}

// Operations drawn from a small id and role space, so they collide often.
fn operation() -> impl Strategy<Value = Operation> {
    let id = prop::sample::select(vec!["a", "b", "c", "d", "e"]);
    let role = prop::sample::select(vec!["dev", "ops", "*", "a/b"]);
    prop_oneof![
        id.clone().prop_map(admit),
        (id.clone(), any::<i64>()).prop_map(|(id, t)| Operation::MarkAgentUnreachable {
            id: id.to_owned(),
            time_ns: t
        }),
        (id.clone(), any::<i64>()).prop_map(|(id, t)| Operation::MarkAgentGone {
            id: id.to_owned(),
            time_ns: t
        }),
        (role.clone(), -1.0..4.0f64).prop_map(|(role, weight)| Operation::UpdateWeights {
            weights: vec![WeightInfo {
                role: role.to_owned(),
                weight
            }]
        }),
        (role.clone(), 0.0..4.0f64, 0.0..4.0f64).prop_map(|(role, g, l)| {
            Operation::UpdateQuotas {
                configs: vec![QuotaConfig {
                    role: role.to_owned(),
                    guarantees: BTreeMap::from([("cpus".to_owned(), Scalar { value: g })]),
                    limits: BTreeMap::from([("cpus".to_owned(), Scalar { value: l })]),
                }],
            }
        }),
        role.prop_map(|role| Operation::RemoveQuota {
            role: role.to_owned()
        }),
        prop::collection::vec(id, 0..3).prop_map(|hosts| {
            Operation::UpdateMaintenanceSchedule {
                schedule: MaintenanceSchedule {
                    windows: vec![window(&hosts)],
                },
            }
        }),
    ]
}

fn batches() -> impl Strategy<Value = Vec<Vec<Operation>>> {
    prop::collection::vec(prop::collection::vec(operation(), 1..6), 1..30)
}

fn replay(entries: &[(u64, Vec<u8>)]) -> RegistryMachine {
    let mut machine = RegistryMachine::default();
    for (position, bytes) in entries {
        machine.apply_entry(*position, bytes).unwrap();
    }
    machine
}

proptest! {
    #[test]
    fn replaying_the_same_entries_gives_the_same_registry(batches in batches()) {
        let entries: Vec<(u64, Vec<u8>)> = batches
            .into_iter()
            .enumerate()
            .map(|(i, ops)| (i as u64 * 2 + 1, encode_batch(1, i as u64, ops)))
            .collect();
        let (first, second) = (replay(&entries), replay(&entries));
        prop_assert_eq!(first.registry(), second.registry());
    }

    #[test]
    fn snapshot_plus_suffix_equals_full_replay(batches in batches(), cut in 0usize..30) {
        let cut = cut.min(batches.len());
        let mut full = RegistryMachine::default();
        let mut snapshot = None;
        let mut suffix = Vec::new();
        for (i, ops) in batches.into_iter().enumerate() {
            if i == cut {
                snapshot = Some(encode_snapshot(1, 0, full.last_entry_position(), full.registry()));
            }
            let bytes = encode_batch(1, i as u64, ops);
            full.apply_entry(i as u64 + 1, &bytes).unwrap();
            if snapshot.is_some() {
                suffix.push((i as u64 + 1, bytes));
            }
        }
        let snapshot = snapshot.unwrap_or_else(|| {
            encode_snapshot(1, 0, full.last_entry_position(), full.registry())
        });
        let mut restored = RegistryMachine::default();
        let applied = restored.apply_entry(0, &snapshot).unwrap();
        let accepted = matches!(applied, Applied::Snapshot { accepted: true, .. });
        prop_assert!(accepted);
        for (position, bytes) in &suffix {
            restored.apply_entry(*position, bytes).unwrap();
        }
        prop_assert_eq!(restored.registry(), full.registry());
    }

    #[test]
    fn validated_operations_apply_and_refused_ones_change_nothing(batches in batches()) {
        let mut registry = Registry::default();
        for op in batches.into_iter().flatten() {
            let before = registry.clone();
            let valid = registry.validate(&op, &Pending::default());
            let applied = registry.apply(&op);
            prop_assert_eq!(&valid, &applied);
            if applied.is_err() {
                prop_assert_eq!(&registry, &before);
            }
        }
    }

    #[test]
    fn pending_validation_predicts_apply(batch in prop::collection::vec(operation(), 1..20)) {
        let registry = Registry::default();
        let mut pending = Pending::default();
        let mut accepted = Vec::new();
        for op in batch {
            if registry.validate(&op, &pending).is_ok() {
                pending.record(&op);
                accepted.push(op);
            }
        }
        let mut applied = registry.clone();
        for op in &accepted {
            prop_assert_eq!(applied.apply(op), Ok(()));
        }
    }
}
