//! Real `mesos-master` processes on 127.0.0.x: writes through the elected leader,
//! kill -9, restarts, wiped members, foreign logs, strangers and corrupt storage.
//!
//! Each test runs its own ensemble on its own port (every member keeps the same
//! port on its own loopback address, as in production with `--port=5050`), so the
//! tests can run in parallel. Every wait is bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::ensemble::{copy_dir, hex, raw_entries, Ensemble, EVENTUALLY, POLL};
use crate::support::http;

/// Raw entries learned by member `i`, by position; `None` while it does not
/// answer. An answer other than 200 fails the test.
fn learned(ensemble: &Ensemble, i: usize) -> Option<BTreeMap<u64, String>> {
    let response = ensemble.read_log(i)?;
    assert_eq!(response.status, 200, "{}", response.body);
    Some(raw_entries(&response.body))
}

/// With `2q-1` members, writes go on with `q-1` members killed (whichever they are,
/// the leader first), stop with one more, and resume when a member returns; every
/// acknowledged write is still in the log afterwards.
fn tolerates_quorum_minus_one_failures(members: usize, quorum: usize) {
    let mut ensemble = Ensemble::builder().members(members).quorum(quorum).spawn();
    let mut acked = BTreeMap::new();
    ensemble.wait_for_leader();
    ensemble.write_some("all-up", 10, &mut acked);

    for round in 0..quorum - 1 {
        let leader = ensemble.wait_for_leader();
        ensemble.kill(leader);
        ensemble.write_some(&format!("after-kill-{round}"), 5, &mut acked);
    }

    // One more failure leaves fewer than a quorum: nothing is acknowledged.
    let victim = ensemble.running()[0];
    ensemble.kill(victim);
    assert_eq!(
        ensemble.append(b"no-quorum", Duration::from_secs(3)),
        None,
        "a write was acknowledged without a quorum"
    );

    ensemble.start(victim);
    ensemble.write_some("resumed", 5, &mut acked);
    for i in ensemble.running() {
        ensemble.assert_holds(i, &acked);
    }
}

#[test]
fn one_master_writes_and_keeps_its_writes_across_restart() {
    let mut ensemble = Ensemble::builder().members(1).spawn();
    let mut acked = BTreeMap::new();
    ensemble.wait_for_leader();
    ensemble.write_some("solo", 10, &mut acked);
    ensemble.kill(0);
    assert_eq!(ensemble.append(b"down", Duration::from_millis(500)), None);
    ensemble.start(0);
    ensemble.wait_for_leader();
    ensemble.write_some("again", 5, &mut acked);
    ensemble.assert_holds(0, &acked);
}

#[test]
fn three_masters_tolerate_one_failure_and_stop_at_two() {
    tolerates_quorum_minus_one_failures(3, 2);
}

#[test]
fn five_masters_tolerate_two_failures_and_stop_at_three() {
    tolerates_quorum_minus_one_failures(5, 3);
}

#[test]
fn killing_the_leader_under_load_elects_a_new_leader_and_loses_nothing() {
    let mut ensemble = Ensemble::builder().members(3).spawn();
    let mut acked = BTreeMap::new();
    ensemble.wait_for_leader();
    let mut failovers_ms = Vec::new();
    for round in 0..3 {
        ensemble.write_some(&format!("before-{round}"), 20, &mut acked);
        let leader = ensemble.wait_for_leader();
        let killed_at = Instant::now();
        ensemble.kill(leader);
        let value = format!("first-after-{round}");
        let position = ensemble
            .append(value.as_bytes(), EVENTUALLY)
            .expect("no write acknowledged after the leader was killed");
        failovers_ms.push(killed_at.elapsed().as_millis());
        acked.insert(position, hex(value.as_bytes()));
        ensemble.start(leader);
    }
    // A figure for the notes, not an assertion: timing belongs to the benchmarks.
    eprintln!("failover (kill -9 of the leader -> first acknowledged write): {failovers_ms:?} ms");
    for i in ensemble.running() {
        ensemble.assert_holds(i, &acked);
    }
}

