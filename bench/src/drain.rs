//! Relay drain: a backlog of outbox-shaped entries is put on the stream
//! while the relay is stopped (SIGSTOP), then the relay is let go (SIGCONT)
//! and timed until its consumer group has nothing undelivered or pending.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::ceilings::{backlog, pipelined_xadd};

/// What the drain measured.
pub struct DrainReport {
    /// Entries put on the stream.
    pub events: usize,
    /// SIGCONT to an empty group.
    pub elapsed: Duration,
    /// Whether the relay was really stopped while the backlog was built.
    pub relay_paused: bool,
}

impl DrainReport {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends `sig` (e.g. "-STOP") to `pid`; true when delivered.
pub fn signal(pid: u32, sig: &str) -> bool {
    std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Undelivered + pending entries of `group` on `stream`.
async fn outstanding(conn: &mut redis::aio::MultiplexedConnection, stream: &str, group: &str) -> anyhow::Result<usize> {
    let groups: redis::streams::StreamInfoGroupsReply =
        redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await?;
    let info = groups
        .groups
        .into_iter()
        .find(|g| g.name == group)
        .with_context(|| format!("no consumer group {group} on {stream}: is the relay running?"))?;
    let lag = match info.lag {
        Some(lag) => lag,
        None => {
            // Redis cannot tell (e.g. after XDEL): compare the last ids instead.
            let last: redis::streams::StreamInfoStreamReply =
                redis::cmd("XINFO").arg("STREAM").arg(stream).query_async(conn).await?;
            usize::from(last.last_generated_id != info.last_delivered_id)
        }
    };
    Ok(lag + info.pending)
}

/// Waits until the relay's group has nothing undelivered or pending; how long that took.
pub async fn wait_idle(redis_url: &str, stream: &str, group: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let started = Instant::now();
    while outstanding(&mut conn, stream, group).await? > 0 {
        anyhow::ensure!(
            started.elapsed() < timeout,
            "the relay did not catch up within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(started.elapsed())
}

/// Puts `events` entries (`events / 5` posts, 5 versions each, ids far above
/// any real post) on `stream` with the relay paused, then times the drain.
pub async fn relay_drain(
    redis_url: &str,
    stream: &str,
    group: &str,
    relay_pid: Option<u32>,
    events: usize,
    content_bytes: usize,
    timeout: Duration,
) -> anyhow::Result<DrainReport> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    // The earlier phases may have left the relay behind: let it catch up first.
    let idle_wait = Instant::now();
    while outstanding(&mut conn, stream, group).await? > 0 {
        anyhow::ensure!(
            idle_wait.elapsed() < timeout,
            "the relay did not catch up within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_id = 1_000_000_000_000 + (chrono::Utc::now().timestamp() % 1_000_000) * 1_000_000;
    let versions = 5;
    let posts = (events as i64 / versions).max(1);
    let backlog = backlog(first_id, posts, versions, content_bytes);
    let relay_paused = relay_pid.is_some_and(|pid| signal(pid, "-STOP"));
    let filled = pipelined_xadd(&mut conn, stream, &backlog, 1000).await;
    if let Some(pid) = relay_pid.filter(|_| relay_paused) {
        signal(pid, "-CONT");
    }
    filled?;
    let started = Instant::now();
    loop {
        if outstanding(&mut conn, stream, group).await? == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "the relay did not drain within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(DrainReport {
        events: backlog.len(),
        elapsed: started.elapsed(),
        relay_paused,
    })
}
