//! The registry export document: what `GET /registry/export` and
//! `POST /registry/seal` answer, what `POST /registry/import` takes, what the
//! operator keeps in its ConfigMap before a wipe and what a backup file holds,
//! byte for byte.
//!
//! ```text
//! {"format":"mesos-operator/registry-export/v1","log_id":..,"position":..,
//!  "sha256":"<hex>","registry":{..}}
//! ```
//!
//! `position` is a learned position of log `log_id`; `sha256` covers the
//! *canonical* bytes of the registry: the master's own [`Registry`] type encoded
//! as compact JSON (fields in declaration order, maps ordered by key), so every
//! member and every reader compute the same digest however the document was
//! re-indented. The checksum is recomputed from the parsed registry, so a document
//! edited by hand, truncated or re-encoded with different content is refused rather
//! than half-trusted. It does not cover `log_id` and `position`: a backup file's
//! name repeats them ([`check_file_name`]).
//!
//! The master produces the format, so it owns this module; the operator imports it
//! (never the other way round). [`parse`] is the one gate every reader goes
//! through: the master's import, the operator's `Preserve` transfer and recovery,
//! backups and restores.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::registry::Registry;

/// The only format this version writes and reads.
pub const EXPORT_FORMAT: &str = "mesos-operator/registry-export/v1";

/// An export document.
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

/// Why a document is refused. Every reader reports these as they are: the master
/// in its 400 answer, the operator in status and Events, the CLI in its one line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DocumentError {
    #[error("the registry export is empty")]
    Empty,
    #[error("the registry export is truncated: its JSON ends after {size_bytes} bytes")]
    Truncated { size_bytes: usize },
    #[error("the registry export is not JSON: {reason}")]
    NotJson { reason: String },
    #[error("the document is not a registry export: {reason}")]
    NotAnExport { reason: String },
    #[error("the registry export has format {found:?}; this version reads only {EXPORT_FORMAT:?}")]
    UnknownFormat { found: String },
    #[error("the registry export does not match its checksum (sha256 {computed} computed, {stated} stated): it was altered or damaged")]
    ChecksumMismatch { stated: String, computed: String },
    #[error("the registry export is named {file_name} but holds log {log_id} at position {position}: it was renamed or is corrupt")]
    NameMismatch {
        file_name: String,
        log_id: u64,
        position: u64,
    },
}

/// Encodes a registry. It cannot fail: every map key is a string, every
/// `Serialize` impl is derived or collects a sequence, and a `Vec` writer never
/// errors. A failure would be a bug in the registry's types, not bad input.
fn encode<T>(encoded: Result<T, serde_json::Error>) -> T {
    encoded.unwrap_or_else(|err| unreachable!("a registry always encodes: {err}"))
}

/// The canonical serialization the checksum covers. The registry's maps are
/// ordered, so the bytes are the same on every member and every run.
pub fn canonical_bytes(registry: &Registry) -> Vec<u8> {
    encode(serde_json::to_vec(registry))
}

