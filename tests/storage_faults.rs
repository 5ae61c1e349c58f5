//! Storage faults under a real 3-master ensemble (`mesos-master` processes on
//! 127.0.0.x, ports 27200-27249): damage one stopped member's `replicated_log`, restart
//! it, and check what it does with the damage, that it never serves damaged data as
//! entries, that the two healthy members still hold every acknowledged write, and
//! that the operator's way out (wipe `replicated_log`, restart) brings it back.
//!
//! What each fault means, and the behaviour asserted:
//! - a flipped bit in the middle of a record: damage to data this replica made
//!   durable and acknowledged. Fatal to the replica: it refuses to start, with a
//!   message naming the segment file and byte offset.
//! - the last segment cut in the middle of its last record: what a crash in the
//!   middle of a write leaves. The tail is cut on open (a warning names the file
//!   and offset) and the member starts and catches up.
//! - the last segment cut at a record boundary, losing whole records, and a
//!   sealed segment in the middle deleted: both leave a store that is
//!   well-formed, just shorter (segment ids may have gaps after compaction), so the
//!   replica cannot tell. The member starts with less than it acknowledged; the
//!   test checks what the rest of the ensemble makes of that: the lost positions
//!   come back by catch-up and nothing acknowledged is lost while the other two
//!   members are healthy. (Undetectable loss of fsynced data can, in general, undo a
//!   vote this replica gave; only the healthy majority covers for it.)
//! - a full disk (a 4 MiB tmpfs as one member's work_dir; needs root, skipped with
//!   a message otherwise): the member stops acknowledging, the other two go on,
//!   and once the file system has room again the member restarts and catches up.

mod master_common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use master_common::request_with_body;
use mesos_operator::master::raw_log::{Appended, RawEntry};

const MASTER: &str = env!("CARGO_BIN_EXE_mesos-master");
/// Bounds anything the ensemble must eventually do (elect, catch up, exit); not a
/// performance claim.
const EVENTUALLY: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

// The WAL's on-disk format (src/log/wal.rs), to damage it precisely.
const SEGMENT_HEADER_BYTES: usize = 16;
const RECORD_HEADER_BYTES: usize = 22;
const FLAG_END_OF_BATCH: u8 = 0x01;

struct Ensemble {
    _root: tempfile::TempDir,
    dir: PathBuf,
    members: Vec<SocketAddr>,
    processes: Vec<Option<Child>>,
    token_file: PathBuf,
    /// Work directories set by a test (a tmpfs), instead of `dir/master-<i>`.
    work_dirs: BTreeMap<usize, PathBuf>,
}

impl Ensemble {
    fn new(port: u16) -> Ensemble {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().to_path_buf();
        let token_file = dir.join("token");
        std::fs::write(&token_file, "ensemble-secret\n").expect("token");
        Ensemble {
            _root: root,
            dir,
            members: (0..3)
                .map(|i| SocketAddr::from(([127, 0, 0, 1 + i as u8], port)))
                .collect(),
            processes: (0..3).map(|_| None).collect(),
            token_file,
            work_dirs: BTreeMap::new(),
        }
    }

    fn start(port: u16) -> Ensemble {
        let mut ensemble = Ensemble::new(port);
        for i in 0..3 {
            ensemble.spawn(i);
        }
        ensemble
    }

    fn work_dir(&self, i: usize) -> PathBuf {
        self.work_dirs
            .get(&i)
            .cloned()
            .unwrap_or_else(|| self.dir.join(format!("master-{i}")))
    }

    fn log_dir(&self, i: usize) -> PathBuf {
        self.work_dir(i).join("replicated_log")
    }

