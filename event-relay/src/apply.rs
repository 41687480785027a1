//! The one apply path, shared by the stream consumers and the catch-up:
//! `Applier::apply` applies a decoded batch with one batch apply, through
//! store outages, and a batch of one is a batch. When the store rejects a
//! batch of several, its entries are applied one by one (each a batch of
//! one), with retries, so that one bad event is dead-lettered on its own
//! while the rest are applied. Whatever the path, `Applier::finish`
//! counts, measures, logs and announces what was applied.
//!
//! Two kinds of trouble are kept apart:
//! - an event the store rejects is retried with exponential backoff and
//!   jitter, then dead-lettered after `max_attempts` with the store's reason
//!   (a [`StoreError::Conflict`](postmesh_read_model::StoreError::Conflict)
//!   included): nothing is acknowledged that was neither applied, found
//!   stale, nor dead-lettered;
//! - an unreachable store is an outage, not a bad event: the applier
//!   reports NOT_SERVING, waits with capped backoff, and resumes with the same
//!   events, so an outage never fills the dead-letter stream.

use std::{collections::HashMap, sync::atomic::Ordering, sync::Arc};

use futures::StreamExt;
use postmesh_common::shutdown::Shutdown;
use postmesh_events::{
    dlq,
    entry::{field, Entry},
    notify::{Change, Notification},
    topology::Action,
};
use postmesh_proto::v1::PostEvent;
use postmesh_read_model::{timestamp_to_millis, Applied};
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::{
    consumer::{backoff, connect, Settings, Stats},
    projector::{ApplyError, Projector},
};

/// Applies decoded events to the read model (see the module doc). Cheap to
/// clone: clones share the projector's pool and the Redis connection.
#[derive(Clone)]
pub struct Applier<P> {
    projector: P,
    settings: Settings,
    /// Dead letters, on the main Redis.
    main: ConnectionManager,
    /// Each applied batch's changes, for the notifier task to publish.
    notices: mpsc::Sender<Vec<Change>>,
    serving: watch::Sender<bool>,
    stats: Arc<Stats>,
    /// Event time to applied time.
    lag: opentelemetry::metrics::Histogram<f64>,
    /// Events this applier (and its clones made after [`tallied`](Self::tallied))
    /// applied, apart from the shared `stats` the stream consumers add to too.
    tally: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// Whether a batch was handled to the end.
pub(crate) enum Outcome {
    Done,
    /// Shutdown came while the store was unreachable: the entries not
    /// handled stay pending.
    Interrupted,
}

/// What one [`Consumer::attempt`] came to.
pub(crate) enum Attempt {
    /// Applied: one outcome per event, in order.
    Applied(Vec<Applied>),
    /// The store refused the batch, with why.
    Rejected(String),
    /// Shutdown came during a store outage.
    Interrupted,
}

/// The decoded entries of one batch: `entries[i]` carried `events[i]`.
#[derive(Default)]
pub(crate) struct Decoded {
    pub(crate) entries: Vec<Entry>,
    pub(crate) events: Vec<PostEvent>,
}

impl Decoded {
    /// Adds an entry and the event it carries.
    pub(crate) fn push(&mut self, entry: Entry, event: PostEvent) {
        self.entries.push(entry);
        self.events.push(event);
    }

    /// Nothing to apply.
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The indices of each post's entries, in stream order, the posts in
    /// order of their first entry.
    pub(crate) fn by_post(&self) -> Vec<Vec<usize>> {
        let mut slot: HashMap<i64, usize> = HashMap::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, event) in self.events.iter().enumerate() {
            match slot.get(&event.post_id) {
                Some(&group) => groups[group].push(i),
                None => {
                    slot.insert(event.post_id, groups.len());
                    groups.push(vec![i]);
                }
            }
        }
        groups
    }
}

/// The client span of a read-model write, under `parent`.
fn apply_span(parent: &tracing::Span, db_system: &'static str) -> tracing::Span {
    tracing::info_span!(
        parent: parent,
        "apply",
        otel.name = "update posts",
        otel.kind = "client",
        db.system = db_system,
        db.operation.name = "update",
        db.collection.name = "posts",
    )
}

