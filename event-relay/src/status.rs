//! `event-relay status`: how far behind the relay is: per stream, and the
//! read model's checkpoint against the event log's head. The same figures,
//! with every group and consumer, feed the operations console.

use postmesh_read_model::ReadModelStore;
use redis::AsyncCommands;

use crate::{config::Config, consumer::connect, log::EventLog};

/// Figures for one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamStatus {
    /// Stream key.
    pub stream: String,
    /// XLEN.
    pub length: u64,
    /// Entries delivered but not acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group (None when Redis cannot tell).
    pub lag: Option<u64>,
    /// Consumers in the group.
    pub consumers: u64,
    /// Every consumer group of the stream (the relay's and any other).
    pub groups: Vec<GroupStatus>,
}

/// One consumer group of a stream (XINFO GROUPS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStatus {
    /// Group name.
    pub name: String,
    /// Entries delivered to it but not acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to it (None when Redis cannot tell).
    pub lag: Option<u64>,
    /// The last entry id delivered to it.
    pub last_delivered: String,
    /// Its consumers (XINFO CONSUMERS).
    pub consumers: Vec<ConsumerStatus>,
}

/// One consumer of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStatus {
    /// Consumer name (the relay replica's).
    pub name: String,
    /// Entries it holds unacknowledged.
    pub pending: u64,
    /// Milliseconds since it last read or claimed.
    pub idle_ms: u64,
}

type Fields = std::collections::HashMap<String, redis::Value>;

fn number(fields: &Fields, key: &str) -> Option<u64> {
    fields.get(key).and_then(|v| redis::from_redis_value::<u64>(v).ok())
}

fn text(fields: &Fields, key: &str) -> String {
    fields
        .get(key)
        .and_then(|v| redis::from_redis_value(v).ok())
        .unwrap_or_default()
}

/// Reads the figures of every stream of the topology, and the DLQ size.
pub async fn collect(config: &Config) -> anyhow::Result<(Vec<StreamStatus>, u64)> {
    let mut out = Vec::new();
    for route in config.streams.routes() {
        let mut conn = connect(&route.redis_url, std::time::Duration::ZERO).await?;
        let length: u64 = conn.xlen(&route.stream).await?;
        let mut status = StreamStatus {
            stream: route.stream.clone(),
            length,
            ..Default::default()
        };
        let groups: redis::RedisResult<Vec<Fields>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&route.stream)
            .query_async(&mut conn)
            .await;
        for group in groups.unwrap_or_default() {
            let name = text(&group, "name");
            let consumers: Vec<Fields> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&route.stream)
                .arg(&name)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            let group = GroupStatus {
                pending: number(&group, "pending").unwrap_or(0),
                lag: number(&group, "lag"),
                last_delivered: text(&group, "last-delivered-id"),
                consumers: consumers
                    .iter()
                    .map(|c| ConsumerStatus {
                        name: text(c, "name"),
                        pending: number(c, "pending").unwrap_or(0),
                        idle_ms: number(c, "idle").unwrap_or(0),
                    })
                    .collect(),
                name,
            };
            if group.name == config.group {
                status.pending = group.pending;
                status.lag = group.lag;
                status.consumers = group.consumers.len() as u64;
            }
            status.groups.push(group);
        }
        out.push(status);
    }
    let mut main = connect(&config.streams.redis_url, std::time::Duration::ZERO).await?;
    let dlq: u64 = main.xlen(config.streams.dlq_stream()).await?;
    Ok((out, dlq))
}

/// The read model's checkpoint and the event log's head (contract C2/C1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatchUpStatus {
    /// Every event at or below it is in the read model.
    pub checkpoint: i64,
    /// The event log is complete through it.
    pub head: i64,
}

impl CatchUpStatus {
    /// Positions the checkpoint is behind the head.
    pub fn lag(&self) -> i64 {
        (self.head - self.checkpoint).max(0)
    }
}

/// Reads the checkpoint from the read model and the head from the event store.
pub async fn catch_up(config: &Config) -> anyhow::Result<CatchUpStatus> {
    let store = config.read_store.connect().await?;
    let checkpoint = store.checkpoint().await?;
    let head = EventLog::connect(config)?.head().await?;
    Ok(CatchUpStatus { checkpoint, head })
}

/// Prints the figures.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let (streams, dlq) = collect(config).await?;
    println!(
        "{:<32} {:>10} {:>10} {:>10} {:>10}",
        "STREAM", "LENGTH", "PENDING", "LAG", "CONSUMERS"
    );
    for s in streams {
        let lag = s.lag.map_or_else(|| "?".to_owned(), |l| l.to_string());
        println!(
            "{:<32} {:>10} {:>10} {:>10} {:>10}",
            s.stream, s.length, s.pending, lag, s.consumers
        );
    }
    println!("{:<32} {:>10}", config.streams.dlq_stream(), dlq);
    // The catch-up figures need the read store and the event store; a
    // status without them still shows the streams.
    match catch_up(config).await {
        Ok(status) => println!(
            "catch-up: checkpoint {} head {} behind {}",
            status.checkpoint,
            status.head,
            status.lag()
        ),
        Err(error) => println!("catch-up: unknown ({error})"),
    }
    Ok(())
}
