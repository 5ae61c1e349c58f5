//! The storage record decoder: WAL segment replay (`src/log/wal.rs`, the code
//! `Wal::open` runs, minus the file I/O) and the postcard decoding of persisted
//! replica state (`src/log/durable.rs`, the code `WalStorage::open` runs).
//!
//! The first input byte picks a mode:
//! - 0: the rest is one segment file (the last, so torn tails are allowed);
//! - 1: the rest is two segment files (a split offset u16 LE, then the bytes), so
//!   the rules for a sealed segment apply to the first;
//! - 2: structured: fuzzer-chosen batches written as the writer lays them out, then
//!   one fault (none, a cut at any byte, one flipped bit); replay must give exactly
//!   the state of a prefix of the batches (all of them without a fault; never half a
//!   batch, never altered data) or refuse with `Corrupt`;
//! - 3: the rest is a persisted metadata record and an entry record (postcard),
//!   split as in mode 1.
//!
//! Whatever replays is then decoded as the replica's durable state.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use mesos_operator::log::durable::decode_state;
use mesos_operator::log::wal::{
    encode_segment, replay_in_memory, Recovered, WalError, WalOp, WriteBatch,
};

#[derive(Debug, Arbitrary)]
enum Op {
    Meta(Vec<u8>),
    Put { position: u8, bytes: Vec<u8> },
    TruncateBelow(u8),
}

#[derive(Debug, Arbitrary)]
enum Fault {
    None,
    Cut(u32),
    FlipBit(u32),
}

#[derive(Debug, Arbitrary)]
struct Structured {
    segment_id: u64,
    batches: Vec<Vec<Op>>,
    fault: Fault,
}

/// What replaying `batches` must give: the store's documented semantics.
#[derive(Debug, Default, PartialEq, Eq)]
struct Model {
    meta: Option<Vec<u8>>,
    positions: BTreeMap<u64, Vec<u8>>,
    truncated_below: u64,
}

impl Model {
    fn apply(&mut self, batch: &WriteBatch) {
        for op in &batch.ops {
            match op {
                WalOp::Meta(bytes) => self.meta = Some(bytes.clone()),
                WalOp::Put { position, bytes } => {
                    if *position >= self.truncated_below {
                        self.positions.insert(*position, bytes.clone());
                    }
                }
                WalOp::PutParts { position, parts } => {
                    if *position >= self.truncated_below {
                        self.positions.insert(*position, parts.to_vec());
                    }
                }
                WalOp::TruncateBelow(bound) => {
                    self.truncated_below = self.truncated_below.max(*bound);
                    self.positions = self.positions.split_off(&self.truncated_below);
                }
            }
        }
    }

    fn matches(&self, recovered: &Recovered) -> bool {
        self.meta == recovered.meta
            && self.positions == recovered.positions
            && self.truncated_below == recovered.truncated_below
    }
}

fn decode(recovered: Result<Recovered, WalError>) {
    if let Ok(recovered) = recovered {
        let _ = decode_state(Path::new("fuzz"), recovered.meta, recovered.positions);
    }
}

/// Two byte strings: a split offset (u16 LE), then the bytes to split.
fn split(bytes: &[u8]) -> (&[u8], &[u8]) {
    let (offset, rest) = bytes.split_at(2.min(bytes.len()));
    let mut le = [0; 2];
    le[..offset.len()].copy_from_slice(offset);
    rest.split_at(usize::from(u16::from_le_bytes(le)).min(rest.len()))
}

fn segment_id_of(bytes: &[u8]) -> u64 {
    let mut id = [0; 8];
    if let Some(field) = bytes.get(8..16) {
        id.copy_from_slice(field);
    }
    u64::from_le_bytes(id)
}

fn structured(input: Structured) {
    let batches: Vec<WriteBatch> = input
        .batches
        .into_iter()
        .map(|ops| WriteBatch {
            ops: ops
                .into_iter()
                .map(|op| match op {
                    Op::Meta(bytes) => WalOp::Meta(bytes),
                    Op::Put { position, bytes } => WalOp::Put {
                        position: u64::from(position),
                        bytes,
                    },
                    Op::TruncateBelow(bound) => WalOp::TruncateBelow(u64::from(bound)),
                })
                .collect(),
        })
        .collect();
    let mut segment = encode_segment(input.segment_id, &batches);
    let faulted = match input.fault {
        Fault::None => false,
        Fault::Cut(at) => {
            segment.truncate(at as usize % (segment.len() + 1));
            true
        }
        Fault::FlipBit(bit) => {
            let bit = bit as usize % (segment.len() * 8);
            segment[bit / 8] ^= 1 << (bit % 8);
            true
        }
    };
    let result = replay_in_memory(&[(input.segment_id, &segment)]);
    match &result {
        Ok(recovered) => {
            // Some prefix of the batches, whole: the model after 0, 1, ... batches.
            let mut model = Model::default();
            let mut prefixes = vec![model.matches(recovered)];
            for batch in &batches {
                model.apply(batch);
                prefixes.push(model.matches(recovered));
            }
            if faulted {
                assert!(
                    prefixes.iter().any(|&m| m),
                    "a damaged segment replayed into a state no prefix of its batches gives: {recovered:?}"
                );
            } else {
                assert!(
                    prefixes.last() == Some(&true) && recovered.torn_tail.is_none(),
                    "an intact segment replayed wrongly: {recovered:?}"
                );
            }
        }
        Err(WalError::Corrupt { .. }) if faulted => {}
        Err(error) => panic!("replay refused a segment it should accept: {error}"),
    }
    decode(result);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => decode(replay_in_memory(&[(segment_id_of(rest), rest)])),
        1 => {
            let (first, second) = split(rest);
            let (first_id, second_id) = (segment_id_of(first), segment_id_of(second));
            if first_id < second_id {
                decode(replay_in_memory(&[(first_id, first), (second_id, second)]));
            }
        }
        2 => {
            if let Ok(input) = Structured::arbitrary_take_rest(Unstructured::new(rest)) {
                structured(input);
            }
        }
        _ => {
            let (meta, entry) = split(rest);
            let mut positions = BTreeMap::new();
            positions.insert(0, entry.to_vec());
            let _ = decode_state(Path::new("fuzz"), Some(meta.to_vec()), positions);
        }
    }
});
