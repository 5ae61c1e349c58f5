//! Registry backups: taking one from a running ensemble's leader, checking one,
//! and importing one into an ensemble whose registry is empty.
//!
//! A backup file is the leader's `GET /registry/export` document, byte for byte:
//!
//! ```text
//! {"format":"mesos-operator/registry-export/v1","log_id":..,"position":..,
//!  "sha256":"<hex>","registry":{..}}
//! ```
//!
//! `position` is a learned position of log `log_id`, and `sha256` covers the
//! canonical registry bytes: the registry as the master's own
//! [`Registry`](crate::master::registry::Registry) type encodes it in compact JSON
//! (fields in declaration order, maps ordered by key), so every member and every
//! reader compute the same digest. The file is named
//! `registry-<log_id>-<position>.json`; a restore checks the name against the
//! document too, since the checksum does not cover `log_id` and `position`.
//!
//! [`verify`] is pure and is the only gate: nothing is written or sent for a
//! document it refuses.

use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::master::api::LogStatus;
use crate::master::registry::Registry;
use crate::operator::api::backup::parse_backup_name;
use crate::operator::local::{MasterClient, RegistryCallError};

/// The only export format this version reads.
pub const EXPORT_FORMAT: &str = "mesos-operator/registry-export/v1";

/// A registry backup larger than this is refused before it is read: the registry
/// holds agents, maintenance, quotas and weights, tens of megabytes at the very
/// most, and reading an arbitrary file whole into memory must stay bounded.
pub const MAX_BACKUP_SIZE_BYTES: u64 = 256 * 1024 * 1024;

/// Why a backup or a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {size_bytes} bytes is more than a registry backup may hold ({MAX_BACKUP_SIZE_BYTES})")]
    TooLarge { path: PathBuf, size_bytes: u64 },
    #[error("the backup is empty")]
    Empty,
    #[error("the backup is truncated: its JSON ends after {size_bytes} bytes")]
    Truncated { size_bytes: usize },
    #[error("the backup is not a registry export (not JSON: {reason})")]
    NotJson { reason: String },
    #[error("the backup is not a registry export: {reason}")]
    NotAnExport { reason: String },
    #[error("the backup has format {found:?}; this version reads only {EXPORT_FORMAT:?}")]
    WrongFormat { found: String },
    #[error("the backup's registry does not match its checksum (sha256 {computed}, the document says {recorded}): it is corrupt")]
    ChecksumMismatch { recorded: String, computed: String },
    #[error("the backup is named {file_name} but holds log {log_id} at position {position}: it was renamed or is corrupt")]
    NameMismatch {
        file_name: String,
        log_id: u64,
        position: u64,
    },
    #[error("no masters given")]
    NoMasters,
    #[error("no leader among the masters: {answers}")]
    NoLeader { answers: String },
    #[error("exporting the registry: {0}")]
    Export(RegistryCallError),
    #[error("the leader's export is refused: {0}")]
    BadExport(Box<BackupError>),
    #[error("importing the registry: {0}")]
    Import(RegistryCallError),
    #[error("the registry of the ensemble led by {leader} is not empty (409): a backup is only imported into a new ensemble, nothing was changed")]
    RegistryNotEmpty { leader: SocketAddr },
    #[error("writing {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {reason}")]
    StateDir { path: PathBuf, reason: String },
}

/// A document [`verify`] accepted, with the bytes to store or send unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBackup {
    pub log_id: u64,
    pub position: u64,
    pub sha256: String,
    pub document: Vec<u8>,
}

impl VerifiedBackup {
    /// `registry-<log_id>-<position>.json`.
    pub fn file_name(&self) -> String {
        backup_file_name(self.log_id, self.position)
    }
}

pub fn backup_file_name(log_id: u64, position: u64) -> String {
    format!("registry-{log_id}-{position}.json")
}

/// The header fields, read before the registry so a wrong format is reported as
/// such rather than as whatever the registry of another format fails on.
#[derive(Deserialize)]
struct Header {
    format: String,
}

#[derive(Deserialize)]
struct Document {
    log_id: u64,
    position: u64,
    sha256: String,
    registry: Registry,
}

