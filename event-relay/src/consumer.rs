//! The consume loop for one stream: read a batch in the consumer group,
//! apply it to the read model with one batch apply (entry by entry, with
//! retries, when the store rejects the batch), dead-letter what keeps
//! failing, announce what became visible, acknowledge.
//!
//! Three kinds of trouble are kept apart:
//! - an entry that cannot be decoded is dead-lettered at once;
//! - an event the store rejects is retried with exponential backoff and
//!   jitter, then dead-lettered after `max_attempts`;
//! - an unreachable store is an outage, not a bad event: the loop stops,
//!   reports NOT_SERVING, waits with capped backoff, and resumes with the same
//!   entries, so an outage never fills the dead-letter stream.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use postmesh_common::{redact::redact_url, shutdown::Shutdown};
use postmesh_events::{
    dlq,
    entry::{self, field, Entry},
    notify::{Change, Notification},
    topology::{Action, Route},
};
use postmesh_proto::v1::PostEvent;
use postmesh_read_model::Applied;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    streams::{StreamAutoClaimReply, StreamReadOptions, StreamReadReply},
    AsyncCommands,
};
use tokio::sync::watch;
use tracing::Instrument;

use crate::projector::{ApplyError, Projector};

/// Splits a batch into one group per post (by the entry's `post_id` field),
/// each in stream order, the groups in order of their first entry. Entries
/// without a `post_id` share one group.
fn by_post(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut index: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Vec<Entry>> = Vec::new();
    for entry in entries {
        let key = entry.fields.get(field::POST_ID).cloned().unwrap_or_default();
        match index.get(&key) {
            Some(&i) => groups[i].push(entry),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![entry]);
            }
        }
    }
    groups
}

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
    /// Pub/sub channel for applied events.
    pub notify_channel: String,
}

/// Consumes one stream.
pub struct Consumer<P> {
    projector: P,
    route: Route,
    settings: Settings,
    /// Blocking reads only: a blocked XREADGROUP holds its connection.
    reader: ConnectionManager,
    /// Acks on the stream's Redis.
    writer: ConnectionManager,
    /// DLQ and notifications, on the main Redis.
    main: ConnectionManager,
    serving: watch::Sender<bool>,
    stats: Arc<Stats>,
    /// Event time to applied time.
    lag: opentelemetry::metrics::Histogram<f64>,
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

enum Outcome {
    Done,
    Interrupted,
}

/// How a batch went through [`Projector::apply_batch`].
enum Batch {
    /// Applied (and counted, logged, announced).
    Applied,
    /// Shutdown came during a store outage: nothing is handled.
    Interrupted,
    /// To be applied entry by entry.
    OneByOne,
}

/// The client span of a read-model write, under `parent`.
fn apply_span(parent: &tracing::Span) -> tracing::Span {
    tracing::info_span!(
        parent: parent,
        "apply",
        otel.name = "update posts",
        otel.kind = "client",
        db.system = "mongodb",
        db.operation.name = "update",
        db.collection.name = "posts",
    )
}

impl<P: Projector> Consumer<P> {
    /// A consumer of `route`, writing dead letters and notifications to `main_url`.
    pub async fn new(
        projector: P,
        route: Route,
        main_url: &str,
        settings: Settings,
        serving: watch::Sender<bool>,
        stats: Arc<Stats>,
    ) -> anyhow::Result<Self> {
        let reader = connect(&route.redis_url, settings.block).await?;
        let writer = connect(&route.redis_url, Duration::ZERO).await?;
        let main = connect(main_url, Duration::ZERO).await?;
        Ok(Self {
            projector,
            route,
            settings,
            reader,
            writer,
            main,
            serving,
            stats,
            lag: opentelemetry::global::meter("postmesh")
                .f64_histogram("relay.projection.lag")
                .with_unit("ms")
                .with_description("Time from the event's commit to its application to the read model")
                .with_boundaries(vec![
                    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0, 30000.0,
                ])
                .build(),
        })
    }