/// Batches of changes the notifier holds before `notify` waits for it.
const NOTICE_BATCHES: usize = 64;

/// Starts the task that publishes each batch's changes on `channel`, one
/// notification per change in one pipelined round trip per batch, in the
/// order they were sent; it ends when every sender is dropped. Off the
/// apply path: the round trip overlaps the next batch's write.
fn notifier(mut main: ConnectionManager, channel: String) -> mpsc::Sender<Vec<Change>> {
    let (notices, mut queue) = mpsc::channel::<Vec<Change>>(NOTICE_BATCHES);
    tokio::spawn(async move {
        while let Some(changes) = queue.recv().await {
            let mut pipe = redis::pipe();
            for change in &changes {
                pipe.publish(&channel, Notification::Applied(*change).encode()).ignore();
            }
            let sent: redis::RedisResult<()> = pipe.query_async(&mut main).await;
            if let Err(error) = sent {
                // Only waiters and watchers miss them; the read model is already right.
                tracing::debug!(%error, count = changes.len(), "notifications not published");
            }
        }
    });
    notices
}

impl<P: Projector> Applier<P> {
    /// An applier through `projector`, writing dead letters and notifications to `main_url`.
    pub async fn new(
        projector: P,
        main_url: &str,
        settings: Settings,
        serving: watch::Sender<bool>,
        stats: Arc<Stats>,
    ) -> anyhow::Result<Self> {
        let main = connect(main_url, std::time::Duration::ZERO).await?;
        let notices = notifier(main.clone(), settings.notify_channel.clone());
        Ok(Self {
            projector,
            settings,
            main,
            notices,
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
            tally: None,
        })
    }

    /// This applier counting what it applies on a tally of its own
    /// ([`tally`](Self::tally)): the catch-up's, whose applies run beside
    /// the stream consumers' on the same shared counters.
    pub(crate) fn tallied(mut self) -> Self {
        self.tally = Some(Arc::default());
        self
    }

    /// Events applied through this tallied applier (0 when untallied).
    pub(crate) fn tally(&self) -> u64 {
        self.tally.as_ref().map_or(0, |t| t.load(Ordering::Relaxed))
    }

