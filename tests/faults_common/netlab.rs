//! Network namespaces for the partition tests: one namespace per master, each with
//! a veth pair whose host end is on a bridge in the root namespace, where the
//! clients run (the bridge has 10.250.0.254; member i has 10.250.0.(i+1)).
//!
//! Faults: a partition between two members is a blackhole route each way inside
//! their namespaces (the clients still reach both sides, so a deposed leader keeps
//! being asked); loss and delay are `tc netem` on a member's interface.
//!
//! Everything is named `h6f-*`; stale objects from a killed run are removed at
//! start, and Drop removes everything.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};

const PREFIX: &str = "h6f";
const BRIDGE: &str = "h6f-br";
/// Stale members a killed run may have left behind (more than any test uses).
const MAX_MEMBERS: usize = 8;

pub struct NetLab {
    n: usize,
    /// (from, to) pairs with a blackhole route in `from`'s namespace.
    blocked: BTreeSet<(usize, usize)>,
    netem: BTreeSet<usize>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("{program} {}: {err}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

pub fn namespace(i: usize) -> String {
    format!("{PREFIX}-m{i}")
}

fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 250, 0, 1 + i as u8)
}

fn cleanup() {
    for i in 0..MAX_MEMBERS {
        let _ = ip(&["netns", "del", &namespace(i)]);
        let _ = ip(&["link", "del", &format!("{PREFIX}-v{i}")]);
    }
    let _ = ip(&["link", "del", BRIDGE]);
}

impl NetLab {
    /// Creates `n` namespaces on a bridge, or says why it cannot (no privilege, no
    /// iproute2), so the caller can skip.
    pub fn create(n: usize) -> Result<NetLab, String> {
        cleanup();
        // From here on, Drop cleans up whatever was created.
        let lab = NetLab {
            n,
            blocked: BTreeSet::new(),
            netem: BTreeSet::new(),
        };
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["addr", "add", "10.250.0.254/24", "dev", BRIDGE])?;
        ip(&["link", "set", BRIDGE, "up"])?;
        for i in 0..n {
            let ns = namespace(i);
            let host = format!("{PREFIX}-v{i}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &host, "master", BRIDGE])?;
            ip(&["link", "set", &host, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", address(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    pub fn members(&self, port: u16) -> Vec<SocketAddr> {
        (0..self.n)
            .map(|i| SocketAddr::from((address(i), port)))
            .collect()
    }

    pub fn namespaces(&self) -> Vec<String> {
        (0..self.n).map(namespace).collect()
    }

    fn block_one_way(&mut self, from: usize, to: usize) {
        if self.blocked.insert((from, to)) {
            let target = format!("{}/32", address(to));
            ip(&["-n", &namespace(from), "route", "add", "blackhole", &target])
                .unwrap_or_else(|err| panic!("partition: {err}"));
        }
    }

    /// Cuts every link between a member of `side` and a member outside it.
    pub fn partition(&mut self, side: &[usize]) {
        for a in 0..self.n {
            for b in 0..self.n {
                if side.contains(&a) != side.contains(&b) {
                    self.block_one_way(a, b);
                }
            }
        }
    }

    /// Restores every link between members.
    pub fn heal(&mut self) {
        for (from, to) in std::mem::take(&mut self.blocked) {
            let target = format!("{}/32", address(to));
            ip(&["-n", &namespace(from), "route", "del", "blackhole", &target])
                .unwrap_or_else(|err| panic!("heal: {err}"));
        }
    }

    /// Delay and loss on member `i`'s interface; `Err` when netem is unavailable.
    pub fn netem(
        &mut self,
        i: usize,
        delay_ms: u32,
        jitter_ms: u32,
        loss_percent: u32,
    ) -> Result<(), String> {
        let ns = namespace(i);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "tc",
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "netem",
                "delay",
                &format!("{delay_ms}ms"),
                &format!("{jitter_ms}ms"),
                "loss",
                &format!("{loss_percent}%"),
            ],
        )?;
        self.netem.insert(i);
        Ok(())
    }

    pub fn clear_netem(&mut self) {
        for i in std::mem::take(&mut self.netem) {
            let _ = run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &namespace(i),
                    "tc",
                    "qdisc",
                    "del",
                    "dev",
                    "eth0",
                    "root",
                ],
            );
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        cleanup();
    }
}
