//! Publishes committed events from the outbox to Redis Streams.
//!
//! One task per process, fed two ways:
//!
//! - **The handoff.** After a commit the use case (`crate::app`) passes the
//!   committed event, its outbox row id and its trace context over a bounded
//!   channel ([`Handoff`]). The publisher takes everything queued at once and XADDs
//!   it in one pipeline per Redis; the published rows are deleted in one
//!   statement every 20 ms (or per 500 rows). Nothing is read
//!   back from the database. While Redis is failing, handed-off rows are left
//!   to the poller.
//! - **The poller.** On a timer (`OUTBOX_POLL_MS`), at start-up, and whenever a
//!   handler found the channel full, it reads the outbox oldest first and
//!   publishes the rows the handoff does not carry: those left by a crash, by
//!   a Redis outage, or by a full channel.
//!
//! An outbox row id is registered as *in flight* ([`Handoff::reserve`])
//! before its transaction commits and stays so until its row is deleted or the handoff gives it up;
//! the poller skips in-flight rows, so the two paths do not publish the same
//! row twice. A row is deleted only after Redis acknowledged its XADD, so
//! delivery is at-least-once: a crash between XADD and delete republishes it,
//! and the projection ignores the duplicate.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use postmesh_common::{redact::redact_url, shutdown::Shutdown};
use postmesh_events::{
    entry::xadd,
    topology::{Action, Route, StreamArgs},
};
use postmesh_proto::v1::{EventType, PostEvent};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::{
    sync::{mpsc, Notify},
    time::{sleep_until, Instant},
};

use crate::store::{EventStore, Pending};

/// Rows the poller reads at once, and events one handoff pipeline carries at most.
const BATCH: usize = 500;

/// Committed events the handoff channel holds before handlers fall back to the poller.
const HANDOFF_CAPACITY: usize = 4096;

/// Outbox row ids whose events the handoff carries: registered before the
/// transaction commits, released once the row is deleted or handed back to
/// the poller.
#[derive(Debug, Default)]
struct InFlight(Mutex<HashSet<i64>>);

impl InFlight {
    /// Registers a row the handoff will carry.
    fn insert(&self, outbox_id: i64) {
        self.lock().insert(outbox_id);
    }

    /// Releases rows: deleted, or left to the poller.
    fn remove(&self, outbox_ids: impl IntoIterator<Item = i64>) {
        let mut set = self.lock();
        for id in outbox_ids {
            set.remove(&id);
        }
    }

    fn contains(&self, outbox_id: i64) -> bool {
        self.lock().contains(&outbox_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        // The set stays consistent whatever panicked while holding it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The handlers' end of the publisher: hands committed events over.
#[derive(Clone, Debug)]
pub struct Handoff {
    sender: mpsc::Sender<Pending>,
    in_flight: Arc<InFlight>,
    wakeup: Arc<Notify>,
}

impl Handoff {
    /// A handoff no publisher reads: every event stays in the outbox. For
    /// tools that measure the store alone.
    pub fn unpublished() -> Self {
        let (sender, _) = mpsc::channel(1);
        Self {
            sender,
            in_flight: Arc::default(),
            wakeup: Arc::default(),
        }
    }

    /// Claims an appended event's outbox row for the handoff. Call it before
    /// the transaction that wrote the row commits: the poller skips claimed
    /// rows, so it never publishes one the handoff carries too, and an
    /// unclaimed committed row is the poller's. Send the reservation once
    /// committed; dropping it (the commit failed, and whether it committed is
    /// unknown) gives the row to the poller.
    pub fn reserve(&self, pending: Pending) -> Reserved<'_> {
        self.in_flight.insert(pending.outbox_id);
        Reserved {
            handoff: self,
            pending: Some(pending),
        }
    }

    /// Passes a committed event to the publisher. When the channel is full
    /// (the publisher is behind, or Redis is slow) the row is left to the
    /// poller, which is woken at once; the command never waits for Redis.
    fn publish(&self, committed: Pending) {
        if let Err(error) = self.sender.try_send(committed) {
            let committed = match error {
                mpsc::error::TrySendError::Full(committed) | mpsc::error::TrySendError::Closed(committed) => committed,
            };
            self.in_flight.remove([committed.outbox_id]);
            self.wakeup.notify_one();
        }
    }
}

/// A committed-to-be event whose outbox row the handoff has claimed (see
/// [`Handoff::reserve`]).
#[derive(Debug)]
pub struct Reserved<'a> {
    handoff: &'a Handoff,
    pending: Option<Pending>,
}

impl Reserved<'_> {
    /// The transaction committed: hand the event to the publisher.
    pub fn send(mut self) {
        if let Some(pending) = self.pending.take() {
            self.handoff.publish(pending);
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.handoff.in_flight.remove([pending.outbox_id]);
        }
    }
}