    /// Consumes until shutdown; the batch in hand is finished first.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let stream = self.route.stream.clone();
        let mut own_pending = true;
        let mut group_ready = false;
        let mut redis_failures = 0u32;
        let claim_every = (self.settings.claim_idle / 2).max(Duration::from_millis(100));
        let mut last_claim = Instant::now();
        tracing::info!(%stream, consumer = %self.settings.consumer, group = %self.settings.group, "consuming");
        while !shutdown.is_triggered() {
            if !group_ready {
                match ensure_group(&mut self.writer, &stream, &self.settings.group).await {
                    Ok(()) => group_ready = true,
                    Err(error) => {
                        redis_failures += 1;
                        tracing::warn!(%stream, %error, "cannot create consumer group; retrying");
                        self.pause(redis_failures, &mut shutdown).await;
                        continue;
                    }
                }
            }
            let batch = if last_claim.elapsed() >= claim_every {
                last_claim = Instant::now();
                self.claim().await
            } else {
                let from = if own_pending { "0" } else { ">" };
                tokio::select! {
                    read = self.read(from) => read,
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
                    self.pause(redis_failures, &mut shutdown).await;
                    continue;
                }
            };
            if entries.is_empty() {
                own_pending = false;
                continue;
            }
            if let Outcome::Interrupted = self.process(entries, &mut shutdown).await {
                break;
            }
        }
        tracing::info!(%stream, "consumer stopped");
    }

