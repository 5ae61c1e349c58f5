//! Registry backups: taking one from a running ensemble's leader, checking one,
//! and importing one into an ensemble whose registry is empty.
//!
//! A backup file is the leader's `GET /registry/export` document, byte for byte
//! (see [`crate::master::export_document`] for the format and its checksum), named
//! `registry-<log_id>-<position>.json`; a restore checks the name against the
//! document too, since the checksum does not cover `log_id` and `position`.
//!
//! [`verify`] is pure and is the only gate: nothing is written or sent for a
//! document it refuses.

use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::master::api::LogStatus;
use crate::master::export_document::{self, DocumentError};
use crate::operator::api::backup::parse_backup_name;
use crate::operator::atomic_file::write_atomically;
use crate::operator::master_client::{
    ImportOutcome, MasterCallError, MasterClient, MemberTarget, Redirect,
};

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
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error("no masters given")]
    NoMasters,
    #[error("no leader among the masters: {answers}")]
    NoLeader { answers: String },
    #[error("exporting the registry: {0}")]
    Export(MasterCallError),
    #[error("the leader's export is refused: {0}")]
    BadExport(DocumentError),
    #[error("importing the registry: {0}")]
    Import(MasterCallError),
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
    export_document::file_name(log_id, position)
}

/// Checks a registry export document ([`export_document::parse`]).
pub fn verify(document: &[u8]) -> Result<VerifiedBackup, DocumentError> {
    let parsed = export_document::parse(document)?;
    Ok(VerifiedBackup {
        log_id: parsed.log_id,
        position: parsed.position,
        sha256: parsed.sha256.to_ascii_lowercase(),
        document: document.to_vec(),
    })
}

/// [`verify`], plus the file name check ([`export_document::check_file_name`]).
pub fn verify_file(file_name: &str, document: &[u8]) -> Result<VerifiedBackup, DocumentError> {
    let verified = verify(document)?;
    export_document::check_file_name(file_name, verified.log_id, verified.position)?;
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
    Ok(verify_file(&file_name, &document)?)
}

/// Writes the backup into `dir` as `registry-<log_id>-<position>.json`: a temporary
/// file, fsync, rename, fsync of the directory, so a crash leaves the old state or
/// the whole new file, never a torn one under the final name.
pub fn write_backup(dir: &Path, backup: &VerifiedBackup) -> Result<PathBuf, BackupError> {
    let path = dir.join(backup.file_name());
    write_atomically(&path, &backup.document).map_err(|failed| BackupError::Write {
        path: failed.path,
        error: failed.source,
    })?;
    Ok(path)
}

