//! The catch-up: the read model checks itself against the event store.
//!
//! Redis is the fast path; the event store is the source of truth. Behind
//! the stream consumers, every `interval` one relay replica (the holder of
//! the read model's `catch-up` lease) compares the model's checkpoint with
//! the log's head (`GetHead`, contract C1):
//!
//! 1. the target is the head seen one interval ago (everything committed
//!    before it has had an interval to arrive through Redis), so the fast
//!    path is not raced for what it is about to deliver;
//! 2. `count_positions(checkpoint, target) == target - checkpoint` (positions
//!    are dense) proves the model complete through the target: the
//!    checkpoint moves there. On a complete model that count is the whole
//!    cost: one indexed query per interval;
//! 3. otherwise it reads the log from the checkpoint (`ReadAll`) to the
//!    target and applies every event through the same apply path as the
//!    stream (idempotent: what is there already is stale), moving the
//!    checkpoint batch by batch.
//!
//! So anything Redis lost (a restart without persistence, a failover,
//! FLUSHALL, a trimmed stream) and anything stranded in the outbox reaches
//! the read model within about two intervals plus the time to apply it
//! (default interval 5 s), with no operator action. An event the store
//! rejects is dead-lettered with its reason, as from the stream, and the
//! checkpoint moves past it: the dead-letter stream is its record. Nothing
//! keeps the two paths from both doing so: an event the stream
//! dead-lettered is missing from the model, so the catch-up reads it and
//! dead-letters it again (entry id `log-<position>`); replaying both is
//! idempotent (docs/catch-up.md, "Dead letters").
//!
//! The lease is an economy: replicas without it only read the head and the
//! checkpoint, for their metric. Two holders at once (an expired lease, a
//! store without atomic updates) do the same idempotent work twice.