#[test]
fn a_wiped_member_catches_up_and_then_votes() {
    let mut ensemble = Ensemble::builder().members(3).spawn();
    let mut acked = BTreeMap::new();
    ensemble.wait_for_leader();
    ensemble.write_some("before-wipe", 30, &mut acked);

    let replaced = ensemble.follower();
    ensemble.kill(replaced);
    ensemble.wipe(replaced);
    ensemble.write_some("while-away", 10, &mut acked);
    ensemble.start(replaced);
    ensemble.assert_holds(replaced, &acked);
    let deadline = Instant::now() + EVENTUALLY;
    while ensemble
        .status(replaced)
        .is_none_or(|s| s["status"] != "VOTING")
    {
        assert!(Instant::now() < deadline, "the replacement never voted");
        sleep(POLL);
    }

    // The replacement's vote is now needed: with another member down, the quorum
    // of two is the replacement and one original.
    let other = ensemble
        .running()
        .into_iter()
        .find(|i| *i != replaced)
        .expect("another member");
    ensemble.kill(other);
    ensemble.write_some("needs-replacement", 5, &mut acked);
    for i in ensemble.running() {
        ensemble.assert_holds(i, &acked);
    }
}

#[test]
fn a_member_holding_another_log_cannot_vote() {
    let mut ensemble = Ensemble::builder().members(3).spawn();
    let mut acked = BTreeMap::new();
    ensemble.wait_for_leader();
    ensemble.write_some("ours", 5, &mut acked);

    // A second, unrelated ensemble on other addresses makes a log of its own.
    let mut stranger = Ensemble::builder().members(1).spawn();
    stranger.wait_for_leader();
    stranger
        .append(b"theirs", EVENTUALLY)
        .expect("stranger append");
    stranger.kill(0);

    // A follower comes back holding the stranger's log.
    let foreign = ensemble.follower();
    ensemble.kill(foreign);
    ensemble.wipe(foreign);
    copy_dir(&stranger.work_dir(0), &ensemble.work_dir(foreign));
    ensemble.start(foreign);
    ensemble.write_some("still-ours", 5, &mut acked);

    // Without the foreign member's vote there is no quorum of this log.
    let other = ensemble
        .running()
        .into_iter()
        .find(|i| *i != foreign)
        .expect("another member");
    ensemble.kill(other);
    assert_eq!(
        ensemble.append(b"needs-foreign-vote", Duration::from_secs(3)),
        None,
        "a member of another log helped form a quorum"
    );
    let theirs = learned(&ensemble, foreign).unwrap_or_default();
    assert!(
        theirs.values().all(|d| !acked.values().any(|a| a == d)),
        "the foreign member learned this log's entries"
    );
}

#[test]
fn a_stranger_or_a_wrong_token_cannot_join() {
    let mut ensemble = Ensemble::builder().members(3).spawn();
    let mut acked = BTreeMap::new();
    ensemble.wait_for_leader();
    ensemble.write_some("before", 5, &mut acked);

    // A fourth process that lists itself (and the three) in its own whitelist.
    let stranger_addr = SocketAddr::new([127, 0, 0, 9].into(), ensemble.port());
    let mut whitelist = ensemble.members().to_vec();
    whitelist.push(stranger_addr);
    let stranger = Ensemble::builder()
        .addresses(vec![stranger_addr])
        .whitelist(whitelist)
        .quorum(3)
        .spawn();

    // Member 2 restarts with a wrong token.
    let impostor = 2;
    ensemble.kill(impostor);
    let wrong_token = ensemble.dir().join("wrong-token");
    std::fs::write(&wrong_token, "not-the-secret").expect("token");
    ensemble.set_member_args(
        impostor,
        &[format!("--ensemble_token_file={}", wrong_token.display())],
    );
    ensemble.start(impostor);

    ensemble.write_some("with-outsiders", 5, &mut acked);
    // Neither outsider can stand in for a member: with one real member down
    // besides the impostor, there is no quorum.
    let real = (0..2)
        .find(|i| ensemble.running().contains(i))
        .expect("member");
    ensemble.kill(real);
    assert_eq!(
        ensemble.append(b"outsiders-only", Duration::from_secs(3)),
        None,
        "a stranger or an impostor helped form a quorum"
    );
    if let Some(status) = stranger.status(0) {
        assert_ne!(status["status"], "VOTING", "the stranger joined the log");
    }
}