/// The leader among `masters`: the member that says it is elected, else the
/// leader a member names. Every member is asked in order; the error lists what
/// each answered, so "no leader" says why.
pub async fn find_leader(
    client: &dyn MasterClient,
    masters: &[SocketAddr],
) -> Result<SocketAddr, BackupError> {
    if masters.is_empty() {
        return Err(BackupError::NoMasters);
    }
    let mut statuses: Vec<(SocketAddr, Option<LogStatus>)> = Vec::new();
    for member in masters {
        let status = client.log_status(MemberTarget::at(*member)).await.ok();
        statuses.push((*member, status));
    }
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
/// The export follows one redirect: the leader may change between the status
/// read and the call.
pub async fn take_backup(
    client: &dyn MasterClient,
    masters: &[SocketAddr],
    out_dir: &Path,
) -> Result<PathBuf, BackupError> {
    let leader = find_leader(client, masters).await?;
    let document = client
        .export_registry(MemberTarget::at(leader), Redirect::FollowOnce)
        .await
        .map_err(BackupError::Export)?;
    // A bad export is never stored: a backup that cannot be restored is worse
    // than none, because it is trusted.
    let verified = verify(&document).map_err(BackupError::BadExport)?;
    write_backup(out_dir, &verified)
}

/// Checks `file` and imports it through the leader. Nothing is sent if the file
/// does not verify. The import follows one redirect, as the export does.
pub async fn restore(
    client: &dyn MasterClient,
    masters: &[SocketAddr],
    file: &Path,
) -> Result<VerifiedBackup, BackupError> {
    let verified = read_backup(file)?;
    let leader = find_leader(client, masters).await?;
    let imported = client
        .import_registry(
            MemberTarget::at(leader),
            verified.document.clone(),
            Redirect::FollowOnce,
        )
        .await;
    match imported {
        Ok(ImportOutcome::Imported) => Ok(verified),
        Ok(ImportOutcome::AlreadyHeldData) => Err(BackupError::RegistryNotEmpty { leader }),
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
    use crate::master::export_document::{registry_sha256, EXPORT_FORMAT};
    use crate::master::registry::{MaintenanceSchedule, MasterRecord, Registry};
    use crate::operator::master_client::{Call, LocalExport};
    use futures::future::BoxFuture;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

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
            "sha256": registry_sha256(registry),
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
            registry_sha256(&registry),
        );
        assert_eq!(verify(pretty.as_bytes()).expect("verifies").position, 5);
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
            Err(DocumentError::NotJson { .. })
        ));
        assert!(matches!(verify(b"  \n"), Err(DocumentError::Empty)));
        assert!(matches!(
            verify(b"[1,2,3]"),
            Err(DocumentError::NotAnExport { .. })
        ));
        let mut value: serde_json::Value =
            serde_json::from_slice(&export(1, 2, &registry())).expect("json");
        value["format"] = "mesos-operator/registry-export/v2".into();
        let error = verify(&serde_json::to_vec(&value).expect("json")).expect_err("v2");
        assert_eq!(
            error.to_string(),
            "the registry export has format \"mesos-operator/registry-export/v2\"; this version reads only \"mesos-operator/registry-export/v1\""
        );
        value["format"] = EXPORT_FORMAT.into();
        value["sha256"] = registry_sha256(&Registry::default()).into();
        assert!(matches!(
            verify(&serde_json::to_vec(&value).expect("json")),
            Err(DocumentError::ChecksumMismatch { .. })
        ));
        value["sha256"] = registry_sha256(&registry()).into();
        value["registry"]["weights"]["analytics"] = 3.0.into();
        assert!(matches!(
            verify(&serde_json::to_vec(&value).expect("json")),
            Err(DocumentError::ChecksumMismatch { .. })
        ));
        value["registry"] = serde_json::json!({"agents": "not a list"});
        assert!(matches!(
            verify(&serde_json::to_vec(&value).expect("json")),
            Err(DocumentError::NotAnExport { .. })
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
            "the registry export is named registry-77-1025.json but holds log 77 at position 1024: it was renamed or is corrupt"
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
        pub export: Result<Vec<u8>, MasterCallError>,
        pub import: Result<ImportOutcome, MasterCallError>,
        pub imported: Mutex<Vec<(SocketAddr, Vec<u8>)>>,
        pub exported_from: Mutex<Vec<SocketAddr>>,
    }

    impl MasterClient for FakeMasters {
        fn log_status(
            &self,
            target: MemberTarget,
        ) -> BoxFuture<'_, Result<LogStatus, MasterCallError>> {
            let status =
                self.statuses
                    .get(&target.address)
                    .cloned()
                    .ok_or(MasterCallError::Unreachable {
                        member: target.name,
                        call: Call::Status,
                        reason: "connection refused".into(),
                    });
            Box::pin(async move { status })
        }
        fn export_registry(
            &self,
            target: MemberTarget,
            redirect: Redirect,
        ) -> BoxFuture<'_, Result<Vec<u8>, MasterCallError>> {
            assert_eq!(
                redirect,
                Redirect::FollowOnce,
                "a backup follows the leader"
            );
            self.exported_from
                .lock()
                .expect("lock")
                .push(target.address);
            let export = self.export.clone();
            Box::pin(async move { export })
        }
        fn seal_registry(
            &self,
            target: MemberTarget,
            _: Redirect,
        ) -> BoxFuture<'_, Result<Vec<u8>, MasterCallError>> {
            panic!(
                "a backup must never seal the registry (asked of {})",
                target.name
            )
        }
        fn unseal_registry(
            &self,
            target: MemberTarget,
            _: Redirect,
        ) -> BoxFuture<'_, Result<(), MasterCallError>> {
            panic!(
                "a backup never unseals the registry (asked of {})",
                target.name
            )
        }
        fn export_local_registry(
            &self,
            target: MemberTarget,
        ) -> BoxFuture<'_, Result<LocalExport, MasterCallError>> {
            panic!(
                "a backup never reads a member's local export (asked of {})",
                target.name
            )
        }
        fn import_registry(
            &self,
            target: MemberTarget,
            document: Vec<u8>,
            redirect: Redirect,
        ) -> BoxFuture<'_, Result<ImportOutcome, MasterCallError>> {
            assert_eq!(
                redirect,
                Redirect::FollowOnce,
                "a restore follows the leader"
            );
            self.imported
                .lock()
                .expect("lock")
                .push((target.address, document));
            let import = self.import.clone();
            Box::pin(async move { import })
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
            import: Ok(ImportOutcome::Imported),
            imported: Mutex::new(vec![]),
            exported_from: Mutex::new(vec![]),
        };
        (masters, fake)
    }

    #[tokio::test]
    async fn take_backup_exports_from_the_leader() {
        let (masters, fake) = ensemble(2);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = take_backup(&fake, &masters, dir.path())
            .await
            .expect("backup");
        assert_eq!(*fake.exported_from.lock().expect("lock"), vec![masters[2]]);
        assert_eq!(path, dir.path().join("registry-77-1024.json"));
        assert_eq!(
            fs::read(&path).expect("file"),
            export(77, 1024, &registry())
        );
    }

    #[tokio::test]
    async fn a_corrupt_export_is_not_written() {
        let (masters, mut fake) = ensemble(0);
        let mut document = export(77, 1024, &registry());
        document.truncate(document.len() - 10);
        fake.export = Ok(document);
        let dir = tempfile::tempdir().expect("tempdir");
        let error = take_backup(&fake, &masters, dir.path())
            .await
            .expect_err("truncated");
        assert!(matches!(error, BackupError::BadExport(_)), "{error}");
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[tokio::test]
    async fn no_leader_says_what_each_member_answered() {
        let (masters, mut fake) = ensemble(0);
        fake.statuses.remove(&masters[0]);
        for status in fake.statuses.values_mut() {
            status.leader = None;
            status.elected = false;
        }
        let error = find_leader(&fake, &masters).await.expect_err("no leader");
        assert_eq!(
            error.to_string(),
            "no leader among the masters: 127.0.0.1:27300 did not answer /log/status; 127.0.0.2:27300 is VOTING and knows no leader; 127.0.0.3:27300 is VOTING and knows no leader"
        );
    }

    #[tokio::test]
    async fn restore_sends_a_good_file_to_the_leader_and_nothing_for_a_bad_one() {
        let (masters, mut fake) = ensemble(1);
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("registry-77-1024.json");
        fs::write(&good, export(77, 1024, &registry())).expect("write");
        restore(&fake, &masters, &good).await.expect("restored");
        assert_eq!(fake.imported.lock().expect("lock")[0].0, masters[1]);

        let bad = dir.path().join("registry-77-1023.json");
        fs::write(&bad, export(77, 1024, &registry())).expect("write");
        assert!(restore(&fake, &masters, &bad).await.is_err());
        assert_eq!(fake.imported.lock().expect("lock").len(), 1, "nothing sent");

        fake.import = Ok(ImportOutcome::AlreadyHeldData);
        let error = restore(&fake, &masters, &good).await.expect_err("409");
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
