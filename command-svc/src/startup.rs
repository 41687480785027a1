//! Wiring: connect, migrate, check Redis, bind, serve, drain.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use postmesh_common::{
    auth::{Access, AuthInterceptor, Authenticator},
    redact::redact_url,
    redis_check::check_redis,
    server::Server,
    shutdown::{self, Shutdown},
    tls::{self, ServerTls},
};
use postmesh_proto::v1::{event_store_server::EventStoreServer, post_command_server::PostCommandServer};
use tonic::service::{interceptor::InterceptedService, Routes};
use tonic_health::ServingStatus;

/// The service serving in the background of this process (see [`spawn`]).
pub use postmesh_common::server::Running;

use crate::{
    app::Commands,
    config::Config,
    grpc::{CommandService, EventStoreService},
    outbox::{self, Handoff, Publisher},
    store::EventStore,
};

/// How long the drain waits for the group committer's last batch.
const COMMITTER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Health service names this server reports.
const SERVICES: &[&str] = &["posts.v1.PostCommand", "posts.v1.EventStore"];

/// A command-svc that has connected to its dependencies and bound its port,
/// but not yet started serving.
pub struct Application {
    server: Server,
    auth: Option<Arc<Authenticator>>,
    store: EventStore,
    publisher: Publisher,
    handoff: Handoff,
    config: Config,
}

/// Runs `command-svc migrate`.
pub async fn migrate_only(config: &Config) -> anyhow::Result<()> {
    let store = connect(config).await?;
    store.migrate().await.context("migrations failed")?;
    tracing::info!(database = %redact_url(&config.database_url), "migrations applied");
    Ok(())
}

async fn connect(config: &Config) -> anyhow::Result<EventStore> {
    EventStore::connect(&config.database_url, config.database_pool, config.database_timeout())
        .await
        .with_context(|| format!("cannot open event store {}", redact_url(&config.database_url)))
}

impl Application {
    /// Connects to the event store (migrating it unless disabled), PINGs every
    /// Redis URL, and binds the listen address.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        tls::install_default_provider();
        // Bad TLS or token settings fail the start, before any connection.
        let tls = ServerTls::from_args(&config.tls).context("TLS settings")?;
        let auth = Authenticator::from_args(&config.auth)
            .context("token settings")?
            .map(Arc::new);
        for url in config.streams.redis_urls() {
            check_redis(&url, config.redis_check.timeout()).await?;
        }
        let store = connect(&config).await?;
        if config.auto_migrate {
            store.migrate().await.context("migrations failed")?;
        }
        let (publisher, handoff) = outbox::publisher(
            store.clone(),
            config.streams.clone(),
            config.outbox_poll.max(std::time::Duration::from_millis(10)),
        )
        .await?;
        let server = Server::bind(
            config.listen_addr,
            config.tls.health_probe_addr,
            tls,
            config.limits.clone(),
            SERVICES,
        )
        .await?
        .describe(postmesh_proto::FILE_DESCRIPTOR_SET)
        .http_json(postmesh_proto::openapi::COMMAND);
        Ok(Self {
            server,
            auth,
            store,
            publisher,
            handoff,
            config,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr().unwrap_or(self.config.listen_addr)
    }

    /// Serves until `shutdown` fires: health flips to NOT_SERVING, in-flight
    /// requests drain within the grace period, the outbox flushes (events of
    /// the drained requests included), and the function returns.
    pub async fn run_until(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let addr = self.local_addr();
        self.server.health().report(ServingStatus::Serving).await;
        let max = self.config.limits.max_message_bytes;
        let pipeline = match self.config.commit_pipeline {
            0 => self.store.default_commit_pipeline(),
            n => n,
        };
        let (commands, committer) = Commands::spawn(self.store.clone(), self.handoff, pipeline);
        let commands = InterceptedService::new(
            PostCommandServer::new(CommandService::new(commands)).max_decoding_message_size(max),
            AuthInterceptor::new(self.auth.clone(), Access::Write),
        );
        let events = InterceptedService::new(
            EventStoreServer::new(EventStoreService::new(self.store.clone())).max_decoding_message_size(max),
            AuthInterceptor::new(self.auth.clone(), Access::Read),
        );

        // The publisher stops after the server drained, not when shutdown fires,
        // so the events of requests finishing during the drain go out too.
        let (stop_publisher, publisher_stop) = shutdown::channel();
        let publisher = tokio::spawn(self.publisher.run(publisher_stop));
        tracing::info!(
            %addr,
            database = %redact_url(&self.config.database_url),
            backend = self.store.backend_name(),
            topology = ?self.config.streams.topology,
            stream = %self.config.streams.stream,
            tls = self.server.tls().is_some(),
            mtls = self.server.tls().is_some_and(ServerTls::is_mutual),
            tokens_for_writes = self.auth.is_some(),
            tokens_for_reads = self.auth.as_ref().is_some_and(|a| a.requires_token_for_reads()),
            "command-svc serving"
        );
        let routes = Routes::new(commands).add_service(events);
        let drained = self.server.serve(routes, shutdown, async {}).await;
        // The committer ends once the server's handlers are gone and the
        // batch in flight is done (commands whose callers gave up included),
        // so its events reach the publisher before it stops.
        if tokio::time::timeout(COMMITTER_GRACE, committer).await.is_err() {
            tracing::warn!("the group committer did not finish in time; the outbox keeps what it committed");
        }
        stop_publisher.trigger();
        if let Err(error) = publisher.await {
            tracing::warn!(%error, "outbox publisher ended abnormally");
        }
        drained?;
        tracing::info!("command-svc stopped");
        Ok(())
    }
}

/// Builds and serves in the background; returns once the port is bound.
pub async fn spawn(config: Config) -> anyhow::Result<Running> {
    let app = Application::build(config).await?;
    Ok(Running::spawn(app.local_addr(), |shutdown| app.run_until(shutdown)))
}