/// The outbox publisher.
pub struct Publisher {
    store: EventStore,
    /// The route of each action, in [`route_index`] order.
    routes: [Route; 3],
    connections: HashMap<String, ConnectionManager>,
    receiver: mpsc::Receiver<Pending>,
    in_flight: Arc<InFlight>,
    wakeup: Arc<Notify>,
    poll: Duration,
    backlog: Arc<AtomicU64>,
    /// Rows published but not deleted yet: still in flight, so the poller
    /// leaves them alone. Deleted together when `delete_due` comes (or sooner
    /// when many gathered), one statement for many rounds of publishing.
    published: Vec<i64>,
    delete_due: Option<Instant>,
}

/// What woke the publisher.
#[derive(Clone, Copy, Debug)]
enum Wake {
    /// Committed events arrived over the handoff.
    Handed,
    /// The timer, start-up, or a handler that found the channel full.
    Poll,
    /// Published rows are due for deletion.
    Delete,
}

/// How long published rows wait to be deleted together with those published
/// after them. A crash in this window republishes them (the relay ignores
/// the duplicates); deleting after every round would cost a statement each.
const DELETE_DELAY: Duration = Duration::from_millis(20);

/// A producer span for one event, continuing the command's trace.
fn publish_span(event: &PostEvent, stream: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("publish {stream}"),
        otel.kind = "producer",
        messaging.system = "redis",
        messaging.operation.type = "publish",
        messaging.destination.name = %stream,
        db.system = "redis",
        post_id = event.post_id,
        version = event.version,
    );
    if !event.traceparent.is_empty() && !span.is_disabled() {
        postmesh_common::trace::set_parent(
            &span,
            postmesh_common::trace::from_traceparent(&event.traceparent, &event.tracestate),
        );
    }
    span
}

/// The index in [`Action::ALL`] of the action an event of `event_type`
/// records (`Unspecified`, which no command commits, goes with creates).
fn route_index(event_type: EventType) -> usize {
    Action::of(event_type).unwrap_or(Action::Create).index()
}

/// Builds the publisher and the handoff that feeds it.
pub async fn publisher(store: EventStore, streams: StreamArgs, poll: Duration) -> anyhow::Result<(Publisher, Handoff)> {
    let (sender, receiver) = mpsc::channel(HANDOFF_CAPACITY);
    let in_flight = Arc::new(InFlight::default());
    let wakeup = Arc::new(Notify::new());
    let publisher = Publisher::new(store, streams, receiver, in_flight.clone(), wakeup.clone(), poll).await?;
    Ok((
        publisher,
        Handoff {
            sender,
            in_flight,
            wakeup,
        },
    ))
}

impl Publisher {
    /// Opens one auto-reconnecting connection per Redis URL of the topology.
    /// The URLs were PING-checked already, so this does not hang.
    async fn new(
        store: EventStore,
        streams: StreamArgs,
        receiver: mpsc::Receiver<Pending>,
        in_flight: Arc<InFlight>,
        wakeup: Arc<Notify>,
        poll: Duration,
    ) -> anyhow::Result<Self> {
        let mut connections = HashMap::new();
        for url in streams.redis_urls() {
            let client = redis::Client::open(url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_secs(2))
                .set_response_timeout(Duration::from_secs(5))
                .set_number_of_retries(1)
                .set_max_delay(1000);
            let manager = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {}: {e}", redact_url(&url)))?;
            connections.insert(url, manager);
        }
        let backlog = Arc::new(AtomicU64::new(0));
        let observed = backlog.clone();
        opentelemetry::global::meter("postmesh")
            .u64_observable_gauge("outbox.backlog")
            .with_description("Committed events not yet published to Redis (sampled each poll)")
            .with_callback(move |o| o.observe(observed.load(Ordering::Relaxed), &[]))
            .build();
        Ok(Self {
            store,
            routes: Action::ALL.map(|action| streams.route(action)),
            connections,
            receiver,
            in_flight,
            wakeup,
            poll,
            backlog,
            published: Vec::new(),
            delete_due: None,
        })
    }

