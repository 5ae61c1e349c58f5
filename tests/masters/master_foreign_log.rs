//! Issue #3: a master started on the `replicated_log` of another log (a swapped or
//! restored volume) exits non-zero with one line naming both log ids, the members
//! that said so and what to do, while the ensemble stays available; wiping the
//! volume as the line says lets it rejoin.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::thread::sleep;
use std::time::Instant;

use crate::support::ensemble::{copy_dir, Ensemble, EVENTUALLY, POLL};

fn log_id(ensemble: &Ensemble, i: usize) -> u64 {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        if let Some(id) = ensemble.status(i).and_then(|s| s["log_id"].as_u64()) {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "member {i} never reported a log id"
        );
        sleep(POLL);
    }
}

#[test]
fn a_member_on_another_logs_volume_exits_with_one_line_and_the_ensemble_stays_available() {
    // Another ensemble with the same addresses, token and whitelist makes a log.
    let mut other = Ensemble::builder().members(3).quorum(2).spawn();
    other.wait_for_leader();
    other.append(b"theirs", EVENTUALLY).expect("other append");
    let theirs = log_id(&other, 0);
    for i in 0..3 {
        other.kill(i);
    }

    let mut ensemble = Ensemble::builder()
        .members(3)
        .quorum(2)
        .port(other.port())
        .spawn();
    let mut acked = BTreeMap::new();
    let leader = ensemble.wait_for_leader();
    ensemble.write_some("ours", 5, &mut acked);
    let ours = log_id(&ensemble, leader);
    assert_ne!(ours, theirs);

    // A follower comes back on the other ensemble's volume for its address.
    let stray = (0..3).find(|i| *i != leader).expect("a follower");
    ensemble.kill(stray);
    ensemble.wipe(stray);
    copy_dir(&other.work_dir(stray), &ensemble.work_dir(stray));
    let started = Instant::now();
    let mut child = ensemble
        .command(stray)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stray");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > EVENTUALLY {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the member on another log's volume kept running");
        }
        // The others keep serving meanwhile.
        ensemble.write_some("while-stray", 1, &mut acked);
        sleep(POLL);
    };
    eprintln!("stray member exited after {:?}", started.elapsed());
    assert!(!status.success(), "exited successfully: {status}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("mesos-master:"))
        .unwrap_or_else(|| panic!("no refusal line in: {stderr}"));
    let others: Vec<String> = (0..3)
        .filter(|i| *i != stray)
        .map(|i| ensemble.member(i).to_string())
        .collect();
    for expected in [
        format!("log {theirs:#x}"),
        format!("on log {ours:#x}"),
        others[0].clone(),
        others[1].clone(),
        "wipe".to_owned(),
        "replicated_log".to_owned(),
    ] {
        assert!(
            line.contains(&expected),
            "{expected:?} missing from: {line}"
        );
    }

    // The two healthy members saw one stray, fewer than a quorum: they stay, count
    // the refusals, and keep the ensemble available.
    assert_eq!(ensemble.running().len(), 2, "a healthy member exited");
    for i in ensemble.running() {
        let metrics = ensemble.metrics(i);
        assert!(
            metrics["log/transport/refused_wrong_log_id"] >= 1.0,
            "member {i}: {metrics:?}"
        );
    }
    ensemble.write_some("after-stray", 5, &mut acked);

    // Doing what the line says: wipe replicated_log, restart, catch up.
    std::fs::remove_dir_all(ensemble.work_dir(stray).join("replicated_log")).expect("wipe");
    ensemble.start(stray);
    ensemble.assert_holds(stray, &acked);
    let deadline = Instant::now() + EVENTUALLY;
    while ensemble
        .status(stray)
        .is_none_or(|s| s["status"] != "VOTING")
    {
        assert!(Instant::now() < deadline, "the wiped member never voted");
        sleep(POLL);
    }
    assert_eq!(log_id(&ensemble, stray), ours);
    // Its vote is now needed: with the leader down, it and one original form the
    // quorum.
    let leader = ensemble.wait_for_leader();
    ensemble.kill(leader);
    ensemble.write_some("needs-rejoined", 3, &mut acked);
    assert!(
        ensemble.exited(stray).is_none(),
        "the rejoined member exited"
    );
}
