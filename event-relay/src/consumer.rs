//! The consume loop for one stream: read a batch in the consumer group,
//! decode it, apply it through the one apply path ([`Applier`]), acknowledge.
//!
//! An entry that cannot be decoded is dead-lettered at once; an entry whose
//! data is gone (trimmed from the stream while it was pending) is counted,
//! logged and acknowledged, since the catch-up applies its event from the
//! event store; everything else goes to the applier, which acknowledges
//! nothing it did not apply, find stale or dead-letter.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use postmesh_common::{redact::redact_url, shutdown::Shutdown};
use postmesh_events::{
    entry::{self, field, Entry},
    topology::{Action, Route},
};
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    streams::{StreamAutoClaimReply, StreamReadOptions, StreamReadReply},
    AsyncCommands,
};
use tracing::Instrument;

use crate::{
    apply::{Applier, Decoded, Outcome},
    projector::Projector,
};

/// Counters shared by every consumer of a process (for status and metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Entries read from streams.
    pub consumed: AtomicU64,
    /// Events that changed the read model.
    pub applied: AtomicU64,
    /// Events that were older than the stored state (duplicates, reordering).
    pub stale: AtomicU64,
    /// Failed apply attempts.
    pub failed: AtomicU64,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: AtomicU64,
    /// Pending entries found gone from their stream (trimmed or deleted);
    /// the catch-up applies their events.
    pub gone: AtomicU64,
    /// Events the catch-up found missing from the read model and applied.
    pub caught_up: AtomicU64,
    /// Entries trimmed from the streams (all acknowledged by every group).
    pub trimmed: AtomicU64,
}

/// Retry and batching settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Consumer group.
    pub group: String,
    /// This process's consumer name.
    pub consumer: String,
    /// Entries per read.
    pub batch_size: usize,
    /// Posts applied side by side when a batch goes entry by entry (the
    /// store rejected it as a whole).
    pub apply_concurrency: usize,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// First retry delay.
    pub retry_base: Duration,
    /// Retry and outage backoff cap.
    pub retry_max: Duration,
    /// Idle time after which pending entries are claimed.
    pub claim_idle: Duration,
    /// Longest blocking read.
    pub block: Duration,
    /// Dead-letter stream.
    pub dlq_stream: String,
    /// About how many dead letters the stream keeps (`XADD MAXLEN ~`).
    pub dlq_max_len: u64,
    /// Pub/sub channel for applied events.
    pub notify_channel: String,
}

/// Consumes one stream.
pub struct Consumer<P> {
    applier: Applier<P>,
    route: Route,
    /// Blocking reads only: a blocked XREADGROUP holds its connection.
    reader: ConnectionManager,
    /// Acks on the stream's Redis.
    writer: ConnectionManager,
}

/// Opens an auto-reconnecting connection whose responses may take `wait`.
pub async fn connect(url: &str, wait: Duration) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(wait + Duration::from_secs(5))
        .set_number_of_retries(1)
        .set_max_delay(1000);
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {}: {e}", redact_url(url)))
}

/// Creates the consumer group (reading from the start of the stream, so
/// events published before any relay ran are not skipped); an existing group
/// is left alone.
pub async fn ensure_group(conn: &mut ConnectionManager, stream: &str, group: &str) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(stream, group, "0").await;
    match created {
        Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Delay before retry number `attempt` (1-based): exponential with ±50% jitter, capped.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let capped = exp.min(max);
    let jitter: f64 = rand::random_range(0.5..1.5);
    capped.mul_f64(jitter).min(max)
}

/// One XREADGROUP of up to a batch from `from` ("0": this consumer's
/// pending entries; ">": new ones), blocking up to `block` for new ones.
async fn read(
    reader: &mut ConnectionManager,
    settings: &Settings,
    stream: &str,
    from: &str,
) -> redis::RedisResult<Vec<Entry>> {
    let options = StreamReadOptions::default()
        .group(&settings.group, &settings.consumer)
        .count(settings.batch_size)
        .block(settings.block.as_millis() as usize);
    let reply: Option<StreamReadReply> = reader.xread_options(&[stream], &[from], &options).await?;
    Ok(reply
        .map(|r| {
            r.keys
                .into_iter()
                .flat_map(|key| entry::from_ids(&key.key, key.ids))
                .collect()
        })
        .unwrap_or_default())
}