/// Lowercase hex SHA-256 of the registry's canonical bytes.
pub fn registry_sha256(registry: &Registry) -> String {
    Sha256::digest(canonical_bytes(registry))
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

impl ExportDocument {
    /// The document for `registry` as of `position` of log `log_id`. A seal is a
    /// fact about the exporting log, not registry content: it is left out.
    pub fn new(registry: &Registry, log_id: u64, position: u64) -> ExportDocument {
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

    /// The document as JSON, as the master answers it.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(serde_json::to_vec(self))
    }
}

/// Parses and checks a document: JSON, complete, the known format, no field this
/// version does not read, a registry the master can apply, and a checksum that
/// matches it.
pub fn parse(document: &[u8]) -> Result<ExportDocument, DocumentError> {
    if document.iter().all(u8::is_ascii_whitespace) {
        return Err(DocumentError::Empty);
    }
    let value: serde_json::Value = serde_json::from_slice(document).map_err(|error| {
        if error.is_eof() {
            DocumentError::Truncated {
                size_bytes: document.len(),
            }
        } else {
            DocumentError::NotJson {
                reason: error.to_string(),
            }
        }
    })?;
    // The format first, so a future version is named as such rather than as
    // whatever its registry fails on.
    match value.get("format").and_then(serde_json::Value::as_str) {
        Some(EXPORT_FORMAT) => {}
        Some(other) => {
            return Err(DocumentError::UnknownFormat {
                found: other.to_owned(),
            })
        }
        None => {
            return Err(DocumentError::NotAnExport {
                reason: "no \"format\" string field".to_owned(),
            })
        }
    }
    let parsed =
        ExportDocument::deserialize(&value).map_err(|error| DocumentError::NotAnExport {
            reason: error.to_string(),
        })?;
    // A registry field this version does not know (or a renamed one that has a
    // default) would be silently dropped by the typed read and still match the
    // checksum: the registry must be exactly what the typed registry encodes.
    if value.get("registry") != Some(&encode(serde_json::to_value(&parsed.registry))) {
        return Err(DocumentError::NotAnExport {
            reason: "its registry holds fields this version does not read".into(),
        });
    }
    let computed = registry_sha256(&parsed.registry);
    if !computed.eq_ignore_ascii_case(&parsed.sha256) {
        return Err(DocumentError::ChecksumMismatch {
            stated: parsed.sha256,
            computed,
        });
    }
    Ok(parsed)
}

/// `registry-<log_id>-<position>.json`: the name a backup of log `log_id` as of
/// `position` is kept under.
pub fn file_name(log_id: u64, position: u64) -> String {
    format!("registry-{log_id}-{position}.json")
}

/// A file named like a backup (`registry-<id>-<pos>.json`) must hold that log id
/// and position, which the checksum does not cover. Other names are accepted (a
/// user may rename a backup to something telling); the checksum still guards the
/// registry.
pub fn check_file_name(file_name: &str, log_id: u64, position: u64) -> Result<(), DocumentError> {
    let named = file_name
        .strip_prefix("registry-")
        .and_then(|rest| rest.strip_suffix(".json"))
        .and_then(|rest| rest.split_once('-'))
        .and_then(|(log_id, position)| Some((log_id.parse().ok()?, position.parse().ok()?)));
    match named {
        Some(named) if named != (log_id, position) => Err(DocumentError::NameMismatch {
            file_name: file_name.to_owned(),
            log_id,
            position,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::registry::tests::agent;
    use crate::master::registry::Operation;

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
        let document = ExportDocument::new(&registry, 42, 9);
        assert_eq!(document.registry.sealed, None);
        assert_eq!(parse(&document.to_bytes()).unwrap(), document);
    }

    #[test]
    fn the_checksum_does_not_depend_on_whitespace_or_key_order() {
        let registry = sample();
        let pretty = format!(
            "{{\n  \"registry\": {},\n  \"sha256\": \"{}\",\n  \"position\": 5, \"log_id\": 9,\n  \"format\": \"{EXPORT_FORMAT}\"\n}}\n",
            serde_json::to_string_pretty(&registry).unwrap(),
            registry_sha256(&registry),
        );
        assert_eq!(parse(pretty.as_bytes()).unwrap().position, 5);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = ExportDocument::new(&sample(), 1, 3).to_bytes();
        for length in 0..bytes.len() {
            let error = parse(&bytes[..length]).expect_err("truncated");
            assert!(
                matches!(
                    error,
                    DocumentError::Empty | DocumentError::Truncated { .. }
                ),
                "length {length}: {error}"
            );
        }
    }

    #[test]
    fn malformed_altered_unknown_and_extended_documents_are_refused() {
        let bytes = ExportDocument::new(&sample(), 1, 3).to_bytes();
        assert!(matches!(
            parse(b"\x00\x01PK garbage"),
            Err(DocumentError::NotJson { .. })
        ));
        assert!(matches!(
            parse(b"[1,2]"),
            Err(DocumentError::NotAnExport { .. })
        ));
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        value["registry"]["weights"]["dev"] = serde_json::json!(3.0);
        assert!(matches!(
            parse(&serde_json::to_vec(&value).unwrap()),
            Err(DocumentError::ChecksumMismatch { .. })
        ));
        let mut extended: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        extended["registry"]["future"] = serde_json::json!(1);
        assert!(matches!(
            parse(&serde_json::to_vec(&extended).unwrap()),
            Err(DocumentError::NotAnExport { .. })
        ));
        extended = serde_json::from_slice(&bytes).unwrap();
        extended["padding"] = serde_json::json!("");
        assert!(matches!(
            parse(&serde_json::to_vec(&extended).unwrap()),
            Err(DocumentError::NotAnExport { .. })
        ));
        value["format"] = serde_json::json!("mesos-operator/registry-export/v2");
        let error = parse(&serde_json::to_vec(&value).unwrap()).expect_err("v2");
        assert_eq!(
            error,
            DocumentError::UnknownFormat {
                found: "mesos-operator/registry-export/v2".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "the registry export has format \"mesos-operator/registry-export/v2\"; this version reads only \"mesos-operator/registry-export/v1\""
        );
    }

    #[test]
    fn a_file_named_like_a_backup_must_hold_its_log_and_position() {
        assert_eq!(check_file_name("registry-77-1024.json", 77, 1024), Ok(()));
        assert_eq!(check_file_name("before-upgrade.json", 77, 1024), Ok(()));
        assert_eq!(file_name(77, 1024), "registry-77-1024.json");
        let error = check_file_name("registry-77-1025.json", 77, 1024).expect_err("renamed");
        assert_eq!(
            error.to_string(),
            "the registry export is named registry-77-1025.json but holds log 77 at position 1024: it was renamed or is corrupt"
        );
    }
}