/// The canonical registry bytes the checksum covers.
pub fn canonical_registry_bytes(registry: &Registry) -> Vec<u8> {
    // Serializing these types cannot fail: string keys, no custom serializers that
    // error; an empty vector would then fail the checksum rather than pass it.
    serde_json::to_vec(registry).unwrap_or_default()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Checks a registry export document: JSON, complete, the v1 format, a registry
/// the master can read, and a checksum that matches it.
pub fn verify(document: &[u8]) -> Result<VerifiedBackup, BackupError> {
    if document.iter().all(u8::is_ascii_whitespace) {
        return Err(BackupError::Empty);
    }
    let value: serde_json::Value = serde_json::from_slice(document).map_err(|error| {
        if error.is_eof() {
            BackupError::Truncated {
                size_bytes: document.len(),
            }
        } else {
            BackupError::NotJson {
                reason: error.to_string(),
            }
        }
    })?;
    let header: Header = Header::deserialize(&value).map_err(|error| BackupError::NotAnExport {
        reason: error.to_string(),
    })?;
    if header.format != EXPORT_FORMAT {
        return Err(BackupError::WrongFormat {
            found: header.format,
        });
    }
    let parsed = Document::deserialize(&value).map_err(|error| BackupError::NotAnExport {
        reason: error.to_string(),
    })?;
    // A field this version does not know (or a renamed one that has a default)
    // would be silently dropped by the typed read and still match the checksum:
    // the registry must be exactly what the typed registry encodes.
    let reencoded = serde_json::to_value(&parsed.registry).unwrap_or_default();
    if value.get("registry") != Some(&reencoded) {
        return Err(BackupError::NotAnExport {
            reason: "its registry holds fields this version does not read".into(),
        });
    }
    let computed = sha256_hex(&canonical_registry_bytes(&parsed.registry));
    if !computed.eq_ignore_ascii_case(&parsed.sha256) {
        return Err(BackupError::ChecksumMismatch {
            recorded: parsed.sha256,
            computed,
        });
    }
    Ok(VerifiedBackup {
        log_id: parsed.log_id,
        position: parsed.position,
        sha256: computed,
        document: document.to_vec(),
    })
}

/// [`verify`], plus: a file named like a backup (`registry-<id>-<pos>.json`)
/// must hold that log id and position. Other names are accepted (a user may
/// rename a backup to something telling); the checksum still guards the registry.
pub fn verify_file(file_name: &str, document: &[u8]) -> Result<VerifiedBackup, BackupError> {
    let verified = verify(document)?;
    let named = file_name
        .strip_prefix("registry-")
        .and_then(|rest| rest.strip_suffix(".json"))
        .and_then(|rest| rest.split_once('-'))
        .and_then(|(log_id, position)| Some((log_id.parse().ok()?, position.parse().ok()?)));
    if let Some((log_id, position)) = named {
        if (log_id, position) != (verified.log_id, verified.position) {
            return Err(BackupError::NameMismatch {
                file_name: file_name.to_owned(),
                log_id: verified.log_id,
                position: verified.position,
            });
        }
    }
    Ok(verified)
}

/// Reads and verifies a backup file, bounded by [`MAX_BACKUP_SIZE_BYTES`].
pub fn read_backup(path: &Path) -> Result<VerifiedBackup, BackupError> {
    let read_error = |error| BackupError::Read {
        path: path.to_owned(),
        error,
    };
    let file = fs::File::open(path).map_err(read_error)?;
    let size_bytes = file.metadata().map_err(read_error)?.len();
    if size_bytes > MAX_BACKUP_SIZE_BYTES {
        return Err(BackupError::TooLarge {
            path: path.to_owned(),
            size_bytes,
        });
    }
    let mut document = Vec::new();
    // `take` as well: the file may grow between the size check and the read.
    file.take(MAX_BACKUP_SIZE_BYTES + 1)
        .read_to_end(&mut document)
        .map_err(read_error)?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    verify_file(&file_name, &document)
}

/// Writes the backup into `dir` as `registry-<log_id>-<position>.json`: a temporary
/// file, fsync, rename, fsync of the directory, so a crash leaves the old state or
/// the whole new file, never a torn one under the final name.
pub fn write_backup(dir: &Path, backup: &VerifiedBackup) -> Result<PathBuf, BackupError> {
    let path = dir.join(backup.file_name());
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |error| BackupError::Write { path, error }
    };
    fs::create_dir_all(dir).map_err(write_error(dir))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        backup.file_name(),
        std::process::id()
    ));
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&backup.document)?;
        file.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(write_error(&tmp)(error));
    }
    if let Err(error) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(write_error(&path)(error));
    }
    fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(write_error(dir))?;
    Ok(path)
}