    fn stderr_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("master-{i}.stderr"))
    }

    fn stderr(&self, i: usize) -> String {
        std::fs::read_to_string(self.stderr_path(i)).unwrap_or_default()
    }

    fn command(&self, i: usize) -> Command {
        let masters: Vec<String> = self.members.iter().map(ToString::to_string).collect();
        let stderr = std::fs::File::create(self.stderr_path(i)).expect("stderr file");
        let mut command = Command::new(MASTER);
        command
            .arg(format!("--ip={}", self.members[i].ip()))
            .arg(format!("--port={}", self.members[i].port()))
            .arg("--quorum=2")
            .arg(format!("--masters={}", masters.join(",")))
            .arg(format!("--work_dir={}", self.work_dir(i).display()))
            .arg(format!(
                "--ensemble_token_file={}",
                self.token_file.display()
            ))
            .arg("--raw_log_api")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr);
        command
    }

    fn spawn(&mut self, i: usize) {
        self.processes[i] = Some(self.command(i).spawn().expect("spawn mesos-master"));
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.processes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` and waits for it to exit by itself: its exit status, or
    /// `None` if it is still running at the deadline (it is then left running).
    fn spawn_expecting_exit(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.spawn(i);
        let deadline = Instant::now() + EVENTUALLY;
        while Instant::now() < deadline {
            if let Some(child) = self.processes[i].as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.processes[i] = None;
                    return Some(status);
                }
            }
            sleep(POLL);
        }
        None
    }

    fn running(&self) -> Vec<usize> {
        (0..3).filter(|i| self.processes[*i].is_some()).collect()
    }

    fn status(&self, i: usize) -> Option<serde_json::Value> {
        let response = master_common::request(self.members[i], "GET", "/log/status").ok()?;
        serde_json::from_str(&response.body).ok()
    }

    fn wait_for_leader(&self) -> usize {
        let deadline = Instant::now() + EVENTUALLY;
        while Instant::now() < deadline {
            for i in self.running() {
                if self.status(i).is_some_and(|s| s["elected"] == true) {
                    return i;
                }
            }
            sleep(POLL);
        }
        panic!("no leader elected within {EVENTUALLY:?}");
    }

    fn follower(&self) -> usize {
        let leader = self.wait_for_leader();
        self.running()
            .into_iter()
            .find(|i| *i != leader)
            .expect("a follower")
    }

    /// One append through whichever member leads; `None` if none acknowledged it
    /// before `within`.
    fn append(&self, data: &[u8], within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            for i in self.running() {
                let Ok(response) = request_with_body(self.members[i], "POST", "/log/append", data)
                else {
                    continue;
                };
                if response.status == 200 {
                    let appended: Appended =
                        serde_json::from_str(&response.body).expect("append response");
                    return Some(appended.position);
                }
            }
            sleep(POLL);
        }
        None
    }

    /// Raw entries member `i` serves as learned; `None` while it does not answer.
    fn learned(&self, i: usize) -> Option<BTreeMap<u64, String>> {
        let response =
            master_common::request(self.members[i], "GET", "/log/read?from=0&to=100000").ok()?;
        if response.status != 200 {
            return None;
        }
        let entries: Vec<RawEntry> = serde_json::from_str(&response.body).expect("read response");
        Some(
            entries
                .into_iter()
                .filter(|e| e.kind == "raw")
                .map(|e| (e.position, e.data))
                .collect(),
        )
    }

    /// Waits until member `i` serves every acknowledged append at its position; on
    /// the way, every entry it serves at an acknowledged position must be the
    /// acknowledged one (damaged data is never served, not even briefly).
    fn assert_holds(&self, i: usize, acked: &BTreeMap<u64, String>) {
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let learned = self.learned(i).unwrap_or_default();
            for (position, data) in &learned {
                if let Some(expected) = acked.get(position) {
                    assert_eq!(
                        data, expected,
                        "member {} serves another value at acknowledged position {position}",
                        self.members[i]
                    );
                }
            }
            let missing: Vec<_> = acked
                .iter()
                .filter(|(p, d)| learned.get(p) != Some(d))
                .map(|(p, _)| *p)
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "member {} lacks acknowledged appends at {missing:?}",
                self.members[i]
            );
            sleep(POLL);
        }
    }

    fn wait_voting(&self, i: usize) {
        let deadline = Instant::now() + EVENTUALLY;
        while self.status(i).is_none_or(|s| s["status"] != "VOTING") {
            assert!(
                Instant::now() < deadline,
                "member {} never voted again: {}",
                self.members[i],
                self.stderr(i)
            );
            sleep(POLL);
        }
    }

    /// The operator's way out: wipe `replicated_log`, restart, catch up, vote.
    fn wipe_and_rejoin(&mut self, i: usize, acked: &BTreeMap<u64, String>) {
        self.kill(i);
        std::fs::remove_dir_all(self.log_dir(i)).expect("wipe replicated_log");
        self.spawn(i);
        self.assert_holds(i, acked);
        self.wait_voting(i);
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_some(ensemble: &Ensemble, tag: &str, count: usize, acked: &mut BTreeMap<u64, String>) {
    for k in 0..count {
        let value = format!("{tag}-{k}");
        let position = ensemble
            .append(value.as_bytes(), EVENTUALLY)
            .unwrap_or_else(|| panic!("append {value} was not acknowledged"));
        assert!(
            acked.insert(position, hex(value.as_bytes())).is_none(),
            "position {position} acknowledged twice"
        );
    }
}

/// Segment files of a WAL directory, by id.
fn segments(log_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(log_dir)
        .expect("read replicated_log")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

/// Record boundaries of a segment: (offset, length, ends its batch).
fn records(bytes: &[u8]) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset + RECORD_HEADER_BYTES <= bytes.len() {
        let header = &bytes[offset..offset + RECORD_HEADER_BYTES];
        if header.iter().all(|&b| b == 0) {
            // The zeros the store keeps written ahead of its records.
            break;
        }
        let payload = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let length = RECORD_HEADER_BYTES + payload;
        if offset + length > bytes.len() {
            break;
        }
        out.push((offset, length, header[9] & FLAG_END_OF_BATCH != 0));
        offset += length;
    }
    out
}

fn only_segment(log_dir: &Path) -> (PathBuf, Vec<u8>) {
    let files = segments(log_dir);
    assert_eq!(files.len(), 1, "expected one segment: {files:?}");
    let bytes = std::fs::read(&files[0]).expect("read segment");
    (files[0].clone(), bytes)
}

/// Runs `damage` on a stopped follower's log after acknowledged writes; returns
/// the ensemble, the follower and the acknowledged writes.
fn damaged_follower(
    port: u16,
    damage: impl FnOnce(&Path),
) -> (Ensemble, usize, BTreeMap<u64, String>) {
    let mut ensemble = Ensemble::start(port);
    let mut acked = BTreeMap::new();
    ensemble.wait_for_leader();
    write_some(&ensemble, "before", 40, &mut acked);
    let victim = ensemble.follower();
    // Everything acknowledged is on the victim's disk before it stops: it learned
    // it (learning implies a durable accept here).
    ensemble.assert_holds(victim, &acked);
    ensemble.kill(victim);
    damage(&ensemble.log_dir(victim));
    (ensemble, victim, acked)
}

#[test]
fn a_flipped_bit_in_a_middle_record_stops_that_member_until_it_is_wiped() {
    let mut offset_flipped = 0;
    let mut segment_name = String::new();
    let (mut ensemble, victim, mut acked) = damaged_follower(27200, |log_dir| {
        let (path, mut bytes) = only_segment(log_dir);
        let all = records(&bytes);
        let (offset, length, _) = all[all.len() / 2];
        // Inside the payload: only the payload checksum can notice.
        offset_flipped = offset;
        bytes[offset + RECORD_HEADER_BYTES + (length - RECORD_HEADER_BYTES) / 2] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write segment");
        segment_name = path.file_name().unwrap().to_string_lossy().into_owned();
    });
    let status = ensemble
        .spawn_expecting_exit(victim)
        .expect("the member started on a corrupt record instead of refusing");
    assert!(!status.success());
    let stderr = ensemble.stderr(victim);
    // One line says why, naming the file and the offset, once.
    let refusal: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("refusing to start on corrupt storage"))
        .collect();
    assert_eq!(refusal.len(), 1, "expected one refusal line: {stderr}");
    let line = refusal[0];
    assert!(
        line.contains(&segment_name) && line.contains(&format!("byte offset {offset_flipped}")),
        "the refusal does not name the file and offset {offset_flipped}: {line}"
    );
    assert_eq!(
        line.matches(segment_name.as_str()).count(),
        1,
        "the refusal repeats itself: {line}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The healthy two hold everything and go on without it.
    for i in ensemble.running() {
        ensemble.assert_holds(i, &acked);
    }
    write_some(&ensemble, "without-victim", 5, &mut acked);
    ensemble.wipe_and_rejoin(victim, &acked);
    // Its vote counts again: with another member down, writes still commit.
    let other = ensemble
        .running()
        .into_iter()
        .find(|i| *i != victim)
        .expect("another member");
    ensemble.kill(other);
    write_some(&ensemble, "needs-victim", 3, &mut acked);
    ensemble.assert_holds(victim, &acked);
}

#[test]
fn a_torn_last_record_is_cut_and_the_member_catches_up() {
    let mut cut_at = 0;
    let (mut ensemble, victim, mut acked) = damaged_follower(27201, |log_dir| {
        let (path, bytes) = only_segment(log_dir);
        let &(offset, length, _) = records(&bytes).last().expect("records");
        // A crash in the middle of writing the last record.
        cut_at = offset + length / 2;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open segment");
        file.set_len(cut_at as u64).expect("truncate");
    });
    ensemble.spawn(victim);
    ensemble.assert_holds(victim, &acked);
    ensemble.wait_voting(victim);
    let stderr = ensemble.stderr(victim);
    assert!(
        stderr.contains("torn tail"),
        "the cut tail was not reported: {stderr}"
    );
    write_some(&ensemble, "after", 5, &mut acked);
    for i in 0..3 {
        ensemble.assert_holds(i, &acked);
    }
}

#[test]
fn whole_records_lost_at_the_end_are_caught_up_from_the_others() {
    let mut lost_records = 0;
    let (mut ensemble, victim, mut acked) = damaged_follower(27202, |log_dir| {
        let (path, bytes) = only_segment(log_dir);
        let all = records(&bytes);
        // Cut at the boundary of a batch a quarter of the way from the end: a
        // well-formed, shorter log.
        let keep = all
            .iter()
            .take(all.len() * 3 / 4)
            .rposition(|(_, _, end)| *end)
            .expect("a batch boundary");
        let (offset, length, _) = all[keep];
        lost_records = all.len() - keep - 1;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open segment");
        file.set_len((offset + length) as u64).expect("truncate");
    });
    assert!(lost_records > 0);
    ensemble.spawn(victim);
    // Undetectable by the replica: it starts, and must not serve anything other than
    // what was acknowledged while it catches the lost positions up.
    ensemble.assert_holds(victim, &acked);
    ensemble.wait_voting(victim);
    write_some(&ensemble, "after", 5, &mut acked);
    for i in 0..3 {
        ensemble.assert_holds(i, &acked);
    }
}

/// Splits a one-segment log into three segments at batch boundaries (ids 1, 2,
/// 3), the layout a log that rolled twice has; returns the paths.
fn split_into_three(log_dir: &Path) -> Vec<PathBuf> {
    let (path, bytes) = only_segment(log_dir);
    let all = records(&bytes);
    let boundary = |fraction: usize| {
        let (offset, length, _) = all[all
            .iter()
            .take(all.len() * fraction / 3)
            .rposition(|(_, _, end)| *end)
            .expect("a batch boundary")];
        offset + length
    };
    let cuts = [SEGMENT_HEADER_BYTES, boundary(1), boundary(2), bytes.len()];
    std::fs::remove_file(&path).expect("remove the segment");
    (0..3)
        .map(|k| {
            let id = k as u64 + 1;
            let mut segment = b"MLOGWAL1".to_vec();
            segment.extend_from_slice(&id.to_le_bytes());
            segment.extend_from_slice(&bytes[cuts[k]..cuts[k + 1]]);
            let path = log_dir.join(format!("{id:020}.wal"));
            std::fs::write(&path, segment).expect("write segment");
            path
        })
        .collect()
}

#[test]
fn a_deleted_middle_segment_is_caught_up_from_the_others() {
    let mut ensemble = Ensemble::start(27203);
    let mut acked = BTreeMap::new();
    ensemble.wait_for_leader();
    write_some(&ensemble, "before", 60, &mut acked);
    let victim = ensemble.follower();
    ensemble.assert_holds(victim, &acked);
    ensemble.kill(victim);
    let log_dir = ensemble.log_dir(victim);
    let (single, bytes) = only_segment(&log_dir);
    split_into_three(&log_dir);
    // The split layout is a valid log: the member starts on it and holds everything.
    ensemble.spawn(victim);
    ensemble.assert_holds(victim, &acked);
    ensemble.kill(victim);
    // That start may have compacted the middle segment into the last one (a
    // follower's segment holds each position twice, its accept and its learned
    // mark, so its live bytes sit near the compaction threshold, and whether the
    // last marks were written before the kill is timing). So the loss is made on
    // the same split afresh: the segments go back to the one the member wrote
    // before the split, which is cut again, and its middle third is lost. (What
    // the check's start wrote is lost with it: no leader changed meanwhile, so it
    // holds no promise anyone relies on, only marks and copies it can fetch again.)
    for entry in std::fs::read_dir(&log_dir).expect("list the log") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "wal") {
            std::fs::remove_file(&path).expect("remove a segment");
        }
    }
    std::fs::write(&single, &bytes).expect("restore the segment");
    let parts = split_into_three(&log_dir);
    std::fs::remove_file(&parts[1]).expect("delete the middle segment");
    ensemble.spawn(victim);
    ensemble.assert_holds(victim, &acked);
    ensemble.wait_voting(victim);
    write_some(&ensemble, "after", 5, &mut acked);
    for i in 0..3 {
        ensemble.assert_holds(i, &acked);
    }
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {} failed", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Whether a member reported a write that failed for want of space. The zeros the
/// store writes ahead of its records are left out: it goes on without them.
fn out_of_space(stderr: &str) -> bool {
    stderr
        .lines()
        .any(|line| line.contains("No space left on device") && !line.contains("zeros ahead"))
}

#[test]
fn a_full_disk_stops_one_member_and_the_ensemble_goes_on() {
    let mut ensemble = Ensemble::new(27204);
    let victim = 2;
    let work_dir = ensemble.dir.join("tmpfs-master-2");
    let tmpfs = match Tmpfs::mount(&work_dir, "4m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("SKIPPED a_full_disk_stops_one_member_and_the_ensemble_goes_on: cannot mount a tmpfs ({reason})");
            return;
        }
    };
    ensemble.work_dirs.insert(victim, work_dir);
    for i in 0..3 {
        ensemble.spawn(i);
    }
    // The victim must not lead: it is the one whose disk fills.
    let deadline = Instant::now() + EVENTUALLY;
    while ensemble.wait_for_leader() == victim {
        assert!(Instant::now() < deadline, "the victim keeps leading");
        ensemble.kill(victim);
        ensemble.wait_for_leader();
        ensemble.spawn(victim);
    }
    let mut acked = BTreeMap::new();
    write_some(&ensemble, "small", 5, &mut acked);
    ensemble.assert_holds(victim, &acked);

    // 64 KiB appends: 4 MiB fills after about 60; the bound stops the loop either way.
    let chunk = vec![b'x'; 64 * 1024];
    let mut full_at = None;
    for k in 0..200usize {
        let mut value = format!("big-{k}-").into_bytes();
        value.extend_from_slice(&chunk);
        let position = ensemble.append(&value, EVENTUALLY).unwrap_or_else(|| {
            panic!("the two healthy members stopped acknowledging at append {k}")
        });
        acked.insert(position, hex(&value));
        let victim_down = ensemble.processes[victim]
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if victim_down || out_of_space(&ensemble.stderr(victim)) {
            full_at = Some(k);
            break;
        }
    }
    let full_at = full_at.expect("the 4 MiB file system never filled");
    let stderr = ensemble.stderr(victim);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out_of_space(&stderr),
        "the member does not say why it stopped: {stderr}"
    );
    // Not acknowledging what it could not persist: whatever it serves is what was
    // acknowledged, and the other two hold everything.
    if let Some(learned) = ensemble.learned(victim) {
        for (position, data) in learned {
            if let Some(expected) = acked.get(&position) {
                assert_eq!(&data, expected, "position {position}");
            }
        }
    }
    write_some(&ensemble, "while-full", 5, &mut acked);
    for i in 0..2 {
        ensemble.assert_holds(i, &acked);
    }

    // Room again: the member restarts on what it has and catches up.
    ensemble.kill(victim);
    tmpfs.resize("64m");
    ensemble.spawn(victim);
    ensemble.assert_holds(victim, &acked);
    ensemble.wait_voting(victim);
    eprintln!(
        "full disk: filled after {full_at} appends of 64 KiB; {} acknowledged writes kept",
        acked.len()
    );
    ensemble.kill(victim);
    drop(tmpfs);
}
