//! Issue #3's test list: kill -9 of the leader under concurrent write load. Writers
//! append through whoever leads (following 307s, moving on from dead members), the
//! leader is killed mid-load and later restarted; afterwards every member holds
//! every acknowledged append at its acknowledged position, each writer's appends in
//! the order it made them, and no entry twice. Prints the failover time (kill ->
//! first acknowledgement by the next leader).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::ensemble::{hex, Ensemble, EVENTUALLY};
use crate::support::http::request_with_body;
use mesos_operator::master::raw_log::Appended;

/// Concurrent writers; each has one append in flight at a time, as a client
/// waiting for its acknowledgement does.
const WRITERS: usize = 4;
/// Load before the kill, and after the killed member is restarted.
const LOAD_BEFORE_KILL: Duration = Duration::from_millis(1500);
const LOAD_AFTER_RESTART: Duration = Duration::from_millis(1500);
/// Pause after a failed attempt, so writers do not spin while nobody leads.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// One acknowledged append.
#[derive(Debug, Clone)]
struct Ack {
    writer: usize,
    sequence: u64,
    position: u64,
    data: String,
    at: Instant,
}

/// One writer: each attempt appends a new value (`w<writer>-<sequence>`), never
/// retrying a value whose outcome is unknown, so a value in the log twice can only
/// be the log's fault. Follows 307 to the leader; moves to the next member on an
/// error or a 503.
fn writer(
    writer: usize,
    members: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
) {
    let hard_deadline = Instant::now() + 3 * EVENTUALLY;
    let mut target = members[writer % members.len()];
    let mut next_member = writer;
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < hard_deadline {
        let value = format!("w{writer}-{sequence}");
        sequence += 1;
        let response = request_with_body(target, "POST", "/log/append", value.as_bytes());
        let moved = match response {
            Ok(response) if response.status == 200 => {
                let appended: Appended =
                    serde_json::from_str(&response.body).expect("append response");
                acks.lock().expect("acks").push(Ack {
                    writer,
                    sequence: sequence - 1,
                    position: appended.position,
                    data: hex(value.as_bytes()),
                    at: Instant::now(),
                });
                continue;
            }
            Ok(response) if response.status == 307 => response
                .header("location")
                .and_then(|l| l.strip_prefix("http://"))
                .and_then(|l| l.split('/').next())
                .and_then(|l| l.parse::<SocketAddr>().ok()),
            _ => None,
        };
        target = moved.unwrap_or_else(|| {
            next_member += 1;
            members[next_member % members.len()]
        });
        sleep(RETRY_PAUSE);
    }
}

fn leader_kill_under_concurrent_load_loses_and_reorders_nothing(members: usize, quorum: usize) {
    let mut ensemble = Ensemble::builder().members(members).quorum(quorum).spawn();
    ensemble.wait_for_leader();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (members, stop, acks) = (ensemble.members().to_vec(), stop.clone(), acks.clone());
            std::thread::spawn(move || writer(w, members, stop, acks))
        })
        .collect();

    sleep(LOAD_BEFORE_KILL);
    let leader = ensemble.wait_for_leader();
    let acked_before_kill = acks.lock().expect("acks").len();
    let killed_at = Instant::now();
    ensemble.kill(leader);
    // The first acknowledgement after the kill comes from the next leader.
    let deadline = killed_at + EVENTUALLY;
    let failover = loop {
        let first = acks
            .lock()
            .expect("acks")
            .iter()
            .filter(|a| a.at > killed_at)
            .map(|a| a.at)
            .min();
        if let Some(first) = first {
            break first - killed_at;
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            panic!("no append acknowledged within {EVENTUALLY:?} of killing the leader");
        }
        sleep(Duration::from_millis(5));
    };
    ensemble.start(leader);
    sleep(LOAD_AFTER_RESTART);
    stop.store(true, Ordering::Relaxed);
    for handle in writers {
        handle.join().expect("writer panicked");
    }
    let acks = acks.lock().expect("acks").clone();
    let acked_after_kill = acks.iter().filter(|a| a.at > killed_at).count();
    eprintln!(
        "{members} masters, {WRITERS} writers: {} appends acknowledged ({acked_before_kill} before the kill, \
         {acked_after_kill} after); failover (kill -9 of the leader -> first acknowledged append) {} ms",
        acks.len(),
        failover.as_millis()
    );
    assert!(
        acked_before_kill > 0 && acked_after_kill > 0,
        "no load on one side of the kill"
    );

    // Each writer's acknowledgements: later appends at later positions.
    let mut by_position: BTreeMap<u64, String> = BTreeMap::new();
    for w in 0..WRITERS {
        let mut mine: Vec<&Ack> = acks.iter().filter(|a| a.writer == w).collect();
        mine.sort_by_key(|a| a.sequence);
        for pair in mine.windows(2) {
            assert!(
                pair[0].position < pair[1].position,
                "writer {w}: {pair:?} acknowledged out of order"
            );
        }
    }
    for ack in &acks {
        let previous = by_position.insert(ack.position, ack.data.clone());
        assert!(
            previous.is_none(),
            "position {} acknowledged twice",
            ack.position
        );
    }

    // Every member, the restarted one included, holds them all, and its log names
    // no value twice; all members agree on every position they learned.
    let mut logs = Vec::new();
    for i in 0..members {
        ensemble.assert_holds(i, &by_position);
        let learned = ensemble.learned(i).expect("learned entries");
        let mut seen = BTreeMap::new();
        for (position, data) in &learned {
            if let Some(first) = seen.insert(data.clone(), *position) {
                panic!("member {i} holds {data} at {first} and {position}");
            }
        }
        logs.push(learned);
    }
    for (i, log) in logs.iter().enumerate().skip(1) {
        let common: Vec<_> = log.keys().filter(|p| logs[0].contains_key(p)).collect();
        for position in common {
            assert_eq!(
                log[position], logs[0][position],
                "members 0 and {i} disagree at {position}"
            );
        }
    }
}

#[test]
fn three_masters_lose_nothing_when_the_leader_is_killed_under_load() {
    leader_kill_under_concurrent_load_loses_and_reorders_nothing(3, 2);
}

#[test]
fn five_masters_lose_nothing_when_the_leader_is_killed_under_load() {
    leader_kill_under_concurrent_load_loses_and_reorders_nothing(5, 3);
}
