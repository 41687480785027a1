//! `event-relay rebuild`: replays the event store into a fresh staging
//! store and swaps it in, so readers never see a half-built model.
//!
//! The rebuild reads the log through the head `GetHead` gives when it starts
//! (`complete_through`, contract C1: nothing at or below it commits later,
//! whatever the database), and the staged model records that head as its
//! checkpoint. The swap brings the checkpoint in with the model, so the
//! catch-up applies whatever came after the head, including what the live
//! relay applied to the old model meanwhile and what it wrote into the swap's
//! gaps; the rebuild itself applies the log from the head to its end once
//! more right after the swap, which only makes that quicker. A swap that
//! fails leaves the live model as it was (see `ReadModelStore::swap_in`).
//!
//! Those writes publish no per-post notification, and the swap itself
//! replaces every post at once, so once the swap has been attempted the
//! rebuild publishes a reset notification on the notify channel (after the
//! last write): query-svc empties its post cache on it.

use futures::StreamExt;
use postmesh_events::notify::Notification;
use postmesh_proto::v1::PostEvent;
use postmesh_read_model::{ReadModelStore, ReadStore};
use redis::AsyncCommands;

use crate::{config::Config, log::EventLog};

/// What a rebuild did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Events read from the event store.
    pub events: u64,
    /// Highest position seen.
    pub position: i64,
    /// The log's head when the rebuild began: the staged model's checkpoint.
    pub head: i64,
}

/// Applies the log after `from` to `store`, through `through` (0: to its end).
async fn copy(log: &EventLog, store: &ReadStore, from: i64, through: i64, done: &mut Rebuilt) -> anyhow::Result<()> {
    let max_count = if through > 0 { (through - from).max(0) } else { 0 };
    if through > 0 && max_count == 0 {
        return Ok(());
    }
    let mut stream = Box::pin(log.read_all(from, max_count).await?);
    let mut batch = Vec::with_capacity(REBUILD_BATCH);
    while let Some(event) = stream.next().await {
        let event = event?;
        if through > 0 && event.position > through {
            break;
        }
        batch.push(event);
        if batch.len() >= REBUILD_BATCH {
            apply(store, &mut batch, done).await?;
        }
    }
    apply(store, &mut batch, done).await
}

/// Events applied to the fresh read model at once.
const REBUILD_BATCH: usize = 256;

async fn apply(store: &ReadStore, batch: &mut Vec<PostEvent>, done: &mut Rebuilt) -> anyhow::Result<()> {
    store.apply_batch(batch).await?;
    done.events += batch.len() as u64;
    done.position = batch.iter().map(|e| e.position).fold(done.position, i64::max);
    batch.clear();
    Ok(())
}

/// Tells query-svc instances that the read model was replaced.
async fn publish_reset(config: &Config) -> anyhow::Result<()> {
    let client = redis::Client::open(config.streams.redis_url.as_str())?;
    let publish = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        let receivers: i64 = connection
            .publish(&config.notify_channel, Notification::Reset.encode())
            .await?;
        redis::RedisResult::Ok(receivers)
    };
    let receivers = tokio::time::timeout(config.redis_check.timeout(), publish)
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not answer within {:?}", config.redis_check.timeout()))??;
    tracing::info!(receivers, channel = %config.notify_channel, "published the reset notification");
    Ok(())
}

/// Rebuilds `config`'s read model from the event store at `config.command_endpoint`.
pub async fn run(config: &Config) -> anyhow::Result<Rebuilt> {
    let live = config.read_store.connect().await?;
    rebuild_into(config, &live).await
}

/// Rebuilds `live` (used by tests with their own collection names).
pub async fn rebuild_into(config: &Config, live: &ReadStore) -> anyhow::Result<Rebuilt> {
    let suffix = chrono::Utc::now().format("%Y%m%d%H%M%S%3f").to_string();
    let fresh = live.staging(&format!("rebuild_{suffix}"));
    fresh.ensure_schema().await?;
    let log = EventLog::connect(config)?;
    let mut done = Rebuilt::default();
    let mut swapping = false;
    let result = async {
        done.head = log.head().await?;
        copy(&log, &fresh, 0, done.head, &mut done).await?;
        // Complete through the head: the catch-up takes it from there.
        if done.head > 0 && !fresh.advance_checkpoint(0, done.head).await? {
            anyhow::bail!("the staged read model already had a checkpoint");
        }
        tracing::info!(
            events = done.events,
            head = done.head,
            "fresh read model built; swapping in"
        );
        swapping = true;
        live.swap_in(&fresh).await?;
        copy(&log, live, done.head, 0, &mut done).await?;
        live.ensure_schema().await?;
        anyhow::Ok(())
    }
    .await;
    if swapping {
        // Even after a failed or partial swap, readers' caches are suspect.
        if let Err(error) = publish_reset(config).await {
            tracing::warn!(
                %error,
                "cannot publish the reset notification; query-svc may serve cached posts \
                 from before the rebuild until they expire (QUERY_CACHE_TTL_MS)"
            );
        }
    }
    if let Err(error) = result {
        fresh.discard().await;
        return Err(error);
    }
    println!(
        "rebuilt the read model from {} events (complete through position {}, the log's head when it began; \
         up to position {} after the swap)",
        done.events, done.head, done.position
    );
    Ok(done)
}
