//! Wiring: connect, migrate, check Redis, bind, serve, drain.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use postmesh_common::{
    auth::{Access, Authenticator},
    layers::{bounded_drain, flip_health_then_stop},
    redact::redact_url,
    redis_check::check_redis,
    serve,
    shutdown::{self, Shutdown, ShutdownTrigger},
    tls::{self, ServerTls},
};
use postmesh_proto::v1::{event_store_server::EventStoreServer, post_command_server::PostCommandServer};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

use crate::{
    app::Commands,
    config::Config,
    grpc::{AuthInterceptor, CommandService, EventStoreService},
    outbox::{self, Handoff, Publisher},
    store::EventStore,
};

/// Health service names this server reports.
const SERVICES: &[&str] = &["posts.v1.PostCommand", "posts.v1.EventStore"];

/// A command-svc that has connected to its dependencies and bound its port,
/// but not yet started serving.
pub struct Application {
    listener: TcpListener,
    probe: Option<TcpListener>,
    tls: Option<ServerTls>,
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
            check_redis(&url, config.redis_check_timeout()).await?;
        }
        let store = connect(&config).await?;
        if config.auto_migrate {
            store.migrate().await.context("migrations failed")?;
        }
        let (publisher, handoff) = outbox::publisher(
            store.clone(),
            config.streams.clone(),
            Duration::from_millis(config.outbox_poll_ms.max(10)),
        )
        .await?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
        let probe = match config.tls.health_probe_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (HEALTH_PROBE_ADDR)"))?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            probe,
            tls,
            auth,
            store,
            publisher,
            handoff,
            config,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen_addr)
    }

    /// Serves until `shutdown` fires: health flips to NOT_SERVING, in-flight
    /// requests drain within the grace period, the outbox flushes (events of
    /// the drained requests included), and the function returns.
    pub async fn run_until(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let (health, health_service) = tonic_health::server::health_reporter();
        for service in SERVICES {
            health
                .set_service_status(*service, tonic_health::ServingStatus::Serving)
                .await;
        }
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(postmesh_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Advertise only what this server serves (the posts.v1 set also describes PostQuery).
            .with_service_name(SERVICES[0])
            .with_service_name(SERVICES[1])
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .build_v1()?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(postmesh_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(SERVICES[0])
            .with_service_name(SERVICES[1])
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .build_v1alpha()?;
        let max = self.config.limits.max_message_bytes;
        let commands = InterceptedService::new(
            PostCommandServer::new(CommandService::new(Commands::new(self.store.clone(), self.handoff)))
                .max_decoding_message_size(max),
            AuthInterceptor::new(self.auth.clone(), Access::Write),
        );
        let events = InterceptedService::new(
            EventStoreServer::new(EventStoreService::new(self.store.clone())).max_decoding_message_size(max),
            AuthInterceptor::new(self.auth.clone(), Access::Read),
        );
        if let Some(probe) = self.probe {
            let routes = tonic::service::Routes::new(health_service.clone());
            tokio::spawn(serve::serve_probe(probe, routes, shutdown.clone()));
        }

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
            tls = self.tls.is_some(),
            mtls = self.tls.as_ref().is_some_and(ServerTls::is_mutual),
            tokens_for_writes = self.auth.is_some(),
            tokens_for_reads = self.auth.as_ref().is_some_and(|a| a.requires_token_for_reads()),
            "command-svc serving"
        );
        let server = self
            .config
            .limits
            .server()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(commands)
            .add_service(events)
            .serve_with_incoming_shutdown(
                serve::incoming(self.listener, &self.config.limits, self.tls.clone()),
                flip_health_then_stop(shutdown.clone(), health, SERVICES),
            );
        let drained = bounded_drain(server, shutdown, self.config.limits.shutdown_grace()).await;
        stop_publisher.trigger();
        if let Err(error) = publisher.await {
            tracing::warn!(%error, "outbox publisher ended abnormally");
        }
        drained?;
        tracing::info!("command-svc stopped");
        Ok(())
    }
}

/// An in-process command-svc for tests and tools.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Fire to stop it.
    pub trigger: ShutdownTrigger,
    /// Resolves when it has stopped.
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// `http://addr`, for tonic clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.trigger.trigger();
        self.handle.await?
    }
}

/// Builds and serves in the background; returns once the port is bound.
pub async fn spawn(config: Config) -> anyhow::Result<Running> {
    let app = Application::build(config).await?;
    let addr = app.local_addr();
    let (trigger, signal) = shutdown::channel();
    let handle = tokio::spawn(app.run_until(signal));
    Ok(Running { addr, trigger, handle })
}
