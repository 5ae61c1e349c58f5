//! Runs the log simulator over many seeds.
//!
//! `cargo run --release --example log_sim -- --seeds 1000 --members 3`
//! `cargo run --release --example log_sim -- --seed 42 --members 5` (replay one)

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use mesos_operator::log::simulator::{replay_command, run, SimConfig, SimReport, DEFAULT_STEPS};

#[derive(Parser)]
#[command(about = "Deterministic simulator of the Paxos replicated log")]
struct Args {
    /// How many seeds to run (seeds first-seed .. first-seed + N).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of the range.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Replay exactly this seed (overrides --seeds).
    #[arg(long)]
    seed: Option<u64>,
    /// Ensemble size: 1, 3 or 5.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Steps of the faulty phase per seed.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    steps: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    std::panic::set_hook(Box::new(|_| {}));
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.first_seed..args.first_seed + args.seeds).collect(),
    };
    let started = Instant::now();
    let mut violations = 0u64;
    let mut total_steps = 0u64;
    let (mut acked, mut elections, mut wipes, mut crashes, mut one_to_three, mut leases) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut foreign, mut strangers) = (0u64, 0u64);
    for &seed in &seeds {
        let mut cfg = SimConfig::new(args.members, seed);
        cfg.steps = args.steps;
        // A panic inside the core is a violation like any other.
        let report = match std::panic::catch_unwind(|| run(&cfg)) {
            Ok(r) => r,
            Err(e) => {
                let what = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                SimReport {
                    violations: vec![format!("panic: {what}")],
                    ..SimReport::default()
                }
            }
        };
        total_steps += report.steps;
        acked += report.acked_appends;
        elections += report.elections;
        wipes += report.wipes;
        crashes += report.crashes;
        leases += report.lease_checks;
        foreign += report.refused_foreign_log;
        strangers += report.refused_non_member;
        if report.scenario.as_deref() == Some("OneToThree") {
            one_to_three += 1;
        }
        if !report.violations.is_empty() {
            violations += report.violations.len() as u64;
            println!(
                "FAIL seed={seed} members={} scenario={:?}",
                args.members, report.scenario
            );
            for v in &report.violations {
                println!("  {v}");
            }
            println!(
                "  replay: {}",
                replay_command(args.members, seed, args.steps)
            );
        } else if args.seed.is_some() {
            println!("{report:?}");
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "acked_appends={acked} elections={elections} wipes={wipes} crashes={crashes} one_to_three_runs={one_to_three} lease_checks={leases} refused_foreign_log={foreign} refused_non_member={strangers}"
    );
    println!(
        "seeds={} members={} violations={} steps={} seeds/min={:.0}",
        seeds.len(),
        args.members,
        violations,
        total_steps,
        seeds.len() as f64 * 60.0 / secs
    );
    if violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
