//! `bench`: our replicated log (3 `mesos-master` processes) side by side with a
//! 3-member etcd cluster, on this machine, in the same run (issue #9).
//!
//! Both clusters run at once on 127.0.0.x with their data on the same filesystem
//! (`target/bench/run`), with real fsync. Load phases alternate between the two
//! systems, so noise from other work on the machine falls on both. `--quick` runs
//! every phase with small counts (seconds) so CI keeps it working; it asserts
//! nothing about speed. Every load loop is bounded by a count and a time; every
//! child process is killed when its guard drops (also on panic).
//!
//! Usage: `bench [--quick] [--master-bin PATH] [--operator-bin PATH] [--etcd-bin PATH]`.
//! The table goes to stdout, the same figures as JSON to `target/bench/report.json`.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

/// Value size of the throughput and latency phases, as the issue asks.
const VALUE_BYTES: usize = 256;
/// Value size used to fill the log before the catch-up phase: large values, so the
/// phase measures moving bytes rather than per-entry overhead.
const FILL_VALUE_BYTES: usize = 64 * 1024;
/// Rounds of retries of the fill's failed writes.
const FILL_ATTEMPTS: usize = 3;
/// Writers filling the log before catch-up.
const FILL_WRITERS: usize = 8;
/// Concurrency levels of the throughput phase.
const WRITER_COUNTS: [usize; 3] = [1, 16, 64];
/// Writers keeping the cluster under load while its leader is killed.
const FAILOVER_WRITERS: usize = 4;
/// Our masters: one port, one loopback address each (as in production).
const OUR_IPS: [[u8; 4]; 3] = [[127, 0, 0, 41], [127, 0, 0, 42], [127, 0, 0, 43]];
const OUR_PORT: u16 = 15050;
/// etcd members: client and peer ports on their own loopback addresses.
const ETCD_IPS: [&str; 3] = ["127.0.0.51", "127.0.0.52", "127.0.0.53"];
const ETCD_CLIENT_PORT: u16 = 12379;
const ETCD_PEER_PORT: u16 = 12380;
/// `mesos-operator local` runs its masters on 127.0.0.1-3 at this port.
const OPERATOR_BASE_PORT: u16 = 15070;
/// Time the operator has to stop its masters after SIGTERM.
const OPERATOR_STOP_GRACE: Duration = Duration::from_secs(15);
/// Unexpected append answers printed to stderr at most (the rest are counted).
const MAX_ERRORS_SHOWN: u64 = 5;
static ERRORS_SHOWN: AtomicU64 = AtomicU64::new(0);
/// Bound on one request: above the master's own 5 s append timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(6);
/// Bound on anything a cluster must eventually do (elect, restart, catch up).
const EVENTUALLY: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(10);

/// Sizes of every phase; `--quick` shrinks them all.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    quick: bool,
    load_secs_per_level: f64,
    /// Each system's load time per writer count is cut into this many slices,
    /// run in the order ours, etcd, etcd, ours, ours, etcd, ...: the machine's
    /// drift over the phase (another tenant on the disk, a CPU frequency change)
    /// then weighs on both alike, where one block each after the other put all
    /// of it on one side.
    load_slices: usize,
    max_ops_per_level: u64,
    failover_rounds: usize,
    catchup_mb: usize,
    fsync_samples: usize,
    rtt_samples: usize,
    seq_write_mb: usize,
    /// Quiet time before an idle RSS reading.
    idle_settle_secs: f64,
}

impl Plan {
    fn slice_duration(&self) -> Duration {
        Duration::from_secs_f64(self.load_secs_per_level / self.load_slices.max(1) as f64)
    }

    fn slice_max_ops(&self) -> u64 {
        self.max_ops_per_level / self.load_slices.max(1) as u64
    }

    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                load_secs_per_level: 0.5,
                load_slices: 1,
                max_ops_per_level: 20_000,
                failover_rounds: 1,
                catchup_mb: 2,
                fsync_samples: 50,
                rtt_samples: 200,
                seq_write_mb: 16,
                idle_settle_secs: 0.5,
            }
        } else {
            Plan {
                quick,
                load_secs_per_level: 8.0,
                load_slices: 4,
                max_ops_per_level: 1_000_000,
                failover_rounds: 5,
                // Large enough that the bytes, not the start of the member and
                // its rounds, decide the figure.
                catchup_mb: 256,
                fsync_samples: 500,
                rtt_samples: 5_000,
                seq_write_mb: 256,
                idle_settle_secs: 2.0,
            }
        }
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Proc {
    child: Option<Child>,
}

