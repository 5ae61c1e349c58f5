//! Writing a file so that a reader (or a process restarted after a crash) sees
//! either its old content or the whole new one: a temporary file in the same
//! directory, fsync, rename over the target, fsync of the directory.
//!
//! The directory's fsync is part of the write: until it succeeds the rename may
//! be lost with a power cut, and the operator's state dir, backups and requests
//! rely on what they wrote being there after a restart. So a failed directory
//! fsync is an error, like any other step.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Which step of an atomic write failed, and on which path.
#[derive(Debug, thiserror::Error)]
#[error("writing {}: {source}", path.display())]
pub struct AtomicWriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Replaces `path` with `bytes` atomically and durably (see the module doc).
/// The temporary file carries the process id, so two processes writing the same
/// file never write into one temporary; it is removed when the write fails.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| AtomicWriteError { path, source }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(failed(dir))?;
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(failed(&tmp)(error));
    }
    if let Err(error) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(failed(path)(error));
    }
    fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(failed(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested").join("status.yaml");
        write_atomically(&path, b"first").expect("written");
        write_atomically(&path, b"second, longer").expect("rewritten");
        assert_eq!(fs::read(&path).expect("read"), b"second, longer");
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("dir")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        assert_eq!(names, vec!["status.yaml"]);
    }

    #[test]
    fn a_failed_write_names_the_path_and_keeps_the_old_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spec.yaml");
        write_atomically(&path, b"kept").expect("written");
        // A directory where the target is: the rename fails.
        let blocked = dir.path().join("blocked");
        fs::create_dir_all(blocked.join("inside")).expect("dir");
        let error = write_atomically(&blocked, b"x").expect_err("rename over a directory");
        assert_eq!(error.path, blocked);
        assert_eq!(fs::read(&path).expect("read"), b"kept");
        let leftovers = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0);
    }
}