    /// Publishes until `stop` fires, then makes one last bounded attempt to
    /// flush what was handed off or is left in the outbox. Fire `stop` after
    /// the server drained, so commands that finish during the drain go out too.
    pub async fn run(mut self, mut stop: Shutdown) {
        let mut ticker = tokio::time::interval(self.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut handed = Vec::with_capacity(BATCH);
        loop {
            let delete_due = self.delete_due;
            // The first tick is immediate: rows a previous process left go out at start-up.
            let wake = tokio::select! {
                received = self.receiver.recv_many(&mut handed, BATCH) => {
                    if received == 0 {
                        break;
                    }
                    Wake::Handed
                }
                _ = self.wakeup.notified(), if !failing => Wake::Poll,
                _ = ticker.tick() => {
                    if let Ok(len) = self.store.outbox_len().await {
                        // Rows already published and waiting to be deleted are not backlog.
                        let backlog = len.saturating_sub(self.published.len() as u64);
                        self.backlog.store(backlog, Ordering::Relaxed);
                    }
                    Wake::Poll
                }
                _ = sleep_until(delete_due.unwrap_or_else(Instant::now)), if delete_due.is_some() => Wake::Delete,
                _ = stop.wait() => break,
            };
            let result = match wake {
                Wake::Poll => self.poll().await,
                // Redis is down: leave these rows to the poller, which retries on its timer.
                Wake::Handed if failing => {
                    self.hand_back(&mut handed);
                    Ok(0)
                }
                Wake::Handed => self.publish_handed(&mut handed).await,
                Wake::Delete => self.remove_published().await.map(|()| 0),
            };
            match result {
                Ok(published) => {
                    if failing && matches!(wake, Wake::Poll) {
                        tracing::info!(published, "outbox publishing recovered");
                        failing = false;
                    }
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "outbox publish failed; rows stay buffered and are retried");
                    }
                    failing = true;
                }
            }
        }
        let flush = async {
            while let Ok(committed) = self.receiver.try_recv() {
                handed.push(committed);
            }
            if !handed.is_empty() {
                // On failure the rows are handed back, and the poll below retries them.
                let _ = self.publish_handed(&mut handed).await;
            }
            self.poll().await
        };
        match tokio::time::timeout(Duration::from_secs(3), flush).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "outbox left rows for the next start to publish")
            }
            Err(_) => tracing::warn!("outbox flush timed out; the next start publishes the rest"),
        }
    }

    /// Gives handed-off rows back to the poller.
    fn hand_back(&self, handed: &mut Vec<Pending>) {
        self.in_flight.remove(handed.drain(..).map(|p| p.outbox_id));
    }

    /// Publishes what the handoff carried; on failure the rows go back to the
    /// poller. Their outbox rows are deleted a little later, together with
    /// those of the next few rounds.
    async fn publish_handed(&mut self, handed: &mut Vec<Pending>) -> anyhow::Result<usize> {
        let count = handed.len();
        if let Err(error) = self.publish(handed).await {
            self.hand_back(handed);
            return Err(error);
        }
        self.published.extend(handed.drain(..).map(|p| p.outbox_id));
        if self.published.len() >= BATCH {
            self.remove_published().await?;
        } else if self.delete_due.is_none() {
            self.delete_due = Some(Instant::now() + DELETE_DELAY);
        }
        Ok(count)
    }

    /// Deletes the rows published so far. On failure they stay in flight and
    /// are deleted on the next round, so they are not published again.
    async fn remove_published(&mut self) -> anyhow::Result<()> {
        if self.published.is_empty() {
            self.delete_due = None;
            return Ok(());
        }
        if let Err(error) = self.store.outbox_remove(&self.published).await {
            self.delete_due = Some(Instant::now() + self.poll);
            return Err(error.into());
        }
        self.delete_due = None;
        self.in_flight.remove(self.published.drain(..));
        Ok(())
    }

    /// Publishes every outbox row not in flight, oldest first; returns how
    /// many events went out.
    pub async fn poll(&mut self) -> anyhow::Result<usize> {
        self.remove_published().await?;
        let mut total = 0;
        let mut after = 0;
        loop {
            let rows = self.store.outbox_rows(after, BATCH as u64).await?;
            let Some(last) = rows.last() else {
                return Ok(total);
            };
            after = last.id;
            let full = rows.len() == BATCH;
            let rows: Vec<_> = rows
                .into_iter()
                .filter(|row| !self.in_flight.contains(row.id))
                .collect();
            if !rows.is_empty() {
                let batch = self.store.outbox_events(rows).await?;
                self.publish(&batch).await?;
                for pending in &batch {
                    self.in_flight.insert(pending.outbox_id);
                }
                self.published.extend(batch.iter().map(|p| p.outbox_id));
                self.remove_published().await?;
                total += batch.len();
            }
            if !full {
                return Ok(total);
            }
        }
    }

    /// XADDs `batch` in one pipeline per Redis.
    async fn publish(&mut self, batch: &[Pending]) -> anyhow::Result<()> {
        let traced = postmesh_common::telemetry::traces_exported();
        let mut pipelines: HashMap<&str, redis::Pipeline> = HashMap::with_capacity(1);
        // Held until Redis answered, so each publish span covers the XADD.
        let mut spans = Vec::new();
        for pending in batch {
            let event = &pending.event;
            let route = &self.routes[route_index(event.event_type())];
            let cmd = if traced {
                let span = publish_span(event, &route.stream);
                let (traceparent, tracestate) = postmesh_common::trace::traceparent_of(&span);
                spans.push(span);
                if traceparent.is_empty() {
                    xadd(&route.stream, event, &event.traceparent, &event.tracestate)
                } else {
                    xadd(&route.stream, event, &traceparent, &tracestate)
                }
            } else {
                // Without a trace exporter the command's own context goes on the
                // entry, so a relay that exports continues the client's trace.
                xadd(&route.stream, event, &event.traceparent, &event.tracestate)
            };
            pipelines
                .entry(route.redis_url.as_str())
                .or_insert_with(|| redis::Pipeline::with_capacity(batch.len()))
                .add_command(cmd)
                .ignore();
        }
        for (url, pipeline) in pipelines {
            let connection = self
                .connections
                .get_mut(url)
                .ok_or_else(|| anyhow::anyhow!("no connection for {}", redact_url(url)))?;
            pipeline
                .query_async::<()>(connection)
                .await
                .map_err(|e| anyhow::anyhow!("XADD to {} failed: {e}", redact_url(url)))?;
        }
        drop(spans);
        if tracing::enabled!(tracing::Level::DEBUG) {
            for pending in batch {
                let event = &pending.event;
                tracing::debug!(
                    post_id = event.post_id,
                    version = event.version,
                    position = event.position,
                    "published"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_dropped_unsent_gives_the_row_to_the_poller() {
        let handoff = Handoff::unpublished();
        let pending = |outbox_id| Pending {
            outbox_id,
            event: PostEvent::default(),
        };
        let failed_commit = handoff.reserve(pending(9));
        assert!(handoff.in_flight.contains(9), "claimed before the commit");
        drop(failed_commit);
        assert!(!handoff.in_flight.contains(9));
        // Sent with no publisher behind the handoff: left to the poller too.
        handoff.reserve(pending(10)).send();
        assert!(!handoff.in_flight.contains(10));
    }

    #[test]
    fn in_flight_rows_are_released() {
        let in_flight = InFlight::default();
        in_flight.insert(1);
        in_flight.insert(2);
        in_flight.remove([1]);
        assert!(!in_flight.contains(1));
        assert!(in_flight.contains(2));
    }
}
