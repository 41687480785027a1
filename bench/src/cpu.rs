//! CPU time of the processes on the machine, per phase: where two cores go.

use std::time::Instant;

use serde_json::{Map, Value};

use crate::stats::round;

/// The processes watched, by name.
#[derive(Clone, Debug, Default)]
pub struct CpuMeter {
    pids: Vec<(String, u32)>,
    ticks_per_sec: f64,
}

/// CPU seconds of each watched process at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    at: Instant,
    seconds: Vec<Option<f64>>,
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn ticks(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the closing paren.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

impl CpuMeter {
    /// Watches `pids` (name, pid) and this process as "postmesh-bench".
    pub fn new(mut pids: Vec<(String, u32)>) -> Self {
        pids.push(("postmesh-bench".into(), std::process::id()));
        Self {
            pids,
            ticks_per_sec: clock_ticks(),
        }
    }

    /// Now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            seconds: self
                .pids
                .iter()
                .map(|(_, pid)| ticks(*pid).map(|t| t / self.ticks_per_sec))
                .collect(),
        }
    }

    /// Cores each process used on average since `since`, plus their total.
    pub fn cores_since(&self, since: &Snapshot) -> Value {
        let now = self.snapshot();
        let wall = (now.at - since.at).as_secs_f64().max(1e-9);
        let mut out = Map::new();
        let mut total = 0.0;
        for (((name, _), before), after) in self.pids.iter().zip(&since.seconds).zip(&now.seconds) {
            if let (Some(before), Some(after)) = (before, after) {
                let cores = (after - before) / wall;
                total += cores;
                out.insert(name.clone(), Value::from(round(cores)));
            }
        }
        out.insert("total".into(), Value::from(round(total)));
        Value::Object(out)
    }
}