/// The leader among `masters`: the member that says it is elected, else the
/// leader a member names. Every member is asked in order; the error lists what
/// each answered, so "no leader" says why.
pub fn find_leader(
    client: &dyn MasterClient,
    masters: &[SocketAddr],
) -> Result<SocketAddr, BackupError> {
    if masters.is_empty() {
        return Err(BackupError::NoMasters);
    }
    let statuses: Vec<(SocketAddr, Option<LogStatus>)> = masters
        .iter()
        .map(|member| (*member, client.log_status(*member)))
        .collect();
    if let Some((member, _)) = statuses
        .iter()
        .find(|(_, status)| status.as_ref().is_some_and(|status| status.elected))
    {
        return Ok(*member);
    }
    if let Some(leader) = statuses
        .iter()
        .find_map(|(_, status)| status.as_ref().and_then(|status| status.leader))
    {
        return Ok(leader);
    }
    let answers = statuses
        .iter()
        .map(|(member, status)| match status {
            None => format!("{member} did not answer /log/status"),
            Some(status) => format!("{member} is {} and knows no leader", status.status),
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(BackupError::NoLeader { answers })
}

/// Exports the registry from the leader, checks it, and writes it into `out_dir`.
pub fn take_backup(
    client: &dyn MasterClient,
    masters: &[SocketAddr],
    out_dir: &Path,
) -> Result<PathBuf, BackupError> {
    let leader = find_leader(client, masters)?;
    let document = client
        .export_registry(leader)
        .map_err(BackupError::Export)?;
    // A bad export is never stored: a backup that cannot be restored is worse
    // than none, because it is trusted.
    let verified = verify(&document).map_err(|error| BackupError::BadExport(Box::new(error)))?;
    write_backup(out_dir, &verified)
}

/// Checks `file` and imports it through the leader. Nothing is sent if the file
/// does not verify.
pub fn restore(
    client: &dyn MasterClient,
    masters: &[SocketAddr],
    file: &Path,
) -> Result<VerifiedBackup, BackupError> {
    let verified = read_backup(file)?;
    let leader = find_leader(client, masters)?;
    match client.import_registry(leader, &verified.document) {
        Ok(true) => Ok(verified),
        Ok(false) => Err(BackupError::RegistryNotEmpty { leader }),
        Err(error) => Err(BackupError::Import(error)),
    }
}

/// `ip:port,ip:port` as given to `--masters`.
pub fn parse_masters(list: &str) -> Result<Vec<SocketAddr>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|member| !member.is_empty())
        .map(|member| {
            member
                .parse()
                .map_err(|error| format!("{member:?} is not ip:port: {error}"))
        })
        .collect()
}