impl<P: Projector> Consumer<P> {
    /// A consumer of `route`, applying through `applier`.
    pub async fn new(applier: Applier<P>, route: Route) -> anyhow::Result<Self> {
        let reader = connect(&route.redis_url, applier.settings().block).await?;
        let writer = connect(&route.redis_url, Duration::ZERO).await?;
        Ok(Self {
            applier,
            route,
            reader,
            writer,
        })
    }

    /// Consumes until shutdown; the batch in hand is finished first (and a
    /// batch already read ahead, so that nothing delivered to this consumer
    /// is left for a claim).
    ///
    /// Pipelined, as the drain's figures asked (docs/performance.md): while
    /// a batch is applied, the next one is read, and a batch's
    /// acknowledgement (and its notifications, see `Applier`) go out while
    /// the next one is applied, so the Redis round trips overlap the store's
    /// write. Batches are still applied one after another, in stream order.
    pub async fn run(self, mut shutdown: Shutdown) {
        let stream = self.route.stream.clone();
        let settings = self.applier.settings().clone();
        // Only the read path uses this clone: a blocked XREADGROUP holds its
        // connection, which is why it is not the writer's.
        let mut reader = self.reader.clone();
        let mut own_pending = true;
        let mut group_ready = false;
        let mut redis_failures = 0u32;
        let claim_every = (settings.claim_idle / 2).max(Duration::from_millis(100));
        let mut last_claim = Instant::now();
        // The next batch, read while the one before was applied.
        let mut ahead: Option<redis::RedisResult<Vec<Entry>>> = None;
        // The acknowledgement of the batch before, under way.
        let mut acking: Option<tokio::task::JoinHandle<()>> = None;
        tracing::info!(%stream, consumer = %settings.consumer, group = %settings.group, "consuming");
        loop {
            if shutdown.is_triggered() && ahead.is_none() {
                break;
            }
            if !group_ready && ahead.is_none() {
                match ensure_group(&mut self.writer.clone(), &stream, &settings.group).await {
                    Ok(()) => group_ready = true,
                    Err(error) => {
                        redis_failures += 1;
                        tracing::warn!(%stream, %error, "cannot create consumer group; retrying");
                        self.applier.pause(redis_failures, &mut shutdown).await;
                        continue;
                    }
                }
            }
            let batch = if let Some(read) = ahead.take() {
                read
            } else if last_claim.elapsed() >= claim_every {
                last_claim = Instant::now();
                self.claim().await
            } else {
                let from = if own_pending { "0" } else { ">" };
                tokio::select! {
                    read = read(&mut reader, &settings, &stream, from) => read,
                    _ = shutdown.wait() => break,
                }
            };
            let entries = match batch {
                Ok(entries) => {
                    redis_failures = 0;
                    entries
                }
                Err(error) => {
                    redis_failures += 1;
                    if error.code() == Some("NOGROUP") {
                        // Redis lost the group (restarted without persistence): recreate it.
                        group_ready = false;
                    }
                    tracing::warn!(%stream, %error, "reading the stream failed; retrying");
                    self.applier.pause(redis_failures, &mut shutdown).await;
                    continue;
                }
            };
            if entries.is_empty() {
                own_pending = false;
                continue;
            }
            // Reads ahead only new entries: this consumer's pending ones
            // ("0") would come back again until this batch is acknowledged.
            // Not when a claim is due, nor after shutdown.
            let read_ahead = !own_pending && last_claim.elapsed() < claim_every && !shutdown.is_triggered();
            let mut stop = shutdown.clone();
            let next = async {
                if !read_ahead {
                    return None;
                }
                tokio::select! {
                    read = read(&mut reader, &settings, &stream, ">") => Some(read),
                    _ = stop.wait() => None,
                }
            };
            let work = async {
                let (outcome, acks) = self.process(entries, &mut shutdown).await;
                // Sent now, not after a read ahead that may block.
                if let Some(previous) = acking.take() {
                    let _ = previous.await;
                }
                (outcome, self.ack_behind(acks))
            };
            let ((outcome, ack), next) = tokio::join!(work, next);
            (ahead, acking) = (next, ack);
            if let Outcome::Interrupted = outcome {
                break;
            }
        }
        if let Some(previous) = acking.take() {
            let _ = previous.await;
        }
        tracing::info!(%stream, "consumer stopped");
    }

