//! The recorded client workload: concurrent clients issue registry operations
//! through the HTTP API while faults are injected, and every operation is recorded
//! with its invoke and complete times and its outcome.
//!
//! - Registers: `UPDATE_WEIGHTS` of one role (`k0`..) to a unique weight is a write;
//!   `GET_WEIGHTS` is a read of every role. A read is checked only when the master
//!   answering it says it cannot be stale: it leads with a read lease
//!   ([`LEADER_LEASE_HEADER`] `true`) and has applied everything it knows learned
//!   (applied position >= learned position). Other reads (followers, a deposed
//!   leader) are documented as possibly stale and are only counted.
//! - A set: `POST /registrar/admit` of a fresh agent id is an add; at the end every
//!   acknowledged add must be in every member's `GET_AGENTS`, and nothing that was
//!   never attempted may be.
//!
//! Writes go to the client's guess of the leader and follow 307s. An attempt that
//! could not connect, or was redirected, or was answered "No leader elected", did
//! not take effect and is retried elsewhere until the operation's deadline; a
//! timeout, a reset or any other 503 makes the outcome unknown.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use mesos_operator::master::operator_api::{
    APPLIED_POSITION_HEADER, LEADER_LEASE_HEADER, LEARNED_POSITION_HEADER,
};
use mesos_operator::master::raw_log::RawEntry;
use serde_json::{json, Value};

use super::linearizability::{
    check_registers, RegisterInput, RegisterOp, RegisterOutput, Verdict, DEFAULT_BUDGET,
};
use crate::support::http::{CallError, HttpResponse, Request};

/// How long one HTTP request may take before its outcome is unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one operation keeps retrying attempts that did not take effect.
const OP_DEADLINE: Duration = Duration::from_secs(4);
/// How long a connection attempt may take: a partitioned member never answers.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// One request on its own connection; `json` is sent as `application/json`.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> Result<HttpResponse, CallError> {
    let request = Request::new(method, path)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT);
    match json {
        Some(json) => request.json(json),
        None => request,
    }
    .send(addr)
}

/// A small deterministic generator (SplitMix64): seeded, so a run is reproducible
/// as far as the scheduling of real processes allows.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

