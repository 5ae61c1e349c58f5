//! The live terminal view of `mesos-operator local`: plain ANSI, redrawn in place.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::master::api::LogStatus;
use crate::operator::api::{MesosMasterClusterStatus, Ordinal, StepState};
use crate::operator::planner::{member_name, MemberConfig};

pub struct MemberRow {
    pub ordinal: Ordinal,
    pub address: SocketAddr,
    pub pid: Option<u32>,
    pub config: Option<MemberConfig>,
    pub status: Option<LogStatus>,
}

pub struct Frame<'a> {
    pub name: &'a str,
    pub state_dir: &'a Path,
    pub uptime: Duration,
    pub spec_replicas: i32,
    pub status: &'a MesosMasterClusterStatus,
    pub members: &'a [MemberRow],
    pub notes: &'a [String],
}

/// Cursor home; each line clears its rest and the frame clears below itself, so
/// the view is redrawn in place without flicker.
const HOME: &str = "\x1b[H";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

pub fn render(frame: &Frame<'_>) -> String {
    let status = frame.status;
    let mut out = String::from(HOME);
    let _ = writeln!(
        out,
        "{BOLD}mesos-operator local{RESET}  cluster {}  state {}  up {}s",
        frame.name,
        frame.state_dir.display(),
        frame.uptime.as_secs()
    );
    let phase = status
        .phase
        .map(|phase| format!("{phase:?}"))
        .unwrap_or_else(|| "-".into());
    let colour = match phase.as_str() {
        "Running" => GREEN,
        "Failed" => RED,
        _ => YELLOW,
    };
    let _ =
        writeln!(
        out,
        "phase {colour}{phase}{RESET}  masters {}/{} ready (spec {})  quorum {} -> {}  leader {}",
        status.ready_replicas,
        status.replicas,
        frame.spec_replicas,
        status.quorum.map(|q| q.to_string()).unwrap_or("-".into()),
        status.target_quorum.map(|q| q.to_string()).unwrap_or("-".into()),
        status.leader.as_deref().unwrap_or("none"),
    );
    if let Some(reason) = &status.reason {
        let _ = writeln!(out, "{YELLOW}{reason}{RESET}");
    }
    let _ = writeln!(
        out,
        "\n{BOLD}{:<10} {:<16} {:>7} {:>6} {:>9} {:<11} {:>8} {:>8}  {RESET}",
        "MEMBER", "ADDRESS", "PID", "QUORUM", "WHITELIST", "REPLICA", "END", "LEARNED"
    );
    for row in frame.members {
        let (replica, end, learned, leader) = match &row.status {
            Some(s) => (
                s.status.to_string(),
                s.end.to_string(),
                s.learned.to_string(),
                if s.elected { "  leader" } else { "" },
            ),
            None => ("-".into(), "-".into(), "-".into(), ""),
        };
        let _ = writeln!(
            out,
            "{:<10} {:<16} {:>7} {:>6} {:>9} {:<11} {:>8} {:>8}{leader}",
            member_name(frame.name, row.ordinal),
            row.address.to_string(),
            row.pid.map(|p| p.to_string()).unwrap_or("-".into()),
            row.config
                .as_ref()
                .map(|c| c.quorum.to_string())
                .unwrap_or("-".into()),
            row.config
                .as_ref()
                .map(|c| c.whitelist.len().to_string())
                .unwrap_or("-".into()),
            replica,
            end,
            learned,
        );
    }
    if let Some(transition) = &status.transition {
        let _ = writeln!(
            out,
            "\n{BOLD}transition {} -> {}{RESET} ({} steps)",
            transition.from,
            transition.to,
            transition.steps.len()
        );
        for step in &transition.steps {
            let (mark, style) = match step.state {
                StepState::Done => ("✓", DIM),
                StepState::Running => ("▶", BOLD),
                StepState::Failed => ("✗", RED),
                StepState::Pending => (" ", ""),
            };
            let _ = writeln!(
                out,
                "{style} {mark} {:>2}. {}{RESET}",
                step.number, step.description
            );
        }
        if let Some(waiting) = &transition.waiting_for {
            let _ = writeln!(out, "   waiting for: {waiting}");
        }
    } else if let Some(step) = &status.current_step {
        let _ = writeln!(out, "\nnow: {step}");
    }
    if !frame.notes.is_empty() {
        let _ = writeln!(out, "\n{DIM}recent:{RESET}");
        for note in frame.notes {
            let _ = writeln!(out, "{DIM}  {note}{RESET}");
        }
    }
    let _ = writeln!(
        out,
        "\n{DIM}edit the spec file to change replicas; Ctrl-C stops the masters{RESET}"
    );
    out.replace('\n', "\x1b[K\n") + "\x1b[J"
}