    /// Takes over entries another (dead) consumer left pending for too long.
    async fn claim(&self) -> redis::RedisResult<Vec<Entry>> {
        let mut writer = self.writer.clone();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.route.stream)
            .arg(&self.applier.settings().group)
            .arg(&self.applier.settings().consumer)
            .arg(self.applier.settings().claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.applier.settings().batch_size)
            .query_async(&mut writer)
            .await?;
        if !reply.claimed.is_empty() {
            tracing::info!(stream = %self.route.stream, claimed = reply.claimed.len(), "claimed idle pending entries");
        }
        if !reply.deleted_ids.is_empty() {
            // Redis dropped these from the pending list itself: their data was
            // trimmed. The catch-up applies their events from the event store.
            self.applier
                .stats()
                .gone
                .fetch_add(reply.deleted_ids.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                stream = %self.route.stream,
                gone = reply.deleted_ids.len(),
                "pending entries are gone from the stream (trimmed or deleted); the catch-up applies their events"
            );
        }
        Ok(entry::from_ids(&self.route.stream, reply.claimed))
    }

    /// Handles a batch: dead-letters what cannot be decoded (at once, in
    /// stream order, so stopping there never applies a post's entry ahead of
    /// it) and applies the rest. Returns the ids of what was handled, for
    /// the caller to acknowledge.
    async fn process(&self, entries: Vec<Entry>, shutdown: &mut Shutdown) -> (Outcome, Vec<String>) {
        let stats = self.applier.stats();
        stats.consumed.fetch_add(entries.len() as u64, Ordering::Relaxed);
        let mut acks: Vec<String> = Vec::with_capacity(entries.len());
        let mut decoded = Decoded::default();
        for entry in entries {
            if entry.fields.is_empty() {
                // Pending, but its data is gone: the stream was trimmed past it
                // (or it was deleted). Not skipped silently: counted, logged,
                // and its event reaches the read model through the catch-up,
                // which reads the event store.
                stats.gone.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    stream = %entry.stream,
                    entry_id = %entry.id,
                    "pending entry is gone from the stream (trimmed or deleted); acknowledging it, \
                     the catch-up applies its event from the event store"
                );
                acks.push(entry.id);
                continue;
            }
            match entry.event() {
                Ok(event) => decoded.push(entry, event),
                Err(error) => {
                    let span = self.applier.process_span(&entry);
                    span.in_scope(|| {
                        tracing::warn!(
                            stream = %entry.stream,
                            entry_id = %entry.id,
                            post_id = %entry.text(field::POST_ID),
                            version = %entry.text(field::VERSION),
                            action = Action::label(entry.action()),
                            attempt = 1,
                            %error,
                            "undecodable entry; dead-lettering"
                        );
                    });
                    let lettered = self
                        .applier
                        .dead_letter(&entry, &error.to_string(), 1, shutdown)
                        .instrument(span)
                        .await;
                    if !lettered {
                        return (Outcome::Interrupted, acks);
                    }
                    acks.push(entry.id);
                }
            }
        }
        let outcome = self.applier.apply(&decoded, &mut acks, shutdown).await;
        (outcome, acks)
    }

    /// Acknowledges handled entries in a task of its own, which the caller
    /// awaits before the next acknowledgement (so at most one is under way).
    fn ack_behind(&self, acks: Vec<String>) -> Option<tokio::task::JoinHandle<()>> {
        if acks.is_empty() {
            return None;
        }
        let mut writer = self.writer.clone();
        let stream = self.route.stream.clone();
        let group = self.applier.settings().group.clone();
        Some(tokio::spawn(async move {
            let acked: redis::RedisResult<i64> = writer.xack(&stream, &group, &acks).await;
            if let Err(error) = acked {
                // Unacked entries stay pending and are claimed again later;
                // applying them twice is harmless.
                tracing::warn!(%stream, %error, count = acks.len(), "XACK failed");
            }
        }))
    }
}
