//! End-to-end transitions in `mesos-operator local`: the built operator drives real
//! `mesos-master` processes on 127.0.0.x while a raw-log write load runs and a
//! sampler checks the safety invariant on what every member reports. The tests
//! rewrite the spec file (as `kubectl apply` would) and follow `status.yaml`.
//!
//! Each test has its own base port so they can run in parallel; every wait is
//! bounded; Drop kills the operator and every master of its state dir.

mod local_common;

use std::time::{Duration, Instant};

use local_common::{
    assert_no_write_lost, find_leader, learned, log_status, Load, Operator, Sampler,
};
use mesos_operator::operator::api::Phase;

#[test]
fn three_to_five_to_seven_to_five_to_three_loses_no_write() {
    let port = 26000;
    let operator = Operator::start(port, 3, "Preserve");
    operator.wait_settled(3);
    let sampler = Sampler::start(port);
    let mut load = Load::start(port, "grow");
    load.wait_progress(5);
    for to in [5, 7, 5, 3] {
        operator.transition(to, Some(&load));
        load.wait_progress(5);
    }
    load.stop();
    sampler.finish();
    assert_no_write_lost(port, &load.acked());
}

#[test]
fn three_to_one_and_a_bad_spec_changes_nothing() {
    let port = 26010;
    let operator = Operator::start(port, 3, "Preserve");
    operator.wait_settled(3);
    // Bad YAML, then an invalid spec: reported, nothing changes.
    operator.write_spec_text("spec: [replicas: 5\n");
    let status = operator.wait_for("bad YAML reported", Duration::from_secs(30), |s| {
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains("cannot parse"))
    });
    assert_eq!(status.replicas, 3);
    operator.write_spec_text("apiVersion: mesos.operator.dev/v1alpha1\nkind: MesosMasterCluster\nmetadata: {name: e2e}\nspec: {replicas: 4}\n");
    operator.wait_for("invalid spec reported", Duration::from_secs(30), |s| {
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains("must be odd"))
    });
    std::thread::sleep(Duration::from_secs(1));
    let status = operator.status().expect("status");
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert!(operator.events().len() == 3, "{:?}", operator.events());

    let sampler = Sampler::start(port);
    let mut load = Load::start(port, "shrink");
    load.wait_progress(5);
    operator.transition(1, Some(&load));
    load.wait_progress(5);
    load.stop();
    sampler.finish();
    assert_no_write_lost(port, &load.acked());
    // The removed members' work dirs are gone.
    assert!(!operator.work_dir(1).exists() && !operator.work_dir(2).exists());
}

#[test]
fn one_to_three_with_wipe_resets_the_log() {
    let port = 26020;
    let operator = Operator::start(port, 1, "Wipe");
    operator.wait_settled(1);
    let mut load = Load::start(port, "single");
    load.wait_progress(20);
    load.stop();
    let before = load.acked();
    let old_id = log_status(operator.address(0))
        .and_then(|s| s.log_id)
        .expect("log id");
    let sampler = Sampler::start(port);
    let mut load = Load::start(port, "wiped");
    operator.transition(3, Some(&load));
    load.wait_progress(5);
    load.stop();
    sampler.finish();
    let new_id = log_status(operator.address(0))
        .and_then(|s| s.log_id)
        .expect("log id");
    assert_ne!(old_id, new_id, "the wipe must start a new log");
    let leader = find_leader(port).expect("leader");
    let now = learned(leader).expect("read");
    let survivors: Vec<_> = now
        .values()
        .filter(|d| before.values().any(|b| b == *d))
        .collect();
    assert!(
        survivors.is_empty(),
        "writes of the old log survived the wipe: {survivors:?}"
    );
    // Writes acknowledged on the new log are all there.
    let mut fresh = Load::start(port, "fresh");
    fresh.wait_progress(20);
    fresh.stop();
    assert_no_write_lost(port, &fresh.acked());
    let status = operator.status().expect("status");
    assert!(status.members.iter().all(|m| m.quorum == Some(2)));
}

