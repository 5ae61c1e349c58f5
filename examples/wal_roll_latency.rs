//! Commit latency of the write-ahead log across segment rolls (and the compactions
//! they trigger), with real fdatasyncs.
//!
//! `cargo run --release --example wal_roll_latency -- [writers] [seconds] [dir]`
//!
//! Defaults: 64 writers, 15 s, the system temporary directory, production options
//! (64 MiB segments). Each writer puts 256-byte records and writes every position
//! twice (as the replica does: the accepted entry, then the learned one), so half of
//! every sealed segment is garbage and every roll triggers a compaction, as in the
//! benchmark of `bench/`. Prints the latency distribution, the worst latency and
//! the worst per second, so a stall at a roll stands out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mesos_operator::log::wal::{Wal, WalOptions, WriteBatch};

const RECORD_BYTES: usize = 256;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let writers: usize = match args.first().map(|a| a.parse()).unwrap_or(Ok(64)) {
        Ok(writers) if writers > 0 => writers,
        _ => {
            eprintln!("writers must be a positive integer");
            return ExitCode::FAILURE;
        }
    };
    let seconds: u64 = match args.get(1).map(|a| a.parse()).unwrap_or(Ok(15)) {
        Ok(seconds) => seconds,
        Err(error) => {
            eprintln!("seconds: {error}");
            return ExitCode::FAILURE;
        }
    };
    let base = args
        .get(2)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let scratch = match tempfile::tempdir_in(&base) {
        Ok(scratch) => scratch,
        Err(error) => {
            eprintln!("creating a directory in {}: {error}", base.display());
            return ExitCode::FAILURE;
        }
    };
    let (wal, _) = match Wal::open(scratch.path(), WalOptions::default()) {
        Ok(opened) => opened,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let duration = Duration::from_secs(seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let wal: Wal = wal.clone();
            std::thread::spawn(move || {
                // (since start, latency) of every write.
                let mut samples: Vec<(Duration, Duration)> = Vec::new();
                let mut position = writer as u64 * 1_000_000_000;
                while started.elapsed() < duration {
                    for learned in [false, true] {
                        let t = Instant::now();
                        let fill = if learned { 2 } else { 1 };
                        if let Err(error) =
                            wal.write(WriteBatch::new().put(position, vec![fill; RECORD_BYTES]))
                        {
                            eprintln!("write failed: {error}");
                            return samples;
                        }
                        samples.push((t.duration_since(started), t.elapsed()));
                    }
                    position += 1;
                }
                samples
            })
        })
        .collect();
    let mut samples: Vec<(Duration, Duration)> = Vec::new();
    for thread in threads {
        match thread.join() {
            Ok(mut s) => samples.append(&mut s),
            Err(_) => {
                eprintln!("a writer panicked");
                return ExitCode::FAILURE;
            }
        }
    }
    let elapsed = started.elapsed();
    if samples.is_empty() {
        eprintln!("no writes completed");
        return ExitCode::FAILURE;
    }
    let mut latencies: Vec<Duration> = samples.iter().map(|(_, l)| *l).collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let worst = samples
        .iter()
        .max_by_key(|(_, latency)| *latency)
        .copied()
        .unwrap_or_default();
    println!(
        "writers {writers}: {} writes in {:.1} s ({:.0}/s), p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?} (started at {:.2} s)",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.99),
        at(0.999),
        worst.1,
        worst.0.as_secs_f64()
    );
    let mut per_second = vec![Duration::ZERO; seconds as usize + 2];
    for (since, latency) in &samples {
        let slot = (since.as_secs() as usize).min(per_second.len() - 1);
        per_second[slot] = per_second[slot].max(*latency);
    }
    let line: Vec<String> = per_second
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
        .collect();
    println!("worst latency per second (ms): {}", line.join(" "));
    let stats = wal.stats();
    println!(
        "group commits {}, fdatasyncs {}, bytes appended {}, segments deleted {}, compacted {}",
        stats.group_commits.load(Ordering::Relaxed),
        stats.fdatasyncs.load(Ordering::Relaxed),
        stats.bytes_appended.load(Ordering::Relaxed),
        stats.segments_deleted.load(Ordering::Relaxed),
        stats.segments_compacted.load(Ordering::Relaxed),
    );
    ExitCode::SUCCESS
}
