//! Bounded Redis: every `interval` each relay trims the streams it consumes
//! to what some consumer group still needs, and removes from its group the
//! consumers of relays that are gone.
//!
//! - `XTRIM <stream> MINID ~ <id>`, where `<id>` is, over every consumer
//!   group of the stream, the oldest entry still pending or, for a group with
//!   nothing pending, its last-delivered entry: never past an entry some
//!   group has not acknowledged. `~` lets Redis trim whole macro nodes
//!   only (about 100 entries), so a stream keeps its unacknowledged entries
//!   plus at most a node's worth. A stream without groups is left alone.
//! - `XGROUP DELCONSUMER` for every consumer of our group that has nothing
//!   pending and has been idle longer than `consumer_idle` (a live relay
//!   reads every `block`, which resets its idle time): the group's consumer
//!   list does not grow with every restart.
//!
//! Several relays trimming at once is harmless: both commands are idempotent.
//! What trimming cannot take is what Redis loses on its own (eviction,
//! FLUSHALL, a restart without persistence): the catch-up repairs that from
//! the event store, and a pending entry found gone is counted and logged
//! (`relay.events.gone`), never skipped silently.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use postmesh_common::shutdown::Shutdown;
use postmesh_events::topology::Route;
use redis::{aio::ConnectionManager, Value};

use crate::consumer::{connect, Stats};

/// Trims the streams of `routes` every `interval` (see the module doc).
pub struct Trimmer {
    routes: Vec<Route>,
    group: String,
    consumer: String,
    interval: Duration,
    consumer_idle: Duration,
    stats: Arc<Stats>,
}

/// What one pass over a stream did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Entries XTRIM removed.
    pub entries: u64,
    /// Consumers removed from the group.
    pub consumers: Vec<String>,
    /// Pending entries those consumers held after all (see `trim_stream`).
    pub dropped_pending: u64,
}

impl Trimmer {
    /// A trimmer for `routes`, consumer `consumer` of `group` (never removed).
    pub fn new(
        routes: Vec<Route>,
        group: String,
        consumer: String,
        interval: Duration,
        consumer_idle: Duration,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            routes,
            group,
            consumer,
            interval: interval.max(Duration::from_millis(10)),
            consumer_idle,
            stats,
        }
    }

    /// Trims every interval until shutdown.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut connections: HashMap<String, ConnectionManager> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.wait() => return,
            }
            for route in &self.routes {
                let conn = match connections.get(&route.redis_url) {
                    Some(conn) => conn.clone(),
                    None => match connect(&route.redis_url, Duration::ZERO).await {
                        Ok(conn) => {
                            connections.insert(route.redis_url.clone(), conn.clone());
                            conn
                        }
                        Err(error) => {
                            tracing::debug!(%error, "trim: Redis unreachable");
                            continue;
                        }
                    },
                };
                match trim_stream(conn, &route.stream, &self.group, &self.consumer, self.consumer_idle).await {
                    Ok(trimmed) => {
                        self.stats.trimmed.fetch_add(trimmed.entries, Ordering::Relaxed);
                        self.stats.gone.fetch_add(trimmed.dropped_pending, Ordering::Relaxed);
                        if !trimmed.consumers.is_empty() {
                            tracing::info!(stream = %route.stream, consumers = ?trimmed.consumers,
                                "removed idle consumers with nothing pending from the group");
                        }
                    }
                    // The stream or group may not exist yet; the next pass tries again.
                    Err(error) => tracing::debug!(stream = %route.stream, %error, "trim failed"),
                }
            }
        }
    }
}

/// One pass over `stream`: trims it to what its groups still need and
/// removes idle consumers of `group` other than `own`.
pub async fn trim_stream(
    mut conn: ConnectionManager,
    stream: &str,
    group: &str,
    own: &str,
    consumer_idle: Duration,
) -> redis::RedisResult<Trimmed> {
    let mut trimmed = Trimmed::default();
    let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut conn)
        .await?;
    let mut keep: Option<EntryId> = None;
    for info in &groups {
        let name: String = field(info, "name").unwrap_or_default();
        let pending: u64 = field(info, "pending").unwrap_or(0);
        let needed = if pending > 0 {
            // XPENDING's summary: [count, smallest id, greatest id, consumers].
            let summary: (u64, Option<String>, Option<String>, Value) = redis::cmd("XPENDING")
                .arg(stream)
                .arg(&name)
                .query_async(&mut conn)
                .await?;
            summary.1.as_deref().and_then(EntryId::parse)
        } else {
            field::<String>(info, "last-delivered-id")
                .as_deref()
                .and_then(EntryId::parse)
        };
        // A group whose position cannot be read keeps everything.
        let Some(needed) = needed else { return Ok(trimmed) };
        keep = Some(keep.map_or(needed, |k| k.min(needed)));
    }
    if let Some(keep) = keep.filter(|k| *k > EntryId::ZERO) {
        trimmed.entries = redis::cmd("XTRIM")
            .arg(stream)
            .arg("MINID")
            .arg("~")
            .arg(keep.to_string())
            .query_async(&mut conn)
            .await?;
    }
    if groups
        .iter()
        .any(|g| field::<String>(g, "name").as_deref() == Some(group))
    {
        let consumers: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(group)
            .query_async(&mut conn)
            .await?;
        let idle_limit = u64::try_from(consumer_idle.as_millis()).unwrap_or(u64::MAX);
        for consumer in consumers {
            let name: String = field(&consumer, "name").unwrap_or_default();
            let pending: u64 = field(&consumer, "pending").unwrap_or(1);
            let idle: u64 = field(&consumer, "idle").unwrap_or(0);
            if name.is_empty() || name == own || pending > 0 || idle < idle_limit {
                continue;
            }
            // DELCONSUMER drops the consumer's pending entries with it. It had
            // none a moment ago and has been idle for long; should it have
            // read some since, they leave the pending list: counted as gone
            // below, and applied by the catch-up from the event store.
            let dropped: u64 = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(stream)
                .arg(group)
                .arg(&name)
                .query_async(&mut conn)
                .await?;
            if dropped > 0 {
                trimmed.dropped_pending += dropped;
                tracing::warn!(%stream, consumer = %name, dropped, "a removed consumer had just been handed entries; \
                    the catch-up applies them");
            }
            trimmed.consumers.push(name);
        }
    }
    Ok(trimmed)
}

/// A field of an XINFO reply.
fn field<T: redis::FromRedisValue>(info: &HashMap<String, Value>, key: &str) -> Option<T> {
    info.get(key).and_then(|v| redis::from_redis_value(v).ok())
}

/// A stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct EntryId(u64, u64);

impl EntryId {
    const ZERO: Self = Self(0, 0);

    fn parse(id: &str) -> Option<Self> {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_as_redis_orders_them() {
        let a = EntryId::parse("1700000000000-5").unwrap();
        let b = EntryId::parse("1700000000000-12").unwrap();
        let c = EntryId::parse("1700000000001-0").unwrap();
        assert!(a < b && b < c, "numeric, not textual");
        assert_eq!(b.to_string(), "1700000000000-12");
        assert_eq!(EntryId::parse("7"), Some(EntryId(7, 0)));
        assert_eq!(EntryId::parse("x-1"), None);
    }
}
