//! The fuzzers' seed corpus (`fuzz/corpus/<target>/seed-*`), generated from the
//! encoders themselves so it stays valid when a format changes.
//!
//! `cargo test --test fuzz_seeds` fails if a committed seed differs from what the
//! current encoders produce; `FUZZ_SEEDS_WRITE=1 cargo test --test fuzz_seeds`
//! rewrites them. Input layouts are documented in each target
//! (`fuzz/fuzz_targets/*.rs`).

use std::path::{Path, PathBuf};

use mesos_operator::log::frame::{
    ConnectionNonce, ConnectionNonces, FrameEncoder, FrameKey, WireVersion,
    DEFAULT_MAX_PAYLOAD_BYTES, NONCE_BYTES,
};
use mesos_operator::log::message::{Envelope, Message, PromiseOutcome, ReadReply, ReportedEntry};
use mesos_operator::log::types::{
    Action, Entry, LogId, MemberId, Metadata, Proposal, ReplicaStatus,
};
use mesos_operator::log::wal::{encode_segment, WriteBatch};
use serde_json::json;

/// Frames the hostile-stream mode sees are MACed with another token than the
/// target's, so they pass every check up to the MAC and no further.
const OTHER_TOKEN: &[u8] = b"seed-token-the-fuzzer-does-not-hold";
const FUZZ_NONCE: ConnectionNonce = ConnectionNonce([0x5a; NONCE_BYTES]);
/// The fuzz target's nonces (v1 and v2 use the acceptor's only).
const FUZZ_NONCES: ConnectionNonces = ConnectionNonces {
    acceptor: FUZZ_NONCE,
    connector: Some(ConnectionNonce([0xa5; NONCE_BYTES])),
};

fn proposal(round: u64) -> Proposal {
    Proposal {
        round,
        proposer: MemberId::new("127.0.0.1:5050"),
    }
}

fn entry(position: u64) -> Entry {
    Entry {
        position,
        accepted: proposal(3),
        action: match position % 3 {
            0 => Action::Nop,
            1 => Action::Append(vec![0xfe, 1, 2, 3].into()),
            _ => Action::Truncate { to: position - 1 },
        },
        learned: position.is_multiple_of(2),
    }
}

/// One envelope of every message kind.
fn envelopes() -> Vec<Envelope> {
    let actions = vec![
        (4, Action::Append(b"registry operation".to_vec().into())),
        (5, Action::Nop),
        (6, Action::Truncate { to: 4 }),
    ];
    let messages = vec![
        Message::StatusRequest {
            nonce: 7,
            incarnation: 1,
        },
        Message::StatusResponse {
            nonce: 7,
            incarnation: 2,
            status: ReplicaStatus::Voting,
            log_id: Some(LogId(9)),
            promised: Some(proposal(3)),
            begin: 1,
            end: 6,
        },
        Message::PromiseRequest {
            proposal: proposal(4),
            recovery: true,
        },
        Message::PromiseResponse {
            proposal: proposal(4),
            outcome: PromiseOutcome::Promised { begin: 1, end: 6 },
        },
        Message::PromiseResponse {
            proposal: proposal(4),
            outcome: PromiseOutcome::Rejected {
                promised: Some(proposal(5)),
            },
        },
        Message::ReadRequest {
            proposal: proposal(4),
            from: 1,
            to: 6,
        },
        Message::ReadResponse {
            proposal: proposal(4),
            from: 1,
            to: 6,
            result: Ok(ReadReply {
                begin: 1,
                entries: vec![ReportedEntry {
                    position: 2,
                    accepted: proposal(3),
                    action: Action::Append(vec![1].into()),
                    learned: true,
                }],
            }),
        },
        Message::AcceptRequest {
            proposal: proposal(4),
            entries: actions.clone(),
        },
        Message::AcceptResponse {
            proposal: proposal(4),
            result: Ok(vec![4, 5, 6]),
            begin: 1,
        },
        Message::Learned {
            entries: actions.clone(),
        },
        Message::Heartbeat {
            proposal: proposal(4),
            seq: 11,
            learned_end: 6,
        },
        Message::HeartbeatResponse {
            proposal: proposal(4),
            seq: 11,
            result: Err(None),
        },
        Message::CatchupRequest { from: 2, to: 6 },
        Message::CatchupResponse {
            begin: 1,
            entries: actions,
        },
    ];
    messages
        .into_iter()
        .map(|message| Envelope {
            from: MemberId::new("127.0.0.1:5050"),
            to: MemberId::new("127.0.0.2:5050"),
            log_id: Some(LogId(9)),
            message,
        })
        .collect()
}

