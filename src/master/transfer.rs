//! The import side of a registry transfer: how a `POST /registry/import` document
//! (see [`super::export_document`]) is cut into log entries, and how large one may be.

use super::registry::{Operation, Registry};

/// Bytes of agents (as encoded) per import chunk. Each chunk is one log entry: well
/// under the log's 16 MiB frame limit even with the non-agent part of the registry
/// (a full maintenance schedule is ~5 MB) in the first chunk.
pub const IMPORT_CHUNK_AGENT_BYTES: usize = 4 << 20;

/// Largest document `POST /registry/import` reads: 50,000 agents of generous size
/// plus a full schedule, with room to spare.
pub const MAX_IMPORT_BYTES: usize = 256 << 20;

/// Cuts `registry` into import chunks: the first holds everything but the agents
/// and the first agents; each further one about [`IMPORT_CHUNK_AGENT_BYTES`] of
/// agents. Parts are disjoint; their union is `registry` (without master and seal).
pub fn import_chunks(registry: &Registry, import: u64) -> Vec<Operation> {
    let mut parts = vec![Registry {
        master: None,
        sealed: None,
        agents: Default::default(),
        ..registry.clone()
    }];
    let mut part_bytes = 0usize;
    for (id, agent) in &registry.agents {
        let agent_bytes = serde_json::to_vec(agent).map_or(0, |bytes| bytes.len());
        if part_bytes > 0 && part_bytes + agent_bytes > IMPORT_CHUNK_AGENT_BYTES {
            parts.push(Registry::default());
            part_bytes = 0;
        }
        part_bytes += agent_bytes;
        if let Some(last) = parts.last_mut() {
            last.agents.insert(id.clone(), agent.clone());
        }
    }
    let total = parts.len() as u32;
    parts
        .into_iter()
        .enumerate()
        .map(|(index, part)| Operation::ImportChunk {
            import,
            index: index as u32,
            total,
            part: Box::new(part),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::registry::tests::agent;
    use crate::master::registry::RegistryMachine;

    #[test]
    fn chunks_are_bounded_and_rebuild_the_registry() {
        let mut registry = Registry::default();
        // ~14 MB of agents: several chunks.
        for i in 0..50_000 {
            let mut record = agent(&format!("agent-{i:06}"));
            record.hostname = format!("{i:0>200}");
            registry.agents.insert(record.id.clone(), record);
        }
        registry.weights.insert("dev".into(), 1.5);
        let chunks = import_chunks(&registry, 7);
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());
        let mut machine = RegistryMachine::default();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let entry = crate::master::registry::encode_batch(1, i as u64, vec![chunk]);
            assert!(entry.len() < 8 << 20, "chunk {i} is {} bytes", entry.len());
            machine.apply_entry(i as u64 + 1, &entry).unwrap();
        }
        assert_eq!(*machine.registry(), registry);
    }
}