#[test]
fn a_master_whose_work_dir_is_deleted_is_fenced_and_replaced() {
    let port = 26030;
    let operator = Operator::start(port, 3, "Preserve");
    operator.wait_settled(3);
    let sampler = Sampler::start(port);
    let mut load = Load::start(port, "replace");
    load.wait_progress(10);

    // Deleted while running.
    let events = operator.events().len();
    let started = Instant::now();
    std::fs::remove_dir_all(operator.work_dir(1)).expect("rm work_dir");
    operator.wait_events(events + 2);
    let steps: Vec<String> = operator.events()[events..]
        .iter()
        .map(|e| e.1.clone())
        .collect();
    assert!(steps[0].contains("remove e2e-1"), "{steps:?}");
    assert!(steps[1].contains("start e2e-1"), "{steps:?}");
    operator.wait_settled(3);
    eprintln!(
        "replace (deleted while running): wall {:.2}s, longest write-unavailability {:.2}s",
        started.elapsed().as_secs_f64(),
        load.longest_gap(started, Instant::now()).as_secs_f64()
    );
    load.wait_progress(5);

    // Killed, then deleted.
    let events = operator.events().len();
    let pid = operator.member_pid(2).expect("pid of member 2");
    local_common::signal(pid, "KILL");
    std::fs::remove_dir_all(operator.work_dir(2)).expect("rm work_dir");
    operator.wait_events(events + 2);
    operator.wait_settled(3);
    load.wait_progress(5);
    load.stop();
    sampler.finish();
    assert_no_write_lost(port, &load.acked());
}

/// Kills the operator (kill -9) each time a step is recorded at the given offsets
/// of the transition, restarts it, and lets it finish.
fn transition_with_operator_kills(
    operator: &mut Operator,
    load: &Load,
    to: i32,
    kill_at: &[usize],
) {
    let base = operator.events().len();
    let started = Instant::now();
    operator.set_replicas(to);
    for at in kill_at {
        operator.wait_events(base + at);
        operator.kill9();
        std::thread::sleep(Duration::from_millis(300));
        operator.spawn();
    }
    operator.wait_settled(to);
    eprintln!(
        "transition -> {to} with operator kill -9 after steps {kill_at:?}: wall {:.2}s, {} steps, longest write-unavailability {:.2}s",
        started.elapsed().as_secs_f64(),
        operator.events().len() - base,
        load.longest_gap(started, Instant::now()).as_secs_f64()
    );
}

#[test]
fn operator_killed_mid_transition_resumes_and_loses_no_write() {
    let port = 26040;
    let mut operator = Operator::start(port, 3, "Preserve");
    operator.wait_settled(3);
    let sampler = Sampler::start(port);
    let mut load = Load::start(port, "kill");
    load.wait_progress(5);
    transition_with_operator_kills(&mut operator, &load, 5, &[1, 2, 4]);
    load.wait_progress(5);
    transition_with_operator_kills(&mut operator, &load, 3, &[1, 3, 4]);
    load.wait_progress(5);

    // A clean stop (SIGTERM) mid-transition stops every master; a restart resumes.
    let base = operator.events().len();
    operator.set_replicas(5);
    operator.wait_events(base + 2);
    operator.terminate();
    assert!(
        operator.master_pids().is_empty(),
        "masters outlived a clean stop: {:?}",
        operator.master_pids()
    );
    operator.spawn();
    operator.wait_settled(5);
    let status = operator.status().expect("status");
    assert_eq!(status.phase, Some(Phase::Running));
    load.wait_progress(5);
    load.stop();
    sampler.finish();
    assert_no_write_lost(port, &load.acked());
}

