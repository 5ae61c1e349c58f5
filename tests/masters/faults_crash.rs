//! Crash loops on real processes: 3- and 5-master ensembles on 127.0.0.x under a
//! concurrent registry workload, with random members (the leader often) killed with
//! SIGKILL and restarted, repeatedly. Every client operation is recorded and the
//! history checked for linearizability; at the end no acknowledged write may be
//! missing and every member must agree with the leader.
//!
//! Bounded: ~30 s of faults per ensemble in CI. `FAULTS_SECONDS=<n>` runs longer;
//! `FAULTS_SEED=<n>` replays a seed (printed at the start and in the summary).

use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::faults_common::workload::{self, fault_duration, Rng, Workload};
use crate::support::ensemble::Ensemble;

/// A member's `/log/status` may take this long: leader polls move on past a
/// member that hangs.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

fn crash_loop(name: &str, members: usize) {
    let seed = workload::seed();
    println!("{name}: seed {seed} (FAULTS_SEED={seed} to replay)");
    let mut rng = Rng::new(seed);
    let mut cluster = Ensemble::builder()
        .members(members)
        .log_level("error")
        .status_timeout(STATUS_TIMEOUT)
        .spawn();
    assert!(
        cluster.leader_within(Duration::from_secs(30)).is_some(),
        "{name}: no leader at start"
    );
    let load = Workload::start(cluster.members(), 4, seed);
    let tolerated = members - cluster.quorum();
    let until = Instant::now() + fault_duration(30);
    let mut faults = 0;
    while Instant::now() < until {
        sleep(rng.millis(300, 1200));
        // Usually what the ensemble tolerates; now and then one more, so it also
        // loses its quorum for a while.
        let down = if rng.below(10) == 0 {
            tolerated + 1
        } else {
            1 + rng.below(tolerated as u64) as usize
        };
        let mut victims = Vec::new();
        // The leader first, half the time: failover under load is what matters.
        if rng.below(2) == 0 {
            if let Some(leader) = cluster.leader_within(Duration::from_millis(200)) {
                victims.push(leader);
            }
        }
        while victims.len() < down {
            let i = rng.below(members as u64) as usize;
            if !victims.contains(&i) {
                victims.push(i);
            }
        }
        for &i in &victims {
            cluster.kill(i);
            faults += 1;
        }
        sleep(rng.millis(100, 1500));
        for &i in &victims {
            cluster.start(i);
        }
    }
    // Let the clients see the healed ensemble for a moment before stopping them.
    let _ = cluster.leader_within(Duration::from_secs(30));
    sleep(Duration::from_secs(2));
    let clock = load.clock;
    let mut history = load.finish();
    let findings = workload::final_checks(&mut history, cluster.members(), clock);
    workload::report(name, seed, faults, &history, &findings);
}

#[test]
fn three_masters_survive_a_kill_restart_loop() {
    crash_loop("faults_crash/3", 3);
}

#[test]
fn five_masters_survive_a_kill_restart_loop() {
    crash_loop("faults_crash/5", 5);
}
