//! Network partitions on real processes: a 5-master ensemble, each master in its
//! own Linux network namespace on a bridge, under a concurrent registry workload
//! from the root namespace. Faults, in rounds: the leader isolated; a 2/3 split
//! with the leader on the minority side; a 3/2 split with the leader on the
//! majority side; flapping links; delay, jitter and loss with `tc netem`. Every
//! client operation is recorded and the history checked for linearizability; at
//! the end no acknowledged write may be missing and every member must agree.
//!
//! Needs root and iproute2 (`scripts/test.sh` installs it); without them it prints
//! a SKIP line and passes. Bounded: ~40 s of faults in CI; `FAULTS_SECONDS=<n>` runs
//! longer, `FAULTS_SEED=<n>` replays a seed. Port 27252 in namespaces `h6f-*`,
//! addresses 10.250.0.0/24 (no other test uses either).

use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::faults_common::netlab::NetLab;
use crate::faults_common::workload::{self, fault_duration, Rng, Workload};
use crate::support::ensemble::Ensemble;

const PORT: u16 = 27252;
const MEMBERS: usize = 5;
/// A member's `/log/status` may take this long: leader polls move on past a
/// member that hangs.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Members other than `leader`, shuffled.
fn others(rng: &mut Rng, leader: usize) -> Vec<usize> {
    let mut rest: Vec<usize> = (0..MEMBERS).filter(|&i| i != leader).collect();
    for i in (1..rest.len()).rev() {
        rest.swap(i, rng.below(i as u64 + 1) as usize);
    }
    rest
}

#[test]
fn five_masters_in_namespaces_survive_partitions_flaps_and_netem() {
    let name = "faults_partition/5";
    let mut lab = match NetLab::create(MEMBERS) {
        Ok(lab) => lab,
        Err(why) => {
            println!("{name}: SKIP: network namespaces are not available here ({why})");
            return;
        }
    };
    let seed = workload::seed();
    println!("{name}: seed {seed} (FAULTS_SEED={seed} to replay)");
    let mut rng = Rng::new(seed);
    // Declared after the lab, so it is dropped (its masters killed) first.
    let cluster = Ensemble::builder()
        .addresses(lab.members(PORT))
        .namespaces(lab.namespaces())
        .log_level("error")
        .status_timeout(STATUS_TIMEOUT)
        .spawn();
    assert!(
        cluster.leader_within(Duration::from_secs(30)).is_some(),
        "{name}: no leader at start"
    );
    let load = Workload::start(cluster.members(), 4, seed);
    let until = Instant::now() + fault_duration(40);
    let mut faults = 0;
    let mut netem_skipped = None;
    let mut round = 0;
    while Instant::now() < until {
        let leader = cluster
            .leader_within(Duration::from_secs(10))
            .unwrap_or_else(|| rng.below(MEMBERS as u64) as usize);
        let rest = others(&mut rng, leader);
        match round % 5 {
            0 => lab.partition(&[leader]),
            1 => lab.partition(&[leader, rest[0]]),
            2 => lab.partition(&[leader, rest[0], rest[1]]),
            3 => {
                // Flapping: one member's links cut and restored, fast.
                for _ in 0..6 {
                    let victim = rng.below(MEMBERS as u64) as usize;
                    lab.partition(&[victim]);
                    faults += 1;
                    sleep(rng.millis(200, 700));
                    lab.heal();
                    sleep(rng.millis(200, 700));
                }
            }
            _ => {
                for i in 0..MEMBERS {
                    match lab.netem(i, 20, 10, 3) {
                        Ok(()) => faults += 1,
                        Err(why) => {
                            netem_skipped = Some(why);
                            break;
                        }
                    }
                }
            }
        }
        if round % 5 != 3 {
            if round % 5 != 4 {
                faults += 1;
            }
            sleep(rng.millis(3000, 6000));
            lab.heal();
            lab.clear_netem();
            sleep(rng.millis(1000, 2000));
        }
        round += 1;
    }
    if let Some(why) = netem_skipped {
        println!("{name}: netem rounds skipped: {why}");
    }
    let _ = cluster.leader_within(Duration::from_secs(30));
    sleep(Duration::from_secs(2));
    let clock = load.clock;
    let mut history = load.finish();
    let findings = workload::final_checks(&mut history, cluster.members(), clock);
    workload::report(name, seed, faults, &history, &findings);
}