/// 1 -> 3 with `Preserve`: the single master is sealed and exported, wiped, and the
/// export imported into the new log; every weight written before is there after.
#[test]
fn one_to_three_with_preserve_keeps_the_registry() {
    let port = 26050;
    let operator = Operator::start(port, 1, "Preserve");
    operator.wait_settled(1);
    // Registry writes: weights through the leader, as a framework operator would.
    let leader = find_leader(port).expect("leader");
    let mut written = Vec::new();
    for n in 0..10 {
        let role = format!("role{n}");
        let body = format!(r#"[{{"role":"{role}","weight":{}.0}}]"#, n + 1);
        let response = local_common::http::request_within(
            leader,
            "PUT",
            "/weights",
            body.as_bytes(),
            Duration::from_secs(5),
        )
        .expect("PUT /weights");
        assert!(response.status < 300, "{}", response.body);
        written.push(role);
    }
    let log_id = |leader| {
        let status = local_common::http::request_within(
            leader,
            "GET",
            "/log/status",
            b"",
            Duration::from_secs(5),
        )
        .expect("GET /log/status");
        let status: serde_json::Value =
            serde_json::from_str(&status.body).expect("/log/status is JSON");
        status["log_id"].as_u64()
    };
    let old_log = log_id(leader);
    assert!(old_log.is_some());
    operator.transition(3, None);
    let leader = find_leader(port).expect("leader");
    assert_ne!(log_id(leader), old_log, "the single master's log was wiped");
    // The transfer is over: the export is dropped and the new registry takes
    // writes (it is not sealed).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while operator.state_dir().join("registry-export.json").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the export was never dropped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = local_common::http::request_within(
        leader,
        "PUT",
        "/weights",
        br#"[{"role":"after","weight":1.5}]"#,
        Duration::from_secs(5),
    )
    .expect("PUT /weights");
    assert_eq!(after.status, 200, "{}", after.body);
    written.push("after".to_owned());
    let weights =
        local_common::http::request_within(leader, "GET", "/weights", b"", Duration::from_secs(5))
            .expect("GET /weights")
            .body;
    for role in written {
        assert!(weights.contains(&role), "{role} lost: {weights}");
    }
}

/// kill -9 of the master a restart step just restarted, again each time it comes
/// back, for a few seconds: the operator waits, its status names the member it
/// waits for, and the transition completes once the member stays up.
#[test]
fn a_master_killed_during_its_restart_step_holds_the_transition_until_it_returns() {
    let port = 26070;
    let operator = Operator::start(port, 3, "Preserve");
    operator.wait_settled(3);
    let sampler = Sampler::start(port);
    let mut load = Load::start(port, "restart-kill");
    load.wait_progress(5);

    let base = operator.events().len();
    let started = Instant::now();
    operator.set_replicas(5);
    // The first restart step of 3 -> 5 names the member it restarts.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (member_name, ordinal) = loop {
        let restart = operator.events()[base.min(operator.events().len())..]
            .iter()
            .find_map(|(_, text)| {
                let name = text.strip_prefix("restart ")?.split_whitespace().next()?;
                let ordinal: u32 = name.rsplit('-').next()?.parse().ok()?;
                Some((name.to_owned(), ordinal))
            });
        if let Some(found) = restart {
            break found;
        }
        assert!(Instant::now() < deadline, "no restart step recorded");
        std::thread::sleep(Duration::from_millis(10));
    };

    // Keep it down for a while: every incarnation the runtime starts is killed.
    let mut kills = 0;
    let mut waited_for_it = None;
    let keep_down_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < keep_down_until {
        if let Some(pid) = operator.member_pid(ordinal) {
            if mesos_operator::operator::local::members::pid_alive(pid) {
                local_common::signal(pid, "KILL");
                kills += 1;
            }
        }
        if let Some(waiting) = operator
            .status()
            .and_then(|status| status.transition)
            .and_then(|transition| transition.waiting_for)
        {
            if waiting.contains(&member_name) {
                waited_for_it = Some(waiting);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        kills > 0,
        "{member_name} was never seen running to be killed"
    );
    let waiting = waited_for_it.unwrap_or_else(|| {
        panic!(
            "while {member_name} was down the status never said it waited for it: {:#?}",
            operator.status()
        )
    });
    operator.wait_settled(5);
    eprintln!(
        "3 -> 5 with {member_name} killed {kills} time(s) in its restart step (status: {waiting:?}): wall {:.2}s, {} steps, longest write-unavailability {:.2}s",
        started.elapsed().as_secs_f64(),
        operator.events().len() - base,
        load.longest_gap(started, Instant::now()).as_secs_f64()
    );
    load.stop();
    sampler.finish();
    assert_no_write_lost(port, &load.acked());
}