impl Proc {
    /// Appends to `log`, behind a line naming the start, so a member restarted in
    /// the failover and catch-up phases keeps the log of its earlier lives.
    fn spawn(mut command: Command, log: &Path) -> Result<Proc> {
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        writeln!(
            out,
            "=== bench: started at {:.3} s since the epoch: {command:?}",
            since_epoch.as_secs_f64()
        )?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {command:?}"))?;
        Ok(Proc { child: Some(child) })
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`: for a child
    /// that has children of its own to stop (the operator's masters).
    fn terminate(&mut self, grace: Duration) {
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn rss_mb(pid: Option<u32>) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The RSS of the etcd member using the most memory, if etcd runs.
fn largest_etcd_rss(etcd: Option<&Etcd>) -> Option<f64> {
    etcd.and_then(|e| {
        e.procs
            .iter()
            .filter_map(|p| rss_mb(p.pid()))
            .max_by(f64::total_cmp)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    Some(xs[xs.len() / 2])
}

// ---------------------------------------------------------------------------------
// The physical floor: fsync, loopback RTT, sequential write bandwidth.

/// Median time of a 256-byte write + fdatasync to a file on the benchmark's
/// filesystem: what one durable write costs at best. With `preallocate`, the
/// records overwrite a file already written and synced (no size or extent change
/// to journal: the device's own flush); without, each record extends the file.
fn fsync_floor(dir: &Path, samples: usize, preallocate: bool) -> Result<Duration> {
    let path = dir.join("fsync-probe");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let record = [0x5au8; VALUE_BYTES];
    if preallocate {
        file.write_all(&vec![0u8; samples * VALUE_BYTES])?;
        file.sync_all()?;
        file.seek(SeekFrom::Start(0))?;
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        times.push(start.elapsed());
    }
    drop(file);
    fs::remove_file(&path)?;
    times.sort();
    percentile(&times, 0.5).context("no fsync samples")
}

/// Median round trip of one byte over loopback TCP with Nagle off.
fn loopback_rtt(samples: usize) -> Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut byte = [0u8; 1];
        while stream.read_exact(&mut byte).is_ok() {
            stream.write_all(&byte)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut times = Vec::with_capacity(samples);
    let mut byte = [7u8; 1];
    for _ in 0..samples {
        let start = Instant::now();
        stream.write_all(&byte)?;
        stream.read_exact(&mut byte)?;
        times.push(start.elapsed());
    }
    drop(stream);
    let _ = echo.join();
    times.sort();
    percentile(&times, 0.5).context("no RTT samples")
}

/// Sequential write bandwidth of the disk under `dir`, two ways (MB/s).
#[derive(Clone, Copy, Debug)]
struct SequentialWrite {
    /// Through the page cache: 1 MiB writes, then one fsync.
    buffered: f64,
    /// Around it (`O_DIRECT`, 4 MiB writes), then one fsync; `None` where the
    /// filesystem refuses direct I/O (tmpfs).
    direct: Option<f64>,
}

impl SequentialWrite {
    /// What the disk can take: the faster of the two. A buffered write into page
    /// cache pages the guest has not touched lately also pays a fault per page,
    /// on the host too on this VM (the same 300 MiB probe gave 283 MB/s in one run
    /// and 1.4 GB/s with `dd` minutes later), so on its own it can make the disk
    /// look several times slower than it is, and any fraction of it look better.
    fn disk_mb_s(&self) -> f64 {
        self.direct
            .map_or(self.buffered, |direct| direct.max(self.buffered))
    }
}

fn sequential_write(dir: &Path, mb: usize) -> Result<SequentialWrite> {
    Ok(SequentialWrite {
        buffered: buffered_write_mb_s(dir, mb)?,
        direct: direct_write_mb_s(dir, mb)?,
    })
}

/// `mb` MiB in 1 MiB writes through the page cache, then one fsync.
fn buffered_write_mb_s(dir: &Path, mb: usize) -> Result<f64> {
    let path = dir.join("seq-probe");
    let chunk = vec![0xa5u8; 1 << 20];
    let start = Instant::now();
    let mut file = File::create(&path)?;
    for _ in 0..mb {
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    let elapsed = start.elapsed();
    drop(file);
    fs::remove_file(&path)?;
    Ok(mb as f64 / elapsed.as_secs_f64())
}

/// `mb` MiB (rounded up to 4 MiB) in 4 MiB `O_DIRECT` writes, then one fsync;
/// `None` if the filesystem refuses direct I/O.
fn direct_write_mb_s(dir: &Path, mb: usize) -> Result<Option<f64>> {
    use std::os::unix::fs::OpenOptionsExt;
    const CHUNK: usize = 4 << 20;
    // Direct I/O wants the buffer aligned to the logical block size; 4 KiB covers
    // every common one.
    const ALIGN: usize = 4096;
    let path = dir.join("seq-probe-direct");
    let file = match fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(file) => file,
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        Err(err) => return Err(err).with_context(|| format!("opening {}", path.display())),
    };
    let backing = vec![0xa5u8; CHUNK + ALIGN];
    let skip = backing.as_ptr().align_offset(ALIGN);
    let chunk = &backing[skip..skip + CHUNK];
    let chunks = (mb << 20).div_ceil(CHUNK);
    let start = Instant::now();
    let mut written = 0;
    for _ in 0..chunks {
        match (&file).write_all(chunk) {
            Ok(()) => written += CHUNK,
            // Accepted at open, refused at the first write (some filesystems).
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) && written == 0 => {
                drop(file);
                fs::remove_file(&path)?;
                return Ok(None);
            }
            Err(err) => return Err(err).context("direct write probe"),
        }
    }
    file.sync_all()?;
    let elapsed = start.elapsed();
    drop(file);
    fs::remove_file(&path)?;
    Ok(Some(
        written as f64 / (1 << 20) as f64 / elapsed.as_secs_f64(),
    ))
}

// ---------------------------------------------------------------------------------
// Load: bounded concurrent writers.

#[derive(Debug, Default)]
struct LoadResult {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl LoadResult {
    fn ops_per_s(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Adds a later slice of the same load: counts and time add up, latencies
    /// join (sorted again).
    fn merge(&mut self, slice: LoadResult) {
        self.ok += slice.ok;
        self.errors += slice.errors;
        self.elapsed += slice.elapsed;
        self.latencies.extend(slice.latencies);
        self.latencies.sort();
    }
}

/// `writers` tasks each calling `op(writer, seq)` in a loop until `duration` or
/// `max_ops` in total; `op` answers whether the write was acknowledged.
async fn run_writers<F, Fut>(writers: usize, duration: Duration, max_ops: u64, op: F) -> LoadResult
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let op = op.clone();
        let issued = issued.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = LoadResult::default();
            while Instant::now() < deadline {
                let seq = issued.fetch_add(1, Ordering::Relaxed);
                if seq >= max_ops {
                    break;
                }
                let begin = Instant::now();
                if op(writer, seq).await {
                    result.ok += 1;
                    result.latencies.push(begin.elapsed());
                } else {
                    result.errors += 1;
                    // An error is not a reason to spin.
                    tokio::time::sleep(POLL).await;
                }
            }
            result
        }));
    }
    let mut total = LoadResult::default();
    for task in tasks {
        if let Ok(part) = task.await {
            total.ok += part.ok;
            total.errors += part.errors;
            total.latencies.extend(part.latencies);
        }
    }
    total.elapsed = start.elapsed();
    total.latencies.sort();
    total
}

// ---------------------------------------------------------------------------------
// Our ensemble.

type Http = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn http(
    client: &Http,
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: Bytes,
) -> Option<(u16, Bytes)> {
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(body))
        .ok()?;
    let exchange = async {
        let response = client.request(request).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

struct Ours {
    bin: PathBuf,
    dir: PathBuf,
    members: Vec<SocketAddr>,
    procs: Vec<Proc>,
    http: Http,
    /// `RUST_LOG` of the masters.
    log_filter: String,
}

impl Ours {
    fn start(bin: &Path, dir: &Path, log_filter: &str) -> Result<Ours> {
        fs::create_dir_all(dir)?;
        fs::write(dir.join("token"), "bench-ensemble-token\n")?;
        let mut ours = Ours {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            members: OUR_IPS
                .iter()
                .map(|ip| SocketAddr::from((*ip, OUR_PORT)))
                .collect(),
            procs: Vec::new(),
            http: http_client(),
            log_filter: log_filter.to_string(),
        };
        for i in 0..ours.members.len() {
            let proc = ours.spawn(i)?;
            ours.procs.push(proc);
        }
        Ok(ours)
    }

    fn work_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("master-{i}"))
    }

    fn spawn(&self, i: usize) -> Result<Proc> {
        let masters = self
            .members
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new(&self.bin);
        command
            .arg(format!("--ip={}", self.members[i].ip()))
            .arg(format!("--port={}", self.members[i].port()))
            .arg("--quorum=2")
            .arg(format!("--masters={masters}"))
            .arg(format!("--work_dir={}", self.work_dir(i).display()))
            .arg(format!(
                "--ensemble_token_file={}",
                self.dir.join("token").display()
            ))
            .arg("--raw_log_api")
            .env("RUST_LOG", &self.log_filter);
        Proc::spawn(command, &self.dir.join(format!("master-{i}.log")))
    }

    async fn status(&self, i: usize) -> Option<serde_json::Value> {
        let (code, body) = http(
            &self.http,
            "GET",
            self.members[i],
            "/log/status",
            Bytes::new(),
        )
        .await?;
        if code != 200 {
            return None;
        }
        serde_json::from_slice(&body).ok()
    }

    async fn wait_leader(&self) -> Result<usize> {
        let deadline = Instant::now() + EVENTUALLY;
        while Instant::now() < deadline {
            for i in 0..self.members.len() {
                if self.procs[i].child.is_some()
                    && self.status(i).await.is_some_and(|s| s["elected"] == true)
                {
                    return Ok(i);
                }
            }
            tokio::time::sleep(POLL).await;
        }
        bail!("no master elected within {EVENTUALLY:?}")
    }

    async fn learned(&self, i: usize) -> Option<u64> {
        self.status(i).await?["learned"].as_u64()
    }

    async fn append(client: &Http, addr: SocketAddr, body: Bytes) -> bool {
        match http(client, "POST", addr, "/log/append", body).await {
            Some((200, _)) => true,
            Some((307, _)) => false,
            other => {
                if ERRORS_SHOWN.fetch_add(1, Ordering::Relaxed) < MAX_ERRORS_SHOWN {
                    eprintln!(
                        "append to {addr}: {}",
                        other.map_or("no answer".into(), |(code, body)| format!(
                            "{code} {}",
                            String::from_utf8_lossy(&body).trim()
                        ))
                    );
                }
                false
            }
        }
    }

    async fn load(&self, leader: usize, writers: usize, plan: &Plan, value: usize) -> LoadResult {
        let append = FollowingAppend::new(self, leader, Bytes::from(vec![0x42u8; value]));
        run_writers(
            writers,
            plan.slice_duration(),
            plan.slice_max_ops(),
            move |_, _| append.send(),
        )
        .await
    }
}

/// Raw appends that follow leadership as etcd's client does for its puts: a write
/// refused by a follower (307) or a deposed leader (503) moves every writer on to
/// the next member. The refusal still counts as an error of the phase.
#[derive(Clone)]
struct FollowingAppend {
    client: Http,
    members: Arc<Vec<SocketAddr>>,
    target: Arc<AtomicUsize>,
    body: Bytes,
}

impl FollowingAppend {
    fn new(ours: &Ours, leader: usize, body: Bytes) -> FollowingAppend {
        FollowingAppend {
            client: ours.http.clone(),
            members: Arc::new(ours.members.clone()),
            target: Arc::new(AtomicUsize::new(leader)),
            body,
        }
    }

    fn send(&self) -> impl Future<Output = bool> + Send + 'static {
        let this = self.clone();
        async move {
            let member = this.target.load(Ordering::Relaxed);
            let ok = Ours::append(&this.client, this.members[member], this.body.clone()).await;
            if !ok {
                let _ = this.target.compare_exchange(
                    member,
                    (member + 1) % this.members.len(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            ok
        }
    }
}

impl Ours {
    /// A registry write through the master's HTTP API (`PUT /weights`, Mesos'
    /// UPDATE_WEIGHTS): parse, registrar, one log append, apply, answer. Each
    /// writer sets the weight of its own role, so the registry does not grow.
    async fn load_registry(&self, leader: usize, writers: usize, plan: &Plan) -> LoadResult {
        let addr = self.members[leader];
        let client = self.http.clone();
        run_writers(
            writers,
            Duration::from_secs_f64(plan.load_secs_per_level),
            plan.max_ops_per_level,
            move |writer, seq| {
                let client = client.clone();
                let body = Bytes::from(format!(
                    r#"[{{"role":"bench-{writer}","weight":{}}}]"#,
                    1 + seq % 100
                ));
                async move {
                    match http(&client, "PUT", addr, "/weights", body).await {
                        Some((200, _)) => true,
                        other => {
                            if ERRORS_SHOWN.fetch_add(1, Ordering::Relaxed) < MAX_ERRORS_SHOWN {
                                eprintln!(
                                    "PUT /weights to {addr}: {}",
                                    other.map_or("no answer".into(), |(code, body)| format!(
                                        "{code} {}",
                                        String::from_utf8_lossy(&body).trim()
                                    ))
                                );
                            }
                            false
                        }
                    }
                }
            },
        )
        .await
    }
}

// ---------------------------------------------------------------------------------
// etcd.

struct Etcd {
    bin: PathBuf,
    dir: PathBuf,
    procs: Vec<Proc>,
    /// Incremented when a member is re-added with an empty data dir.
    generation: Vec<u32>,
}

fn etcd_client_url(i: usize) -> String {
    format!("http://{}:{ETCD_CLIENT_PORT}", ETCD_IPS[i])
}

fn etcd_peer_url(i: usize) -> String {
    format!("http://{}:{ETCD_PEER_PORT}", ETCD_IPS[i])
}

async fn etcd_connect(i: usize) -> Result<etcd_client::Client> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(REQUEST_TIMEOUT);
    Ok(etcd_client::Client::connect([etcd_client_url(i)], Some(options)).await?)
}

impl Etcd {
    fn start(bin: &Path, dir: &Path) -> Result<Etcd> {
        fs::create_dir_all(dir)?;
        let mut etcd = Etcd {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            procs: Vec::new(),
            generation: vec![0; ETCD_IPS.len()],
        };
        for i in 0..ETCD_IPS.len() {
            let proc = etcd.spawn(i, "new")?;
            etcd.procs.push(proc);
        }
        Ok(etcd)
    }

    fn name(&self, i: usize) -> String {
        format!("e{i}-{}", self.generation[i])
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("etcd-{i}"))
    }

    fn spawn(&self, i: usize, state: &str) -> Result<Proc> {
        let cluster = (0..ETCD_IPS.len())
            .map(|j| format!("{}={}", self.name(j), etcd_peer_url(j)))
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new(&self.bin);
        command
            .arg(format!("--name={}", self.name(i)))
            .arg(format!("--data-dir={}", self.data_dir(i).display()))
            .arg(format!("--listen-client-urls={}", etcd_client_url(i)))
            .arg(format!("--advertise-client-urls={}", etcd_client_url(i)))
            .arg(format!("--listen-peer-urls={}", etcd_peer_url(i)))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                etcd_peer_url(i)
            ))
            .arg(format!("--initial-cluster={cluster}"))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=bench")
            .arg("--log-level=warn");
        Proc::spawn(
            command,
            &self
                .dir
                .join(format!("etcd-{i}-{}.log", self.generation[i])),
        )
    }

    /// (member id, leader id, revision) as member `i` reports them.
    async fn status(i: usize) -> Option<(u64, u64, i64)> {
        let mut client = etcd_connect(i).await.ok()?;
        let status = tokio::time::timeout(Duration::from_secs(1), client.status())
            .await
            .ok()?
            .ok()?;
        let header = status.header()?;
        Some((header.member_id(), status.leader(), header.revision()))
    }

    async fn wait_leader(&self) -> Result<usize> {
        let deadline = Instant::now() + EVENTUALLY;
        while Instant::now() < deadline {
            let mut ids = Vec::new();
            let mut leader = None;
            for i in 0..ETCD_IPS.len() {
                if self.procs[i].child.is_none() {
                    continue;
                }
                if let Some((id, lead, _)) = Etcd::status(i).await {
                    ids.push((i, id));
                    if lead != 0 {
                        leader = Some(lead);
                    }
                }
            }
            if let Some(lead) = leader {
                if let Some((i, _)) = ids.iter().find(|(_, id)| *id == lead) {
                    return Ok(*i);
                }
            }
            tokio::time::sleep(POLL).await;
        }
        bail!("etcd elected no leader within {EVENTUALLY:?}")
    }

    async fn load(
        &self,
        writers: usize,
        plan: &Plan,
        value: usize,
        prefix: &str,
    ) -> Result<LoadResult> {
        // One client (one HTTP/2 connection per endpoint), concurrent requests on it,
        // as the etcd benchmark tool does with --clients=1.
        let mut clients = Vec::new();
        for i in 0..ETCD_IPS.len() {
            clients.push(etcd_connect(i).await?);
        }
        let leader = self.wait_leader().await?;
        let client = clients.swap_remove(leader);
        let value = vec![0x42u8; value];
        let prefix = prefix.to_string();
        Ok(run_writers(
            writers,
            plan.slice_duration(),
            plan.slice_max_ops(),
            move |writer, seq| {
                let mut client = client.clone();
                let value = value.clone();
                let key = format!("{prefix}/{writer}/{seq}");
                async move { client.put(key, value, None).await.is_ok() }
            },
        )
        .await)
    }
}

// ---------------------------------------------------------------------------------
// Failover: kill -9 the leader under load, time to the first write acknowledged
// that was sent after the kill.

/// Writers under load that move to the next member on any failure, plus a prober
/// that sends a fresh write every [`PROBE_INTERVAL`] to the members in turn, each
/// in its own task: a writer stuck in a request the dead leader lost (etcd holds
/// such proposals until its request timeout) must not hide the moment the cluster
/// can acknowledge writes again. Every acknowledgement is recorded as (sent, acked).
struct FailoverLoad {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<(Instant, Instant)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Period of the failover prober's fresh writes.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

impl FailoverLoad {
    fn start<F, Fut>(members: usize, op: F) -> FailoverLoad
    where
        F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + EVENTUALLY;
        let mut tasks: Vec<_> = (0..FAILOVER_WRITERS)
            .map(|writer| {
                let (stop, acks, op) = (stop.clone(), acks.clone(), op.clone());
                tokio::spawn(async move {
                    let mut member = writer % members;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let sent = Instant::now();
                        if op(member).await {
                            if let Ok(mut acks) = acks.lock() {
                                acks.push((sent, Instant::now()));
                            }
                        } else {
                            member = (member + 1) % members;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                })
            })
            .collect();
        let (probe_stop, probe_acks) = (stop.clone(), acks.clone());
        tasks.push(tokio::spawn(async move {
            let mut member = 0;
            while !probe_stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let (acks, write) = (probe_acks.clone(), op(member));
                tokio::spawn(async move {
                    let sent = Instant::now();
                    if write.await {
                        if let Ok(mut acks) = acks.lock() {
                            acks.push((sent, Instant::now()));
                        }
                    }
                });
                member = (member + 1) % members;
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        }));
        FailoverLoad { stop, acks, tasks }
    }

    /// Time from `killed_at` to the first acknowledgement of a write sent after it.
    async fn first_ack_after(&self, killed_at: Instant) -> Option<Duration> {
        let deadline = killed_at + Duration::from_secs(30);
        while Instant::now() < deadline {
            let first = self.acks.lock().ok().and_then(|acks| {
                acks.iter()
                    .filter(|(sent, _)| *sent >= killed_at)
                    .map(|(_, acked)| *acked)
                    .min()
            });
            if let Some(acked) = first {
                return Some(acked - killed_at);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// Stops the load; answers how many writes were acknowledged.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        self.acks.lock().map_or(0, |acks| acks.len() as u64)
    }
}

async fn failover_ours(ours: &mut Ours, rounds: usize, acked: &mut u64) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    for _ in 0..rounds {
        let leader = ours.wait_leader().await?;
        let client = ours.http.clone();
        let members = ours.members.clone();
        let body = Bytes::from(vec![0x42u8; VALUE_BYTES]);
        let load = FailoverLoad::start(members.len(), move |m| {
            let (client, body, addr) = (client.clone(), body.clone(), members[m]);
            async move { Ours::append(&client, addr, body).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed_at = Instant::now();
        ours.procs[leader].kill();
        let took = load.first_ack_after(killed_at).await;
        *acked += load.stop().await;
        let took = took.context("no write acknowledged within 30 s of killing the leader")?;
        times.push(ms(took));
        ours.procs[leader] = ours.spawn(leader)?;
        // Let the restarted member catch up before the next round.
        let new_leader = ours.wait_leader().await?;
        let target = ours.learned(new_leader).await.unwrap_or(0);
        let deadline = Instant::now() + EVENTUALLY;
        while Instant::now() < deadline && ours.learned(leader).await.is_none_or(|l| l < target) {
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(times)
}

async fn failover_etcd(etcd: &mut Etcd, rounds: usize, acked: &mut u64) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    for _ in 0..rounds {
        let leader = etcd.wait_leader().await?;
        let mut clients = Vec::new();
        for i in 0..ETCD_IPS.len() {
            clients.push(etcd_connect(i).await?);
        }
        let value = vec![0x42u8; VALUE_BYTES];
        let load = FailoverLoad::start(clients.len(), move |m| {
            let mut client = clients[m].clone();
            let value = value.clone();
            async move { client.put("failover", value, None).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed_at = Instant::now();
        etcd.procs[leader].kill();
        let took = load.first_ack_after(killed_at).await;
        *acked += load.stop().await;
        let took = took.context("no put acknowledged within 30 s of killing the leader")?;
        times.push(ms(took));
        etcd.procs[leader] = etcd.spawn(leader, "existing")?;
        let deadline = Instant::now() + EVENTUALLY;
        while Instant::now() < deadline && Etcd::status(leader).await.is_none() {
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(times)
}

// ---------------------------------------------------------------------------------
// Catch-up: an empty member reaching the leader's log of `mb` MiB.

/// Fills the log with `mb` MiB of 64 KiB values; bounded by count and time.
async fn fill<F, Fut>(mb: usize, op: F) -> Result<()>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let writes = (mb * (1 << 20)).div_ceil(FILL_VALUE_BYTES) as u64;
    // A write may fail (a 503 with an unknown outcome): retry the missing ones, a
    // bounded number of times.
    let mut acknowledged = 0;
    for _ in 0..FILL_ATTEMPTS {
        acknowledged += run_writers(FILL_WRITERS, EVENTUALLY, writes - acknowledged, op.clone())
            .await
            .ok;
        if acknowledged >= writes {
            return Ok(());
        }
    }
    bail!("filling {mb} MiB: {acknowledged} of {writes} writes acknowledged")
}

/// What one system's catch-up phase measured.
struct CatchUp {
    /// MB/s of acknowledged fill writes (`FILL_WRITERS` writers of
    /// `FILL_VALUE_BYTES` values): large-value write throughput.
    fill_mb_s: f64,
    /// MB/s at which the emptied member caught up.
    catchup_mb_s: f64,
    note: String,
}

/// Times `fill`: MB/s of acknowledged writes.
async fn timed_fill<F, Fut>(mb: usize, op: F) -> Result<f64>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let start = Instant::now();
    fill(mb, op).await?;
    Ok(mb as f64 / start.elapsed().as_secs_f64())
}

/// Fills the log, then the MB/s at which a wiped follower caught up, from its
/// restart to learning the leader's learned position (as it stood at the restart).
async fn catchup_ours(ours: &mut Ours, mb: usize, prior_bytes: u64) -> Result<CatchUp> {
    let leader = ours.wait_leader().await?;
    let append = FollowingAppend::new(ours, leader, Bytes::from(vec![0x43u8; FILL_VALUE_BYTES]));
    let fill_mb_s = timed_fill(mb, move |_, _| append.send()).await?;
    let leader = ours.wait_leader().await?;
    let follower = (leader + 1) % ours.members.len();
    ours.procs[follower].kill();
    fs::remove_dir_all(ours.work_dir(follower))?;
    let target = ours
        .learned(leader)
        .await
        .context("leader's learned position")?;
    let start = Instant::now();
    ours.procs[follower] = ours.spawn(follower)?;
    while ours.learned(follower).await.is_none_or(|l| l < target) {
        if start.elapsed() > EVENTUALLY {
            bail!("wiped master did not catch up within {EVENTUALLY:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    let took = start.elapsed();
    let total_mb = (prior_bytes as f64 / (1 << 20) as f64) + mb as f64;
    Ok(CatchUp {
        fill_mb_s,
        catchup_mb_s: total_mb / took.as_secs_f64(),
        note: format!("ours: {total_mb:.0} MiB, {target} positions, {took:.1?}"),
    })
}

/// The same for etcd: remove a follower, re-add it with an empty data dir, time
/// from its start to reporting the leader's revision.
async fn catchup_etcd(etcd: &mut Etcd, mb: usize, prior_bytes: u64) -> Result<CatchUp> {
    let leader = etcd.wait_leader().await?;
    let client = etcd_connect(leader).await?;
    let value = vec![0x43u8; FILL_VALUE_BYTES];
    let fill_mb_s = timed_fill(mb, move |writer, seq| {
        let mut client = client.clone();
        let value = value.clone();
        async move {
            client
                .put(format!("fill/{writer}/{seq}"), value, None)
                .await
                .is_ok()
        }
    })
    .await?;
    let follower = (leader + 1) % ETCD_IPS.len();
    let (follower_id, _, _) = Etcd::status(follower)
        .await
        .context("follower's member id")?;
    etcd.procs[follower].kill();
    let mut admin = etcd_connect(leader).await?;
    // etcd refuses to remove a member while it deems the cluster unhealthy (e.g. a
    // member restarted moments ago by the failover phase): retry, bounded. The
    // removed member is dead already, so this does not count in the catch-up time.
    let deadline = Instant::now() + EVENTUALLY;
    while let Err(err) = admin.member_remove(follower_id).await {
        if Instant::now() > deadline {
            return Err(err.into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fs::remove_dir_all(etcd.data_dir(follower))?;
    etcd.generation[follower] += 1;
    // Likewise for adding: etcd counts a member active only once it has been
    // connected for a few seconds.
    while let Err(err) = admin.member_add([etcd_peer_url(follower)], None).await {
        if Instant::now() > deadline {
            return Err(err.into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, _, target) = Etcd::status(leader).await.context("leader's revision")?;
    let start = Instant::now();
    etcd.procs[follower] = etcd.spawn(follower, "existing")?;
    while Etcd::status(follower)
        .await
        .is_none_or(|(_, _, revision)| revision < target)
    {
        if start.elapsed() > EVENTUALLY {
            bail!("re-added etcd member did not catch up within {EVENTUALLY:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    let took = start.elapsed();
    let total_mb = (prior_bytes as f64 / (1 << 20) as f64) + mb as f64;
    Ok(CatchUp {
        fill_mb_s,
        catchup_mb_s: total_mb / took.as_secs_f64(),
        note: format!("etcd: {total_mb:.0} MiB, revision {target}, {took:.1?}"),
    })
}

// ---------------------------------------------------------------------------------
// The report.

#[derive(Debug, Serialize)]
struct Row {
    figure: String,
    unit: String,
    ours: Option<f64>,
    etcd: Option<f64>,
    /// ours / etcd.
    ratio: Option<f64>,
    goal: String,
    note: String,
}

#[derive(Debug, Serialize)]
struct Report {
    plan: Plan,
    etcd_version: Option<String>,
    etcd_unavailable: Option<String>,
    machine: Vec<(String, f64)>,
    rows: Vec<Row>,
    errors: Vec<String>,
}

impl Report {
    /// Both sequential-write probes of `what`, as machine figures.
    fn sequential_write(&mut self, what: &str, probe: &SequentialWrite) {
        self.machine.push((
            format!("sequential write {what}, buffered + fsync, MB/s"),
            probe.buffered,
        ));
        if let Some(direct) = probe.direct {
            self.machine.push((
                format!("sequential write {what}, O_DIRECT + fsync, MB/s"),
                direct,
            ));
        }
    }

    fn row(&mut self, figure: &str, unit: &str, ours: Option<f64>, etcd: Option<f64>, goal: &str) {
        let ratio = match (ours, etcd) {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        };
        self.rows.push(Row {
            figure: figure.into(),
            unit: unit.into(),
            ours,
            etcd,
            ratio,
            goal: goal.into(),
            note: String::new(),
        });
    }

    fn note(&mut self, note: impl Into<String>) {
        if let Some(row) = self.rows.last_mut() {
            row.note = note.into();
        }
    }

    fn print(&self) {
        let cell = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
        println!();
        println!(
            "mode: {}; both systems in the same run, load phases interleaved",
            if self.plan.quick { "quick" } else { "full" }
        );
        if let Some(reason) = &self.etcd_unavailable {
            println!("etcd: unavailable ({reason})");
        } else if let Some(version) = &self.etcd_version {
            println!("etcd: {version}");
        }
        for (name, value) in &self.machine {
            println!("machine: {name} = {value:.3}");
        }
        println!(
            "{:<40} {:>8} {:>10} {:>10} {:>7}  {:<18} note",
            "figure", "unit", "ours", "etcd", "ratio", "goal"
        );
        for r in &self.rows {
            println!(
                "{:<40} {:>8} {:>10} {:>10} {:>7}  {:<18} {}",
                r.figure,
                r.unit,
                cell(r.ours),
                cell(r.etcd),
                cell(r.ratio),
                r.goal,
                r.note
            );
        }
        for e in &self.errors {
            println!("error: {e}");
        }
    }
}

/// Copies every `*.log` under `run_dir` (the masters', etcd's, the operator's) to
/// `logs`, flattened by path, before the run directory and its data go; answers how
/// many.
fn keep_logs(run_dir: &Path, logs: &Path) -> Result<usize> {
    let _ = fs::remove_dir_all(logs);
    fs::create_dir_all(logs)?;
    let mut kept = 0;
    let mut dirs = vec![run_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                let relative = path
                    .strip_prefix(run_dir)?
                    .to_string_lossy()
                    .replace('/', "-");
                fs::copy(&path, logs.join(relative))?;
                kept += 1;
            }
        }
    }
    Ok(kept)
}

struct Args {
    quick: bool,
    master_bin: PathBuf,
    operator_bin: PathBuf,
    etcd_bin: String,
    /// Phases to run (the physical floor always runs); all by default.
    phases: Vec<String>,
    writer_counts: Vec<usize>,
    /// `RUST_LOG` of our masters; their logs are kept in `target/bench/logs`.
    master_log: String,
}

const PHASES: [&str; 4] = ["throughput", "failover", "catchup", "rss"];
const USAGE: &str = "usage: bench [--quick] [--phases throughput,failover,catchup,rss] \
[--writers 1,16,64] [--master-log RUST_LOG] [--master-bin PATH] [--operator-bin PATH] [--etcd-bin PATH]";

impl Args {
    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

fn parse_args() -> Result<Args> {
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("bench binary has no directory")?;
    let mut args = Args {
        quick: false,
        master_bin: bin_dir.join("mesos-master"),
        operator_bin: bin_dir.join("mesos-operator"),
        etcd_bin: "etcd".into(),
        phases: PHASES.iter().map(ToString::to_string).collect(),
        writer_counts: WRITER_COUNTS.to_vec(),
        master_log: "warn".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--quick" => args.quick = true,
            "--phases" => {
                let list = it.next().context("--phases LIST")?;
                args.phases = list.split(',').map(str::to_string).collect();
                if let Some(bad) = args.phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
                    bail!("unknown phase {bad:?}; phases are {}", PHASES.join(","));
                }
            }
            "--writers" => {
                let list = it.next().context("--writers LIST")?;
                args.writer_counts = list
                    .split(',')
                    .map(|w| match w.parse::<usize>() {
                        Ok(n) if (1..=1024).contains(&n) => Ok(n),
                        _ => Err(anyhow::anyhow!(
                            "--writers: {w:?} is not a count in 1..=1024"
                        )),
                    })
                    .collect::<Result<_>>()?;
            }
            "--master-log" => args.master_log = it.next().context("--master-log RUST_LOG")?,
            "--master-bin" => args.master_bin = it.next().context("--master-bin PATH")?.into(),
            "--operator-bin" => {
                args.operator_bin = it.next().context("--operator-bin PATH")?.into()
            }
            "--etcd-bin" => args.etcd_bin = it.next().context("--etcd-bin PATH")?,
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    Ok(args)
}

fn etcd_version(bin: &str) -> Result<String> {
    let output = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running `{bin} --version` (install etcd-server)"))?;
    if !output.status.success() {
        bail!("`{bin} --version` failed");
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

/// Idle RSS of `mesos-operator local` running its default 3 masters (on
/// 127.0.0.1-3 at [`OPERATOR_BASE_PORT`], state under `dir`), or why it cannot be
/// measured. The operator is stopped with SIGTERM so it stops its masters too.
fn operator_rss(
    bin: &Path,
    master_bin: &Path,
    dir: &Path,
    idle_settle: Duration,
) -> Result<f64, String> {
    let help = Command::new(bin)
        .arg("--help")
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let help = String::from_utf8_lossy(&help.stdout);
    if !help.lines().any(|l| l.trim_start().starts_with("local")) {
        return Err("mesos-operator has no `local` (or `run`) command yet".into());
    }
    let mut command = Command::new(bin);
    command
        .arg("local")
        .arg(format!("--state-dir={}", dir.join("operator").display()))
        .arg(format!("--base-port={OPERATOR_BASE_PORT}"))
        .arg(format!("--master-binary={}", master_bin.display()))
        .arg("--display=quiet");
    let mut proc = Proc::spawn(command, &dir.join("operator.log")).map_err(|e| e.to_string())?;
    std::thread::sleep(idle_settle * 2);
    let rss = rss_mb(proc.pid()).ok_or_else(|| "mesos-operator local exited".to_string());
    proc.terminate(OPERATOR_STOP_GRACE);
    rss
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let plan = Plan::new(args.quick);
    let idle_settle = Duration::from_secs_f64(plan.idle_settle_secs);
    let out_dir = PathBuf::from("target/bench");
    let run_dir = out_dir.join("run");
    let _ = fs::remove_dir_all(&run_dir);
    fs::create_dir_all(&run_dir)?;
    if !args.master_bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release --bin mesos-master)",
            args.master_bin.display()
        );
    }

    let mut report = Report {
        plan: plan.clone(),
        etcd_version: None,
        etcd_unavailable: None,
        machine: Vec::new(),
        rows: Vec::new(),
        errors: Vec::new(),
    };

    eprintln!("== physical floor");
    let fsync = fsync_floor(&run_dir, plan.fsync_samples, true)?;
    let fsync_extend = fsync_floor(&run_dir, plan.fsync_samples, false)?;
    let rtt = loopback_rtt(plan.rtt_samples)?;
    let sequential = sequential_write(&run_dir, plan.seq_write_mb)?;
    report.machine.push((
        "fsync floor p50 (256 B overwrite + fdatasync), ms".into(),
        ms(fsync),
    ));
    report.machine.push((
        "fsync p50 appending (256 B extend + fdatasync), ms".into(),
        ms(fsync_extend),
    ));
    report
        .machine
        .push(("loopback TCP RTT p50, ms".into(), ms(rtt)));
    report.sequential_write(&format!("{} MiB", plan.seq_write_mb), &sequential);

    eprintln!("== starting 3 masters and 3 etcd members");
    let mut ours = Ours::start(&args.master_bin, &run_dir.join("ours"), &args.master_log)?;
    let mut etcd = match etcd_version(&args.etcd_bin) {
        Ok(version) => {
            report.etcd_version = Some(version);
            match Etcd::start(Path::new(&args.etcd_bin), &run_dir.join("etcd")) {
                Ok(etcd) => Some(etcd),
                Err(e) => {
                    report.etcd_unavailable = Some(format!("{e:#}"));
                    None
                }
            }
        }
        Err(e) => {
            report.etcd_unavailable = Some(format!("{e:#}"));
            None
        }
    };
    let mut leader = ours.wait_leader().await?;
    if let Some(e) = &etcd {
        if let Err(err) = e.wait_leader().await {
            report.etcd_unavailable = Some(format!("{err:#}"));
            etcd = None;
        }
    }

    tokio::time::sleep(idle_settle).await;
    let ours_rss = rss_mb(ours.procs[leader].pid());
    let etcd_rss = largest_etcd_rss(etcd.as_ref());
    report.row(
        "idle RSS, leader / largest etcd member",
        "MB",
        ours_rss,
        etcd_rss,
        "ours < 30",
    );

    // The disk is shared and its flush time swings by an order of magnitude over
    // minutes: the floor the latency is compared with is taken right before it.
    let fsync = fsync_floor(&run_dir, plan.fsync_samples, true)?;
    report.machine.push((
        "fsync floor p50 just before the latency phase (used for the ratio), ms".into(),
        ms(fsync),
    ));
    eprintln!("== throughput and latency (interleaved)");
    let mut single: (Option<LoadResult>, Option<LoadResult>) = (None, None);
    // Payload bytes each log holds, for the catch-up figure: the empty member
    // catches up all of it, not only the fill.
    let (mut ours_acked, mut etcd_acked) = (0u64, 0u64);
    let writer_counts = if args.runs("throughput") {
        args.writer_counts.clone()
    } else {
        Vec::new()
    };
    for writers in writer_counts {
        let mut mine = LoadResult::default();
        let mut theirs: Option<LoadResult> = etcd.as_ref().map(|_| LoadResult::default());
        let mut slice_ratios = Vec::new();
        for slice in 0..plan.load_slices.max(1) {
            let mut slice_ours = None;
            let mut slice_etcd = None;
            // ABBA: even slices start with ours, odd ones with etcd.
            let order = if slice % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for run_ours in order {
                if run_ours {
                    leader = ours.wait_leader().await?;
                    slice_ours = Some(ours.load(leader, writers, &plan, VALUE_BYTES).await);
                } else if let Some(e) = &etcd {
                    let prefix = format!("w{writers}s{slice}");
                    slice_etcd = Some(e.load(writers, &plan, VALUE_BYTES, &prefix).await?);
                }
            }
            let ours_rate = slice_ours.as_ref().map(LoadResult::ops_per_s);
            let etcd_rate = slice_etcd.as_ref().map(LoadResult::ops_per_s);
            if let (Some(a), Some(b)) = (ours_rate, etcd_rate) {
                if b > 0.0 {
                    slice_ratios.push(a / b);
                }
            }
            if let Some(part) = slice_ours {
                mine.merge(part);
            }
            if let (Some(total), Some(part)) = (theirs.as_mut(), slice_etcd) {
                total.merge(part);
            }
        }
        ours_acked += mine.ok;
        etcd_acked += theirs.as_ref().map_or(0, |t| t.ok);
        // A phase in which nothing was acknowledged measured nothing: that is a
        // broken bench or cluster, and the run must fail (CI relies on it).
        if mine.ok == 0 {
            report
                .errors
                .push(format!("append, {writers} writers: no write acknowledged"));
        }
        if theirs.as_ref().is_some_and(|t| t.ok == 0) {
            report.errors.push(format!(
                "etcd put, {writers} writers: no write acknowledged"
            ));
        }
        report.row(
            &format!("append throughput, {writers} writers"),
            "ops/s",
            Some(mine.ops_per_s()),
            theirs.as_ref().map(LoadResult::ops_per_s),
            if writers == 64 { "ratio >= 2" } else { "" },
        );
        let mut notes = Vec::new();
        if slice_ratios.len() > 1 {
            let shown: Vec<String> = slice_ratios.iter().map(|r| format!("{r:.2}")).collect();
            notes.push(format!("ratio per slice: {}", shown.join(", ")));
        }
        let errors = mine.errors + theirs.as_ref().map_or(0, |t| t.errors);
        if errors > 0 {
            notes.push(format!(
                "errors: ours {}, etcd {}",
                mine.errors,
                theirs.as_ref().map_or(0, |t| t.errors)
            ));
        }
        if !notes.is_empty() {
            report.note(notes.join("; "));
        }
        // The registry path right after, against the same etcd put figure: what a
        // Mesos operator call costs on top of the raw append.
        leader = ours.wait_leader().await?;
        let registry = ours.load_registry(leader, writers, &plan).await;
        if registry.ok == 0 {
            report.errors.push(format!(
                "registry write, {writers} writers: no write acknowledged"
            ));
        }
        report.row(
            &format!("registry write (PUT /weights), {writers} writers, vs etcd put"),
            "ops/s",
            Some(registry.ops_per_s()),
            theirs.as_ref().map(LoadResult::ops_per_s),
            "",
        );
        report.note(format!(
            "registry write / raw append, {writers} writers: {:.2}x{}",
            registry.ops_per_s() / mine.ops_per_s().max(f64::MIN_POSITIVE),
            if registry.errors > 0 {
                format!(" ({} registry errors)", registry.errors)
            } else {
                String::new()
            }
        ));
        if writers == 1 {
            single = (Some(mine), theirs);
        }
    }
    let p = |r: &Option<LoadResult>, q: f64| {
        r.as_ref().and_then(|r| percentile(&r.latencies, q)).map(ms)
    };
    let (p50_ours, p50_etcd) = (p(&single.0, 0.5), p(&single.1, 0.5));
    if single.0.is_some() {
        report.row(
            "1 writer latency p50",
            "ms",
            p50_ours,
            p50_etcd,
            "below etcd",
        );
        report.row(
            "1 writer latency p99",
            "ms",
            p(&single.0, 0.99),
            p(&single.1, 0.99),
            "",
        );
        report.row(
            "1 writer p50 / fsync floor",
            "x",
            p50_ours.map(|v| v / ms(fsync)),
            p50_etcd.map(|v| v / ms(fsync)),
            "ours <= 1.2",
        );
        // What a replicated write cannot beat: the client's round trip to the leader,
        // the leader's round trip to a follower, and one fsync (the leader's own runs
        // while its accepts travel, so the follower's is the one on the path). Both
        // systems pay it; thread hand-offs and the HTTP/gRPC stacks come on top.
        let replicated_floor = fsync + 2 * rtt;
        report.machine.push((
            "replicated-write floor: fsync + 2 loopback RTT, ms".into(),
            ms(replicated_floor),
        ));
        report.row(
            "1 writer p50 / replicated-write floor",
            "x",
            p50_ours.map(|v| v / ms(replicated_floor)),
            p50_etcd.map(|v| v / ms(replicated_floor)),
            "",
        );
    }

    if args.runs("failover") {
        eprintln!(
            "== failover ({} rounds each; the killed leader's refusals are expected)",
            plan.failover_rounds
        );
        let ours_failover = failover_ours(&mut ours, plan.failover_rounds, &mut ours_acked).await?;
        let etcd_failover = match &mut etcd {
            Some(e) => match failover_etcd(e, plan.failover_rounds, &mut etcd_acked).await {
                Ok(times) => times,
                Err(err) => {
                    report.errors.push(format!("etcd failover: {err:#}"));
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        report.row(
            "failover: kill -9 leader -> first ack (median)",
            "ms",
            median(ours_failover.clone()),
            median(etcd_failover.clone()),
            "ours < 1000",
        );
        report.note(format!(
            "ours {ours_failover:.0?}, etcd {etcd_failover:.0?}"
        ));
    }

    if args.runs("catchup") {
        // The bandwidth the catch-up is compared with: the same amount of data
        // written to the same filesystem with one fdatasync at the end, right
        // before, since the shared disk's speed drifts; the faster of a buffered
        // and a direct write (see `SequentialWrite::disk_mb_s`).
        let catchup_total_mb =
            plan.catchup_mb + (ours_acked * VALUE_BYTES as u64).div_ceil(1 << 20) as usize;
        let sequential = sequential_write(&run_dir, catchup_total_mb)?;
        report.sequential_write(
            &format!("{catchup_total_mb} MiB before catch-up"),
            &sequential,
        );
        let seq_mb_s = sequential.disk_mb_s();
        report.machine.push((
            "disk sequential write bandwidth, the faster of the two (used for the catch-up ratio), MB/s"
                .into(),
            seq_mb_s,
        ));
        eprintln!("== catch-up of an empty member ({} MiB)", plan.catchup_mb);
        // The killed leaders' refusals above were expected; show this phase's own.
        ERRORS_SHOWN.store(0, Ordering::Relaxed);
        let ours_catchup =
            match catchup_ours(&mut ours, plan.catchup_mb, ours_acked * VALUE_BYTES as u64).await {
                Ok(v) => Some(v),
                Err(err) => {
                    report.errors.push(format!("our catch-up: {err:#}"));
                    None
                }
            };
        let etcd_catchup = match &mut etcd {
            Some(e) => {
                match catchup_etcd(e, plan.catchup_mb, etcd_acked * VALUE_BYTES as u64).await {
                    Ok(v) => Some(v),
                    Err(err) => {
                        report.errors.push(format!("etcd catch-up: {err:#}"));
                        None
                    }
                }
            }
            None => None,
        };
        let note = [&ours_catchup, &etcd_catchup]
            .iter()
            .filter_map(|c| c.as_ref().map(|c| c.note.clone()))
            .collect::<Vec<_>>()
            .join("; ");
        report.row(
            &format!(
                "fill: {} KiB writes, {FILL_WRITERS} writers",
                FILL_VALUE_BYTES / 1024
            ),
            "MB/s",
            ours_catchup.as_ref().map(|c| c.fill_mb_s),
            etcd_catchup.as_ref().map(|c| c.fill_mb_s),
            "",
        );
        let (ours_catchup, etcd_catchup) = (
            ours_catchup.map(|c| c.catchup_mb_s),
            etcd_catchup.map(|c| c.catchup_mb_s),
        );
        report.row(
            &format!("catch-up of the whole log ({} MiB fill)", plan.catchup_mb),
            "MB/s",
            ours_catchup,
            etcd_catchup,
            "",
        );
        report.note(note);
        report.row(
            "catch-up / sequential write bandwidth",
            "%",
            ours_catchup.map(|v| 100.0 * v / seq_mb_s),
            etcd_catchup.map(|v| 100.0 * v / seq_mb_s),
            "ours >= 50",
        );
    }

    if args.runs("rss") {
        tokio::time::sleep(idle_settle).await;
        leader = ours.wait_leader().await?;
        let etcd_rss = largest_etcd_rss(etcd.as_ref());
        report.row(
            "RSS after the run, leader / largest etcd",
            "MB",
            rss_mb(ours.procs[leader].pid()),
            etcd_rss,
            "",
        );
        match operator_rss(&args.operator_bin, &args.master_bin, &run_dir, idle_settle) {
            Ok(v) => report.row("idle RSS, mesos-operator local", "MB", Some(v), None, ""),
            Err(reason) => {
                report.row("idle RSS, mesos-operator local", "MB", None, None, "");
                report.note(reason);
            }
        }
    }

    drop(ours);
    drop(etcd);
    report.print();
    fs::write(
        out_dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    eprintln!("wrote {}", out_dir.join("report.json").display());
    match keep_logs(&run_dir, &out_dir.join("logs")) {
        Ok(kept) => eprintln!(
            "kept {kept} process logs in {}",
            out_dir.join("logs").display()
        ),
        Err(err) => eprintln!("could not keep the process logs: {err:#}"),
    }
    if std::env::var_os("BENCH_KEEP_RUN_DIR").is_none() {
        let _ = fs::remove_dir_all(&run_dir);
    }
    if !report.errors.is_empty() {
        bail!(
            "{} phase(s) failed; see the errors above",
            report.errors.len()
        );
    }
    Ok(())
}
