//! Wiring: check Redis, open the read store, start one consumer per stream,
//! serve health and the operations console, and stop cleanly.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use postmesh_common::{
    auth::Authenticator,
    redis_check::check_redis,
    server::{self, Server},
    shutdown::Shutdown,
    tls::{self, ServerTls},
};
use postmesh_read_model::{ReadModelStore, ReadStore};
use tokio::sync::watch;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::{
    apply::Applier,
    catchup::{CatchUp, Progress},
    config::Config,
    console,
    consumer::{backoff, Consumer, Settings, Stats},
    log::EventLog,
    projector::Projector,
    trim::Trimmer,
};

/// Health service name of the relay (besides the overall "").
pub const HEALTH_SERVICE: &str = "postmesh.EventRelay";

/// A relay that has checked its dependencies and bound its health port.
pub struct Application {
    server: Server,
    store: ReadStore,
    config: Config,
    stats: Arc<Stats>,
    progress: Arc<Progress>,
}

impl Application {
    /// PINGs every Redis URL, opens the read store and binds the health port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        tls::install_default_provider();
        let tls = ServerTls::from_args(&config.tls).context("TLS settings")?;
        for url in config.streams.redis_urls() {
            check_redis(&url, config.redis_check.timeout()).await?;
        }
        let store = config
            .read_store
            .connect()
            .await
            .context("cannot open the read store")?;
        let auth = Authenticator::from_args(&config.auth)
            .context("token settings")?
            .map(Arc::new);
        let server = Server::bind(
            config.health_addr,
            config.tls.health_probe_addr,
            tls,
            config.limits.clone(),
            &[HEALTH_SERVICE],
        )
        .await?
        .http_routes(console::routes(config.clone(), store.clone(), auth));
        Ok(Self {
            server,
            store,
            config,
            stats: Arc::default(),
            progress: Arc::default(),
        })
    }

    /// The bound health address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr().unwrap_or(self.config.health_addr)
    }

    /// The read store it writes to.
    pub fn store(&self) -> ReadStore {
        self.store.clone()
    }

    /// Counters of this relay.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Where its catch-up stands.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Runs with the real store until `shutdown`.
    pub async fn run_until(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let store = self.store.clone();
        self.run_with(store, shutdown).await
    }

    /// Runs with any projector (tests inject failures this way).
    pub async fn run_with<P: Projector>(self, projector: P, shutdown: Shutdown) -> anyhow::Result<()> {
        let health = self.server.health();
        health.report(ServingStatus::NotServing).await;
        let (serving_tx, mut serving_rx) = watch::channel(false);
        {
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let status = if *serving_rx.borrow_and_update() {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    if shutdown.is_triggered() {
                        return;
                    }
                    health.report(status).await;
                    tokio::select! {
                        changed = serving_rx.changed() => if changed.is_err() { return },
                        _ = shutdown.wait() => return,
                    }
                }
            });
        }
        // The relay serves health (and reflection), and the console under /ops.
        let server = tokio::spawn(self.server.serve(Routes::default(), shutdown.clone(), async {}));

        register_metrics(
            &self.config,
            self.stats.clone(),
            self.progress.clone(),
            shutdown.clone(),
        );
        let consumer_name = self.config.consumer_name();
        tracing::info!(consumer = %consumer_name, health = %self.config.health_addr, "event-relay starting");
        let ready = wait_for_indexes(&self.store, &self.config, shutdown.clone()).await;
        let mut consumers = Vec::new();
        if ready {
            serving_tx.send_replace(true);
            let settings = Settings {
                group: self.config.group.clone(),
                consumer: consumer_name.clone(),
                batch_size: self.config.batch_size.max(1),
                apply_concurrency: self.config.apply_concurrency.max(1),
                max_attempts: self.config.max_attempts.max(1),
                retry_base: self.config.retry_delays().0,
                retry_max: self.config.retry_delays().1,
                claim_idle: self.config.claim_idle.max(Duration::from_millis(1)),
                block: self.config.block.max(Duration::from_millis(1)),
                dlq_stream: self.config.streams.dlq_stream(),
                dlq_max_len: self.config.dlq_max_len.max(1),
                notify_channel: self.config.notify_channel.clone(),
            };
            let applier = Applier::new(
                projector,
                &self.config.streams.redis_url,
                settings,
                serving_tx.clone(),
                self.stats.clone(),
            )
            .await?;
            for route in self.config.streams.routes() {
                let consumer = Consumer::new(applier.clone(), route).await?;
                consumers.push(tokio::spawn(consumer.run(shutdown.clone())));
            }
            if !self.config.trim_interval.is_zero() {
                let trimmer = Trimmer::new(
                    self.config.streams.routes(),
                    self.config.group.clone(),
                    consumer_name.clone(),
                    self.config.trim_interval,
                    self.config.consumer_idle_max,
                    self.stats.clone(),
                );
                consumers.push(tokio::spawn(trimmer.run(shutdown.clone())));
            }
            if self.config.catch_up_interval.is_zero() {
                tracing::warn!("the catch-up is off (RELAY_CATCHUP_INTERVAL_MS=0): what Redis loses stays lost");
            } else {
                let catch_up = CatchUp::new(
                    applier,
                    self.store.clone(),
                    EventLog::connect(&self.config)?,
                    self.config.streams.clone(),
                    consumer_name,
                    self.config.catch_up_interval,
                    self.config.batch_size,
                    self.progress.clone(),
                );
                consumers.push(tokio::spawn(catch_up.run(shutdown.clone())));
            }
        }
        for consumer in consumers {
            if let Err(error) = consumer.await {
                tracing::error!(%error, "consumer task failed");
            }
        }
        let mut waiting = shutdown.clone();
        waiting.wait().await;
        server.await??;
        tracing::info!("event-relay stopped");
        Ok(())
    }
}

