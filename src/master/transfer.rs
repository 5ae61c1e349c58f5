//! Registry transfer documents: what `GET /registry/export` and
//! `POST /registry/seal` answer and `POST /registry/import` takes, and how an
//! import is cut into log entries.
//!
//! A document is `{"format", "log_id", "position", "sha256", "registry"}`. The
//! checksum is over the *canonical* bytes of the registry (its serde JSON encoding:
//! ordered maps, no whitespace), recomputed from the parsed registry on import, so
//! a document edited by hand, truncated or re-encoded with different content is
//! refused rather than half-trusted.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::registry::{Operation, Registry};

/// The only format this master writes and reads.
pub const EXPORT_FORMAT: &str = "mesos-operator/registry-export/v1";

/// Bytes of agents (as encoded) per import chunk. Each chunk is one log entry: well
/// under the log's 16 MiB frame limit even with the non-agent part of the registry
/// (a full maintenance schedule is ~5 MB) in the first chunk.
pub const IMPORT_CHUNK_AGENT_BYTES: usize = 4 << 20;

/// Largest document `POST /registry/import` reads: 50,000 agents of generous size
/// plus a full schedule, with room to spare.
pub const MAX_IMPORT_BYTES: usize = 256 << 20;

/// A transfer document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportDocument {
    pub format: String,
    /// The id of the log the registry was read from (0 when the log had none yet).
    pub log_id: u64,
    /// The learned position the registry reflects.
    pub position: u64,
    /// Lowercase hex SHA-256 of [`canonical_bytes`] of `registry`.
    pub sha256: String,
    pub registry: Registry,
}

/// Why a document is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DocumentError {
    #[error("the export document is not valid JSON of the expected shape (truncated or malformed?): {0}")]
    Malformed(String),
    #[error("unknown export format '{found}'; this master reads '{EXPORT_FORMAT}'")]
    UnknownFormat { found: String },
    #[error("the export document's checksum does not match its registry (sha256 {stated} stated, {computed} computed): it was altered or damaged")]
    ChecksumMismatch { stated: String, computed: String },
}

/// The canonical serialization the checksum covers. The registry's maps are
/// ordered, so the bytes are the same on every member and every run.
pub fn canonical_bytes(registry: &Registry) -> Vec<u8> {
    // Serializing the registry to a Vec cannot fail: every map key is a string
    // and validation keeps every float finite.
    serde_json::to_vec(registry).unwrap_or_else(|err| {
        unreachable!("a registry always serializes: {err}");
    })
}

/// Lowercase hex SHA-256 of the registry's canonical bytes.
pub fn registry_sha256(registry: &Registry) -> String {
    let digest = Sha256::digest(canonical_bytes(registry));
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The document for `registry` as of `position` of log `log_id`. A seal is a fact
/// about the exporting log, not registry content: it is left out.
pub fn export_document(registry: &Registry, log_id: u64, position: u64) -> ExportDocument {
    let registry = Registry {
        sealed: None,
        ..registry.clone()
    };
    ExportDocument {
        format: EXPORT_FORMAT.to_owned(),
        log_id,
        position,
        sha256: registry_sha256(&registry),
        registry,
    }
}

/// Parses and checks a document: shape, format, checksum.
pub fn parse_document(bytes: &[u8]) -> Result<ExportDocument, DocumentError> {
    // The format first, so a future version is named as such rather than as
    // a shape error.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| DocumentError::Malformed(err.to_string()))?;
    match value.get("format").and_then(serde_json::Value::as_str) {
        Some(EXPORT_FORMAT) => {}
        Some(other) => {
            return Err(DocumentError::UnknownFormat {
                found: other.to_owned(),
            })
        }
        None => {
            return Err(DocumentError::Malformed(
                "no \"format\" string field".to_owned(),
            ))
        }
    }
    let document: ExportDocument =
        serde_json::from_value(value).map_err(|err| DocumentError::Malformed(err.to_string()))?;
    let computed = registry_sha256(&document.registry);
    if !computed.eq_ignore_ascii_case(&document.sha256) {
        return Err(DocumentError::ChecksumMismatch {
            stated: document.sha256,
            computed,
        });
    }
    Ok(document)
}

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

    fn sample() -> Registry {
        let mut registry = Registry::default();
        for i in 0..5 {
            registry
                .apply(&Operation::AdmitAgent {
                    agent: agent(&format!("a{i}")),
                })
                .unwrap();
        }
        registry.weights.insert("dev".into(), 2.5);
        registry.gone.insert("old".into(), 7);
        registry
    }

    #[test]
    fn a_document_roundtrips_and_leaves_the_seal_out() {
        let mut registry = sample();
        registry.sealed = Some(9);
        let document = export_document(&registry, 42, 9);
        assert_eq!(document.registry.sealed, None);
        let bytes = serde_json::to_vec(&document).unwrap();
        assert_eq!(parse_document(&bytes).unwrap(), document);
    }

    #[test]
    fn truncated_malformed_altered_and_unknown_documents_are_refused() {
        let bytes = serde_json::to_vec(&export_document(&sample(), 1, 3)).unwrap();
        let truncated = &bytes[..bytes.len() / 2];
        assert!(matches!(
            parse_document(truncated),
            Err(DocumentError::Malformed(_))
        ));
        assert!(matches!(
            parse_document(b"[1,2]"),
            Err(DocumentError::Malformed(_))
        ));
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        value["registry"]["weights"]["dev"] = serde_json::json!(3.0);
        let altered = serde_json::to_vec(&value).unwrap();
        assert!(matches!(
            parse_document(&altered),
            Err(DocumentError::ChecksumMismatch { .. })
        ));
        value["format"] = serde_json::json!("mesos-operator/registry-export/v2");
        assert_eq!(
            parse_document(&serde_json::to_vec(&value).unwrap()),
            Err(DocumentError::UnknownFormat {
                found: "mesos-operator/registry-export/v2".into()
            })
        );
    }

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