#[test]
fn a_corrupted_record_is_detected_at_restart() {
    let mut ensemble = Ensemble::builder().members(1).spawn();
    let mut acked = BTreeMap::new();
    ensemble.wait_for_leader();
    ensemble.write_some("to-corrupt", 20, &mut acked);
    ensemble.kill(0);

    let segment = largest_file(&ensemble.log_dir(0));
    let mut bytes = std::fs::read(&segment).expect("read segment");
    // A byte in the middle: not a torn tail, which a crash can leave and which is
    // dropped on purpose, but damage to a record that was durable.
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write segment");

    let output = ensemble
        .command(0)
        .stderr(Stdio::piped())
        .output()
        .expect("run master");
    assert!(!output.status.success(), "started on corrupt storage");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("corrupt"),
        "the refusal does not say the storage is corrupt: {stderr}"
    );
}

fn largest_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("read log dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .map(|e| e.path())
        .expect("a segment file")
}

/// A registry write through whichever member leads (followers answer 307).
/// After an attempt whose outcome is unknown (a 503 from a deposed leader, or
/// no answer), a 409 to the retry means that attempt was applied: that is
/// success, as for any client retrying a non-idempotent write. The callers
/// check the registry's contents afterwards.
fn registry_write(ensemble: &Ensemble, path: &str, json: &str) {
    let deadline = Instant::now() + EVENTUALLY;
    let mut outcome_unknown = false;
    while Instant::now() < deadline {
        for i in ensemble.running() {
            match http::post_json(ensemble.member(i), path, json) {
                Ok(response) if response.status == 200 => return,
                Ok(response) if response.status == 409 && outcome_unknown => return,
                Ok(response) => {
                    assert!(
                        [307, 503].contains(&response.status),
                        "{path} {json} -> {} {}",
                        response.status,
                        response.body
                    );
                    outcome_unknown |= response.status == 503;
                }
                Err(_) => outcome_unknown = true,
            }
        }
        sleep(POLL);
    }
    panic!("registry write {path} {json} never acknowledged");
}

/// Waits until member `i` serves `path` with a body satisfying `check`.
fn eventually_reads(
    ensemble: &Ensemble,
    i: usize,
    path: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = Instant::now() + EVENTUALLY;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(response) = http::request(ensemble.member(i), "GET", path) {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&response.body) {
                if response.status == 200 && check(&value) {
                    return;
                }
            }
            last = response.body;
        }
        sleep(POLL);
    }
    panic!(
        "member {} never served the expected {path}; last: {last}",
        ensemble.member(i)
    );
}

#[test]
fn registry_writes_reach_every_member_and_survive_killing_every_master() {
    let mut ensemble = Ensemble::builder().members(3).spawn();
    ensemble.wait_for_leader();
    for k in 0..20 {
        registry_write(
            &ensemble,
            "/registrar/admit",
            &format!(r#"{{"id":"agent-{k}","hostname":"host-{k}","resources":[]}}"#),
        );
    }
    registry_write(
        &ensemble,
        "/api/v1",
        r#"{"type":"UPDATE_WEIGHTS","update_weights":{"weight_infos":[{"role":"dev","weight":2.5}]}}"#,
    );
    registry_write(
        &ensemble,
        "/api/v1",
        r#"{"type":"MARK_AGENT_GONE","mark_agent_gone":{"agent_id":{"value":"agent-3"}}}"#,
    );
    let agents_and_weights = |ensemble: &Ensemble| {
        for i in ensemble.running() {
            eventually_reads(ensemble, i, "/master/slaves", |v| {
                v["slaves"].as_array().is_some_and(|s| s.len() == 19)
            });
            eventually_reads(ensemble, i, "/weights", |v| {
                v[0]["role"] == "dev" && v[0]["weight"] == 2.5
            });
        }
    };
    agents_and_weights(&ensemble);

    for i in 0..3 {
        ensemble.kill(i);
    }
    for i in 0..3 {
        ensemble.start(i);
    }
    ensemble.wait_for_leader();
    agents_and_weights(&ensemble);
    // Re-admitting an agent marked gone stays refused after the restart.
    let leader = ensemble.wait_for_leader();
    let response = http::post_json(
        ensemble.member(leader),
        "/registrar/admit",
        r#"{"id":"agent-3","hostname":"host-3","resources":[]}"#,
    )
    .expect("admit");
    assert_eq!(response.status, 409, "{}", response.body);
}