fn postcard(value: &impl serde::Serialize) -> Vec<u8> {
    postcard::to_allocvec(value).expect("our own types encode")
}

fn frame_decoder_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (index, envelope) in envelopes().iter().enumerate() {
        let payload = postcard(envelope);
        // Hostile mode: a bare message, and a well-formed frame under another token.
        seeds.push((
            format!("message-{index:02}"),
            [&[0][..], &payload[..]].concat(),
        ));
        // The target's first byte: bit 0 the mode, bits 1-2 the version (v1
        // seeds keep their names and bytes from before v2 existed).
        for (version, mode, suffix) in [
            (WireVersion::V1, 0u8, ""),
            (WireVersion::V2, 2, "-v2"),
            (WireVersion::V3, 4, "-v3"),
        ] {
            let key = FrameKey::new(OTHER_TOKEN).expect("non-empty token");
            let mut encoder = FrameEncoder::new(
                version,
                key,
                FUZZ_NONCES,
                "127.0.0.1:5050".into(),
                DEFAULT_MAX_PAYLOAD_BYTES,
            )
            .expect("short sender");
            let mut wire = vec![mode];
            encoder
                .encode(9, &payload, &mut wire)
                .expect("small payload");
            seeds.push((format!("other-token-frame{suffix}-{index:02}"), wire));
            // Structured mode: no flip, sender, log id 9, the message as one payload.
            let sender = b"127.0.0.1:5050";
            let mut structured = vec![mode | 1, 0, 0, 0, 0, 0, sender.len() as u8];
            structured.extend_from_slice(sender);
            structured.extend_from_slice(&9u64.to_le_bytes());
            structured.extend_from_slice(&(payload.len() as u16).to_le_bytes());
            structured.extend_from_slice(&payload);
            seeds.push((format!("structured{suffix}-{index:02}"), structured));
        }
    }
    seeds
}

fn api_requests_seeds() -> Vec<(String, Vec<u8>)> {
    let schedule = json!({"windows": [{
        "machine_ids": [{"hostname": "h1"}, {"ip": "10.0.0.1"}],
        "unavailability": {"start": {"nanoseconds": 1}, "duration": {"nanoseconds": 3600}},
    }]});
    let weights = json!([{"role": "dev", "weight": 2.0}]);
    let quota_configs = json!([{"role": "dev", "guarantees": {"cpus": {"value": 1.0}},
                                "limits": {"cpus": {"value": 2.0}}}]);
    let admit = json!({"id": "S1", "hostname": "s1.example", "port": 5051,
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}},
                      {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 32000}]}}]});
    // (selector, body): the selectors of fuzz/fuzz_targets/api_requests.rs.
    let v1 = |call: serde_json::Value| (0u8, call.to_string());
    let requests: Vec<(&str, Vec<(u8, String)>)> = vec![
        ("v1-get-state", vec![v1(json!({"type": "GET_STATE"}))]),
        ("v1-get-agents", vec![v1(json!({"type": "GET_AGENTS"}))]),
        (
            "v1-get-maintenance-schedule",
            vec![v1(json!({"type": "GET_MAINTENANCE_SCHEDULE"}))],
        ),
        ("v1-get-quota", vec![v1(json!({"type": "GET_QUOTA"}))]),
        ("v1-get-weights", vec![v1(json!({"type": "GET_WEIGHTS"}))]),
        (
            "v1-update-maintenance-schedule",
            vec![v1(
                json!({"type": "UPDATE_MAINTENANCE_SCHEDULE", "update_maintenance_schedule": {"schedule": schedule}}),
            )],
        ),
        (
            "v1-update-quota",
            vec![v1(
                json!({"type": "UPDATE_QUOTA", "update_quota": {"force": true, "quota_configs": quota_configs}}),
            )],
        ),
        (
            "v1-update-weights",
            vec![v1(
                json!({"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": weights}}),
            )],
        ),
        (
            "admit-then-v1-mark-agent-gone",
            vec![
                (6, admit.to_string()),
                v1(json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": "S1"}}})),
            ],
        ),
        (
            "v1-not-json",
            vec![(1, json!({"type": "GET_STATE"}).to_string())],
        ),
        ("v0-post-schedule", vec![(2, schedule.to_string())]),
        (
            "v0-set-then-remove-quota",
            vec![
                (
                    3,
                    json!({"role": "ops", "force": false, "guarantee": [{"name": "mem", "type": "SCALAR", "scalar": {"value": 512.0}}]})
                        .to_string(),
                ),
                (4, "ops".into()),
            ],
        ),
        ("v0-put-weights", vec![(5, weights.to_string())]),
        ("admit", vec![(6, admit.to_string())]),
    ];
    requests
        .into_iter()
        .map(|(name, calls)| {
            let mut bytes = Vec::new();
            for (selector, body) in calls {
                bytes.push(selector);
                bytes.extend_from_slice(&(body.len() as u16).to_le_bytes());
                bytes.extend_from_slice(body.as_bytes());
            }
            (name.to_string(), bytes)
        })
        .collect()
}

