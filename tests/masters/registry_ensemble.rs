//! The registry on real 3-master ensembles (issue #4): every operator call written
//! through the leader and read back from every member, a non-leader's 307 and its
//! labelled reads, the leader killed with batches in flight, truncation keeping
//! storage bounded under a write loop, and a wiped member restoring from a
//! chunked snapshot.
//!
//! One ensemble per test on 127.0.0.1-3. Every wait is bounded, every load loop
//! stops by itself, and Drop kills the processes. Killing every master and
//! restarting them is covered by `ensemble.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::ensemble::{Ensemble, POLL};
use crate::support::http::{self, post_json, request, HttpResponse};
use serde_json::{json, Value};

/// Bounds anything the ensemble must eventually do; not a performance claim.
const EVENTUALLY: Duration = Duration::from_secs(60);

/// Three members with the registry's extra flags, all started.
fn start(extra: &[&str]) -> Ensemble {
    Ensemble::builder()
        .members(3)
        .raw_log_api(false)
        .args(extra)
        .eventually(EVENTUALLY)
        .spawn()
}

/// A write through whichever member leads; panics unless acknowledged in time.
fn write(ensemble: &Ensemble, path: &str, body: &str) {
    let deadline = Instant::now() + EVENTUALLY;
    let mut last = String::new();
    while Instant::now() < deadline {
        for i in ensemble.running() {
            if let Some(response) = write_to(ensemble.member(i), path, body) {
                if response.status == 200 {
                    return;
                }
                assert!(
                    [307, 503].contains(&response.status),
                    "{path} {body} -> {} {}",
                    response.status,
                    response.body
                );
                last = response.body;
            }
        }
        sleep(POLL);
    }
    panic!("{path} {body} never acknowledged; last: {last}");
}

/// Waits until member `i` answers a read of `path` (GET, or POST of a v1 call)
/// with 200 and a body satisfying `check`; returns that body.
fn eventually(ensemble: &Ensemble, i: usize, call: &Read, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + EVENTUALLY;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(response) = call.send(ensemble.member(i)) {
            if response.status == 200 {
                if let Ok(value) = serde_json::from_str::<Value>(&response.body) {
                    if check(&value) {
                        return value;
                    }
                }
            }
            last = format!("{} {}", response.status, response.body);
        }
        sleep(POLL);
    }
    panic!(
        "member {} never answered {call:?} as expected; last: {last}",
        ensemble.member(i)
    );
}

fn log_bytes(ensemble: &Ensemble, i: usize) -> u64 {
    dir_bytes(&ensemble.log_dir(i))
}

