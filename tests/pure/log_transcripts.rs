//! Transcript tests (etcd raft `testdata` style): a scenario and what the
//! ensemble reports, side by side. Each scenario drives a small cluster by hand
//! (FIFO network, explicit ticks) and compares the event transcript it produces
//! with the expected one below. Read them as documentation of tricky cases.

use mesos_operator::log::{
    Envelope, MemStorage, MemberId, Message, Node, NodeConfig, NodeEvent, ReplicaStatus, Storage,
};

struct Cluster {
    ids: Vec<MemberId>,
    nodes: Vec<Option<Node>>,
    storage: Vec<MemStorage>,
    network: Vec<Envelope>,
    isolated: Vec<bool>,
    out: Vec<String>,
    starts: u64,
    /// Write catch-up requests into the transcript.
    trace_catchup: bool,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let ids: Vec<MemberId> = (1..=n)
            .map(|i| MemberId::new(format!("m{i}:5050")))
            .collect();
        let mut c = Cluster {
            ids: ids.clone(),
            nodes: (0..n).map(|_| None).collect(),
            storage: (0..n).map(|_| MemStorage::new()).collect(),
            network: Vec::new(),
            isolated: vec![false; n],
            out: Vec::new(),
            starts: 0,
            trace_catchup: false,
        };
        for i in 0..n {
            c.start(i);
        }
        c
    }

    fn start(&mut self, i: usize) {
        self.starts += 1;
        let seed = 1000 * self.starts + i as u64;
        let cfg = NodeConfig::new(
            self.ids[i].clone(),
            self.ids.clone(),
            self.ids.len() / 2 + 1,
            seed,
        );
        let durable = self.storage[i].load().expect("load");
        self.nodes[i] = Some(Node::new(cfg, durable).expect("config"));
    }

    fn name(&self, i: usize) -> String {
        format!("m{}", i + 1)
    }

    fn drain(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let ready = node.ready();
        let name = format!("m{}", i + 1);
        // What may leave before the persist, leaves first.
        self.network.extend(ready.send_now);
        for o in ready.outcomes_now {
            self.out
                .push(format!("{name}: proposal {} -> {:?}", o.ticket, o.result));
        }
        self.storage[i].apply(&ready.persist).expect("persist");
        for e in ready.events {
            let line = match e {
                NodeEvent::Starting => "starting".to_string(),
                NodeEvent::Initialized(_) => "initialized the log".to_string(),
                NodeEvent::Adopted(_) => "adopted the log id, voting".to_string(),
                NodeEvent::RecoveryStarted(_) => "recovering".to_string(),
                NodeEvent::Recovered => "recovered, voting".to_string(),
                NodeEvent::BecameLeader(p) => format!("leader (round {})", p.round),
                NodeEvent::Demoted => "demoted".to_string(),
                // Who campaigned is noise here; who won is in the transcript.
                NodeEvent::Campaigning { .. } => continue,
                NodeEvent::SkippedTo(p) => format!("skipped to {p}"),
            };
            let line = format!("{name}: {line}");
            if self.out.last() != Some(&line) {
                self.out.push(line);
            }
        }
        for o in ready.outcomes {
            self.out
                .push(format!("{name}: proposal {} -> {:?}", o.ticket, o.result));
        }
        self.network.extend(ready.messages);
    }

    fn index(&self, id: &MemberId) -> Option<usize> {
        self.ids.iter().position(|m| m == id)
    }

    /// Delivers until the network is quiet (FIFO).
    fn settle(&mut self) {
        for _ in 0..10_000 {
            if self.network.is_empty() {
                return;
            }
            let env = self.network.remove(0);
            let (Some(to), Some(from)) = (self.index(&env.to), self.index(&env.from)) else {
                continue;
            };
            if self.isolated[to] || self.isolated[from] {
                continue;
            }
            if let (true, Message::CatchupRequest { from: lo, to: hi }) =
                (self.trace_catchup, &env.message)
            {
                let line = format!(
                    "{} asks {} for [{lo}, {hi})",
                    self.name(from),
                    self.name(to)
                );
                self.out.push(line);
            }
            if let Some(n) = self.nodes[to].as_mut() {
                n.step(env);
                self.drain(to);
            }
        }
    }

    fn ticks(&mut self, n: usize) {
        for _ in 0..n {
            for i in 0..self.nodes.len() {
                if let Some(node) = self.nodes[i].as_mut() {
                    node.tick();
                    self.drain(i);
                }
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.nodes[i]
                .as_ref()
                .is_some_and(|n| n.is_leader() && !self.isolated[i])
        })
    }

    fn propose(&mut self, i: usize, data: &str) {
        if let Some(n) = self.nodes[i].as_mut() {
            n.propose(data.as_bytes().to_vec());
        }
        self.drain(i);
        self.settle();
    }

    /// Wipes a follower of leader `l`, restarts it empty and runs the cluster
    /// for 60 ticks with its catch-up requests in the transcript.
    fn wipe_a_follower_and_trace_its_catch_up(&mut self, l: usize) {
        let f = (0..self.nodes.len()).find(|&i| i != l).unwrap_or(0);
        self.note("wipe a follower");
        self.nodes[f] = None;
        self.storage[f] = MemStorage::new();
        self.trace_catchup = true;
        self.start(f);
        self.drain(f);
        self.ticks(60);
        self.trace_catchup = false;
        self.show();
    }

    fn note(&mut self, line: &str) {
        self.out.push(format!("-- {line}"));
    }

    fn show(&mut self) {
        for i in 0..self.nodes.len() {
            let line = match &self.nodes[i] {
                None => format!("{}: down", self.name(i)),
                Some(n) => format!(
                    "{}: {:?} learned_end={} leader={}",
                    self.name(i),
                    n.status(),
                    n.learned_end(),
                    n.is_leader()
                ),
            };
            self.out.push(line);
        }
    }
}