use std::{
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::StreamExt;
use postmesh_common::shutdown::Shutdown;
use postmesh_events::{
    entry::Entry,
    topology::{Action, StreamArgs},
};
use postmesh_proto::v1::PostEvent;
use postmesh_read_model::{ReadModelStore, ReadStore};

use crate::{
    apply::{Applier, Decoded, Outcome},
    log::EventLog,
    projector::Projector,
};

/// The name of the catch-up's lease in the read model.
pub const LEASE: &str = "catch-up";

/// Where the catch-up stands, for `status`, metrics and the console: the
/// figures of its last check.
#[derive(Debug, Default)]
pub struct Progress {
    /// The log's head at the last check.
    pub head: AtomicI64,
    /// The read model's checkpoint at the last check.
    pub checkpoint: AtomicI64,
    /// Checks made.
    pub checks: AtomicU64,
    /// Checks that found a gap and read the log.
    pub repairs: AtomicU64,
}

impl Progress {
    /// How far the checkpoint is behind the head.
    pub fn lag(&self) -> i64 {
        (self.head.load(Ordering::Relaxed) - self.checkpoint.load(Ordering::Relaxed)).max(0)
    }
}

/// The catch-up of one relay.
pub struct CatchUp<P> {
    applier: Applier<P>,
    store: ReadStore,
    log: EventLog,
    streams: StreamArgs,
    owner: String,
    interval: Duration,
    batch_size: usize,
    progress: Arc<Progress>,
}

impl<P: Projector> CatchUp<P> {
    /// A catch-up of `store` from `log`, applying through `applier`, every
    /// `interval`, as lease owner `owner`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        applier: Applier<P>,
        store: ReadStore,
        log: EventLog,
        streams: StreamArgs,
        owner: String,
        interval: Duration,
        batch_size: usize,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            // Its own tally: the shared counters move with the stream
            // consumers' applies too.
            applier: applier.tallied(),
            store,
            log,
            streams,
            owner,
            interval: interval.max(Duration::from_millis(10)),
            batch_size: batch_size.max(1),
            progress,
        }
    }

    /// How long the lease lasts: a holder renews it every interval, and a
    /// replica that died hands over after three.
    fn lease_ttl(&self) -> Duration {
        (self.interval * 3).max(Duration::from_secs(1))
    }

    /// Checks every interval until shutdown.
    pub async fn run(self, mut shutdown: Shutdown) {
        tracing::info!(interval = ?self.interval, owner = %self.owner, "catch-up running");
        // The head seen at the previous check: the next check's target.
        let mut previous: Option<i64> = None;
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.wait() => break,
            }
            match self.check(previous, &mut shutdown).await {
                Ok(head) => {
                    previous = Some(head);
                    failures = 0;
                }
                Err(error) => {
                    failures += 1;
                    // Log the first failure of a run and then every tenth: an
                    // event store that is down says so without flooding.
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(%error, failures, "catch-up check failed; trying again next interval");
                    }
                }
            }
            if shutdown.is_triggered() {
                break;
            }
        }
        tracing::info!("catch-up stopped");
    }

    /// One check (see the module doc); returns the head it saw.
    async fn check(&self, previous: Option<i64>, shutdown: &mut Shutdown) -> anyhow::Result<i64> {
        let head = self.log.head().await?;
        let checkpoint = self.store.checkpoint().await?;
        self.progress.head.store(head, Ordering::Relaxed);
        self.progress.checkpoint.store(checkpoint, Ordering::Relaxed);
        self.progress.checks.fetch_add(1, Ordering::Relaxed);
        let Some(target) = previous.map(|p| p.min(head)).filter(|t| *t > checkpoint) else {
            return Ok(head);
        };
        if !self.store.try_lease(LEASE, &self.owner, self.lease_ttl()).await? {
            return Ok(head);
        }
        let present = self.store.count_positions(checkpoint, target).await?;
        let range = u64::try_from(target - checkpoint).unwrap_or(0);
        if present >= range {
            if self.store.advance_checkpoint(checkpoint, target).await? {
                self.progress.checkpoint.store(target, Ordering::Relaxed);
            }
            return Ok(head);
        }
        tracing::info!(
            checkpoint,
            target,
            missing = range - present,
            "the read model lacks events the log has; reading them from the event store"
        );
        self.progress.repairs.fetch_add(1, Ordering::Relaxed);
        self.repair(checkpoint, target, shutdown).await?;
        Ok(head)
    }

    /// Reads the log after `from` through `target` and applies it batch by
    /// batch, moving the checkpoint after each one; stops early when another
    /// writer moved the checkpoint (a rebuild swapped a model in, or another
    /// replica took over) or the lease is lost.
    async fn repair(&self, from: i64, target: i64, shutdown: &mut Shutdown) -> anyhow::Result<()> {
        let mut events = Box::pin(self.log.read_all(from, target - from).await?);
        let mut checkpoint = from;
        let mut batch: Vec<PostEvent> = Vec::with_capacity(self.batch_size);
        let mut done = false;
        while !done {
            match events.next().await {
                Some(event) => {
                    let event = event?;
                    if event.position > target {
                        done = true;
                    } else {
                        batch.push(event);
                    }
                }
                None => done = true,
            }
            // Apply a full batch, or the last one when there is one.
            let full = batch.len() >= self.batch_size;
            if !full && (!done || batch.is_empty()) {
                continue;
            }
            let last = batch.last().map_or(checkpoint, |e| e.position);
            if !self.apply(std::mem::take(&mut batch), shutdown).await {
                anyhow::bail!("interrupted by shutdown");
            }
            if !self.store.advance_checkpoint(checkpoint, last).await? {
                tracing::info!("the checkpoint moved under the catch-up; checking again next interval");
                return Ok(());
            }
            checkpoint = last;
            self.progress.checkpoint.store(checkpoint, Ordering::Relaxed);
            if !done && !self.store.try_lease(LEASE, &self.owner, self.lease_ttl()).await? {
                return Ok(());
            }
        }
        // Positions up to the target that the log did not hand out (gaps a
        // store without C1's dense positions may have) are no events.
        if checkpoint < target && self.store.advance_checkpoint(checkpoint, target).await? {
            self.progress.checkpoint.store(target, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Applies events read from the log through the one apply path, as the
    /// entries they would be on their streams; false on shutdown.
    async fn apply(&self, events: Vec<PostEvent>, shutdown: &mut Shutdown) -> bool {
        let mut decoded = Decoded::default();
        for event in events {
            let stream = Action::of(event.event_type()).map_or_else(
                || self.streams.stream.clone(),
                |action| self.streams.route(action).stream,
            );
            let entry = Entry::of_event(&stream, format!("log-{}", event.position), &event);
            decoded.push(entry, event);
        }
        if decoded.is_empty() {
            return true;
        }
        let before = self.applier.tally();
        let mut handled = Vec::new();
        let outcome = self.applier.apply(&decoded, &mut handled, shutdown).await;
        // What this batch moved the model past: events Redis had not
        // delivered (this applier's own tally; the shared `applied` counter
        // also moves with the stream consumers' applies meanwhile).
        let applied = self.applier.tally().saturating_sub(before);
        self.applier.stats().caught_up.fetch_add(applied, Ordering::Relaxed);
        if applied > 0 {
            tracing::info!(
                applied,
                events = decoded.events.len(),
                "catch-up applied events the read model lacked"
            );
        }
        matches!(outcome, Outcome::Done)
    }
}
