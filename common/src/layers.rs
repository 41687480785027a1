//! The tower stack in front of every gRPC server: a per-request timeout, a
//! global concurrency limit, and load shedding once that limit is reached, so
//! overload is answered at once with `RESOURCE_EXHAUSTED` instead of queueing
//! without bound. Also the graceful-shutdown wrapper every server runs in.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use clap::Args;
use tokio::sync::Semaphore;
use tonic::transport::Server;
use tonic_health::{server::HealthReporter, ServingStatus};
use tower::{
    layer::util::{Identity, Stack},
    Layer, Service,
};

use crate::serve::ConnTrackLayer;
use crate::{limits_status::LimitsStatusLayer, rpc::RpcTraceLayer, shutdown::Shutdown};

/// Limits applied to every gRPC server, configurable per service.
#[derive(Args, Clone, Debug)]
pub struct ServerLimits {
    /// Longest a request may run before it is cancelled (seconds); a client
    /// deadline shorter than this wins.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 10.0)]
    pub request_timeout_secs: f64,
    /// Requests handled at once; beyond this, new requests get RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// HTTP/2 streams one connection may open at once.
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,
    /// Largest request message accepted (bytes).
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Largest block of request headers (metadata) accepted (bytes).
    #[arg(long, env = "MAX_HEADER_LIST_BYTES", default_value_t = 16 * 1024)]
    pub max_header_list_bytes: u32,
    /// Connections open at once; further connections are closed as soon as
    /// they are accepted.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed
    /// (seconds; 0: never). Also ends connections that never send a request.
    #[arg(long, env = "CONNECTION_IDLE_TIMEOUT_SECS", default_value_t = 300.0)]
    pub connection_idle_timeout_secs: f64,
    /// Connections older than this are asked to go away (HTTP/2 GOAWAY) so
    /// clients re-balance across replicas (seconds; 0: never).
    #[arg(long, env = "MAX_CONNECTION_AGE_SECS", default_value_t = 0.0)]
    pub max_connection_age_secs: f64,
    /// Interval of HTTP/2 PINGs that detect dead peers (seconds; 0: off).
    #[arg(long, env = "HTTP2_KEEPALIVE_INTERVAL_SECS", default_value_t = 30.0)]
    pub http2_keepalive_interval_secs: f64,
    /// How long a PING may go unanswered before the connection is closed (seconds).
    #[arg(long, env = "HTTP2_KEEPALIVE_TIMEOUT_SECS", default_value_t = 10.0)]
    pub http2_keepalive_timeout_secs: f64,
    /// TCP keep-alive idle time on accepted sockets (seconds; 0: off).
    #[arg(long, env = "TCP_KEEPALIVE_SECS", default_value_t = 60.0)]
    pub tcp_keepalive_secs: f64,
    /// After SIGTERM, how long in-flight requests may take to finish (seconds).
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10.0)]
    pub shutdown_grace_secs: f64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            request_timeout_secs: 10.0,
            max_concurrent_requests: 512,
            max_concurrent_streams: 256,
            max_message_bytes: 4 * 1024 * 1024,
            max_header_list_bytes: 16 * 1024,
            max_connections: 4096,
            connection_idle_timeout_secs: 300.0,
            max_connection_age_secs: 0.0,
            http2_keepalive_interval_secs: 30.0,
            http2_keepalive_timeout_secs: 10.0,
            tcp_keepalive_secs: 60.0,
            shutdown_grace_secs: 10.0,
        }
    }
}

/// The connection tracker (outermost), RPC spans and metrics, and load shedding.
pub type ServerLayers = Stack<ShedLayer, Stack<RpcTraceLayer, Stack<ConnTrackLayer, Identity>>>;

/// `secs` as a duration, None when zero or negative ("off").
fn positive(secs: f64) -> Option<Duration> {
    (secs > 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs))
}

impl ServerLimits {
    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_secs.max(0.001))
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_grace_secs.max(0.0))
    }

    /// The idle-connection timeout, None when off.
    pub fn idle_timeout(&self) -> Option<Duration> {
        positive(self.connection_idle_timeout_secs)
    }

    /// The TCP keep-alive time, None when off.
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        positive(self.tcp_keepalive_secs)
    }

    /// A tonic server builder with the timeout, HTTP/2 limits, the connection
    /// tracker (for idle timeouts), the RPC span and metrics layer (so
    /// refused calls are counted too) and load shedding applied. Serve it
    /// with [`crate::serve::incoming`], which enforces the connection limits.
    pub fn server(&self) -> Server<Stack<LimitsStatusLayer, ServerLayers>> {
        let mut server = Server::builder()
            .timeout(self.request_timeout())
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_max_header_list_size(self.max_header_list_bytes.max(1024))
            .http2_keepalive_interval(positive(self.http2_keepalive_interval_secs))
            .http2_keepalive_timeout(positive(self.http2_keepalive_timeout_secs));
        if let Some(age) = positive(self.max_connection_age_secs) {
            server = server
                .max_connection_age(age)
                .max_connection_age_grace(self.request_timeout());
        }
        server
            .layer(ConnTrackLayer)
            .layer(RpcTraceLayer::default())
            .layer(ShedLayer::new(self.max_concurrent_requests))
            // Innermost: the client's deadline ends streams too, and an oversized
            // request is RESOURCE_EXHAUSTED, as with grpc-go/java; see limits_status.
            .layer(LimitsStatusLayer)
    }
}

/// Admits at most `limit` requests at once and answers the rest immediately
/// with `RESOURCE_EXHAUSTED`.
#[derive(Clone, Debug)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    /// A layer admitting `limit` concurrent requests (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit.max(1))),
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// Service produced by [`ShedLayer`].
#[derive(Clone, Debug)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Shed<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let result = response.await;
                    drop(permit);
                    result
                })
            }
            Err(_) => Box::pin(std::future::ready(Ok(tonic::Status::resource_exhausted(
                "server is at its concurrency limit; retry with backoff",
            )
            .into_http()))),
        }
    }
}

/// Resolves when `shutdown` fires, after marking every listed service (and
/// the server as a whole) NOT_SERVING: pass it as tonic's shutdown signal so
/// health flips before the listener closes.
pub async fn flip_health_then_stop(mut shutdown: Shutdown, health: HealthReporter, services: &'static [&'static str]) {
    shutdown.wait().await;
    health.set_service_status("", ServingStatus::NotServing).await;
    for service in services {
        health.set_service_status(*service, ServingStatus::NotServing).await;
    }
    tracing::info!("health is NOT_SERVING; draining in-flight requests");
}

/// Runs `server` until it ends on its own, or until `grace` has passed since
/// `shutdown` fired, whichever is first: in-flight work drains, but never
/// holds the process forever.
pub async fn bounded_drain<F, E>(server: F, mut shutdown: Shutdown, grace: Duration) -> Result<(), E>
where
    F: Future<Output = Result<(), E>>,
{
    tokio::select! {
        result = server => result,
        _ = async { shutdown.wait().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "grace period over; abandoning requests still in flight");
            Ok(())
        }
    }
}