/// The seed from `FAULTS_SEED`, else from the clock; printed by the caller.
pub fn seed() -> u64 {
    std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// How long the faults run: `FAULTS_SECONDS` if set, else `default`.
pub fn fault_duration(default: u64) -> Duration {
    Duration::from_secs(
        std::env::var("FAULTS_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

#[derive(Debug, Default)]
pub struct Counts {
    pub writes_ok: usize,
    pub writes_unknown: usize,
    pub writes_failed: usize,
    pub reads_checked: usize,
    pub reads_possibly_stale: usize,
    pub reads_failed: usize,
    pub adds_ok: usize,
    pub adds_unknown: usize,
    pub adds_failed: usize,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.writes_ok += other.writes_ok;
        self.writes_unknown += other.writes_unknown;
        self.writes_failed += other.writes_failed;
        self.reads_checked += other.reads_checked;
        self.reads_possibly_stale += other.reads_possibly_stale;
        self.reads_failed += other.reads_failed;
        self.adds_ok += other.adds_ok;
        self.adds_unknown += other.adds_unknown;
        self.adds_failed += other.adds_failed;
    }
}

#[derive(Debug, Default)]
pub struct History {
    /// (role, operation) of every register write and checked read.
    pub registers: Vec<(String, RegisterOp)>,
    /// Agent ids whose admission was acknowledged.
    pub added: BTreeSet<String>,
    /// Agent ids whose admission was attempted (acknowledged or not).
    pub attempted: BTreeSet<String>,
    pub counts: Counts,
}

/// Runs `clients` clients against `members` until `stop` is set.
pub struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<History>>,
    pub clock: Clock,
}

/// Nanoseconds since the workload started: one clock for every client.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

pub const KEYS: usize = 4;

impl Workload {
    pub fn start(members: &[SocketAddr], clients: usize, seed: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let clock = Clock(Instant::now());
        let threads = (0..clients)
            .map(|client| {
                let members = members.to_vec();
                let stop = stop.clone();
                let rng = Rng::new(seed ^ (client as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
                std::thread::spawn(move || run_client(client, &members, rng, clock, &stop))
            })
            .collect();
        Workload {
            stop,
            threads,
            clock,
        }
    }

    /// Stops the clients and merges their histories.
    pub fn finish(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        let mut history = History::default();
        for thread in self.threads {
            let part = thread.join().expect("client thread panicked");
            history.registers.extend(part.registers);
            history.added.extend(part.added);
            history.attempted.extend(part.attempted);
            history.counts.add(&part.counts);
        }
        history
    }
}

enum Outcome {
    Ok(HttpResponse),
    /// Did not take effect (never reached a leader that accepted it).
    Failed,
    Unknown,
}

/// `Location: http://host:port/...` → `host:port`.
fn location(response: &HttpResponse) -> Option<SocketAddr> {
    let target = response.header("location")?.strip_prefix("http://")?;
    target.split('/').next()?.parse().ok()
}

/// A write through the leader, retried while attempts certainly did not take effect.
fn write(
    members: &[SocketAddr],
    guess: &mut usize,
    rng: &mut Rng,
    path: &str,
    body: &str,
) -> Outcome {
    let deadline = Instant::now() + OP_DEADLINE;
    let mut target = members[*guess];
    while Instant::now() < deadline {
        match call(target, "POST", path, Some(body)) {
            Ok(response) if response.status == 200 => return Outcome::Ok(response),
            Ok(response) if response.status == 307 => match location(&response) {
                Some(leader) => {
                    if let Some(i) = members.iter().position(|m| *m == leader) {
                        *guess = i;
                    }
                    target = leader;
                    continue;
                }
                None => return Outcome::Unknown,
            },
            Ok(response)
                if response.status == 503 && response.body.starts_with("No leader elected") => {}
            // A refusal (400/404/409) is answered before anything is written.
            Ok(response) if (400..500).contains(&response.status) => return Outcome::Failed,
            Ok(_) | Err(CallError::Unknown(_)) => return Outcome::Unknown,
            Err(CallError::NotSent(_)) => {}
        }
        *guess = rng.below(members.len() as u64) as usize;
        target = members[*guess];
        sleep(Duration::from_millis(20));
    }
    Outcome::Failed
}

/// A `GET_WEIGHTS` answer from `member` that cannot be stale, as role -> weight;
/// `None` when it may be stale (or is not an answer).
///
/// The master documents its answer as fresh when it leads with a read lease and has
/// applied up to the learned position. Its applied position counts registry entries
/// only, so a log ending in the new leader's no-op (or in raw entries) would not
/// qualify; such a gap is accepted when `GET /log/read` shows that every learned
/// entry in it is a no-op, a raw entry or a truncation: the registry is then the
/// same as at the learned position (learned entries never change, so reading them
/// afterwards is sound).
fn linearizable_weights(
    member: SocketAddr,
    response: &HttpResponse,
) -> Option<BTreeMap<String, u64>> {
    if response.status == 200 && check_every_read() {
        return weights(&response.body);
    }
    if response.status != 200 || response.header(LEADER_LEASE_HEADER) != Some("true") {
        return None;
    }
    // The applied position is the last position applied ("none" before any), the
    // learned one the end of the learned prefix (one past its last position).
    let next_to_apply = match response.header(APPLIED_POSITION_HEADER)? {
        "none" => 0,
        applied => applied.parse::<u64>().ok()? + 1,
    };
    let learned_end: u64 = response.header(LEARNED_POSITION_HEADER)?.parse().ok()?;
    if next_to_apply < learned_end && !only_log_entries(member, next_to_apply, learned_end - 1) {
        return None;
    }
    weights(&response.body)
}

/// `FAULTS_CHECK_EVERY_READ=1` checks follower and deposed-leader reads too, which
/// the master documents as possibly stale: a way to see that the pipeline from the
/// workload to the checker does catch stale reads on real processes (expect
/// anomalies). Never set in CI.
fn check_every_read() -> bool {
    std::env::var_os("FAULTS_CHECK_EVERY_READ").is_some_and(|v| v == "1")
}

/// Whether every position in `from..=to` is learned on `member` and none of them
/// is a registry entry.
fn only_log_entries(member: SocketAddr, from: u64, to: u64) -> bool {
    let path = format!("/log/read?from={from}&to={to}");
    let Ok(response) = call(member, "GET", &path, None) else {
        return false;
    };
    let Ok(entries) = serde_json::from_str::<Vec<RawEntry>>(&response.body) else {
        return false;
    };
    let positions: BTreeSet<u64> = entries.iter().map(|e| e.position).collect();
    (from..=to).all(|p| positions.contains(&p)) && entries.iter().all(|e| e.kind != "append")
}

pub fn weights(body: &str) -> Option<BTreeMap<String, u64>> {
    let value: Value = serde_json::from_str(body).ok()?;
    let infos = value["get_weights"]["weight_infos"].as_array()?;
    infos
        .iter()
        .map(|info| {
            let role = info["role"].as_str()?.to_owned();
            let weight = info["weight"].as_f64()?;
            Some((role, weight as u64))
        })
        .collect()
}

pub fn agent_ids(body: &str) -> Option<BTreeSet<String>> {
    let value: Value = serde_json::from_str(body).ok()?;
    value["get_agents"]["agents"]
        .as_array()?
        .iter()
        .map(|agent| {
            agent["agent_info"]["id"]["value"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// Records a read of every role at once.
pub fn record_read(
    history: &mut History,
    client: usize,
    seen: &BTreeMap<String, u64>,
    invoke: u64,
    complete: u64,
) {
    for key in 0..KEYS {
        let role = format!("k{key}");
        history.registers.push((
            role.clone(),
            RegisterOp {
                client,
                input: RegisterInput::Read,
                output: Some(RegisterOutput::Value(seen.get(&role).copied())),
                invoke,
                complete: Some(complete),
            },
        ));
    }
}

fn run_client(
    client: usize,
    members: &[SocketAddr],
    mut rng: Rng,
    clock: Clock,
    stop: &AtomicBool,
) -> History {
    let mut history = History::default();
    let mut guess = rng.below(members.len() as u64) as usize;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        match rng.below(10) {
            0..=4 => {
                let role = format!("k{}", rng.below(KEYS as u64));
                // Unique per client and operation; exact as an f64.
                let value = (client as u64 + 1) * 1_000_000 + seq;
                let body = json!({"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [{"role": role, "weight": value as f64}]}}).to_string();
                let invoke = clock.now();
                let outcome = write(members, &mut guess, &mut rng, "/api/v1", &body);
                let (output, complete) = match outcome {
                    Outcome::Ok(_) => {
                        history.counts.writes_ok += 1;
                        (Some(RegisterOutput::Written), Some(clock.now()))
                    }
                    Outcome::Unknown => {
                        history.counts.writes_unknown += 1;
                        (None, None)
                    }
                    Outcome::Failed => {
                        history.counts.writes_failed += 1;
                        continue;
                    }
                };
                history.registers.push((
                    role,
                    RegisterOp {
                        client,
                        input: RegisterInput::Write(value),
                        output,
                        invoke,
                        complete,
                    },
                ));
            }
            5..=7 => {
                // Any member: only those that can prove freshness are checked.
                let target = members[rng.below(members.len() as u64) as usize];
                let invoke = clock.now();
                let answer = call(target, "POST", "/api/v1", Some(r#"{"type":"GET_WEIGHTS"}"#));
                let complete = clock.now();
                match answer {
                    Ok(response) => match linearizable_weights(target, &response) {
                        Some(seen) => {
                            history.counts.reads_checked += 1;
                            record_read(&mut history, client, &seen, invoke, complete);
                        }
                        None => history.counts.reads_possibly_stale += 1,
                    },
                    Err(_) => history.counts.reads_failed += 1,
                }
            }
            _ => {
                let id = format!("c{client}-s{seq}");
                let body = json!({"id": id, "hostname": "agent.example"}).to_string();
                history.attempted.insert(id.clone());
                match write(members, &mut guess, &mut rng, "/registrar/admit", &body) {
                    Outcome::Ok(_) => {
                        history.counts.adds_ok += 1;
                        history.added.insert(id);
                    }
                    Outcome::Unknown => history.counts.adds_unknown += 1,
                    Outcome::Failed => history.counts.adds_failed += 1,
                }
            }
        }
    }
    history
}

/// What the end-of-run checks found.
#[derive(Debug, Default)]
pub struct Findings {
    pub histories_checked: usize,
    pub non_linearizable: Vec<String>,
    pub inconclusive: usize,
    pub lost_acknowledged: Vec<String>,
    pub phantoms: Vec<String>,
    pub divergent_members: Vec<String>,
}

impl Findings {
    pub fn anomalies(&self) -> usize {
        self.non_linearizable.len()
            + self.lost_acknowledged.len()
            + self.phantoms.len()
            + self.divergent_members.len()
    }
}

/// After the faults are healed: a final linearizable read from the leader (added to
/// the history), every member compared with it once caught up, the set checked for
/// lost acknowledged adds and phantoms, and every key's register history checked.
pub fn final_checks(history: &mut History, members: &[SocketAddr], clock: Clock) -> Findings {
    let mut findings = Findings::default();
    let deadline = Instant::now() + Duration::from_secs(40);
    let agents_of = |member: SocketAddr| {
        call(member, "POST", "/api/v1", Some(r#"{"type":"GET_AGENTS"}"#))
            .ok()
            .and_then(|r| agent_ids(&r.body))
    };
    // The leader's state, read under its lease, once it stopped changing: a write
    // whose client gave up may still be applied a little later.
    let mut previous: Option<(BTreeMap<String, u64>, BTreeSet<String>)> = None;
    let mut settled = None;
    while settled.is_none() && Instant::now() < deadline {
        for &member in members {
            let invoke = clock.now();
            let Ok(response) = call(member, "POST", "/api/v1", Some(r#"{"type":"GET_WEIGHTS"}"#))
            else {
                continue;
            };
            let complete = clock.now();
            let Some(seen) = linearizable_weights(member, &response) else {
                continue;
            };
            record_read(history, usize::MAX, &seen, invoke, complete);
            let Some(agents) = agents_of(member) else {
                break;
            };
            let state = (seen, agents);
            if previous.as_ref() == Some(&state) {
                settled = Some((member, state.0, state.1));
            } else {
                previous = Some(state);
            }
            break;
        }
        if settled.is_none() {
            sleep(Duration::from_millis(1000));
        }
    }
    let Some((leader, final_weights, leader_agents)) = settled else {
        findings
            .divergent_members
            .push("no leader served a settled linearizable read within 40 s after healing".into());
        return findings;
    };
    findings.lost_acknowledged = history
        .added
        .difference(&leader_agents)
        .map(|id| format!("acknowledged admission of {id} missing on the leader {leader}"))
        .collect();
    findings.phantoms = leader_agents
        .difference(&history.attempted)
        .map(|id| format!("agent {id} was never admitted by a client"))
        .collect();
    // Every member must come to agree with the leader (it may lag a little).
    for &member in members {
        let mut last = String::new();
        let agreed = loop {
            match call(member, "POST", "/api/v1", Some(r#"{"type":"GET_WEIGHTS"}"#)) {
                Ok(response) => {
                    let member_weights = weights(&response.body);
                    let member_agents = agents_of(member);
                    if member_weights.as_ref() == Some(&final_weights)
                        && member_agents.as_ref() == Some(&leader_agents)
                    {
                        break true;
                    }
                    last = format!(
                        "weights {member_weights:?}, {:?} agents",
                        member_agents.map(|a| a.len())
                    );
                }
                Err(err) => last = format!("{err:?}"),
            }
            if Instant::now() >= deadline {
                break false;
            }
            sleep(Duration::from_millis(100));
        };
        if !agreed {
            findings.divergent_members.push(format!(
                "{member} disagrees with the leader {leader} ({final_weights:?}, {} agents): {last}",
                leader_agents.len()
            ));
        }
    }
    for (key, (verdict, ops)) in check_registers(&history.registers, DEFAULT_BUDGET) {
        findings.histories_checked += 1;
        match verdict {
            Verdict::Linearizable => {}
            Verdict::Inconclusive { .. } => findings.inconclusive += 1,
            Verdict::NotLinearizable {
                linearized,
                stuck_at,
            } => {
                // The whole history goes to a file; the message names the operations
                // no order could place next.
                let file = std::env::temp_dir()
                    .join(format!("faults-history-{}-{key}.txt", std::process::id()));
                let dump: String = ops.iter().map(|op| format!("{op:?}\n")).collect();
                let saved = std::fs::write(&file, dump).map_or_else(
                    |err| format!("not saved: {err}"),
                    |()| format!("saved in {}", file.display()),
                );
                let stuck: Vec<_> = stuck_at.iter().filter_map(|&i| ops.get(i)).collect();
                findings.non_linearizable.push(format!(
                    "key {key}: {} operations, no order past {linearized} of them; none of these can go next: {stuck:?}; history {saved}",
                    ops.len()
                ));
            }
        }
    }
    findings
}

/// Prints the run's figures and fails the test on any anomaly.
pub fn report(name: &str, seed: u64, faults: usize, history: &History, findings: &Findings) {
    let c = &history.counts;
    println!(
        "{name}: seed {seed}: operations {} (writes ok {} unknown {} failed {}; reads checked {} possibly-stale skipped {} failed {}; adds ok {} unknown {} failed {}); histories checked {}; faults injected {faults}; anomalies {} (non-linearizable {}, lost acknowledged {}, phantoms {}, divergent members {}); inconclusive {}",
        c.writes_ok + c.writes_unknown + c.writes_failed + c.reads_checked + c.reads_possibly_stale + c.reads_failed + c.adds_ok + c.adds_unknown + c.adds_failed,
        c.writes_ok, c.writes_unknown, c.writes_failed,
        c.reads_checked, c.reads_possibly_stale, c.reads_failed,
        c.adds_ok, c.adds_unknown, c.adds_failed,
        findings.histories_checked,
        findings.anomalies(),
        findings.non_linearizable.len(), findings.lost_acknowledged.len(), findings.phantoms.len(), findings.divergent_members.len(),
        findings.inconclusive,
    );
    for line in findings
        .non_linearizable
        .iter()
        .chain(&findings.lost_acknowledged)
        .chain(&findings.phantoms)
        .chain(&findings.divergent_members)
    {
        println!("{name}: ANOMALY: {line}");
    }
    assert_eq!(
        findings.anomalies(),
        0,
        "{name} (seed {seed}): anomalies found, see above"
    );
    assert_eq!(
        findings.inconclusive, 0,
        "{name} (seed {seed}): checker inconclusive"
    );
    assert!(
        c.writes_ok > 0 && c.reads_checked > 0,
        "{name}: the workload made no progress"
    );
}