/// A replica's persisted state as `WalStorage` writes it.
fn persisted_batches() -> Vec<WriteBatch> {
    let metadata = Metadata {
        status: ReplicaStatus::Voting,
        log_id: Some(LogId(9)),
        promised: Some(proposal(3)),
        begin: 0,
        learned_below: 0,
    };
    let mut batches = vec![WriteBatch::new().meta(postcard(&metadata))];
    for position in 1..=4 {
        batches.push(WriteBatch::new().put(position, postcard(&entry(position))));
    }
    let truncated = Metadata {
        begin: 2,
        learned_below: 4,
        ..metadata
    };
    batches.push(
        WriteBatch::new()
            .truncate_below(2)
            .meta(postcard(&truncated))
            .put(5, postcard(&entry(5))),
    );
    batches
}

fn storage_records_seeds() -> Vec<(String, Vec<u8>)> {
    let batches = persisted_batches();
    let (early, late) = batches.split_at(3);
    let one = encode_segment(1, &batches);
    let first = encode_segment(1, early);
    let second = encode_segment(2, late);
    let metadata = postcard(&Metadata::default());
    let entry = postcard(&entry(0));
    let split = |first: &[u8]| (first.len() as u16).to_le_bytes();
    vec![
        ("one-segment".into(), [&[0][..], &one[..]].concat()),
        (
            "two-segments".into(),
            [&[1][..], &split(&first)[..], &first[..], &second[..]].concat(),
        ),
        (
            "metadata-and-entry".into(),
            [&[3][..], &split(&metadata)[..], &metadata[..], &entry[..]].concat(),
        ),
    ]
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn check_or_write(target: &str, seeds: Vec<(String, Vec<u8>)>) {
    let dir = corpus_dir(target);
    let write = std::env::var_os("FUZZ_SEEDS_WRITE").is_some();
    if write {
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for entry in std::fs::read_dir(&dir).expect("list the corpus") {
            let path = entry.expect("a corpus entry").path();
            let is_seed = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("seed-"));
            if is_seed {
                std::fs::remove_file(&path).expect("remove an old seed");
            }
        }
    }
    let mut stale = Vec::new();
    for (name, bytes) in &seeds {
        let path = dir.join(format!("seed-{name}"));
        if write {
            std::fs::write(&path, bytes).expect("write a seed");
        } else if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            stale.push(path.display().to_string());
        }
    }
    let committed = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok()).count())
        .unwrap_or(0);
    assert!(
        stale.is_empty() && committed >= seeds.len(),
        "fuzz seeds out of date: {stale:?}; run `FUZZ_SEEDS_WRITE=1 cargo test --test fuzz_seeds`"
    );
}

#[test]
fn frame_decoder_seeds_are_current() {
    check_or_write("frame_decoder", frame_decoder_seeds());
}

#[test]
fn api_requests_seeds_are_current() {
    check_or_write("api_requests", api_requests_seeds());
}

#[test]
fn storage_records_seeds_are_current() {
    check_or_write("storage_records", storage_records_seeds());
}

/// The seeds are valid inputs, not just bytes: the persisted state replays and
/// decodes to what was written.
#[test]
fn the_storage_seed_replays_to_the_state_written() {
    let segment = encode_segment(1, &persisted_batches());
    let recovered =
        mesos_operator::log::wal::replay_in_memory(&[(1, &segment)]).expect("a valid segment");
    assert!(recovered.torn_tail.is_none());
    let state = mesos_operator::log::durable::decode_state(
        Path::new("seed"),
        recovered.meta,
        recovered.positions,
    )
    .expect("a valid persisted state");
    assert_eq!(state.metadata.begin, 2);
    // The learned prefix (below 4) marks the entries under it.
    let expected: Vec<Entry> = (2..=5)
        .map(|position| Entry {
            learned: entry(position).learned || position < 4,
            ..entry(position)
        })
        .collect();
    assert_eq!(state.entries, expected);
}