fn check(actual: &[String], expected: &str) {
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let actual: Vec<&str> = actual.iter().map(String::as_str).collect();
    assert_eq!(
        actual,
        expected,
        "\nactual transcript:\n{}\n",
        actual.join("\n")
    );
}

#[test]
fn a_wiped_replica_recovers_before_it_votes() {
    let mut c = Cluster::new(3);
    c.ticks(40);
    let l = c.leader().expect("a leader");
    c.propose(l, "a");
    c.propose(l, "b");
    c.ticks(5);
    // Wipe a follower: it forgets every promise and vote. It must recover with
    // a promise round of its own over the two others (which demotes the leader)
    // before it votes again.
    let f = (0..3).find(|&i| i != l).unwrap_or(0);
    c.note("wipe a follower");
    c.nodes[f] = None;
    c.storage[f] = MemStorage::new();
    c.start(f);
    c.drain(f);
    c.ticks(60);
    c.show();
    let l = c.leader().expect("a leader");
    c.propose(l, "c");
    c.ticks(5);
    c.show();
    let wiped = c.nodes[f].as_ref().map(|n| n.status());
    assert_eq!(wiped, Some(ReplicaStatus::Voting));
    check(
        &c.out,
        "
        m1: starting
        m2: starting
        m3: starting
        m1: initialized the log
        m2: adopted the log id, voting
        m3: adopted the log id, voting
        m3: leader (round 1)
        m3: proposal 1 -> Ok(0)
        m3: proposal 2 -> Ok(1)
        -- wipe a follower
        m1: recovering
        m3: demoted
        m1: recovered, voting
        m1: leader (round 3)
        m1: Voting learned_end=2 leader=true
        m2: Voting learned_end=2 leader=false
        m3: Voting learned_end=2 leader=false
        m1: proposal 1 -> Ok(2)
        m1: Voting learned_end=3 leader=true
        m2: Voting learned_end=3 leader=false
        m3: Voting learned_end=3 leader=false
        ",
    );
}

#[test]
fn a_deposed_coordinator_learns_it_and_loses_its_lease() {
    let mut c = Cluster::new(3);
    c.ticks(40);
    let old = c.leader().expect("a leader");
    c.propose(old, "before");
    c.ticks(3);
    assert!(c.nodes[old].as_ref().is_some_and(|n| n.has_read_lease()));
    c.note("isolate the leader");
    c.isolated[old] = true;
    c.ticks(60);
    let new = c.leader().expect("a new leader");
    assert_ne!(new, old);
    // The old leader still thinks it leads, but its lease ran out long ago.
    assert!(c.nodes[old]
        .as_ref()
        .is_some_and(|n| n.is_leader() && !n.has_read_lease()));
    c.propose(new, "after");
    c.note("heal");
    c.isolated[old] = false;
    // A proposal to the deposed leader: its accepts meet a higher promise.
    c.propose(old, "stale");
    c.ticks(10);
    c.show();
    check(
        &c.out,
        "
        m1: starting
        m2: starting
        m3: starting
        m1: initialized the log
        m2: adopted the log id, voting
        m3: adopted the log id, voting
        m3: leader (round 1)
        m3: proposal 1 -> Ok(0)
        -- isolate the leader
        m2: leader (round 2)
        m2: proposal 1 -> Ok(1)
        -- heal
        m3: demoted
        m3: proposal 2 -> Err(Demoted)
        m1: Voting learned_end=2 leader=false
        m2: Voting learned_end=2 leader=true
        m3: Voting learned_end=2 leader=false
        ",
    );
}