/// One read: a GET of a v0 path or a v1 call posted to /api/v1.
#[derive(Debug, Clone)]
enum Read {
    Get(&'static str),
    V1(&'static str),
}

impl Read {
    fn send(&self, addr: SocketAddr) -> Option<HttpResponse> {
        match self {
            Read::Get(path) => request(addr, "GET", path).ok(),
            Read::V1(kind) => post_json(addr, "/api/v1", &json!({ "type": kind }).to_string()).ok(),
        }
    }
}

/// POST (or PUT for /weights) of `body` to `addr`; `None` on a connection error.
fn write_to(addr: SocketAddr, path: &str, body: &str) -> Option<HttpResponse> {
    if path == "/weights" {
        http::request_with_body(addr, "PUT", path, body.as_bytes()).ok()
    } else {
        post_json(addr, path, body).ok()
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn admit_body(id: &str) -> String {
    json!({"id": id, "hostname": format!("{id}.example"), "resources": [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}}]})
    .to_string()
}

fn agent_ids(slaves: &Value) -> BTreeSet<String> {
    slaves["slaves"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_operator_call_through_the_leader_reads_back_on_every_member() {
    // This test is about routing, not failover: a longer election timeout keeps a
    // loaded CI machine's scheduling stalls from moving leadership mid-test.
    let ensemble = start(&["--election_timeout_ms=3000"]);
    ensemble.wait_for_leader();
    for id in ["S1", "S2", "S3"] {
        write(&ensemble, "/registrar/admit", &admit_body(id));
    }
    let schedule = json!({"windows": [{
        "machine_ids": [{"hostname": "S1.example"}],
        "unavailability": {"start": {"nanoseconds": 1000}, "duration": {"nanoseconds": 3600}},
    }]});
    let writes = [
        (
            "/api/v1",
            json!({"type": "UPDATE_MAINTENANCE_SCHEDULE", "update_maintenance_schedule": {"schedule": schedule}}),
        ),
        (
            "/api/v1",
            json!({"type": "UPDATE_QUOTA", "update_quota": {"quota_configs": [
            {"role": "dev", "guarantees": {"cpus": {"value": 1.0}}, "limits": {"cpus": {"value": 2.0}}}]}}),
        ),
        (
            "/api/v1",
            json!({"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [{"role": "dev", "weight": 2.5}]}}),
        ),
        (
            "/api/v1",
            json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": "S3"}}}),
        ),
        (
            "/quota",
            json!({"role": "ops", "guarantee": [{"name": "mem", "type": "SCALAR", "scalar": {"value": 512.0}}]}),
        ),
        ("/weights", json!([{"role": "ops", "weight": 0.5}])),
    ];
    for (path, body) in &writes {
        write(&ensemble, path, &body.to_string());
    }

    // A follower answers writes with 307 to the leader, every kind of write. On a
    // loaded machine leadership may still move meanwhile: the redirect then names
    // the member leading when it was answered, and a "follower" that was elected
    // before the request arrived rightly answers it itself. The admission is the
    // one write whose repeat changes what is read back, so it is tracked.
    let mut expected_agents = vec!["S1", "S2"];
    for (path, body) in writes
        .iter()
        .map(|(p, b)| (*p, b.to_string()))
        .chain([("/registrar/admit", admit_body("S4"))])
    {
        // Until the follower has heard the leader it answers 503 "No leader elected".
        let deadline = Instant::now() + EVENTUALLY;
        let (leader, response) = loop {
            let leader = ensemble.wait_for_leader();
            let follower = (leader + 1) % 3;
            let response =
                write_to(ensemble.members()[follower], path, &body).expect("follower answers");
            // Anything but a redirect is only right from a member that led by then:
            // it applied the write (or refused a repeat of it), so ask again.
            let retry = match response.status {
                307 => false,
                503 => true,
                _ if ensemble.wait_for_leader() != leader => {
                    if path == "/registrar/admit" && response.status == 200 {
                        expected_agents.push("S4");
                    }
                    true
                }
                _ => false,
            };
            if !retry || Instant::now() > deadline {
                break (leader, response);
            }
            sleep(POLL);
        };
        assert_eq!(response.status, 307, "{path}: {}", response.body);
        let location = response.header("location");
        let redirected_to =
            |i: usize| location == Some(format!("http://{}{path}", ensemble.members()[i]).as_str());
        assert!(
            redirected_to(leader) || redirected_to(ensemble.wait_for_leader()),
            "{path}: redirected to {location:?}, not to the leader"
        );
    }

    for i in 0..3 {
        let agents = eventually(&ensemble, i, &Read::V1("GET_AGENTS"), |v| {
            v["get_agents"]["agents"]
                .as_array()
                .is_some_and(|a| a.len() == expected_agents.len())
        });
        let ids: Vec<_> = agents["get_agents"]["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a["agent_info"]["id"]["value"].clone())
            .collect();
        assert_eq!(
            ids,
            expected_agents
                .iter()
                .map(|id| json!(id))
                .collect::<Vec<_>>()
        );
        eventually(&ensemble, i, &Read::V1("GET_STATE"), |v| {
            v["get_state"]["get_agents"]["agents"]
                .as_array()
                .is_some_and(|a| a.len() == expected_agents.len())
        });
        eventually(&ensemble, i, &Read::V1("GET_MAINTENANCE_SCHEDULE"), |v| {
            v["get_maintenance_schedule"]["schedule"] == schedule
        });
        eventually(&ensemble, i, &Read::V1("GET_QUOTA"), |v| {
            v["get_quota"]["status"]["configs"]
                .as_array()
                .is_some_and(|c| c.len() == 2)
                && v["get_quota"]["status"]["configs"][0]["limits"]["cpus"]["value"] == 2.0
        });
        eventually(&ensemble, i, &Read::V1("GET_WEIGHTS"), |v| {
            v["get_weights"]["weight_infos"]
                == json!([{"role": "dev", "weight": 2.5}, {"role": "ops", "weight": 0.5}])
        });
        eventually(&ensemble, i, &Read::Get("/master/state"), |v| {
            let leader_addr = ensemble.members()[ensemble.wait_for_leader()];
            v["activated_slaves"] == expected_agents.len()
                && v["leader"] == format!("master@{leader_addr}")
        });
        eventually(&ensemble, i, &Read::Get("/master/slaves"), |v| {
            agent_ids(v) == expected_agents.iter().map(|id| id.to_string()).collect()
        });
        eventually(
            &ensemble,
            i,
            &Read::Get("/master/maintenance/schedule"),
            |v| *v == schedule,
        );
        eventually(&ensemble, i, &Read::Get("/quota"), |v| {
            v["configs"].as_array().is_some_and(|c| c.len() == 2)
        });
        eventually(&ensemble, i, &Read::Get("/weights"), |v| {
            *v == json!([{"role": "dev", "weight": 2.5}, {"role": "ops", "weight": 0.5}])
        });
        // Reads say how stale they may be: only the leader holds the lease.
        let read = request(ensemble.members()[i], "GET", "/master/slaves").expect("read");
        assert_eq!(read.status, 200);
        let applied: u64 = read
            .header("x-registry-applied-position")
            .and_then(|p| p.parse().ok())
            .expect("applied position header");
        // Nine writes acknowledged one after another: the registry is well past its start.
        assert!(applied >= 8, "applied {applied}");
        assert!(read.header("x-registry-learned-position").is_some());
        if i != ensemble.wait_for_leader() {
            assert_eq!(read.header("x-registry-leader-lease"), Some("false"));
        }
    }
    // The leader's lease is reported once it holds one (it renews continuously).
    let deadline = Instant::now() + EVENTUALLY;
    let leader_addr = loop {
        let leader_addr = ensemble.members()[ensemble.wait_for_leader()];
        let read = request(leader_addr, "GET", "/master/slaves").expect("read");
        if read.header("x-registry-leader-lease") == Some("true") {
            break leader_addr;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never reported its lease"
        );
        sleep(POLL);
    };
    // Gone stays gone, on the leader's word.
    let again = post_json(leader_addr, "/registrar/admit", &admit_body("S3")).expect("admit");
    assert_eq!(again.status, 409, "{}", again.body);
}

/// The outcome of one client write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acknowledged,
    /// An error or a timeout: the write may or may not be stored.
    Unknown,
}

/// Sends one write to whichever member it believes leads, following 307s, for at
/// most `within`; 4xx other than a redirect fails the test (every write is valid).
fn write_once(members: &[SocketAddr], path: &str, body: &str, within: Duration) -> Outcome {
    let deadline = Instant::now() + within;
    let mut target = members[0];
    let mut next = 0;
    let mut attempts = 0;
    while Instant::now() < deadline {
        attempts += 1;
        match write_to(target, path, body) {
            Some(response) if response.status == 200 => return Outcome::Acknowledged,
            // A connection cut mid-request (the leader killed) left an earlier
            // attempt's fate unknown: it was stored after all.
            Some(response) if response.status == 409 && attempts > 1 => return Outcome::Unknown,
            Some(response) if response.status == 307 => {
                if let Some(addr) = response
                    .header("location")
                    .and_then(|l| l.strip_prefix("http://"))
                    .and_then(|l| l.split('/').next())
                    .and_then(|a| a.parse().ok())
                {
                    target = addr;
                    continue;
                }
            }
            // Lost during the write, or timed out: its fate is unknown (it may
            // still be stored). Never retried, so an acknowledgement always
            // belongs to exactly one attempt.
            Some(response)
                if response.status == 503
                    && (response.body.contains("may") || response.body.contains("lost")) =>
            {
                return Outcome::Unknown;
            }
            // Refused before anything was written (no leader known, overloaded).
            Some(response) if response.status == 503 => {}
            Some(response) => panic!("{path} {body} -> {} {}", response.status, response.body),
            None => {}
        }
        next = (next + 1) % members.len();
        target = members[next];
        sleep(POLL);
    }
    Outcome::Unknown
}

/// Many concurrent writers, kill -9 of the leader while their batches (and
/// chunked snapshots, taken every 200 operations) are in flight: every write
/// acknowledged is on every member afterwards; a write answered with an error may
/// or may not be there, but never half: each writes two roles in one operation,
/// and both or neither are present.
#[test]
fn killing_the_leader_mid_batch_keeps_every_acknowledged_write_and_no_half_write() {
    let mut ensemble = start(&[
        "--registry_snapshot_after_operations=200",
        "--registry_snapshot_chunk_bytes=1024",
    ]);
    let leader = ensemble.wait_for_leader();
    const WRITERS: usize = 12;
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::<(String, bool, Outcome)>::new()));
    let members = ensemble.members().to_vec();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (stop, outcomes, members) = (stop.clone(), outcomes.clone(), members.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("w{w}-{n}");
                    let (path, body, admit) = if n % 2 == 0 {
                        ("/registrar/admit", admit_body(&id), true)
                    } else {
                        let weights = json!({"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [
                            {"role": format!("{id}-a"), "weight": 1.5},
                            {"role": format!("{id}-b"), "weight": 1.5}]}});
                        ("/api/v1", weights.to_string(), false)
                    };
                    let outcome = write_once(&members, path, &body, Duration::from_secs(15));
                    outcomes.lock().unwrap_or_else(|e| e.into_inner()).push((id, admit, outcome));
                    n += 1;
                }
            })
        })
        .collect();
    sleep(Duration::from_millis(1_500));
    ensemble.kill(leader);
    let killed_at = Instant::now();
    let new_leader = ensemble.wait_for_leader();
    eprintln!(
        "leader {leader} killed; {new_leader} leads after {:?}",
        killed_at.elapsed()
    );
    sleep(Duration::from_millis(1_500));
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer thread");
    }
    ensemble.start(leader);

    let outcomes = outcomes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let acknowledged = outcomes
        .iter()
        .filter(|o| o.2 == Outcome::Acknowledged)
        .count();
    eprintln!(
        "{} writes: {acknowledged} acknowledged, {} unknown",
        outcomes.len(),
        outcomes.len() - acknowledged
    );
    assert!(
        acknowledged > 100,
        "too few writes to mean anything: {acknowledged}"
    );
    // Wait until every member (the restarted one too) serves the same registry.
    let registries: Vec<(BTreeSet<String>, BTreeMap<String, f64>)> = (0..3)
        .map(|i| {
            let mut seen = None;
            eventually(&ensemble, i, &Read::Get("/log/status"), |s| {
                s["status"] == "VOTING"
            });
            let deadline = Instant::now() + EVENTUALLY;
            while Instant::now() < deadline {
                let slaves = Read::Get("/master/slaves").send(ensemble.members()[i]);
                let weights = Read::Get("/weights").send(ensemble.members()[i]);
                if let (Some(s), Some(w)) = (slaves, weights) {
                    if s.status == 200 && w.status == 200 {
                        let ids = agent_ids(&serde_json::from_str(&s.body).unwrap_or_default());
                        let weights: Vec<Value> = serde_json::from_str(&w.body).unwrap_or_default();
                        let weights: BTreeMap<String, f64> = weights
                            .iter()
                            .filter_map(|w| {
                                Some((w["role"].as_str()?.to_owned(), w["weight"].as_f64()?))
                            })
                            .collect();
                        let complete = outcomes.iter().all(|(id, admit, outcome)| {
                            *outcome != Outcome::Acknowledged
                                || if *admit {
                                    ids.contains(id)
                                } else {
                                    weights.contains_key(&format!("{id}-a"))
                                }
                        });
                        if complete {
                            seen = Some((ids, weights));
                            break;
                        }
                    }
                }
                sleep(POLL);
            }
            seen.unwrap_or_else(|| {
                panic!("member {} lacks acknowledged writes", ensemble.members()[i])
            })
        })
        .collect();
    // Once all caught up, the three registries are identical.
    let reference = &registries[0];
    for (i, registry) in registries.iter().enumerate() {
        assert_eq!(registry.0.len(), reference.0.len(), "member {i}");
        assert_eq!(registry, reference, "member {i}");
    }
    for (id, admit, _) in &outcomes {
        if !admit {
            let a = reference.1.contains_key(&format!("{id}-a"));
            let b = reference.1.contains_key(&format!("{id}-b"));
            assert_eq!(a, b, "{id} is half-applied");
        }
    }
    // Nothing the clients did not send.
    let sent: BTreeSet<&String> = outcomes.iter().filter(|o| o.1).map(|o| &o.0).collect();
    assert!(reference.0.iter().all(|id| sent.contains(id)));
}

