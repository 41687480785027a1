//! Wiring: check Redis, subscribe, bind, serve, drain.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use postmesh_common::{
    auth::Authenticator,
    layers::{bounded_drain, flip_health_then_stop},
    redact::redact_url,
    redis_check::check_redis,
    serve,
    shutdown::{self, Shutdown, ShutdownTrigger},
    tls::{self, ServerTls},
};
use postmesh_proto::v1::post_query_server::PostQueryServer;
use postmesh_read_model::ReadStore;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;

use crate::{
    cache::PostCache,
    config::Config,
    grpc::{AuthInterceptor, QueryService, QuerySettings},
    health,
    notify::{Hub, Listener},
};

/// Health service names this server reports.
const SERVICES: &[&str] = &["posts.v1.PostQuery"];

/// A query-svc that has checked Redis, subscribed to notifications and bound
/// its port, but not yet started serving. MongoDB may still be down: the
/// server then starts NOT_SERVING and recovers when MongoDB answers.
pub struct Application {
    listener: TcpListener,
    probe: Option<TcpListener>,
    tls: Option<ServerTls>,
    auth: Option<Arc<Authenticator>>,
    store: ReadStore,
    hub: Arc<Hub>,
    cache: Arc<PostCache>,
    notifications: Listener,
    config: Config,
}

impl Application {
    /// PINGs Redis (failing fast when the URL is not Redis), subscribes to the
    /// notify channel, prepares the (lazy) MongoDB client and binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        tls::install_default_provider();
        // Bad TLS or token settings fail the start, before any connection.
        let tls = ServerTls::from_args(&config.tls).context("TLS settings")?;
        let auth = Authenticator::from_args(&config.auth)
            .context("token settings")?
            .map(Arc::new);
        let redis = check_redis(&config.redis_url, config.redis_check_timeout()).await?;
        let notifications = Listener::subscribe(redis, &config.notify_channel, config.redis_check_timeout())
            .await
            .with_context(|| format!("cannot subscribe at {}", redact_url(&config.redis_url)))?;
        let store =
            ReadStore::connect_with_timeout(&config.mongodb_url, &config.mongodb_database, config.mongodb_timeout())
                .await
                .with_context(|| format!("bad MongoDB settings {}", redact_url(&config.mongodb_url)))?;
        let hub = Hub::new(config.watch_buffer, config.max_watchers);
        let cache = PostCache::new(config.cache_posts, config.cache_max_bytes(), config.cache_ttl());
        if cache.is_enabled() {
            cache.export_metrics();
        }
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
            hub,
            cache,
            notifications,
            config,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen_addr)
    }

    /// Serves until `shutdown` fires: health flips to NOT_SERVING, watch
    /// streams end, in-flight requests drain within the grace period, and
    /// the function returns.
    pub async fn run_until(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let (health, health_service) = tonic_health::server::health_reporter();
        // NOT_SERVING until the first MongoDB ping answers.
        health.set_service_status("", ServingStatus::NotServing).await;
        for service in SERVICES {
            health.set_service_status(*service, ServingStatus::NotServing).await;
        }
        let reflection = reflection_builder().build_v1()?;
        let reflection_alpha = reflection_builder().build_v1alpha()?;
        let settings = QuerySettings {
            max_wait: self.config.max_wait(),
            request_timeout: self.config.limits.request_timeout(),
        };
        let queries = PostQueryServer::new(QueryService::new(
            self.store.clone(),
            self.hub.clone(),
            self.cache.clone(),
            settings,
            shutdown.clone(),
        ))
        .max_decoding_message_size(self.config.limits.max_message_bytes);
        let queries = InterceptedService::new(queries, AuthInterceptor::new(self.auth.clone()));
        if let Some(probe) = self.probe {
            let routes = tonic::service::Routes::new(health_service.clone());
            tokio::spawn(serve::serve_probe(probe, routes, shutdown.clone()));
        }

        let notifications = tokio::spawn(self.notifications.run(
            self.hub.clone(),
            self.cache.clone(),
            self.store.clone(),
            shutdown.clone(),
        ));
        let health_task = tokio::spawn(health::follow_store(
            self.store.clone(),
            health.clone(),
            SERVICES,
            self.config.health_check_interval(),
            shutdown.clone(),
        ));
        // The health loop must have stopped before the final NOT_SERVING, or
        // a ping finishing late could report SERVING during the drain.
        let stop = {
            let shutdown = shutdown.clone();
            async move {
                let mut fired = shutdown.clone();
                fired.wait().await;
                let _ = health_task.await;
                flip_health_then_stop(shutdown, health, SERVICES).await;
            }
        };
        tracing::info!(
            %addr,
            mongodb = %redact_url(&self.config.mongodb_url),
            database = %self.config.mongodb_database,
            channel = %self.config.notify_channel,
            cache_posts = if self.cache.is_enabled() { self.config.cache_posts } else { 0 },
            cache_ttl_ms = self.config.cache_ttl_ms,
            tls = self.tls.is_some(),
            mtls = self.tls.as_ref().is_some_and(ServerTls::is_mutual),
            tokens_for_reads = self.auth.as_ref().is_some_and(|a| a.requires_token_for_reads()),
            "query-svc serving"
        );
        let server = self
            .config
            .limits
            .server()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(queries)
            .serve_with_incoming_shutdown(
                serve::incoming(self.listener, &self.config.limits, self.tls.clone()),
                stop,
            );
        bounded_drain(server, shutdown, self.config.limits.shutdown_grace()).await?;
        if let Err(error) = notifications.await {
            tracing::warn!(%error, "notification listener ended abnormally");
        }
        tracing::info!("query-svc stopped");
        Ok(())
    }
}

/// Reflection over the posts.v1 and health descriptors, advertising only
/// the services this server implements (the posts.v1 descriptor set also
/// describes command-svc's services).
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(postmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(SERVICES[0])
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
}

/// An in-process query-svc for tests and tools.
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

/// Builds and serves in the background; returns once the port is bound and
/// the notification subscription is live.
pub async fn spawn(config: Config) -> anyhow::Result<Running> {
    let app = Application::build(config).await?;
    let addr = app.local_addr();
    let (trigger, signal) = shutdown::channel();
    let handle = tokio::spawn(app.run_until(signal));
    Ok(Running { addr, trigger, handle })
}