#[test]
fn a_wiped_replica_far_behind_copies_the_learned_prefix_before_its_round() {
    let mut c = Cluster::new(3);
    c.ticks(40);
    let l = c.leader().expect("a leader");
    for k in 0..100 {
        c.propose(l, &format!("v{k}"));
    }
    c.ticks(5);
    c.out.retain(|line| !line.contains("proposal"));
    // 100 positions behind its peers (more than RECOVERY_CATCHUP_MIN_POSITIONS):
    // it copies their learned values with catch-up requests to one peer, which
    // needs no promise, and only then runs the recovery round that makes it safe
    // to vote, over nothing left to fill.
    c.wipe_a_follower_and_trace_its_catch_up(l);
    let l = c.leader().expect("a leader");
    c.propose(l, "after");
    c.ticks(5);
    c.show();
    check(
        &c.out,
        "
        m1: starting
        m2: starting
        m3: starting
        m1: initialized the log
        m2: adopted the log id, voting
        m3: adopted the log id, voting
        m3: leader (round 1)
        -- wipe a follower
        m1: recovering
        m1 asks m3 for [0, 100)
        m3: demoted
        m1: recovered, voting
        m2: leader (round 3)
        m1: Voting learned_end=100 leader=false
        m2: Voting learned_end=100 leader=true
        m3: Voting learned_end=100 leader=false
        m2: proposal 1 -> Ok(100)
        m1: Voting learned_end=101 leader=false
        m2: Voting learned_end=101 leader=true
        m3: Voting learned_end=101 leader=false
        ",
    );
}

#[test]
fn a_wiped_replica_copies_large_values_with_several_requests_in_flight() {
    let mut c = Cluster::new(3);
    c.ticks(40);
    let l = c.leader().expect("a leader");
    // 200 values of 64 KiB: one catch-up answer holds at most 4 MiB, 63 of them
    // (a value's size counts its encoding too).
    for k in 0..200 {
        let mut value = format!("v{k:05}");
        value.push_str(&"x".repeat(65_536 - value.len()));
        c.propose(l, &value);
    }
    c.ticks(5);
    c.out.retain(|line| !line.contains("proposal"));
    // The first request asks for everything and learns from its answer, cut by
    // bytes, how many positions fit in one; the rest is asked in requests of
    // that span, up to three in flight, so the peer reads and sends the next
    // answers while this replica writes the last one.
    c.wipe_a_follower_and_trace_its_catch_up(l);
    check(
        &c.out,
        "
        m1: starting
        m2: starting
        m3: starting
        m1: initialized the log
        m2: adopted the log id, voting
        m3: adopted the log id, voting
        m3: leader (round 1)
        -- wipe a follower
        m1: recovering
        m1 asks m3 for [0, 200)
        m1 asks m3 for [63, 126)
        m1 asks m3 for [126, 189)
        m1 asks m3 for [189, 200)
        m3: demoted
        m1: recovered, voting
        m2: leader (round 3)
        m1: Voting learned_end=200 leader=false
        m2: Voting learned_end=200 leader=true
        m3: Voting learned_end=200 leader=false
        ",
    );
}

#[test]
fn a_wiped_replica_copies_from_the_truncation_bound_of_its_peer() {
    let mut c = Cluster::new(3);
    c.ticks(40);
    let l = c.leader().expect("a leader");
    // More positions than one catch-up request asks for (4,096), truncated
    // above that, as the registry does after a snapshot.
    for k in 0..5_000 {
        c.propose(l, &format!("v{k}"));
        if k % 500 == 499 {
            c.ticks(2);
        }
    }
    c.ticks(5);
    if let Some(n) = c.nodes[l].as_mut() {
        n.propose_truncate(4_500);
    }
    c.ticks(5);
    for k in 5_000..5_100 {
        c.propose(l, &format!("v{k}"));
    }
    c.ticks(5);
    c.out.retain(|line| !line.contains("proposal"));
    // The peer answers the first request with nothing but its truncation bound:
    // the wiped replica skips the dead prefix and copies from there, rather than
    // reading the whole tail in its recovery round (whose promise would depose
    // the leader, as it does here only at the end).
    c.wipe_a_follower_and_trace_its_catch_up(l);
    check(
        &c.out,
        "
        m1: starting
        m2: starting
        m3: starting
        m1: initialized the log
        m2: adopted the log id, voting
        m3: adopted the log id, voting
        m3: leader (round 1)
        -- wipe a follower
        m1: recovering
        m1 asks m3 for [0, 4096)
        m1: skipped to 4500
        m1 asks m3 for [4500, 5101)
        m3: demoted
        m1: recovered, voting
        m1: leader (round 3)
        m1: Voting learned_end=5101 leader=true
        m2: Voting learned_end=5101 leader=false
        m3: Voting learned_end=5101 leader=false
        ",
    );
}