    async fn pause(&self, failures: u32, shutdown: &mut Shutdown) {
        let delay = backoff(failures, self.settings.retry_base, self.settings.retry_max);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait() => {}
        }
    }

    async fn read(&mut self, from: &str) -> redis::RedisResult<Vec<Entry>> {
        let options = StreamReadOptions::default()
            .group(&self.settings.group, &self.settings.consumer)
            .count(self.settings.batch_size)
            .block(self.settings.block.as_millis() as usize);
        let reply: Option<StreamReadReply> = self
            .reader
            .xread_options(&[&self.route.stream], &[from], &options)
            .await?;
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|key| entry::from_ids(&key.key, key.ids))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Takes over entries another (dead) consumer left pending for too long.
    async fn claim(&mut self) -> redis::RedisResult<Vec<Entry>> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.route.stream)
            .arg(&self.settings.group)
            .arg(&self.settings.consumer)
            .arg(self.settings.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.settings.batch_size)
            .query_async(&mut self.writer)
            .await?;
        if !reply.claimed.is_empty() {
            tracing::info!(stream = %self.route.stream, claimed = reply.claimed.len(), "claimed idle pending entries");
        }
        Ok(entry::from_ids(&self.route.stream, reply.claimed))
    }

    /// Handles a batch: dead-letters what cannot be decoded, applies the rest
    /// with one [`Projector::apply_batch`], announces what became visible in
    /// one pipelined round trip, then acknowledges what was handled.
    ///
    /// A store outage pauses here and the same events are applied again once
    /// the store answers. A batch the store rejects (or a projector without a
    /// batch path) goes entry by entry instead ([`process_entries`](Self::process_entries)),
    /// where each event is retried and, if it keeps failing, dead-lettered on
    /// its own.
    async fn process(&mut self, entries: Vec<Entry>, shutdown: &mut Shutdown) -> Outcome {
        self.stats.consumed.fetch_add(entries.len() as u64, Ordering::Relaxed);
        let mut acks: Vec<String> = Vec::with_capacity(entries.len());
        let mut decoded: Vec<(Entry, PostEvent)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry.event() {
                Ok(event) => decoded.push((entry, event)),
                Err(error) => {
                    // Entries of the batch are still unhandled, so stopping
                    // here never applies a post's entry ahead of this one.
                    if !self.handle(&entry, shutdown).await {
                        tracing::debug!(%error, "shutdown while dead-lettering an undecodable entry");
                        self.ack(&acks).await;
                        return Outcome::Interrupted;
                    }
                    acks.push(entry.id);
                }
            }
        }
        let outcome = match self.apply_decoded(&decoded, shutdown).await {
            Batch::Applied => {
                acks.extend(decoded.into_iter().map(|(entry, _)| entry.id));
                Outcome::Done
            }
            Batch::Interrupted => Outcome::Interrupted,
            Batch::OneByOne => {
                let (handled, outcome) = self
                    .process_entries(decoded.into_iter().map(|(e, _)| e).collect(), shutdown)
                    .await;
                acks.extend(handled);
                outcome
            }
        };
        self.ack(&acks).await;
        outcome
    }

    /// Applies decoded events as one batch, through store outages.
    async fn apply_decoded(&self, decoded: &[(Entry, PostEvent)], shutdown: &mut Shutdown) -> Batch {
        if decoded.is_empty() {
            return Batch::Applied;
        }
        let events: Vec<PostEvent> = decoded.iter().map(|(_, event)| event.clone()).collect();
        let mut outage = 0u32;
        loop {
            // Spans per entry, continuing each entry's trace, all covering
            // the one shared write; created before it, closed after it.
            let spans: Vec<(tracing::Span, tracing::Span)> = decoded
                .iter()
                .map(|(entry, _)| {
                    let process = self.process_span(entry);
                    let apply = apply_span(&process);
                    (process, apply)
                })
                .collect();
            let result = self.projector.apply_batch(&events).await;
            match result {
                None => return Batch::OneByOne,
                Some(Ok(outcomes)) if outcomes.len() == events.len() => {
                    if outage > 0 {
                        self.set_serving(true);
                    }
                    self.finish(decoded, &outcomes, spans).await;
                    return Batch::Applied;
                }
                Some(Ok(outcomes)) => {
                    tracing::warn!(
                        stream = %self.route.stream,
                        events = events.len(),
                        outcomes = outcomes.len(),
                        "the store answered for a different number of events; applying one by one"
                    );
                    return Batch::OneByOne;
                }
                Some(Err(ApplyError::Unavailable(error))) => {
                    drop(spans);
                    outage += 1;
                    if outage == 1 {
                        tracing::warn!(%error, "read store unreachable; pausing consumption");
                        self.set_serving(false);
                    }
                    if !self.wait_for_store(outage, shutdown).await {
                        return Batch::Interrupted;
                    }
                    tracing::info!("read store reachable again; resuming");
                }
                Some(Err(ApplyError::Rejected(error))) => {
                    if outage > 0 {
                        self.set_serving(true);
                    }
                    tracing::warn!(
                        stream = %self.route.stream,
                        events = events.len(),
                        %error,
                        "the store rejected the batch; applying one by one"
                    );
                    return Batch::OneByOne;
                }
            }
        }
    }

    /// Counts, measures, logs and announces the outcome of an applied batch.
    async fn finish(
        &self,
        decoded: &[(Entry, PostEvent)],
        outcomes: &[Applied],
        spans: Vec<(tracing::Span, tracing::Span)>,
    ) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut visible: Vec<(i64, i64)> = Vec::new();
        let (mut applied, mut stale) = (0u64, 0u64);
        for (((entry, event), outcome), (process, apply)) in decoded.iter().zip(outcomes).zip(spans) {
            drop(apply);
            let outcome = match outcome {
                Applied::Applied => {
                    applied += 1;
                    if let Some(occurred) = &event.occurred_at {
                        let occurred_ms = occurred.seconds * 1000 + i64::from(occurred.nanos) / 1_000_000;
                        self.lag.record((now_ms - occurred_ms).max(0) as f64, &[]);
                    }
                    visible.push((event.post_id, event.version));
                    "applied"
                }
                Applied::Stale => {
                    stale += 1;
                    "stale"
                }
            };
            process.in_scope(|| {
                tracing::info!(
                    stream = %entry.stream,
                    entry_id = %entry.id,
                    post_id = event.post_id,
                    version = event.version,
                    action = Action::label(Action::of(event.event_type())),
                    attempt = 1,
                    outcome,
                    "event applied"
                );
            });
        }
        self.stats.applied.fetch_add(applied, Ordering::Relaxed);
        self.stats.stale.fetch_add(stale, Ordering::Relaxed);
        // Per post in version order, whatever order the stream had.
        visible.sort_unstable();
        self.notify_all(&visible).await;
    }

    /// Applies entries one by one: the entries of one post one after
    /// another, in stream order, and up to `apply_concurrency` posts side by
    /// side (the store's apply is order-independent and safe under
    /// concurrency). Gives the ids of the handled entries.
    async fn process_entries(&self, entries: Vec<Entry>, shutdown: &mut Shutdown) -> (Vec<String>, Outcome) {
        let count = entries.len();
        let results: Vec<(Vec<String>, bool)> = futures::stream::iter(by_post(entries).into_iter().map(|group| {
            let mut shutdown = shutdown.clone();
            async move {
                let mut acks = Vec::with_capacity(group.len());
                for entry in group {
                    if !self.handle(&entry, &mut shutdown).await {
                        // This post's later entries stay pending too, so they
                        // are never applied ahead of this one.
                        return (acks, false);
                    }
                    acks.push(entry.id);
                }
                (acks, true)
            }
        }))
        .buffer_unordered(self.settings.apply_concurrency.max(1))
        .collect()
        .await;
        let mut acks: Vec<String> = Vec::with_capacity(count);
        let mut outcome = Outcome::Done;
        for (handled, finished) in results {
            acks.extend(handled);
            if !finished {
                outcome = Outcome::Interrupted;
            }
        }
        (acks, outcome)
    }

    /// Acknowledges handled entries.
    async fn ack(&self, acks: &[String]) {
        if acks.is_empty() {
            return;
        }
        let mut writer = self.writer.clone();
        let acked: redis::RedisResult<i64> = writer.xack(&self.route.stream, &self.settings.group, acks).await;
        if let Err(error) = acked {
            // Unacked entries stay pending and are claimed again later;
            // applying them twice is harmless.
            tracing::warn!(stream = %self.route.stream, %error, count = acks.len(), "XACK failed");
        }
    }

    /// The consumer span of one entry, continuing the trace the publisher
    /// put on it.
    fn process_span(&self, entry: &Entry) -> tracing::Span {
        let span = tracing::info_span!(
            "process",
            otel.name = %format!("process {}", entry.stream),
            otel.kind = "consumer",
            messaging.system = "redis",
            messaging.operation.type = "process",
            messaging.destination.name = %entry.stream,
            messaging.message.id = %entry.id,
            messaging.consumer.group.name = %self.settings.group,
        );
        let traceparent = entry.text(field::TRACEPARENT);
        if !traceparent.is_empty() {
            postmesh_common::trace::set_parent(
                &span,
                postmesh_common::trace::from_traceparent(&traceparent, &entry.text(field::TRACESTATE)),
            );
        }
        span
    }

    /// Handles one entry inside a consumer span that continues the trace the
    /// publisher put on the entry; false when shutdown interrupted an outage
    /// wait and the entry must stay pending.
    async fn handle(&self, entry: &Entry, shutdown: &mut Shutdown) -> bool {
        let span = self.process_span(entry);
        self.handle_in_span(entry, shutdown).instrument(span).await
    }

    async fn handle_in_span(&self, entry: &Entry, shutdown: &mut Shutdown) -> bool {
        let event = match entry.event() {
            Ok(event) => event,
            Err(error) => {
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
                return self.dead_letter(entry, &error.to_string(), 1, shutdown).await;
            }
        };
        let action = Action::label(Action::of(event.event_type()));
        let mut attempt = 0u32;
        let mut outage = 0u32;
        loop {
            attempt += 1;
            let apply_span = apply_span(&tracing::Span::current());
            match self.projector.apply(&event).instrument(apply_span).await {
                Ok(applied) => {
                    if outage > 0 {
                        self.set_serving(true);
                    }
                    let outcome = match applied {
                        Applied::Applied => {
                            self.stats.applied.fetch_add(1, Ordering::Relaxed);
                            if let Some(occurred) = &event.occurred_at {
                                let occurred_ms = occurred.seconds * 1000 + i64::from(occurred.nanos) / 1_000_000;
                                let lag_ms = chrono::Utc::now().timestamp_millis() - occurred_ms;
                                self.lag.record(lag_ms.max(0) as f64, &[]);
                            }
                            self.notify(event.post_id, event.version).await;
                            "applied"
                        }
                        Applied::Stale => {
                            self.stats.stale.fetch_add(1, Ordering::Relaxed);
                            "stale"
                        }
                    };
                    tracing::info!(
                        stream = %entry.stream,
                        entry_id = %entry.id,
                        post_id = event.post_id,
                        version = event.version,
                        action,
                        attempt,
                        outcome,
                        "event applied"
                    );
                    return true;
                }
                Err(ApplyError::Unavailable(error)) => {
                    attempt -= 1;
                    outage += 1;
                    if outage == 1 {
                        tracing::warn!(%error, "read store unreachable; pausing consumption");
                        self.set_serving(false);
                    }
                    if !self.wait_for_store(outage, shutdown).await {
                        return false;
                    }
                    tracing::info!("read store reachable again; resuming");
                    self.set_serving(true);
                }
                Err(ApplyError::Rejected(error)) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        stream = %entry.stream,
                        entry_id = %entry.id,
                        post_id = event.post_id,
                        version = event.version,
                        action,
                        attempt,
                        %error,
                        "event apply failed"
                    );
                    if attempt >= self.settings.max_attempts {
                        return self.dead_letter(entry, &error, attempt, shutdown).await;
                    }
                    let delay = backoff(attempt, self.settings.retry_base, self.settings.retry_max);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Pings the store with capped backoff until it answers; false on shutdown.
    async fn wait_for_store(&self, mut tries: u32, shutdown: &mut Shutdown) -> bool {
        loop {
            let delay = backoff(tries, self.settings.retry_base, self.settings.retry_max);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => return false,
            }
            if self.projector.ping().await.is_ok() {
                return true;
            }
            tries += 1;
        }
    }

    fn set_serving(&self, serving: bool) {
        self.serving.send_replace(serving);
    }

    /// Publishes one notification per `(post_id, version)`, in the given
    /// order, in one pipelined round trip.
    async fn notify_all(&self, visible: &[(i64, i64)]) {
        if visible.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (post_id, version) in visible {
            let payload = Notification::Applied(Change {
                post_id: *post_id,
                version: *version,
            })
            .encode();
            pipe.publish(&self.settings.notify_channel, payload).ignore();
        }
        let mut main = self.main.clone();
        let sent: redis::RedisResult<()> = pipe.query_async(&mut main).await;
        if let Err(error) = sent {
            // Only waiters and watchers miss them; the read model is already right.
            tracing::debug!(%error, count = visible.len(), "notifications not published");
        }
    }

    async fn notify(&self, post_id: i64, version: i64) {
        let payload = Notification::Applied(Change { post_id, version }).encode();
        // A clone shares the one multiplexed connection.
        let mut main = self.main.clone();
        let sent: redis::RedisResult<i64> = main.publish(&self.settings.notify_channel, payload).await;
        if let Err(error) = sent {
            // Only waiters and watchers miss it; the read model is already right.
            tracing::debug!(%error, post_id, version, "notification not published");
        }
    }

    /// Copies the entry to the dead-letter stream with its error; true once it
    /// is safely there (so the caller may ack it).
    async fn dead_letter(&self, entry: &Entry, error: &str, attempts: u32, shutdown: &mut Shutdown) -> bool {
        let mut main = self.main.clone();
        let cmd = dlq::xadd(&self.settings.dlq_stream, entry, error, attempts);
        let mut failures = 0;
        loop {
            let added: redis::RedisResult<String> = cmd.query_async(&mut main).await;
            match added {
                Ok(dlq_id) => {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        stream = %entry.stream,
                        entry_id = %entry.id,
                        dlq_id = %dlq_id,
                        post_id = %entry.text(field::POST_ID),
                        version = %entry.text(field::VERSION),
                        action = Action::label(entry.action()),
                        attempt = attempts,
                        %error,
                        "event dead-lettered"
                    );
                    return true;
                }
                Err(redis_error) => {
                    failures += 1;
                    tracing::warn!(%redis_error, "cannot write the dead-letter stream; retrying");
                    if shutdown.is_triggered() {
                        return false;
                    }
                    self.pause(failures, shutdown).await;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(id: &str, post_id: Option<&str>) -> Entry {
        let mut fields = entry::Fields::new();
        if let Some(post_id) = post_id {
            fields.insert("post_id".into(), post_id.as_bytes().to_vec());
        }
        Entry {
            stream: "s".into(),
            id: id.into(),
            fields,
        }
    }

    #[test]
    fn a_batch_splits_into_posts_each_in_stream_order() {
        let batch = vec![
            entry("1-0", Some("7")),
            entry("2-0", Some("8")),
            entry("3-0", None),
            entry("4-0", Some("7")),
            entry("5-0", None),
            entry("6-0", Some("8")),
        ];
        let groups: Vec<Vec<String>> = by_post(batch)
            .into_iter()
            .map(|g| g.into_iter().map(|e| e.id).collect())
            .collect();
        assert_eq!(groups, [vec!["1-0", "4-0"], vec!["2-0", "6-0"], vec!["3-0", "5-0"]]);
    }
}