/// Truncation keeps storage bounded under a long write loop, with snapshots of a
/// registry needing many chunks; then a member whose work_dir is wiped restores
/// from the chunked snapshot plus the suffix, refuses reads until it has, and
/// serves the same registry.
#[test]
fn truncation_bounds_storage_and_a_wiped_member_restores_from_a_chunked_snapshot() {
    const AGENTS: usize = 600;
    const LOOP_WRITES: usize = 4_000;
    /// Every member's replicated_log stays under this however long the loop runs:
    /// a few segments (256 KiB) of live snapshot (~100 KB) and suffix, plus the
    /// WAL's own records. The loop writes several times this per member.
    const BOUND_BYTES: u64 = 3 << 20;
    let mut ensemble = start(&[
        "--registry_snapshot_after_operations=400",
        "--registry_snapshot_min_suffix_bytes=65536",
        "--registry_snapshot_chunk_bytes=4096",
        "--log_segment_size_bytes=262144",
    ]);
    ensemble.wait_for_leader();
    let members = ensemble.members().to_vec();
    let run_writers = |count: usize, body: &(dyn Fn(usize) -> (&'static str, String) + Sync)| {
        std::thread::scope(|scope| {
            for w in 0..8 {
                let members = &members;
                scope.spawn(move || {
                    for n in (w..count).step_by(8) {
                        let (path, body) = body(n);
                        let outcome = write_once(members, path, &body, Duration::from_secs(30));
                        assert_eq!(outcome, Outcome::Acknowledged, "{path} {body}");
                    }
                });
            }
        });
    };
    run_writers(AGENTS, &|n| {
        ("/registrar/admit", admit_body(&format!("agent-{n:04}")))
    });
    let before: Vec<u64> = (0..3).map(|i| log_bytes(&ensemble, i)).collect();
    let started = Instant::now();
    run_writers(LOOP_WRITES, &|n| {
        let weights = json!({"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [
            {"role": format!("role-{}", n % 10), "weight": 1.0 + n as f64}]}});
        ("/api/v1", weights.to_string())
    });
    let elapsed = started.elapsed();
    // Let the last truncation and reclaim land.
    sleep(Duration::from_millis(500));
    let after: Vec<u64> = (0..3).map(|i| log_bytes(&ensemble, i)).collect();
    let statuses: Vec<Value> = (0..3).filter_map(|i| ensemble.status(i)).collect();
    eprintln!(
        "{LOOP_WRITES} writes in {elapsed:?} over a {AGENTS}-agent registry: replicated_log bytes \
         before {before:?}, after {after:?} (bound {BOUND_BYTES}); log begin/end {:?}",
        statuses
            .iter()
            .map(|s| (s["begin"].clone(), s["end"].clone()))
            .collect::<Vec<_>>()
    );
    for (i, bytes) in after.iter().enumerate() {
        assert!(*bytes <= BOUND_BYTES, "member {i}: {bytes} bytes");
    }
    assert!(
        statuses
            .iter()
            .all(|s| s["begin"].as_u64().is_some_and(|b| b > 1)),
        "the log was never truncated: {statuses:?}"
    );

    // Wipe a follower and bring it back empty.
    let leader = ensemble.wait_for_leader();
    let wiped = (leader + 1) % 3;
    ensemble.kill(wiped);
    ensemble.wipe(wiped);
    // A few writes it misses: the suffix after the snapshot.
    run_writers(8, &|n| {
        ("/registrar/admit", admit_body(&format!("late-{n}")))
    });
    ensemble.start(wiped);
    let expected: BTreeSet<String> = (0..AGENTS)
        .map(|n| format!("agent-{n:04}"))
        .chain((0..8).map(|n| format!("late-{n}")))
        .collect();
    let deadline = Instant::now() + EVENTUALLY;
    let mut refused = 0;
    loop {
        if let Ok(response) = request(ensemble.members()[wiped], "GET", "/master/slaves") {
            match response.status {
                // Never a partial registry: either all of it or a refusal.
                200 => {
                    let ids = agent_ids(&serde_json::from_str(&response.body).unwrap_or_default());
                    assert_eq!(
                        ids, expected,
                        "the restoring member served a partial registry"
                    );
                    break;
                }
                503 => refused += 1,
                other => panic!("{other} {}", response.body),
            }
        }
        assert!(Instant::now() < deadline, "the wiped member never restored");
        sleep(Duration::from_millis(10));
    }
    eprintln!("the wiped member refused {refused} read(s) before it had restored");
    let weights = |i: usize| eventually(&ensemble, i, &Read::Get("/weights"), |_| true);
    assert_eq!(weights(wiped), weights(leader));
    let status = ensemble.status(wiped).expect("status");
    assert!(status["begin"].as_u64().is_some_and(|b| b > 1), "{status}");
}