/// Deletes the backups of log `log_id` in `dir` beyond the `keep` at the highest
/// positions, and answers the files deleted. Only files named as backups of that
/// log are touched: other logs' backups (an older ensemble's) and anything a user
/// put there stay.
pub fn prune_backups(dir: &Path, log_id: u64, keep: u32) -> Result<Vec<PathBuf>, BackupError> {
    let read_error = |error| BackupError::Read {
        path: dir.to_owned(),
        error,
    };
    let mut backups: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let name = entry.file_name();
        if let Some((id, position)) = name.to_str().and_then(parse_backup_name) {
            if id == log_id {
                backups.push((position, entry.path()));
            }
        }
    }
    backups.sort_by_key(|backup| std::cmp::Reverse(backup.0));
    let mut removed = Vec::new();
    for (_, path) in backups.into_iter().skip(keep.max(1) as usize) {
        fs::remove_file(&path).map_err(|error| BackupError::Write {
            path: path.clone(),
            error,
        })?;
        removed.push(path);
    }
    Ok(removed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::master::registry::{MaintenanceSchedule, MasterRecord};
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    pub(crate) fn registry() -> Registry {
        Registry {
            sealed: None,
            master: Some(MasterRecord {
                address: "127.0.0.2:5050".into(),
                elected_time_ns: 1_700_000_000_000_000_000,
            }),
            agents: BTreeMap::new(),
            unreachable: BTreeMap::from([("agent-7".to_string(), 1_700_000_000_000_000_000)]),
            gone: BTreeMap::new(),
            schedule: MaintenanceSchedule::default(),
            quotas: BTreeMap::new(),
            weights: BTreeMap::from([("analytics".to_string(), 2.5)]),
        }
    }

    /// A document as the master's export is specified.
    pub(crate) fn export(log_id: u64, position: u64, registry: &Registry) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "format": EXPORT_FORMAT,
            "log_id": log_id,
            "position": position,
            "sha256": sha256_hex(&canonical_registry_bytes(registry)),
            "registry": registry,
        }))
        .expect("a JSON value")
    }

    #[test]
    fn a_good_export_verifies_and_names_its_log_and_position() {
        let document = export(77, 1024, &registry());
        let verified = verify(&document).expect("verifies");
        assert_eq!((verified.log_id, verified.position), (77, 1024));
        assert_eq!(verified.document, document);
        assert_eq!(verified.file_name(), "registry-77-1024.json");
        assert_eq!(verified.sha256.len(), 64);
    }

    #[test]
    fn the_checksum_does_not_depend_on_whitespace_or_key_order() {
        let registry = registry();
        let pretty = format!(
            "{{\n  \"registry\": {},\n  \"sha256\": \"{}\",\n  \"position\": 5, \"log_id\": 9,\n  \"format\": \"{EXPORT_FORMAT}\"\n}}\n",
            serde_json::to_string_pretty(&registry).expect("json"),
            sha256_hex(&canonical_registry_bytes(&registry)),
        );
        assert_eq!(verify(pretty.as_bytes()).expect("verifies").position, 5);
    }

    #[test]
    fn every_truncation_is_refused() {
        let document = export(77, 1024, &registry());
        for length in 0..document.len() {
            let error = verify(&document[..length]).expect_err("truncated");
            assert!(
                matches!(error, BackupError::Empty | BackupError::Truncated { .. }),
                "length {length}: {error}"
            );
        }
    }

    #[test]
    fn every_bit_flip_in_the_registry_or_checksum_is_refused() {
        let document = export(77, 1024, &registry());
        let text = String::from_utf8(document.clone()).expect("utf-8");
        // The checksum covers the registry; the header's numbers are covered by
        // the file name (see `a_renamed_or_altered_position_is_refused_by_name`).
        let start = text.find("\"registry\"").expect("registry key");
        let sha = text.find("\"sha256\"").expect("sha key");
        let covered: Vec<usize> = (start..document.len()).chain(sha..sha + 75).collect();
        let mut refused = 0;
        for index in covered {
            for bit in 0..8 {
                let mut flipped = document.clone();
                flipped[index] ^= 1 << bit;
                match verify(&flipped) {
                    Err(_) => refused += 1,
                    // A flip of a letter's case in the hex digest is the same digest.
                    Ok(verified) => assert!(
                        index >= sha && bit == 5 && document[index].is_ascii_alphabetic(),
                        "flip of bit {bit} at {index} accepted: {}",
                        String::from_utf8_lossy(&verified.document)
                    ),
                }
            }
        }
        assert!(refused > 1000, "{refused}");
    }

    #[test]
    fn garbage_wrong_format_and_wrong_checksum_are_refused_with_their_reason() {
        assert!(matches!(
            verify(b"\x00\x01PK garbage"),
            Err(BackupError::NotJson { .. })
        ));
        assert!(matches!(verify(b"  \n"), Err(BackupError::Empty)));
        assert!(matches!(
            verify(b"[1,2,3]"),
            Err(BackupError::NotAnExport { .. })
        ));
        let mut value: serde_json::Value =
            serde_json::from_slice(&export(1, 2, &registry())).expect("json");
        value["format"] = "mesos-operator/registry-export/v2".into();
        let error = verify(&serde_json::to_vec(&value).expect("json")).expect_err("v2");
        assert_eq!(
            error.to_string(),
            "the backup has format \"mesos-operator/registry-export/v2\"; this version reads only \"mesos-operator/registry-export/v1\""
        );
        value["format"] = EXPORT_FORMAT.into();
        value["sha256"] = sha256_hex(b"something else").into();
        assert!(matches!(
            verify(&serde_json::to_vec(&value).expect("json")),
            Err(BackupError::ChecksumMismatch { .. })
        ));
        value["sha256"] = sha256_hex(&canonical_registry_bytes(&registry())).into();
        value["registry"]["weights"]["analytics"] = 3.0.into();
        assert!(matches!(
            verify(&serde_json::to_vec(&value).expect("json")),
            Err(BackupError::ChecksumMismatch { .. })
        ));
        value["registry"] = serde_json::json!({"agents": "not a list"});
        assert!(matches!(
            verify(&serde_json::to_vec(&value).expect("json")),
            Err(BackupError::NotAnExport { .. })
        ));
    }

    #[test]
    fn a_renamed_or_altered_position_is_refused_by_name() {
        let document = export(77, 1024, &registry());
        assert!(verify_file("registry-77-1024.json", &document).is_ok());
        assert!(verify_file("before-upgrade.json", &document).is_ok());
        let error = verify_file("registry-77-1025.json", &document).expect_err("renamed");
        assert_eq!(
            error.to_string(),
            "the backup is named registry-77-1025.json but holds log 77 at position 1024: it was renamed or is corrupt"
        );
    }

    #[test]
    fn write_backup_is_atomic_and_read_backup_verifies_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let verified = verify(&export(3, 40, &registry())).expect("verifies");
        let path = write_backup(&dir.path().join("backups"), &verified).expect("written");
        assert_eq!(path.file_name().expect("name"), "registry-3-40.json");
        assert_eq!(read_backup(&path).expect("reads"), verified);
        let left: Vec<_> = fs::read_dir(dir.path().join("backups"))
            .expect("dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("registry-3-40.json")]);
    }

    /// A scripted ensemble: statuses per member, an export, and what import answers.
    pub(crate) struct FakeMasters {
        pub statuses: BTreeMap<SocketAddr, LogStatus>,
        pub export: Result<Vec<u8>, RegistryCallError>,
        pub import: Result<bool, RegistryCallError>,
        pub imported: RefCell<Vec<(SocketAddr, Vec<u8>)>>,
        pub exported_from: RefCell<Vec<SocketAddr>>,
    }

    impl MasterClient for FakeMasters {
        fn log_status(&self, member: SocketAddr) -> Option<LogStatus> {
            self.statuses.get(&member).cloned()
        }
        fn export_registry(&self, member: SocketAddr) -> Result<Vec<u8>, RegistryCallError> {
            self.exported_from.borrow_mut().push(member);
            self.export.clone()
        }
        fn seal_and_export_registry(
            &self,
            member: SocketAddr,
        ) -> Result<Vec<u8>, RegistryCallError> {
            panic!("a backup must never seal the registry (asked of {member})")
        }
        fn unseal_registry(&self, member: SocketAddr) -> Result<(), RegistryCallError> {
            panic!("a backup never unseals the registry (asked of {member})")
        }
        fn import_registry(
            &self,
            member: SocketAddr,
            document: &[u8],
        ) -> Result<bool, RegistryCallError> {
            self.imported.borrow_mut().push((member, document.to_vec()));
            self.import.clone()
        }
    }

    fn status(member: SocketAddr, leader: Option<SocketAddr>) -> LogStatus {
        LogStatus {
            member,
            status: crate::master::api::ReplicaStatus::Voting,
            log_id: Some(77),
            begin: 0,
            end: 1024,
            learned: 1024,
            quorum: 2,
            masters: vec![],
            leader,
            elected: leader == Some(member),
            peer_tls: false,
        }
    }

    fn ensemble(leader: usize) -> (Vec<SocketAddr>, FakeMasters) {
        let masters: Vec<SocketAddr> = (1..=3)
            .map(|i| SocketAddr::from(([127, 0, 0, i], 27300)))
            .collect();
        let statuses = masters
            .iter()
            .map(|member| (*member, status(*member, Some(masters[leader]))))
            .collect();
        let fake = FakeMasters {
            statuses,
            export: Ok(export(77, 1024, &registry())),
            import: Ok(true),
            imported: RefCell::new(vec![]),
            exported_from: RefCell::new(vec![]),
        };
        (masters, fake)
    }

    #[test]
    fn take_backup_exports_from_the_leader() {
        let (masters, fake) = ensemble(2);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = take_backup(&fake, &masters, dir.path()).expect("backup");
        assert_eq!(*fake.exported_from.borrow(), vec![masters[2]]);
        assert_eq!(path, dir.path().join("registry-77-1024.json"));
        assert_eq!(
            fs::read(&path).expect("file"),
            export(77, 1024, &registry())
        );
    }

    #[test]
    fn a_corrupt_export_is_not_written() {
        let (masters, mut fake) = ensemble(0);
        let mut document = export(77, 1024, &registry());
        document.truncate(document.len() - 10);
        fake.export = Ok(document);
        let dir = tempfile::tempdir().expect("tempdir");
        let error = take_backup(&fake, &masters, dir.path()).expect_err("truncated");
        assert!(matches!(error, BackupError::BadExport(_)), "{error}");
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn no_leader_says_what_each_member_answered() {
        let (masters, mut fake) = ensemble(0);
        fake.statuses.remove(&masters[0]);
        for status in fake.statuses.values_mut() {
            status.leader = None;
            status.elected = false;
        }
        let error = find_leader(&fake, &masters).expect_err("no leader");
        assert_eq!(
            error.to_string(),
            "no leader among the masters: 127.0.0.1:27300 did not answer /log/status; 127.0.0.2:27300 is VOTING and knows no leader; 127.0.0.3:27300 is VOTING and knows no leader"
        );
    }

    #[test]
    fn restore_sends_a_good_file_to_the_leader_and_nothing_for_a_bad_one() {
        let (masters, mut fake) = ensemble(1);
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("registry-77-1024.json");
        fs::write(&good, export(77, 1024, &registry())).expect("write");
        restore(&fake, &masters, &good).expect("restored");
        assert_eq!(fake.imported.borrow()[0].0, masters[1]);

        let bad = dir.path().join("registry-77-1023.json");
        fs::write(&bad, export(77, 1024, &registry())).expect("write");
        assert!(restore(&fake, &masters, &bad).is_err());
        assert_eq!(fake.imported.borrow().len(), 1, "nothing sent");

        fake.import = Ok(false);
        let error = restore(&fake, &masters, &good).expect_err("409");
        assert!(
            matches!(error, BackupError::RegistryNotEmpty { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("is not empty"), "{error}");
    }

    #[test]
    fn parse_masters_names_the_bad_entry() {
        assert_eq!(
            parse_masters("127.0.0.1:1, 127.0.0.2:2")
                .expect("list")
                .len(),
            2
        );
        assert!(parse_masters("127.0.0.1:1,nohost")
            .expect_err("bad")
            .contains("\"nohost\""));
    }

    #[test]
    fn pruning_keeps_the_newest_of_one_log_and_touches_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "registry-7-10.json",
            "registry-7-200.json",
            "registry-7-30.json",
            "registry-7-4.json",
            "registry-8-1.json",
            "notes.txt",
            "registry-7-x.json",
        ] {
            fs::write(dir.path().join(name), b"{}").expect("write");
        }
        let removed = prune_backups(dir.path(), 7, 2).expect("pruned");
        let names = |paths: Vec<PathBuf>| -> Vec<String> {
            let mut names: Vec<String> = paths
                .iter()
                .filter_map(|path| Some(path.file_name()?.to_str()?.to_owned()))
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            names(removed),
            vec!["registry-7-10.json", "registry-7-4.json"]
        );
        let left = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|entry| Some(entry.ok()?.path()))
            .collect();
        assert_eq!(
            names(left),
            vec![
                "notes.txt",
                "registry-7-200.json",
                "registry-7-30.json",
                "registry-7-x.json",
                "registry-8-1.json"
            ]
        );
    }
}
