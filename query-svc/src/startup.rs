//! Wiring: check Redis, subscribe, bind, serve, drain.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use postmesh_common::{
    auth::{Access, AuthInterceptor, Authenticator},
    redact::redact_url,
    redis_check::check_redis,
    server::Server,
    shutdown::Shutdown,
    tls::{self, ServerTls},
};
use postmesh_proto::v1::post_query_server::PostQueryServer;
use postmesh_read_model::ReadStore;
use tonic::service::{interceptor::InterceptedService, Routes};
use tonic_health::ServingStatus;

/// The service serving in the background of this process (see [`spawn`]).
pub use postmesh_common::server::Running;

use crate::{
    cache::PostCache,
    config::Config,
    grpc::{QueryService, QuerySettings},
    health,
    notify::{Hub, Listener},
};

/// Health service names this server reports.
const SERVICES: &[&str] = &["posts.v1.PostQuery"];

/// A query-svc that has checked Redis, subscribed to notifications and bound
/// its port, but not yet started serving. The read store may still be down:
/// the server then starts NOT_SERVING and recovers when it answers.
pub struct Application {
    server: Server,
    auth: Option<Arc<Authenticator>>,
    store: ReadStore,
    hub: Arc<Hub>,
    cache: Arc<PostCache>,
    notifications: Listener,
    config: Config,
}

impl Application {
    /// PINGs Redis (failing fast when the URL is not Redis), subscribes to the
    /// notify channel, prepares the (lazy) read store and binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        tls::install_default_provider();
        // Bad TLS or token settings fail the start, before any connection.
        let tls = ServerTls::from_args(&config.tls).context("TLS settings")?;
        let auth = Authenticator::from_args(&config.auth)
            .context("token settings")?
            .map(Arc::new);
        let redis = check_redis(&config.redis_url, config.redis_check.timeout()).await?;
        let notifications = Listener::subscribe(redis, &config.notify_channel, config.redis_check.timeout())
            .await
            .with_context(|| format!("cannot subscribe at {}", redact_url(&config.redis_url)))?;
        let store = config
            .read_store
            .connect()
            .await
            .with_context(|| format!("bad read store settings {}", redact_url(config.read_store.url())))?;
        let hub = Hub::new(config.watch_buffer, config.max_watchers);
        let cache = PostCache::new(config.cache_posts, config.cache_max_bytes(), config.cache_ttl);
        if cache.is_enabled() {
            cache.export_metrics();
        }
        let server = Server::bind(
            config.listen_addr,
            config.tls.health_probe_addr,
            tls,
            config.limits.clone(),
            SERVICES,
        )
        .await?
        .describe(postmesh_proto::FILE_DESCRIPTOR_SET)
        .http_json(postmesh_proto::openapi::QUERY);
        Ok(Self {
            server,
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
        self.server.local_addr().unwrap_or(self.config.listen_addr)
    }

    /// Serves until `shutdown` fires: health flips to NOT_SERVING, watch
    /// streams end, in-flight requests drain within the grace period, and
    /// the function returns.
    pub async fn run_until(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let health = self.server.health();
        // NOT_SERVING until the first read-store ping answers.
        health.report(ServingStatus::NotServing).await;
        let settings = QuerySettings {
            max_wait: self.config.max_wait,
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
        let queries = InterceptedService::new(queries, AuthInterceptor::new(self.auth.clone(), Access::Read));

        let notifications = tokio::spawn(self.notifications.run(
            self.hub.clone(),
            self.cache.clone(),
            self.store.clone(),
            shutdown.clone(),
        ));
        let health_task = tokio::spawn(health::follow_store(
            self.store.clone(),
            health,
            self.config.health_check_interval(),
            shutdown.clone(),
        ));
        tracing::info!(
            %addr,
            read_store = %redact_url(self.config.read_store.url()),
            database = %self.config.read_store.database(),
            channel = %self.config.notify_channel,
            cache_posts = if self.cache.is_enabled() { self.config.cache_posts } else { 0 },
            cache_ttl_ms = self.config.cache_ttl.as_millis() as u64,
            tls = self.server.tls().is_some(),
            mtls = self.server.tls().is_some_and(ServerTls::is_mutual),
            tokens_for_reads = self.auth.as_ref().is_some_and(|a| a.requires_token_for_reads()),
            "query-svc serving"
        );
        // The health loop must have stopped before the final NOT_SERVING, or
        // a ping finishing late could report SERVING during the drain.
        let settle = async {
            let _ = health_task.await;
        };
        self.server.serve(Routes::new(queries), shutdown, settle).await?;
        if let Err(error) = notifications.await {
            tracing::warn!(%error, "notification listener ended abnormally");
        }
        tracing::info!("query-svc stopped");
        Ok(())
    }
}

/// Builds and serves in the background; returns once the port is bound and
/// the notification subscription is live.
pub async fn spawn(config: Config) -> anyhow::Result<Running> {
    let app = Application::build(config).await?;
    Ok(Running::spawn(app.local_addr(), |shutdown| app.run_until(shutdown)))
}
