//! Bulk write rate of the write-ahead log: what catch-up asks of it (large records
//! in large batches, each batch waited for, each value shared with its holder as a
//! replica's is), against a plain sequential write + fdatasync of the same bytes in
//! the same directory. Also prints the CPU the log's writing took (the process's,
//! which does little else meanwhile).
//!
//! `cargo run --release --example wal_bulk_write -- [MiB] [record KiB] [records per batch] [dir]`

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mesos_operator::log::wal::{RecordParts, Wal, WalOptions, WriteBatch};

fn arg(args: &[String], i: usize, default: usize) -> Result<usize, String> {
    match args.get(i) {
        None => Ok(default),
        Some(a) => a.parse().map_err(|e| format!("argument {}: {e}", i + 1)),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (|| -> Result<(usize, usize, usize), String> {
        Ok((arg(&args, 0, 256)?, arg(&args, 1, 64)?, arg(&args, 2, 64)?))
    })();
    let (mib, record_kib, per_batch) = match parsed {
        Ok(p) if p.0 > 0 && p.1 > 0 && p.2 > 0 => p,
        Ok(_) => {
            eprintln!("sizes must be positive");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let base = args
        .get(3)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("wal-bulk-{}", std::process::id()));
    let result = run(&dir, mib, record_kib, per_batch);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    dir: &std::path::Path,
    mib: usize,
    record_kib: usize,
    per_batch: usize,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let total = mib << 20;
    let record = bytes::Bytes::from(vec![0x5au8; record_kib << 10]);

    let start = Instant::now();
    let mut file = File::create(dir.join("plain")).map_err(|e| e.to_string())?;
    let chunk = vec![0xa5u8; record.len() * per_batch];
    let mut written = 0;
    while written < total {
        file.write_all(&chunk).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        written += chunk.len();
    }
    let plain = start.elapsed();
    drop(file);
    std::fs::remove_file(dir.join("plain")).map_err(|e| e.to_string())?;

    let (wal, _) = Wal::open(&dir.join("wal"), WalOptions::default()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let cpu_before = cpu_seconds();
    let mut position = 0u64;
    let mut written = 0;
    while written < total {
        let mut batch = WriteBatch::new();
        for _ in 0..per_batch {
            // A replica's record: an encoded head, then the value it shares.
            let parts = RecordParts {
                head: vec![1, 2, 3],
                value: record.clone(),
                tail: Vec::new(),
            };
            batch = batch.put_parts(position, parts);
            position += 1;
        }
        wal.write(batch).map_err(|e| e.to_string())?;
        written += record.len() * per_batch;
    }
    let took = start.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    let stats = wal.stats();
    println!(
        "plain write+fdatasync per batch: {:.0} MB/s; wal: {:.0} MB/s, {cpu:.3} s of CPU ({} bytes appended, {} fdatasyncs, {} compaction bytes)",
        total as f64 / plain.as_secs_f64() / 1e6,
        total as f64 / took.as_secs_f64() / 1e6,
        stats.bytes_appended.load(Ordering::Relaxed),
        stats.fdatasyncs.load(Ordering::Relaxed),
        stats.compaction_bytes_copied.load(Ordering::Relaxed),
    );
    Ok(())
}

/// User + system CPU of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: `rusage` is plain data, valid when zeroed; getrusage only writes
    // into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