    /// The retry and batching settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The counters it adds to.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub(crate) async fn pause(&self, failures: u32, shutdown: &mut Shutdown) {
        let delay = backoff(failures, self.settings.retry_base, self.settings.retry_max);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait() => {}
        }
    }

    /// Applies a decoded batch with one batch apply; when the store rejects
    /// it, entry by entry ([`apply_each`](Self::apply_each)), so one bad
    /// event is retried and dead-lettered on its own. A batch of one goes
    /// straight to `apply_each`, whose first attempt is that batch apply.
    /// Pushes the ids of the handled entries onto `acks`.
    pub(crate) async fn apply(&self, decoded: &Decoded, acks: &mut Vec<String>, shutdown: &mut Shutdown) -> Outcome {
        if decoded.events.len() <= 1 {
            return self.apply_each(decoded, acks, shutdown).await;
        }
        // Spans per entry, continuing each entry's trace, all covering the
        // one shared write; created before it, closed after it.
        let spans: Vec<tracing::Span> = decoded.entries.iter().map(|e| self.process_span(e)).collect();
        match self.attempt(&decoded.events, &spans, shutdown).await {
            Attempt::Applied(outcomes) => {
                self.finish(&decoded.entries, &decoded.events, &outcomes, 1, &spans)
                    .await;
                acks.extend(decoded.entries.iter().map(|e| e.id.clone()));
                Outcome::Done
            }
            Attempt::Interrupted => Outcome::Interrupted,
            Attempt::Rejected(error) => {
                tracing::warn!(
                    stream = %decoded.entries.first().map_or("", |e| e.stream.as_str()),
                    events = decoded.events.len(),
                    %error,
                    "the store rejected the batch; applying one by one"
                );
                drop(spans);
                self.apply_each(decoded, acks, shutdown).await
            }
        }
    }

    /// Applies entries one by one, each a batch of one with retries: the
    /// entries of one post one after another, in stream order, and up to
    /// `apply_concurrency` posts side by side (the store's apply is
    /// order-independent and safe under concurrency).
    async fn apply_each(&self, decoded: &Decoded, acks: &mut Vec<String>, shutdown: &mut Shutdown) -> Outcome {
        let results: Vec<(Vec<String>, bool)> = futures::stream::iter(decoded.by_post().into_iter().map(|group| {
            let mut shutdown = shutdown.clone();
            async move {
                let mut handled = Vec::with_capacity(group.len());
                for i in group {
                    if !self.apply_one(decoded, i, &mut shutdown).await {
                        // This post's later entries stay pending too, so they
                        // are never applied ahead of this one.
                        return (handled, false);
                    }
                    handled.push(decoded.entries[i].id.clone());
                }
                (handled, true)
            }
        }))
        .buffer_unordered(self.settings.apply_concurrency.max(1))
        .collect()
        .await;
        let mut outcome = Outcome::Done;
        for (handled, finished) in results {
            acks.extend(handled);
            if !finished {
                outcome = Outcome::Interrupted;
            }
        }
        outcome
    }

    /// Applies entry `i` of `decoded` on its own, under its span: a batch
    /// of one, tried again with backoff while the store rejects it and, after
    /// `max_attempts`, dead-lettered. True once handled either way (it may be
    /// acknowledged); false when shutdown interrupted a store outage.
    async fn apply_one(&self, decoded: &Decoded, i: usize, shutdown: &mut Shutdown) -> bool {
        let entry = &decoded.entries[i];
        let (entries, events) = (std::slice::from_ref(entry), &decoded.events[i..=i]);
        let event = &events[0];
        let span = self.process_span(entry);
        let spans = std::slice::from_ref(&span);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.attempt(events, spans, shutdown).await {
                Attempt::Applied(outcomes) => {
                    self.finish(entries, events, &outcomes, attempt, spans).await;
                    return true;
                }
                Attempt::Interrupted => return false,
                Attempt::Rejected(error) => error,
            };
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            span.in_scope(|| {
                tracing::warn!(
                    stream = %entry.stream,
                    entry_id = %entry.id,
                    post_id = event.post_id,
                    version = event.version,
                    action = Action::label(Action::of(event.event_type())),
                    attempt,
                    %error,
                    "event apply failed"
                );
            });
            if attempt >= self.settings.max_attempts {
                return self
                    .dead_letter(entry, &error, attempt, shutdown)
                    .instrument(span.clone())
                    .await;
            }
            tokio::time::sleep(backoff(attempt, self.settings.retry_base, self.settings.retry_max)).await;
        }
    }

    /// Applies `events` as one batch, through store outages: while the
    /// store is unreachable, reports NOT_SERVING and waits with capped
    /// backoff, then applies the same events again. Each try writes under
    /// one apply span per event, a child of that event's span in `spans`.
    async fn attempt(&self, events: &[PostEvent], spans: &[tracing::Span], shutdown: &mut Shutdown) -> Attempt {
        let mut outage = 0u32;
        loop {
            let applies: Vec<tracing::Span> = spans
                .iter()
                .map(|parent| apply_span(parent, self.projector.db_system()))
                .collect();
            let result = match applies.first() {
                // One event: its write runs inside its apply span.
                Some(apply) if applies.len() == 1 => self.projector.project(events).instrument(apply.clone()).await,
                _ => self.projector.project(events).await,
            };
            drop(applies);
            match result {
                Ok(outcomes) if outcomes.len() == events.len() => return Attempt::Applied(outcomes),
                Ok(outcomes) => {
                    return Attempt::Rejected(format!(
                        "the store answered for {} of {} events",
                        outcomes.len(),
                        events.len()
                    ))
                }
                Err(ApplyError::Rejected(error)) => return Attempt::Rejected(error),
                Err(ApplyError::Unavailable(error)) => {
                    outage += 1;
                    if outage == 1 {
                        tracing::warn!(%error, "read store unreachable; pausing consumption");
                        self.set_serving(false);
                    }
                    if !self.wait_for_store(outage, shutdown).await {
                        return Attempt::Interrupted;
                    }
                    tracing::info!("read store reachable again; resuming");
                    self.set_serving(true);
                }
            }
        }
    }

    /// Counts, measures, logs (in each entry's span) and announces what
    /// applying `events` (carried by `entries`, at `attempt`) did.
    async fn finish(
        &self,
        entries: &[Entry],
        events: &[PostEvent],
        outcomes: &[Applied],
        attempt: u32,
        spans: &[tracing::Span],
    ) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut visible: Vec<Change> = Vec::new();
        let (mut applied, mut stale) = (0u64, 0u64);
        for (((entry, event), outcome), span) in entries.iter().zip(events).zip(outcomes).zip(spans) {
            let outcome = match outcome {
                Applied::Applied => {
                    applied += 1;
                    if let Some(occurred) = &event.occurred_at {
                        self.lag
                            .record((now_ms - timestamp_to_millis(occurred)).max(0) as f64, &[]);
                    }
                    visible.push(Change {
                        post_id: event.post_id,
                        version: event.version,
                    });
                    "applied"
                }
                Applied::Stale => {
                    stale += 1;
                    "stale"
                }
            };
            // Per event at DEBUG: at INFO it was a line per event, the
            // relay's largest cost after the store at full drain.
            span.in_scope(|| {
                tracing::debug!(
                    stream = %entry.stream,
                    entry_id = %entry.id,
                    post_id = event.post_id,
                    version = event.version,
                    action = Action::label(Action::of(event.event_type())),
                    attempt,
                    outcome,
                    "event applied"
                );
            });
        }
        if let Some(first) = entries.first() {
            tracing::info!(stream = %first.stream, applied, stale, attempt, "events applied");
        }
        self.stats.applied.fetch_add(applied, Ordering::Relaxed);
        if let Some(tally) = &self.tally {
            tally.fetch_add(applied, Ordering::Relaxed);
        }
        self.stats.stale.fetch_add(stale, Ordering::Relaxed);
        // Per post in version order, whatever order the stream had.
        visible.sort_unstable_by_key(|c| (c.post_id, c.version));
        self.notify(visible).await;
    }

    /// The consumer span of one entry, continuing the trace the publisher
    /// put on it.
    pub(crate) fn process_span(&self, entry: &Entry) -> tracing::Span {
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

    /// Pings the store with capped backoff until it answers; false on shutdown.
    async fn wait_for_store(&self, mut tries: u32, shutdown: &mut Shutdown) -> bool {
        loop {
            let delay = backoff(tries, self.settings.retry_base, self.settings.retry_max);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => return false,
            }
            if self.projector.ping_store().await.is_ok() {
                return true;
            }
            tries += 1;
        }
    }

    fn set_serving(&self, serving: bool) {
        self.serving.send_replace(serving);
    }

    /// Hands the changes to the notifier task, which publishes them in
    /// this order after those of the batches before, while the consumer
    /// goes on with its next batch.
    async fn notify(&self, visible: Vec<Change>) {
        if !visible.is_empty() {
            // Fails only once the task is gone, at shutdown.
            let _ = self.notices.send(visible).await;
        }
    }

    /// Copies the entry to the dead-letter stream with its error; true once it
    /// is safely there (so the caller may ack it).
    pub(crate) async fn dead_letter(&self, entry: &Entry, error: &str, attempts: u32, shutdown: &mut Shutdown) -> bool {
        let mut main = self.main.clone();
        let cmd = dlq::xadd(
            &self.settings.dlq_stream,
            self.settings.dlq_max_len,
            entry,
            error,
            attempts,
        );
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

    fn decoded(post_ids: &[i64]) -> Decoded {
        let mut decoded = Decoded::default();
        for (i, post_id) in post_ids.iter().enumerate() {
            decoded.entries.push(Entry {
                stream: "s".into(),
                id: format!("{}-0", i + 1),
                fields: postmesh_events::entry::Fields::new(),
            });
            decoded.events.push(PostEvent {
                post_id: *post_id,
                ..PostEvent::default()
            });
        }
        decoded
    }

    #[test]
    fn a_batch_splits_into_posts_each_in_stream_order() {
        let batch = decoded(&[7, 8, 9, 7, 9, 8]);
        assert_eq!(batch.by_post(), [vec![0, 3], vec![1, 5], vec![2, 4]]);
    }
}