/// Exposes the relay's counters, and polls stream lag, pending count and
/// DLQ size every few seconds for the gauges.
fn register_metrics(config: &Config, stats: Arc<Stats>, progress: Arc<Progress>, mut shutdown: Shutdown) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let meter = opentelemetry::global::meter("postmesh");
    type Counter = (&'static str, &'static str, fn(&Stats) -> u64);
    let counters: [Counter; 8] = [
        ("relay.events.consumed", "Stream entries read", |s| {
            s.consumed.load(Ordering::Relaxed)
        }),
        ("relay.events.applied", "Events that changed the read model", |s| {
            s.applied.load(Ordering::Relaxed)
        }),
        ("relay.events.stale", "Duplicate or out-of-order events ignored", |s| {
            s.stale.load(Ordering::Relaxed)
        }),
        ("relay.events.failed", "Failed apply attempts", |s| {
            s.failed.load(Ordering::Relaxed)
        }),
        ("relay.events.dead_lettered", "Entries moved to the DLQ", |s| {
            s.dead_lettered.load(Ordering::Relaxed)
        }),
        (
            "relay.events.gone",
            "Pending entries found trimmed from their stream (the catch-up applies them)",
            |s| s.gone.load(Ordering::Relaxed),
        ),
        (
            "relay.stream.trimmed",
            "Acknowledged entries trimmed from the streams",
            |s| s.trimmed.load(Ordering::Relaxed),
        ),
        (
            "relay.events.caught_up",
            "Events the catch-up found missing from the read model and applied",
            |s| s.caught_up.load(Ordering::Relaxed),
        ),
    ];
    for (name, description, read) in counters {
        let stats = stats.clone();
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |observer| observer.observe(read(&stats), &[]))
            .build();
    }
    type Figure = (&'static str, &'static str, fn(&Progress) -> i64);
    let figures: [Figure; 3] = [
        (
            "relay.catchup.lag",
            "Positions the read model's checkpoint is behind the event log's head",
            Progress::lag,
        ),
        (
            "relay.catchup.head",
            "The event log's head at the last catch-up check",
            |p| p.head.load(Ordering::Relaxed),
        ),
        (
            "relay.catchup.checkpoint",
            "The read model's checkpoint at the last check",
            |p| p.checkpoint.load(Ordering::Relaxed),
        ),
    ];
    for (name, description, read) in figures {
        let progress = progress.clone();
        meter
            .i64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |observer| observer.observe(read(&progress), &[]))
            .build();
    }
    let lag = Arc::new(AtomicU64::new(0));
    let pending = Arc::new(AtomicU64::new(0));
    let dlq = Arc::new(AtomicU64::new(0));
    for (name, description, value) in [
        (
            "relay.consumer.lag",
            "Entries not yet delivered to the group",
            lag.clone(),
        ),
        (
            "relay.consumer.pending",
            "Entries delivered but not acknowledged",
            pending.clone(),
        ),
        ("relay.dlq.size", "Entries in the dead-letter stream", dlq.clone()),
    ] {
        meter
            .u64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |observer| observer.observe(value.load(Ordering::Relaxed), &[]))
            .build();
    }
    let config = config.clone();
    tokio::spawn(async move {
        loop {
            if let Ok((streams, dlq_size)) = crate::status::collect(&config).await {
                lag.store(streams.iter().filter_map(|s| s.lag).sum(), Ordering::Relaxed);
                pending.store(streams.iter().map(|s| s.pending).sum(), Ordering::Relaxed);
                dlq.store(dlq_size, Ordering::Relaxed);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = shutdown.wait() => return,
            }
        }
    });
}

/// Ensures the read model's schema, retrying while the store is unreachable;
/// false when shutdown came first.
async fn wait_for_indexes(store: &ReadStore, config: &Config, mut shutdown: Shutdown) -> bool {
    let mut tries = 0;
    loop {
        match store.ensure_schema().await {
            Ok(()) => return true,
            Err(error) => {
                tries += 1;
                if tries == 1 {
                    tracing::warn!(%error, "read store not ready; waiting");
                }
                let (base, max) = config.retry_delays();
                let delay = backoff(tries, base, max);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait() => return false,
                }
            }
        }
    }
}

/// An in-process relay for tests.
pub struct Running {
    /// Its health server: address, stop.
    pub service: server::Running,
    /// Its read store.
    pub store: ReadStore,
    /// Its counters.
    pub stats: Arc<Stats>,
    /// Where its catch-up stands.
    pub progress: Arc<Progress>,
}

impl Running {
    /// Stops it and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.service.stop().await
    }
}

/// Starts a relay with the real store.
pub async fn spawn(config: Config) -> anyhow::Result<Running> {
    spawn_with(config, |store| store).await
}

/// Starts a relay whose projector wraps the real store.
pub async fn spawn_with<P, F>(config: Config, wrap: F) -> anyhow::Result<Running>
where
    P: Projector,
    F: FnOnce(ReadStore) -> P,
{
    let app = Application::build(config).await?;
    let store = app.store();
    let stats = app.stats();
    let progress = app.progress();
    let projector = wrap(store.clone());
    let service = server::Running::spawn(app.local_addr(), |shutdown| app.run_with(projector, shutdown));
    Ok(Running {
        service,
        store,
        stats,
        progress,
    })
}
