//! Publishes committed events from the outbox to Redis Streams.
//!
//! One task per process. It wakes when a command commits (for low latency)
//! and on a timer (for rows left by a crash or a Redis outage), publishes the
//! oldest rows in order with one pipelined XADD batch per Redis, and deletes
//! them only after Redis acknowledged. Delivery is therefore at-least-once:
//! a crash between XADD and delete republishes, and the projection ignores
//! the duplicate.

use std::{collections::HashMap, sync::Arc, time::Duration};

use postmesh_common::{
    redact::redact_url,
    shutdown::Shutdown,
    topology::{Action, StreamArgs},
};
use postmesh_proto::v1::{EventType, PostEvent};
use prost::Message;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;

use crate::store::{EventStore, Pending};

const BATCH: u64 = 500;

/// Wakes the publisher after a commit.
#[derive(Clone, Debug, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    /// Signals that new outbox rows exist.
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// The outbox publisher.
pub struct Publisher {
    store: EventStore,
    streams: StreamArgs,
    connections: HashMap<String, ConnectionManager>,
    wakeup: Wakeup,
    poll: Duration,
    backlog: Arc<std::sync::atomic::AtomicU64>,
}

/// The stream entry fields of an event, in the order they are written.
/// `traceparent`/`tracestate` are those of the publish span (a child of the
/// command's span), so the relay's work hangs below the publish in the trace.
pub fn entry_fields(event: &PostEvent, traceparent: &str, tracestate: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("position", event.position.to_string().into_bytes()),
        ("post_id", event.post_id.to_string().into_bytes()),
        ("version", event.version.to_string().into_bytes()),
        ("event_type", event.event_type().event_name().as_bytes().to_vec()),
        ("traceparent", traceparent.as_bytes().to_vec()),
        ("tracestate", tracestate.as_bytes().to_vec()),
        ("event", event.encode_to_vec()),
    ]
}

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
    if !event.traceparent.is_empty() {
        postmesh_common::trace::set_parent(
            &span,
            postmesh_common::trace::from_traceparent(&event.traceparent, &event.tracestate),
        );
    }
    span
}

fn action(event_type: EventType) -> Action {
    match event_type {
        EventType::PostCreated | EventType::Unspecified => Action::Create,
        EventType::PostUpdated => Action::Update,
        EventType::PostDeleted => Action::Delete,
    }
}

impl Publisher {
    /// Opens one auto-reconnecting connection per Redis URL of the topology.
    /// The URLs were PING-checked already, so this does not hang.
    pub async fn new(store: EventStore, streams: StreamArgs, wakeup: Wakeup, poll: Duration) -> anyhow::Result<Self> {
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
        let backlog = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let observed = backlog.clone();
        opentelemetry::global::meter("postmesh")
            .u64_observable_gauge("outbox.backlog")
            .with_description("Committed events not yet published to Redis (sampled each poll)")
            .with_callback(move |o| o.observe(observed.load(std::sync::atomic::Ordering::Relaxed), &[]))
            .build();
        Ok(Self {
            store,
            streams,
            connections,
            wakeup,
            poll,
            backlog,
        })
    }

    /// Publishes until shutdown, then makes one last bounded attempt to flush.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(self.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = self.wakeup.0.notified(), if !failing => {}
                _ = ticker.tick() => {
                    if let Ok(len) = self.store.outbox_len().await {
                        self.backlog.store(len, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                _ = shutdown.wait() => break,
            }
            match self.drain().await {
                Ok(published) => {
                    if failing {
                        tracing::info!(published, "outbox publishing recovered");
                    }
                    failing = false;
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "outbox publish failed; rows stay buffered and are retried");
                    }
                    failing = true;
                }
            }
        }
        match tokio::time::timeout(Duration::from_secs(3), self.drain()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "outbox left rows for the next start to publish")
            }
            Err(_) => tracing::warn!("outbox flush timed out; the next start publishes the rest"),
        }
    }

    /// Publishes everything in the outbox; returns how many events went out.
    pub async fn drain(&mut self) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let batch = self.store.outbox_batch(BATCH).await?;
            if batch.is_empty() {
                return Ok(total);
            }
            let done = batch.len();
            self.publish(&batch).await?;
            self.store
                .outbox_remove(batch.iter().map(|p| p.outbox_id).collect())
                .await?;
            total += done;
            if (done as u64) < BATCH {
                return Ok(total);
            }
        }
    }

    async fn publish(&mut self, batch: &[Pending]) -> anyhow::Result<()> {
        let mut pipelines: HashMap<String, redis::Pipeline> = HashMap::new();
        // Held until Redis answered, so each publish span covers the XADD.
        let mut spans = Vec::with_capacity(batch.len());
        for pending in batch {
            let route = self.streams.route(action(pending.event.event_type()));
            let span = publish_span(&pending.event, &route.stream);
            let (mut traceparent, mut tracestate) = postmesh_common::trace::traceparent_of(&span);
            if traceparent.is_empty() {
                traceparent = pending.event.traceparent.clone();
                tracestate = pending.event.tracestate.clone();
            }
            spans.push(span);
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&route.stream).arg("*");
            for (field, value) in entry_fields(&pending.event, &traceparent, &tracestate) {
                cmd.arg(field).arg(value);
            }
            pipelines.entry(route.redis_url).or_default().add_command(cmd).ignore();
        }
        for (url, pipeline) in pipelines {
            let connection = self
                .connections
                .get_mut(&url)
                .ok_or_else(|| anyhow::anyhow!("no connection for {}", redact_url(&url)))?;
            pipeline
                .query_async::<()>(connection)
                .await
                .map_err(|e| anyhow::anyhow!("XADD to {} failed: {e}", redact_url(&url)))?;
        }
        for pending in batch {
            let event = &pending.event;
            tracing::debug!(
                post_id = event.post_id,
                version = event.version,
                position = event.position,
                "published"
            );
        }
        Ok(())
    }
}
